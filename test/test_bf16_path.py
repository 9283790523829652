"""The GPU path's numerics where CI has no GPU: the benchmark's pre-training, transfer and
evaluation with the bf16 autocast that CUDA runs use, forced onto the CPU."""
import math

import torch

from tst_ros.train import engine


def test_pretraining_transfer_and_evaluation_run_under_bf16_autocast(tmp_path, monkeypatch):
    from tst_ros.bench import data, specialization as spec
    from tst_ros.bench.seed_runs import METRICS

    entered = []

    def cpu_bf16(device, bf16=True):
        entered.append(str(device))
        return torch.autocast("cpu", dtype=torch.bfloat16)
    monkeypatch.setattr(engine, "autocast", cpu_bf16)
    budget = {**spec.BUDGETS["quick"], "record_frames": 8, "labeled_images": 8, "eval_images": 2,
              "pretrain_steps": 2, "pretrain_batch": 4, "transfer_steps": 2, "transfer_batch": 4}
    paths = data.bench_data(tmp_path / "data", budget)
    rows = spec.run_seed(0, paths, tmp_path, budget, [r for r in spec.ROWS if r[0] == "tst-mm"], spec.PRETRAININGS)
    assert len(entered) >= 2 * 2          # every pre-training and every transfer step ran under it
    assert all(math.isfinite(rows["tst-mm"][m]) and rows["tst-mm"][m] >= 0 for m in METRICS)
    assert rows["tst-mm"]["per_class_iou"]
