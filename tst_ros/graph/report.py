"""The specialise report: one HTML page plus PNGs, written from a run directory's JSON files.

Reads `metrics.json` (written by the pipeline: segmentation/detection evaluation of the
specialised model and of the scratch baseline on held-out test-building frames, TTT-KD before
and after adaptation), `pretrain/log.jsonl` (training curves) and `deploy.json` (what the
perception nodes published on the graph: rates, latency, sample outputs).
"""
from __future__ import annotations

import html
import json
import shutil
from pathlib import Path

import numpy as np

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def _read_jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a torn last line of a killed run
    return rows


def _save(fig, out: Path) -> Path:
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def _grouped_bars(ax, labels: list[str], series: dict[str, list[float]], label_values: bool = False, **tick_kw):
    """One bar group per label, one bar per series (method) inside each group."""
    width = 0.8 / max(len(series), 1)
    for i, (name, values) in enumerate(series.items()):
        bars = ax.bar(np.arange(len(labels)) + i * width, values, width, label=name)
        if label_values:
            ax.bar_label(bars, fmt="%.1f", fontsize=8)
    ax.set_xticks(np.arange(len(labels)) + width * (len(series) - 1) / 2, labels, **tick_kw)
    ax.legend()


def training_curves(log: list[dict], out: Path) -> Path | None:
    rows = [r for r in log if "step" in r and "loss" in r]
    if not rows:
        return None
    steps = np.array([r["step"] for r in rows])
    fig, ax = plt.subplots(figsize=(7, 3.6))
    ax.plot(steps, [r["loss"] for r in rows], label="total", lw=2)
    for key in sorted({k for r in rows for k in r if k.startswith("loss/")}):
        ax.plot(steps, [r.get(key, np.nan) for r in rows], label=key.split("/", 1)[1], lw=1, alpha=0.8)
    ax.set_xlabel("step")
    ax.set_ylabel("masked reconstruction loss")
    ax.set_title("TST-MM pre-training on the test building")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, out)


def comparison_chart(segdet: dict, out: Path) -> Path | None:
    if not segdet:
        return None
    metrics = [("miou", "seg mIoU"), ("map", "det mAP@[.5:.95]"), ("map50", "det mAP@.5")]
    fig, ax = plt.subplots(figsize=(7, 3.6))
    _grouped_bars(ax, [label for _, label in metrics],
                  {m: [100 * float(r.get(k, 0.0) or 0.0) for k, _ in metrics] for m, r in segdet.items()},
                  label_values=True)
    ax.set_ylabel("%")
    ax.set_title("Held-out frames of the test building")
    return _save(fig, out)


def _per_class(segdet: dict) -> tuple[list[str], dict[str, dict[str, float | None]]]:
    """The classes present in the evaluation frames and {model: {class: IoU}}."""
    # per_class_iou: [{"id", "name", "iou", "gt_pixels"}, ...] (classes absent from the set have iou None)
    per = {m: {row["name"]: row.get("iou") for row in r.get("per_class_iou") or []} for m, r in segdet.items()}
    first = next(iter(segdet.values()), {})
    return [row["name"] for row in first.get("per_class_iou") or [] if row.get("gt_pixels", 1)], per


def per_class_chart(segdet: dict, out: Path) -> Path | None:
    classes, per = _per_class(segdet)
    if not classes:
        return None
    fig, ax = plt.subplots(figsize=(max(7, 0.45 * len(classes)), 3.6))
    _grouped_bars(ax, classes, {m: [100 * float(t[c]) if t.get(c) is not None else np.nan for c in classes]
                                for m, t in per.items()}, rotation=60, ha="right", fontsize=8)
    ax.set_ylabel("IoU %")
    return _save(fig, out)


def tttkd_chart(tttkd: dict, out: Path) -> Path | None:
    curves = {name: v for name, v in tttkd.items() if isinstance(v, dict) and v}
    if not curves:
        return None
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for name, by_k in curves.items():
        ks = sorted(int(k) for k in by_k)
        ax.plot(ks, [100 * float(by_k[str(k)] if str(k) in by_k else by_k[k]) for k in ks], marker="o", label=name)
    ax.set_xlabel("adaptation steps k")
    ax.set_ylabel("point mIoU %")
    ax.set_title("TTT-KD: 3D labels before (k=0) and after adaptation")
    ax.legend()
    ax.grid(alpha=0.3)
    return _save(fig, out)


def verdict(segdet: dict) -> str:
    """Plain statement of where the specialised model stands against scratch."""
    spec, base = segdet.get("tst-mm"), segdet.get("scratch")
    if not spec or not base:
        return "The scratch baseline or the specialised model was not evaluated."
    parts = []
    for key, label in (("miou", "segmentation mIoU"), ("map", "detection mAP")):
        d = 100 * (float(spec.get(key) or 0) - float(base.get(key) or 0))
        side = "ahead of" if d > 0 else ("behind" if d < 0 else "level with")
        parts.append(f"{label}: specialised {100 * float(spec.get(key) or 0):.1f} vs scratch "
                     f"{100 * float(base.get(key) or 0):.1f} — {side} scratch by {abs(d):.1f} points")
    return "; ".join(parts) + "."


def _inputs(result: dict) -> str:
    given = " + ".join(result.get("inputs") or [])
    predicted = result.get("predicted_inputs") or []
    return given + (f" ({', '.join(predicted)} predicted from it)" if predicted else "")


