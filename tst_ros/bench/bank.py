"""Per-building adapter bank: entry swap latency and building recognition accuracy.

Protocol:
  1. a base encoder (preset tiny at 128 px, random init: recognition needs no
     training, and every entry shares it) and one entry per building: heads transferred on
     the frozen base from a labeled set of other buildings (`transfer`, short budget, one seed
     per building, so the entries differ), fingerprinted (`bank add`, K = 8 prototypes) on
     `FINGERPRINT_FRAMES` frames spread over the building's first trajectory lap;
  2. swap latency: `BankModel.activate` alternating between two entries `swaps` times (after
     the first activation, which builds the model: reported as `first_activation_ms`);
  3. recognition: a simulator tour (`tst_ros.sim.tour`) through the buildings, from a frame
     index past every fingerprint frame, fed to `BuildingRecognizer` as the node does (the
     perception defaults: every `recognition_every`-th frame, `recognition_window`,
     `switch_after`; no entry active at the start). After each transition (and the start)
     `settle_frames` = (recognition_window + switch_after) * recognition_every frames are
     excluded; the rest of each building's stretch is cut into 1-second windows (at the
     simulator's frame rate) and a window counts as correct when the recognizer's active entry
     equals the true building on every frame of it.
"""
from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path

import numpy as np

BUDGETS = {
    "quick": {"buildings": ["home:0", "office:1", "loft:2"], "seconds": 10.0, "passes": 1, "swaps": 100,
              "labeled_images": 24, "transfer_steps": 20},
    "full": {"buildings": ["home:0", "office:1", "loft:2", "home:3"], "seconds": 20.0, "passes": 2, "swaps": 1000,
             "labeled_images": 120, "transfer_steps": 150},
}
FINGERPRINT_FRAMES = 40
TORCH_THREADS = 1


def _log(msg: str) -> None:
    logging.getLogger("tst_ros.bench.bank").info(msg)


def build_bank(tmp: Path, budget: dict, cfg) -> tuple[Path, int]:
    """The base, one transferred + fingerprinted entry per building; returns (bank, first tour frame)."""
    import torch

    from tst_ros.config import TransferConfig
    from tst_ros.models import build_encoder, save_encoder
    from tst_ros.perception import bank
    from tst_ros.perception.transfer import transfer
    from tst_ros.sim import Simulator, labeled_set
    from tst_ros.sim.tour import Building

    torch.manual_seed(0)
    base = save_encoder(build_encoder("tiny", ["rgb", "depth"], 128, 16), tmp / "base" / "encoder.safetensors")
    labeled_set.write(tmp / "labeled", budget["labeled_images"], seed=1000, progress=False)
    last_lap = 0
    for i, text in enumerate(budget["buildings"]):
        b = Building.parse(text)
        lap = int(Simulator(_building_cfg(cfg, b)).trajectory.period_s * cfg.camera_rate_hz)
        last_lap = max(last_lap, lap)
        frames = tmp / f"frames-{i}"
        labeled_set.write(frames, FINGERPRINT_FRAMES, styles=[b.style], seed=b.seed, width=cfg.width,
                          height=cfg.height, span_frames=lap, progress=False)
        model = tmp / f"model-{i}"
        transfer(str(base), str(tmp / "labeled"), str(model), TransferConfig(
            steps=budget["transfer_steps"], batch=8, seed=i, labeled_images=budget["labeled_images"]),
            input_modalities=["rgb"], show_bar=False)
        bank.add_entry(tmp / "bank", b.label.replace(":", "-"), model, frames, base=str(base), building=b.label,
                       progress=False)
        _log(f"entry for {b.label} added")
    return tmp / "bank", last_lap + 1


def _building_cfg(cfg, building):
    from tst_ros.config import SimConfig
    return SimConfig(**{**vars(cfg), "seed": building.seed, "style": building.style})


