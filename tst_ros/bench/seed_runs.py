"""The specialisation tables' statistics: per-seed row results summarised as mean ± std with the
gap each row closes between scratch and the oracle, the markdown table, and one result merged
from runs of the same benchmark that each ran some of the seeds and rows (e.g. side by side on
one GPU machine, or on several)."""
from __future__ import annotations

import numpy as np

from tst_ros.perception.metrics import gap_closed

METRICS = ("seg_miou", "things_miou", "stuff_miou", "det_map", "det_map50")
# what runs to be merged must share (the protocol), and their per-row descriptions, merged row by row
SHARED_KEYS = ("test_building", "budget", "eval_frames")
ROW_KEYS = ("inputs", "finetune", "transfer_overrides", "presets")     # presets: the encoder's
RUN_KEYS = ("benchmark", "quick", "host", "python", "wall_s")    # the command's own, set again by it


def summarise(per_seed: list[dict[str, dict]], seeds: list[int]) -> dict:
    """{row: {metric: {mean, std, seeds}, per_class_iou: {class: mean}}} plus gap_closed per row."""
    out: dict = {}
    for name in per_seed[0]:
        row = {}
        for metric in METRICS:
            values = [round(r[name][metric], 2) for r in per_seed]
            row[metric] = {"mean": round(float(np.mean(values)), 2), "std": round(float(np.std(values)), 2),
                           "seeds": dict(zip(map(str, seeds), values))}
        classes = per_seed[0][name]["per_class_iou"]
        row["per_class_iou"] = {c: None if any(r[name]["per_class_iou"][c] is None for r in per_seed) else
                                round(float(np.mean([r[name]["per_class_iou"][c] for r in per_seed])), 1)
                                for c in classes}
        out[name] = row
    scratch, oracle = (out[n]["seg_miou"]["mean"] if n in out else None for n in ("scratch", "oracle"))
    for row in out.values():                     # None in a run of some rows only
        row["gap_closed"] = gap_closed(row["seg_miou"]["mean"], scratch, oracle)
    return out


def table_markdown(rows: dict) -> str:
    head = ["| method | seg mIoU | things | stuff | det mAP | mAP@.5 | gap closed |", "|---|---|---|---|---|---|---|"]
    cell = lambda m: f"{m['mean']:.1f} ± {m['std']:.1f}"  # noqa: E731
    return "\n".join(head + [f"| {n} | {cell(r['seg_miou'])} | {cell(r['things_miou'])} | {cell(r['stuff_miou'])} | "
                             f"{cell(r['det_map'])} | {cell(r['det_map50'])} | {r['gap_closed']} |"
                             for n, r in rows.items()])


def merge_runs(runs: list[dict]) -> dict:
    """One result from `runs` (each a benchmark's JSON) of one protocol that each ran some seeds
    and some rows (e.g. side by side on one GPU machine): every statistic recomputed over all
    seeds, every (seed, row) measured exactly once and every seed holding the same rows. A row's
    per-class IoU is the mean of the runs' means weighted by their seed counts."""
    if not runs:
        raise ValueError("nothing to merge")
    if not all(isinstance(run, dict) and {"seeds", "methods"} <= set(run) for run in runs):
        raise ValueError("only results of `tst-ros bench specialization --json` can be merged")
    first = runs[0]
    differ = sorted({k for run in runs for k in SHARED_KEYS if run.get(k) != first.get(k)})
    if differ:
        raise ValueError(f"runs differ in {differ}: only runs of one protocol can be merged")
    per_seed: dict[int, dict] = {}
    for run in runs:
        for seed in run["seeds"]:
            rows = per_seed.setdefault(seed, {})
            for name, row in run["methods"].items():
                if name in rows:
                    raise ValueError(f"seed {seed} of row {name!r} is in more than one run: each is counted once")
                rows[name] = {**{m: row[m]["seeds"][str(seed)] for m in METRICS}, "per_class_iou": row["per_class_iou"]}
    names = [n for run in runs for n in run["methods"]]
    names = sorted(set(names), key=names.index)
    missing = {seed: sorted(set(names) - set(rows)) for seed, rows in per_seed.items() if set(rows) != set(names)}
    if missing:
        raise ValueError(f"rows missing for some seeds: {missing}")
    seeds = sorted(per_seed)
    rows = summarise([{n: per_seed[seed][n] for n in names} for seed in seeds], seeds)
    return {**{k: v for k, v in first.items() if k not in RUN_KEYS}, **_row_keys(runs), "seeds": seeds,
            "methods": rows, "gap_closed": {name: row["gap_closed"] for name, row in rows.items()},
            "table_markdown": table_markdown(rows), "merged_runs": len(runs),
            "total_seconds": round(sum(run.get("total_seconds", 0.0) for run in runs), 1)}


def _row_keys(runs: list[dict]) -> dict:
    """The union of the runs' per-row descriptions (inputs, fine-tuning, transfer overrides,
    encoder presets); a row described differently by two runs is refused."""
    out: dict = {}
    for key in ROW_KEYS:
        merged: dict = {}
        for run in runs:
            described = run.get("encoder", {}).get("presets", {}) if key == "presets" else run.get(key, {})
            for name, value in described.items():
                if merged.setdefault(name, value) != value:
                    raise ValueError(f"row {name!r} has another {key} in another run")
        out[key] = merged
    return {**out, "encoder": {**runs[0].get("encoder", {}), "presets": out.pop("presets")}}
