"""Compute scaling of specialisation (`tst-ros bench specialization --scaling`): held-out seg
mIoU (all classes and things) against pre-training minutes on this CPU, for TST-MM and TST-MAE,
with `tst_ros.bench.specialization`'s data, transfer and evaluation.

The step count of each point comes from a short timed run of the method (so both methods get
the same minutes, whatever their step cost). Each method is pre-trained once for the longest
budget (the two methods in parallel processes, one core each); the points are snapshots of that run
(`pretrain(stop_at=...)` checkpoints and resumes, keeping the schedule of the whole run), each
transferred with a frozen encoder and evaluated on the held-out frames. A snapshot early in a
long cosine schedule has not been annealed, so the early points understate what a run of
that length alone would reach. Minutes are the pre-training loop's measured wall time. A
least-squares fit of mIoU on log(minutes) says where each target would be reached if the
trend held (`reached_at_min`; None when the trend does not rise or only beyond 100x the longest
run). One seed.
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
TARGETS = {"seg_miou": 30.0, "things_miou": 20.0}
PLOT = "specialization_scaling.png"
TICKS_MIN = [0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 40, 100]


def _log(msg: str) -> None:
    logging.getLogger("tst_ros.bench.scaling").info(msg)


def _config(method: str, steps: int, budget: dict, seed: int):
    from tst_ros.config import PretrainConfig

    return PretrainConfig(preset="tiny", method=method, steps=steps, batch=budget["pretrain_batch"],
                          lr=budget["pretrain_lr"], warmup_steps=max(1, steps // 10), image_size=128, patch=16,
                          seed=seed, workers=0, checkpoint_every=0, device="cpu", tensorboard=False, val_batches=1,
                          modalities=spec.sensor_modalities() if method == "tst-mm" else ["rgb"])


def steps_for(method: str, store: Path, out: Path, budget: dict, minutes: list[float], calibration: int,
              seed: int) -> list[int]:
    """The step counts that take `minutes` on this machine, from a short timed run of `method`."""
    from tst_ros.train.pretrain import pretrain

    summary = pretrain(_config(method, calibration, budget, seed), str(store), out)
    per_step = summary["elapsed_s"] / calibration
    return sorted({max(1, int(round(m * 60 / per_step))) for m in minutes})


def snapshots(method: str, store: Path, out: Path, budget: dict, points: list[int], seed: int) -> list[dict]:
    """Pre-train `method` to max(points) steps, keeping the encoder at every point -> [{steps, minutes, encoder}]."""
    from tst_ros.models.io import ENCODER_FILE
    from tst_ros.train.pretrain import pretrain

    total = max(points)
    cfg = _config(method, total, budget, seed)
    seconds, out_points = 0.0, []
    for i, point in enumerate(sorted(points)):
        summary = pretrain(cfg, str(store), out / "run", resume=i > 0, stop_at=point if point < total else None)
        seconds += summary["elapsed_s"]
        snapshot = out / f"encoder-{point}.safetensors"
        shutil.copyfile(out / "run" / ENCODER_FILE, snapshot)
        out_points.append({"steps": point, "minutes": round(seconds / 60, 2), "encoder": str(snapshot)})
        _log(f"{method}: {point} steps after {seconds / 60:.1f} min")
    return out_points


def evaluate_point(encoder: str, paths: dict, out: Path, budget: dict, seed: int) -> dict:
    from tst_ros.config import TransferConfig
    from tst_ros.perception.transfer import evaluate, transfer

    cfg = TransferConfig(steps=budget["transfer_steps"], batch=budget["transfer_batch"], finetune=budget["finetune"],
                         seed=seed, labeled_images=budget["labeled_images"])
    transfer(encoder, str(paths["other"]), str(out), cfg, show_bar=False)
    metrics = spec.row_metrics(evaluate(str(out), str(paths["held_out"])))
    return {k: round(metrics[k], 2) for k in ("seg_miou", "things_miou", "stuff_miou", "det_map50")}


def method_curve(method: str, paths: dict, tmp: Path, budget: dict, minutes: list[float], calibration: int,
                 seed: int) -> list[dict]:
    import torch

    torch.set_num_threads(spec.TORCH_THREADS)
    points = steps_for(method, paths["store"], tmp / f"{method}-calibration", budget, minutes, calibration, seed)
    snaps = snapshots(method, paths["store"], tmp / method, budget, points, seed)
    return [{"steps": s["steps"], "minutes": s["minutes"],
             **evaluate_point(s["encoder"], paths, tmp / f"{method}-{s['steps']}", budget, seed)} for s in snaps]


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


def plot(curves: dict, scratch: dict, path: Path) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import ticker

    spanned = [p["minutes"] for points in curves.values() for p in points]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharex=True)
    for ax, metric, title in zip(axes, ("seg_miou", "things_miou"), ("seg mIoU (all classes)", "things mIoU")):
        for method, points in curves.items():
            ax.plot([p["minutes"] for p in points], [p[metric] for p in points], "o-", label=method)
        ax.axhline(scratch[metric], color="grey", linestyle=":", label="scratch (no pre-training)")
        ax.axhline(TARGETS[metric], color="red", linestyle="--", label=f"target {TARGETS[metric]:.0f}")
        ax.set_xscale("log")
        ax.set_xticks([t for t in TICKS_MIN if min(spanned) / 2 <= t <= max(spanned) * 2])
        ax.xaxis.set_major_formatter(ticker.ScalarFormatter())
        ax.xaxis.set_minor_formatter(ticker.NullFormatter())
        ax.set_xlabel("pre-training minutes on this CPU (1 thread)")
        ax.set_ylabel("%")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def run(quick: bool = False, seed: int = 0) -> dict:
    import torch

    key = "quick" if quick else "full"
    budget, minutes = spec.BUDGETS[key], MINUTES[key]
    torch.set_num_threads(spec.TORCH_THREADS)
    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="tst-bench-scaling-") as tmp:
        tmp = Path(tmp)
        paths = spec.build_data(tmp, budget)
        scratch = evaluate_point("scratch", paths, tmp / "scratch", budget, seed)
        # one process per method: the two curves are measured side by side, one core each
        with ProcessPoolExecutor(len(METHODS), mp_context=multiprocessing.get_context("spawn")) as pool:
            jobs = {m: pool.submit(method_curve, m, paths, tmp, budget, minutes, CALIBRATION_STEPS[key], seed)
                    for m in METHODS}
            curves = {m: job.result() for m, job in jobs.items()}
    spec.OUT_DIR.mkdir(exist_ok=True)
    figure = plot(curves, scratch, spec.OUT_DIR / (PLOT.replace(".png", "_quick.png") if quick else PLOT))
    reached = {m: {metric: reached_at([p["minutes"] for p in c], [p[metric] for p in c], target)
                   for metric, target in TARGETS.items()} for m, c in curves.items()}
    return {"seed": seed, "minutes_planned": minutes, "scratch": scratch, "curves": curves, "targets": TARGETS,
            "reached_at_min": reached, "plot": str(figure), "total_seconds": round(time.perf_counter() - t_all, 1)}
