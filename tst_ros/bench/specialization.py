"""Paper-table benchmark: on one test building and at the same budget, scratch vs TST-MAE vs
TST-MM, measured by segmentation mIoU and detection mAP on held-out frames of that building.

Pipeline per method (same seeds, steps and data for all):
  1. unlabeled store of the TEST building (seed 0, style home) via `data.from_sim.build_dataset`;
  2. pre-training with the TST engine (`train.pretrain.pretrain`; `scratch` = random init);
  3. transfer of segmentation + detection heads on a labeled set from OTHER buildings
     (seeds >= 1000, SOURCE_STYLES) with the same steps/batch/fine-tuning mode;
  4. evaluation on held-out frames of the test building (frames after the recorded ones).
An extra row evaluates TST-MM with RGB input only, separating the pre-training effect from
the depth input. A PNG shows sample predictions side by side (RGB, ground truth, each method).
"""
from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path

import numpy as np

SEED = 0
OUT_DIR = Path("bench")

BUDGETS = {
    "quick": {"record_frames": 24, "pretrain_steps": 6, "pretrain_batch": 8, "pretrain_lr": 1e-3, "labeled_images": 24,
              "transfer_steps": 20, "transfer_batch": 8, "eval_images": 8, "finetune": "frozen"},
    "full": {"record_frames": 200, "pretrain_steps": 200, "pretrain_batch": 16, "pretrain_lr": 1e-3,
             "labeled_images": 240, "transfer_steps": 300, "transfer_batch": 16, "eval_images": 60, "finetune": "frozen"},
}
# One intra-op thread: on a shared 2-core machine multi-threaded torch stalls on contended
# cores (measured 10x slower per step under load); results are recorded with the count used.
TORCH_THREADS = 1
METHODS = [("scratch", "scratch", None), ("tst-mae", "tst-mae", None), ("tst-mm", "tst-mm", None),
           ("tst-mm (rgb input)", "tst-mm", ["rgb"])]


def _log(msg: str) -> None:
    logging.getLogger("tst_ros.bench.specialization").info(msg)


