"""Modality ablation of TST-MM (the paper's table of input/target modalities): pre-training on
the sensor modalities only, plus each teacher modality, on all of them, and on all minus each
teacher; everything else is `tst_ros.bench.specialization`'s protocol (the same test building,
store, budget, transfer on other buildings' labels with the budget's encoder fine-tuning (end to
end by default; the JSON's `finetune`), held-out frames and seeds),
with RGB-D input at transfer and serving for every row. A PNG plots seg and things mIoU
against the number of pre-training modalities. Rows with the same modality set (with two
teachers, "all - A" is "+B") are pre-trained once and reported under each name.
"""
from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path

from tst_ros.bench import specialization as spec
from tst_ros.bench.spec_rows import Pretraining

FIGURE = "modalities_scaling.png"


def variants() -> dict[str, list[str]]:
    """Row name -> pre-training modalities."""
    sensors, teachers = spec.sensor_modalities(), spec.teacher_modalities()
    rows = {"sensors": sensors}
    rows.update({f"+{t}": sensors + [t] for t in teachers})
    rows["all"] = sensors + teachers
    rows.update({f"all - {t}": sensors + [u for u in teachers if u != t] for t in teachers})
    return rows


def scaling_figure(rows: dict, modality_sets: dict[str, list[str]], path: Path) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for metric, colour in (("seg_miou", "tab:blue"), ("things_miou", "tab:orange")):
        xs = [len(modality_sets[n]) for n in rows]
        ax.errorbar(xs, [rows[n][metric]["mean"] for n in rows], yerr=[rows[n][metric]["std"] for n in rows],
                    fmt="o", color=colour, capsize=3, label=metric.replace("_miou", " mIoU").replace("seg", "all"))
        for n, x in zip(rows, xs):
            ax.annotate(n, (x, rows[n][metric]["mean"]), textcoords="offset points", xytext=(4, 2), fontsize=7)
    ax.set_xlabel("pre-training modalities")
    ax.set_ylabel("mIoU % (held-out test-building frames)")
    ax.set_title("TST-MM: mIoU vs number of modalities (mean ± std, 3 seeds)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def run(quick: bool = False, rows: list[str] | None = None) -> dict:
    import torch

    sets = variants()
    unknown = set(rows or []) - set(sets)
    if unknown:
        raise ValueError(f"unknown rows {sorted(unknown)}; rows: {list(sets)}")
    sets = {n: m for n, m in sets.items() if not rows or n in rows}
    # one pre-training per distinct modality set
    keys = {n: "+".join(m) for n, m in sets.items()}
    pretrainings = {keys[n]: Pretraining("tst-mm", m) for n, m in sets.items()}
    first_of = {}                                   # modality set -> first row name that has it
    for n in sets:
        first_of.setdefault(keys[n], n)
    rows_run = [(n, k, None, "other", None) for k, n in first_of.items()]
    budget = spec.BUDGETS["quick" if quick else "full"]
    seeds = list(budget["seeds"])
    torch.set_num_threads(spec.TORCH_THREADS)
    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="tst-bench-mod-") as tmp:
        tmp = Path(tmp)
        paths = spec.build_data(tmp, budget, spec.teacher_modalities())
        per_seed = []
        for seed in seeds:
            logging.getLogger("tst_ros.bench.modalities").info(f"seed {seed}: {len(pretrainings)} pre-trainings")
            per_seed.append(spec.run_seed(seed, paths, tmp, budget, rows_run, pretrainings))
    measured = spec.summarise(per_seed, seeds)
    summary = {n: {**measured[first_of[keys[n]]], "same_run_as": None if first_of[keys[n]] == n else first_of[keys[n]]}
               for n in sets}
    spec.OUT_DIR.mkdir(exist_ok=True)
    figure = scaling_figure(summary, sets, spec.OUT_DIR / (FIGURE.replace(".png", "_quick.png") if quick else FIGURE))
    return {"test_building": "seed 0, style home", "seeds": seeds,
            "budget": {k: v for k, v in budget.items() if k != "seeds"},
            "eval_frames": {"count": budget["eval_images"], "first": budget["record_frames"] + spec.EVAL_GAP},
            "encoder": "tiny preset, 128 px, patch 16", "inputs_at_transfer": "rgb,depth",
            "finetune": budget["finetune"],
            "modalities": sets, "methods": summary, "figure": str(figure),
            "table_markdown": spec.table_markdown(summary).replace("| method |", "| pre-training modalities |"),
            "total_seconds": round(time.perf_counter() - t_all, 1)}