def swap_latency(served, names: list[str], swaps: int) -> dict:
    served.activate(names[0])
    first_ms = served.swap_ms[-1]
    served.swap_ms.clear()
    for k in range(swaps):
        served.activate(names[(k + 1) % 2])
    ms = np.array(served.swap_ms)
    return {"p50": round(float(np.percentile(ms, 50)), 3), "p99": round(float(np.percentile(ms, 99)), 3),
            "n": int(len(ms)), "first_activation_ms": round(first_ms, 1)}


def settled_windows(active: list, truth: list, stretch: int, settle: int, window: int) -> list[bool]:
    """Per `window`-frame window of each `stretch`-frame building visit, after its first `settle`
    frames: whether the active entry was the true one on every frame of it."""
    correct = []
    for start in range(0, len(truth), stretch):
        for w in range(start + settle, start + stretch - window + 1, window):
            correct.append(all(active[k] == truth[k] for k in range(w, w + window)))
    return correct


def recognition(served, cfg, budget: dict, start_frame: int, perception) -> dict:
    from tst_ros.perception.recognition import BuildingRecognizer
    from tst_ros.sim.tour import Tour

    tour = Tour(cfg, budget["buildings"], budget["seconds"], start_frame=start_frame)
    entry_of = {b: b.replace(":", "-") for b in budget["buildings"]}
    rec = BuildingRecognizer(served.fingerprints(), None, perception.recognition_window, perception.switch_after)
    n = tour.frames_per_building * len(budget["buildings"]) * budget["passes"]
    active = []
    for i in range(n):
        if i % perception.recognition_every == 0:
            frame = tour.frame(i)
            rec.update(frame.stamp_ns, served.embed(frame.rgb))
        active.append(rec.active)
    truth = [entry_of[b] for b in tour.labels(n)]
    settle = (perception.recognition_window + perception.switch_after) * perception.recognition_every
    window = int(round(cfg.camera_rate_hz))
    correct = settled_windows(active, truth, tour.frames_per_building, settle, window)
    return {"accuracy": round(float(np.mean(correct)), 4), "windows": len(correct), "settle_frames": settle,
            "window_frames": window, "frames": n, "frame_rate_hz": cfg.camera_rate_hz,
            "frame_accuracy": round(float(np.mean([a == t for a, t in zip(active, truth)])), 4)}


def run(quick: bool = False) -> dict:
    import torch

    from tst_ros.config import PerceptionConfig, SimConfig
    from tst_ros.perception.bank import list_entries
    from tst_ros.perception.bank_model import BankModel

    budget = BUDGETS["quick" if quick else "full"]
    torch.set_num_threads(TORCH_THREADS)
    cfg, perception = SimConfig(cloud_rate_hz=0.0), PerceptionConfig()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="tst-bench-bank-") as tmp:
        bank_dir, start_frame = build_bank(Path(tmp), budget, cfg)
        served = BankModel(bank_dir)
        names = served.names()
        swap = swap_latency(served, names, budget["swaps"])
        _log(f"swap p50 {swap['p50']} ms, p99 {swap['p99']} ms")
        recog = recognition(served, cfg, budget, start_frame, perception)
        entries = {r["name"]: {"stored_params": r["stored_params"], "model_params": r["model_params"],
                               "stored_bytes": r["stored_bytes"], "model_bytes": r["model_bytes"]}
                   for r in list_entries(bank_dir)}
    return {"swap_ms": swap, "recognition_accuracy": recog["accuracy"], "recognition": recog,
            "buildings": budget["buildings"], "seconds": budget["seconds"], "passes": budget["passes"],
            "recognizer": {"recognition_every": perception.recognition_every,
                           "recognition_window": perception.recognition_window,
                           "switch_after": perception.switch_after},
            "base": "tiny preset, 128 px, random init (frozen)", "entries": entries,
            "torch_threads": torch.get_num_threads(), "total_seconds": round(time.perf_counter() - t0, 1)}
