"""Compute scaling of specialisation (`tst-ros bench specialization --scaling`): held-out seg
mIoU (all classes and things) against pre-training minutes on this CPU, for TST-MM (fed RGB + depth,
and fed RGB only) and TST-MAE, with `tst_ros.bench.specialization`'s data, transfer and evaluation,
on preset `tiny-imagenet` (colour through the ImageNet backbone; or `preset`).

The step count of each point comes from a short timed run of the method, its first steps
(start-up) not counted, so both methods get the same minutes, whatever their step cost. Each
method is pre-trained once for the longest budget (the two methods in parallel processes, one
core each); the points are snapshots of that run
(`pretrain(stop_at=...)` checkpoints and resumes, keeping the schedule of the whole run), each
transferred with a frozen encoder and evaluated on the held-out frames. A snapshot early in a
long cosine schedule has not been annealed, so the early points understate what a run of
that length alone would reach. Minutes are the pre-training loop's measured wall time. A
least-squares fit of mIoU on log(minutes) says where each target would be reached if the
trend held (`reached_at_min`; None when the trend does not rise or only beyond 100x the longest
run); the same fit of the margin of TST-MM fed RGB over TST-MAE says where it would reach
RGB_MARGIN_TARGET. One seed.
"""
from __future__ import annotations

import logging
import math
import multiprocessing
import shutil
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from tst_ros.bench import specialization as spec

METHODS = ("tst-mm", "tst-mae")
MINUTES = {"quick": [0.05, 0.1], "full": [2, 5, 15, 40]}       # pre-training minutes of the snapshots
CALIBRATION_STEPS = {"quick": 2, "full": 12}
WARM_STEPS = 2
TARGETS = {"seg_miou": 30.0, "things_miou": 20.0}
RGB_ROW = "tst-mm (rgb input)"      # TST-MM's curve with colour alone at transfer and evaluation
RGB_MARGIN_TARGET = 2.0            # seg mIoU of TST-MM fed RGB over TST-MAE
PLOT = "specialization_scaling.png"
TICKS_MIN = [0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 40, 100]


def _log(msg: str) -> None:
    logging.getLogger("tst_ros.bench.scaling").info(msg)


def steps_for(method: str, store: Path, out: Path, budget: dict, minutes: list[float], calibration: int,
              seed: int, preset: str) -> list[int]:
    """The step counts that take `minutes` on this machine, from a short timed run of `method`
    whose first WARM_STEPS (start-up: allocation, first batches) are not timed."""
    from tst_ros.train.pretrain import pretrain

    cfg = spec.pretrain_config(method, WARM_STEPS + calibration, budget, seed, preset)
    pretrain(cfg, str(store), out, stop_at=WARM_STEPS)
    per_step = pretrain(cfg, str(store), out, resume=True)["elapsed_s"] / calibration
    return sorted({max(1, int(round(m * 60 / per_step))) for m in minutes})


def snapshots(method: str, store: Path, out: Path, budget: dict, points: list[int], seed: int,
              preset: str) -> list[dict]:
    """Pre-train `method` to max(points) steps, keeping the encoder at every point -> [{steps, minutes, encoder}]."""
    from tst_ros.models.io import ENCODER_FILE
    from tst_ros.train.pretrain import pretrain

    total = max(points)
    cfg = spec.pretrain_config(method, total, budget, seed, preset)
    seconds, out_points = 0.0, []
    for i, point in enumerate(sorted(points)):
        summary = pretrain(cfg, str(store), out / "run", resume=i > 0, stop_at=point if point < total else None)
        seconds += summary["elapsed_s"]
        snapshot = out / f"encoder-{point}.safetensors"
        shutil.copyfile(out / "run" / ENCODER_FILE, snapshot)
        out_points.append({"steps": point, "minutes": round(seconds / 60, 2), "encoder": str(snapshot)})
        _log(f"{method}: {point} steps after {seconds / 60:.1f} min")
    return out_points


def evaluate_point(encoder: str, paths: dict, out: Path, budget: dict, seed: int,
                   inputs: list[str] | None = None) -> dict:
    """Transfer from `encoder` (fed `inputs`; None: its camera images) and evaluate on the held-out frames."""
    from tst_ros.config import TransferConfig
    from tst_ros.perception.transfer import evaluate, transfer

    # A frozen encoder, unlike the loop's default, so that the curve measures pre-training alone.
    cfg = TransferConfig(steps=budget["transfer_steps"], batch=budget["transfer_batch"], finetune="frozen",
                         seed=seed, labeled_images=budget["labeled_images"])
    transfer(encoder, str(paths["other"]), str(out), cfg, input_modalities=inputs, show_bar=False)
    metrics = spec.row_metrics(evaluate(str(out), str(paths["held_out"])))
    return {k: round(metrics[k], 2) for k in ("seg_miou", "things_miou", "stuff_miou", "det_map50")}


def method_curves(method: str, paths: dict, tmp: Path, budget: dict, minutes: list[float], calibration: int,
                  seed: int, preset: str) -> dict[str, list[dict]]:
    """{curve: points} of `method` (TST-MM also fed RGB only, as RGB_ROW)."""
    import torch

    torch.set_num_threads(spec.TORCH_THREADS)
    points = steps_for(method, paths["store"], tmp / f"{method}-calibration", budget, minutes, calibration, seed,
                       preset)
    snaps = snapshots(method, paths["store"], tmp / method, budget, points, seed, preset)
    feeds = {method: None, **({RGB_ROW: ["rgb"]} if method == "tst-mm" else {})}
    return {curve: [{"steps": s["steps"], "minutes": s["minutes"],
                     **evaluate_point(s["encoder"], paths, tmp / f"{curve}-{s['steps']}".replace(" ", "_"), budget,
                                      seed, inputs)} for s in snaps]
            for curve, inputs in feeds.items()}