def _pretrain(method: str, store: Path, out: Path, budget: dict) -> str:
    from tst_ros.config import PretrainConfig
    from tst_ros.train.pretrain import pretrain

    steps = budget["pretrain_steps"]
    cfg = PretrainConfig(preset="tiny", method=method, steps=steps, batch=budget["pretrain_batch"],
                         lr=budget["pretrain_lr"], warmup_steps=max(1, steps // 10), image_size=128, patch=16,
                         seed=SEED, workers=0, checkpoint_every=0, device="cpu")
    for name, value in (("tensorboard", False), ("val_batches", 1)):
        if hasattr(cfg, name):
            setattr(cfg, name, value)
    summary = pretrain(cfg, str(store), out)
    return summary["encoder"]


def sample_figure(model_dirs: dict[str, str], eval_dir: Path, path: Path, rows: int = 3) -> Path:
    """RGB | ground truth | one column per method (mask overlay + boxes); one row per eval image."""
    import cv2

    from tst_ros.perception.runtime import Predictor, overlay, palette
    from tst_ros.perception.transfer import depth_metres, load_labeled
    from tst_ros.util import atomic_write_bytes

    items, classes, _ = load_labeled(eval_dir)
    picks = np.linspace(0, len(items) - 1, min(rows, len(items))).astype(int)
    colours = palette(len(classes))
    predictors = {name: Predictor.load(d) for name, d in model_dirs.items()}

    def caption(img: np.ndarray, text: str) -> np.ndarray:
        bar = np.full((18, img.shape[1], 3), 255, np.uint8)
        cv2.putText(bar, text, (4, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
        return np.vstack([bar, img])

    def boxes_on(img, boxes, labels, colour_of):
        img = img.copy()
        for b, l in zip(np.asarray(boxes).astype(int), labels):
            c = tuple(int(v) for v in colour_of[int(l)])
            cv2.rectangle(img, (b[0], b[1]), (b[2], b[3]), (255, 255, 255), 2)
            cv2.rectangle(img, (b[0], b[1]), (b[2], b[3]), c, 1)
            cv2.putText(img, classes[int(l)], (b[0] + 2, b[1] + 10), cv2.FONT_HERSHEY_SIMPLEX, 0.3, (255, 255, 255), 1)
        return img

    grid = []
    for r in picks:
        it = items[r]
        rgb = it["rgb"]
        cells = [caption(rgb, "input"),
                 caption(boxes_on(overlay(rgb, it["semantic"], colours), it["boxes"], it["labels"], colours),
                         "ground truth")]
        for name, pred in predictors.items():
            p = pred.predict(rgb, depth_metres(it) if pred.uses_depth else None, score_threshold=0.3)
            cells.append(caption(boxes_on(overlay(rgb, p.mask, colours), p.boxes, p.labels, colours), name))
        grid.append(np.hstack([np.pad(c, ((2, 2), (2, 2), (0, 0)), constant_values=255) for c in cells]))
    image = np.vstack(grid)
    ok, buf = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    if not ok:
        raise RuntimeError("PNG encoding failed")
    atomic_write_bytes(path, buf.tobytes())
    return path


def run(quick: bool = False) -> dict:
    import torch

    from tst_ros.config import RecordConfig, SimConfig, TransferConfig
    from tst_ros.data.from_sim import build_dataset
    from tst_ros.perception.transfer import evaluate, transfer
    from tst_ros.sim import labeled_set

    budget = BUDGETS["quick" if quick else "full"]
    torch.set_num_threads(TORCH_THREADS)
    torch.manual_seed(SEED)
    out: dict = {"seed": SEED, "test_building": "seed 0, style home", **{f"budget.{k}": v for k, v in budget.items()},
                 "encoder": "tiny preset, 128 px, patch 16", "torch_threads": torch.get_num_threads()}
    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="tst-bench-spec-") as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        store = tmp / "store"
        build_dataset(SimConfig(), RecordConfig(dataset=str(store), image_size=128), budget["record_frames"], store)
        labeled = tmp / "labeled"
        labeled_set.write(labeled, budget["labeled_images"], seed=1000, progress=False)
        held_out = tmp / "held_out"
        labeled_set.write(held_out, budget["eval_images"], styles=["home"], seed=0,
                          start_frame=budget["record_frames"] + 7, progress=False)
        out["data_seconds"] = round(time.perf_counter() - t0, 1)
        out["eval_frames_start"] = budget["record_frames"] + 7
        encoders: dict[str, str] = {}
        for method in ("scratch", "tst-mae", "tst-mm"):
            _log(f"pre-training {method}")
            t0 = time.perf_counter()
            encoders[method] = _pretrain(method, store, tmp / f"pretrain-{method}", budget)
            out[f"{method}.pretrain_seconds"] = round(time.perf_counter() - t0, 1)
        model_dirs = {}
        rows = []
        for name, method, inputs in METHODS:
            _log(f"transfer + eval {name}")
            cfg = TransferConfig(steps=budget["transfer_steps"], batch=budget["transfer_batch"],
                                 finetune=budget["finetune"], seed=SEED, labeled_images=budget["labeled_images"])
            model_dir = tmp / f"model-{method}-{'-'.join(inputs or ['auto'])}"
            summary = transfer(encoders[method], str(labeled), str(model_dir), cfg, input_modalities=inputs,
                               show_bar=False)
            result = evaluate(str(model_dir), str(held_out))
            model_dirs[name] = str(model_dir)
            out[f"{name}.miou"] = round(100 * result["miou"], 2)
            out[f"{name}.map"] = round(100 * result["map"], 2)
            out[f"{name}.map50"] = round(100 * result["map50"], 2)
            out[f"{name}.inputs"] = ",".join(inputs or (["rgb", "depth"] if method == "tst-mm" else ["rgb"]))
            out[f"{name}.transfer_seconds"] = summary["seconds"]
            out[f"{name}.transfer_final_loss"] = round(summary["final_loss"]["loss"], 4)
            rows.append((name, out[f"{name}.miou"], out[f"{name}.map"], out[f"{name}.map50"]))
        OUT_DIR.mkdir(exist_ok=True)
        png = OUT_DIR / ("specialization_samples_quick.png" if quick else "specialization_samples.png")
        sample_figure({n: d for n, d in model_dirs.items() if n != "tst-mm (rgb input)"}, held_out, png)
        out["figure"] = str(png)
    miou = {n: m for n, m, _, _ in rows}
    mAP = {n: a for n, _, a, _ in rows}
    out["ordering_miou"] = " < ".join(sorted(miou, key=miou.get))
    out["ordering_map"] = " < ".join(sorted(mAP, key=mAP.get))
    out["paper_ordering_miou_holds"] = bool(miou["scratch"] < miou["tst-mae"] < miou["tst-mm"])
    out["paper_ordering_map_holds"] = bool(mAP["scratch"] < mAP["tst-mae"] < mAP["tst-mm"])
    out["table_markdown"] = "\n".join(["| method | inputs | mIoU | mAP@[.5:.95] | mAP@.5 |", "|---|---|---|---|---|"]
                                      + [f"| {n} | {out[f'{n}.inputs']} | {m:.1f} | {a:.1f} | {a50:.1f} |"
                                         for n, m, a, a50 in rows])
    out["total_seconds"] = round(time.perf_counter() - t_all, 1)
    return out