def method_rows(segdet: dict) -> list[list]:
    """One row per evaluated model: inputs, seg mIoU (all, things, stuff), det mAP, mAP@.5 and the
    gap it closes between scratch and the oracle (the model trained on the test building's labels)."""
    return [[m, _inputs(r), *[_fmt(r.get(k), 100) for k in ("miou", "things_miou", "stuff_miou", "map", "map50")],
             _fmt(r.get("gap_closed"), 1, 2), r.get("images", "")] for m, r in segdet.items()]


def per_class_rows(segdet: dict) -> list[list]:
    """Per-class IoU %, one row per class present in the evaluation frames, one column per model."""
    classes, per = _per_class(segdet)
    return [[c, *[_fmt(per[m].get(c), 100) for m in segdet]] for c in classes]


def _table(rows: list[list], header: list[str]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _fmt(v, scale: float = 1.0, digits: int = 1) -> str:
    return "—" if v is None else f"{scale * float(v):.{digits}f}"


def write_report(run_dir: str | Path) -> Path:
    run_dir = Path(run_dir)
    out = run_dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    metrics = _read_json(run_dir / "metrics.json")
    deploy = _read_json(run_dir / "deploy.json")
    segdet = metrics.get("segdet", {})
    figures = {
        "training curves": training_curves(_read_jsonl(run_dir / "pretrain" / "log.jsonl"),
                                           out / "training_curves.png"),
        "specialised vs scratch": comparison_chart(segdet, out / "segdet_vs_scratch.png"),
        "per-class IoU": per_class_chart(segdet, out / "per_class_iou.png"),
        "TTT-KD": tttkd_chart(metrics.get("tttkd", {}).get("miou_by_k", {}), out / "tttkd.png"),
    }
    for name, src in (("sample_overlay.png", run_dir / "deploy_overlay.png"),
                      ("sample_detections.png", run_dir / "deploy_detections.png")):
        if src.is_file():
            shutil.copyfile(src, out / name)
            figures[name.rsplit(".", 1)[0].replace("_", " ")] = out / name
    grids = sorted((run_dir / "pretrain" / "grids").glob("*.png")) if (run_dir / "pretrain" / "grids").is_dir() else []
    if grids:
        shutil.copyfile(grids[-1], out / "reconstructions.png")
        figures["masked reconstructions (held-out frame)"] = out / "reconstructions.png"

    out_rows = [[k, v.get("count", 0), _fmt(v.get("rate_hz"), 1, 2), _fmt(v.get("latency_ms_p50"), 1, 1),
                 _fmt(v.get("latency_ms_p99"), 1, 1)] for k, v in deploy.get("outputs", {}).items()]
    ttt = metrics.get("tttkd", {})
    sections = [
        f"<h1>tst_ros specialise report</h1><p class=verdict>{html.escape(verdict(segdet))}</p>",
        "<h2>Segmentation and detection (held-out test-building frames)</h2>",
        _table(method_rows(segdet), ["method", "inputs", "seg mIoU %", "things %", "stuff %", "det mAP %",
                                     "mAP@.5 %", "gap closed", "images"]),
        "<p>Gap closed = (method − scratch) / (oracle − scratch) in seg mIoU. The oracle is the same model "
        "trained on labels of the building's recorded stretch: an upper bound for this table only, never "
        "served.</p>" if "oracle" in segdet else "<p>The oracle (the same model trained on labels of the recorded "
        "stretch) was not run: <code>--set specialize.oracle=true</code> adds one more transfer; "
        "<code>tst-ros bench specialization</code> reports it with the gap closed.</p>",
        "<h3>Per-class IoU %</h3>", _table(per_class_rows(segdet), ["class", *segdet]),
        "<h2>TTT-KD 3D point labels</h2>",
        _table([[name, *[_fmt(v, 100) for _, v in sorted(by_k.items(), key=lambda kv: int(kv[0]))]]
                for name, by_k in ttt.get("miou_by_k", {}).items()],
               ["scenes", *[f"k={k}" for k in sorted({int(k) for v in ttt.get("miou_by_k", {}).values() for k in v})]])
        if ttt.get("miou_by_k") else "<p>TTT-KD was not evaluated.</p>",
        "<h2>Deployment on the graph</h2>",
        f"<p>model v{deploy.get('model_version', '—')} hot-loaded by the perception nodes: "
        f"{'yes' if deploy.get('hot_loaded') else 'no'}; deployment period {deploy.get('seconds', '—')} s.</p>",
        _table(out_rows, ["output topic", "messages", "rate Hz", "latency p50 ms", "latency p99 ms"]),
        "<h2>Figures</h2>",
        *[f"<figure><img class='{'sample' if p.name.startswith('sample') else 'plot'}' src='{p.name}'>"
          f"<figcaption>{html.escape(name)}</figcaption></figure>" for name, p in figures.items() if p],
        "<h2>Run</h2>",
        f"<pre>{html.escape(json.dumps(metrics.get('budget', {}), indent=2))}</pre>",
    ]
    style = ("body{font-family:sans-serif;max-width:1000px;margin:2em auto}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:4px 8px}img{max-width:100%}"
             "img.sample{width:512px;image-rendering:pixelated}.verdict{font-size:1.1em;"
             "background:#f4f4f4;padding:8px}")
    page = "<!doctype html><html><head><meta charset=utf-8><title>tst_ros report</title>" \
           f"<style>{style}</style></head><body>{''.join(sections)}</body></html>"
    (out / "index.html").write_text(page)
    return out / "index.html"