def reached_at(minutes: list[float], values: list[float], target: float) -> float | None:
    """Minutes at which the least-squares line of value on log(minutes) crosses `target`."""
    if len(minutes) < 2:
        return None
    slope, intercept = np.polyfit(np.log(minutes), values, 1)
    if max(values) >= target:
        return float(min(m for m, v in zip(minutes, values) if v >= target))
    if slope <= 0 or (target - intercept) / slope > math.log(100 * max(minutes)):
        return None
    return round(float(math.exp((target - intercept) / slope)), 1)


def _log_minutes_axis(ax, spanned: list[float]) -> None:
    from matplotlib import ticker

    ax.set_xscale("log")
    ax.set_xticks([t for t in TICKS_MIN if min(spanned) / 2 <= t <= max(spanned) * 2])
    ax.xaxis.set_major_formatter(ticker.ScalarFormatter())
    ax.xaxis.set_minor_formatter(ticker.NullFormatter())
    ax.set_xlabel("pre-training minutes on this CPU (1 thread)")
    ax.grid(alpha=0.3)


def plot(curves: dict, scratch: dict, margin: dict, path: Path) -> Path:
    """seg mIoU and things mIoU per curve, and the margin of TST-MM fed RGB over TST-MAE."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    spanned = [p["minutes"] for points in curves.values() for p in points]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4), sharex=True)
    for ax, metric, title in zip(axes, ("seg_miou", "things_miou"), ("seg mIoU (all classes)", "things mIoU")):
        for method, points in curves.items():
            ax.plot([p["minutes"] for p in points], [p[metric] for p in points], "o-", label=method)
        ax.axhline(scratch[metric], color="grey", linestyle=":", label="scratch (no pre-training)")
        ax.axhline(TARGETS[metric], color="red", linestyle="--", label=f"target {TARGETS[metric]:.0f}")
        _log_minutes_axis(ax, spanned)
        ax.set_ylabel("%")
        ax.set_title(title)
    axes[0].legend(fontsize=8)
    ax = axes[2]
    ax.plot(margin["minutes"], margin["seg_miou_margin"], "o-", color="purple")
    ax.axhline(margin["target"], color="red", linestyle="--", label=f"target +{margin['target']:.0f}")
    ax.axhline(0, color="grey", linestyle=":")
    _log_minutes_axis(ax, spanned)
    ax.set_ylabel("seg mIoU points")
    ax.set_title(f"{RGB_ROW} minus tst-mae")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def rgb_margin(curves: dict) -> dict:
    """TST-MM fed RGB minus TST-MAE (seg mIoU) at each pair of points, and where its fit on
    log(minutes) reaches RGB_MARGIN_TARGET."""
    pairs = list(zip(curves[RGB_ROW], curves["tst-mae"]))
    minutes = [round((a["minutes"] + b["minutes"]) / 2, 2) for a, b in pairs]
    margins = [round(a["seg_miou"] - b["seg_miou"], 2) for a, b in pairs]
    return {"minutes": minutes, "seg_miou_margin": margins, "target": RGB_MARGIN_TARGET,
            "reached_at_min": reached_at(minutes, margins, RGB_MARGIN_TARGET)}


def run(quick: bool = False, seed: int = 0, preset: str | None = None, building: str = spec.TEST_BUILDING) -> dict:
    import torch

    preset = preset or spec.COLOUR_STEM_PRESET
    key = "quick" if quick else "full"
    budget, minutes = spec.BUDGETS[key], MINUTES[key]
    torch.set_num_threads(spec.TORCH_THREADS)
    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="tst-bench-scaling-") as tmp:
        tmp = Path(tmp)
        paths = spec.build_data(tmp, budget, building=building)
        scratch = evaluate_point("scratch", paths, tmp / "scratch", budget, seed)
        # one process per method: the two curves are measured side by side, one core each
        with ProcessPoolExecutor(len(METHODS), mp_context=multiprocessing.get_context("spawn")) as pool:
            jobs = [pool.submit(method_curves, m, paths, tmp, budget, minutes, CALIBRATION_STEPS[key], seed, preset)
                    for m in METHODS]
            curves = {curve: points for job in jobs for curve, points in job.result().items()}
    spec.OUT_DIR.mkdir(exist_ok=True)
    margin = rgb_margin(curves)
    figure = plot(curves, scratch, margin, spec.OUT_DIR / (PLOT.replace(".png", "_quick.png") if quick else PLOT))
    reached = {m: {metric: reached_at([p["minutes"] for p in c], [p[metric] for p in c], target)
                   for metric, target in TARGETS.items()} for m, c in curves.items()}
    return {"seed": seed, "preset": preset, "test_building": building, "minutes_planned": minutes,
            "scratch": scratch, "curves": curves, "targets": TARGETS, "reached_at_min": reached,
            "rgb_margin_over_tst_mae": margin, "plot": str(figure),
            "total_seconds": round(time.perf_counter() - t_all, 1)}
