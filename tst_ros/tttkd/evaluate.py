"""mIoU of TTT-KD point labels before and after k adaptation steps (episodic, per cloud).

For each cloud the adapter takes max(ks) steps one at a time and predicts after 0 and after
each k in `ks`, so one adaptation run gives every point of the mIoU-vs-k curve; the weights
are restored bit-exactly before the next cloud. Labels are scored on every input point.
"""
from __future__ import annotations

import numpy as np
import torch

from tst_ros.perception.metrics import SegmentationMeter
from tst_ros.tttkd.adapt import UNLABELED, TestTimeAdapter, voxel_downsample
from tst_ros.tttkd.train import SceneCloud


def predict_over_k(adapter: TestTimeAdapter, cloud: SceneCloud, ks: list[int]) -> dict[int, np.ndarray]:
    """-> {k: (N,) labels after k distillation steps} for one cloud (weights restored afterwards)."""
    finite = np.isfinite(cloud.xyz).all(axis=1)
    rgb = None if cloud.rgb is None else cloud.rgb[finite]
    down = voxel_downsample(cloud.xyz[finite], rgb, adapter.voxel_size, adapter.point_budget)
    batch = adapter.prepare(down.xyz, down.rgb, cloud.T_odom_ref)
    targets, valid = adapter.targets(down.xyz, cloud.T_odom_ref, cloud.views)
    out: dict[int, np.ndarray] = {}
    done = 0
    try:
        for k in sorted(set(ks)):
            if k > done and int(valid.sum()) >= adapter.min_valid_points:
                adapter.adapt(batch, targets, valid, k - done)
                done = k
            with torch.no_grad():
                logits, _ = adapter.model(batch)
            labels = np.full(len(cloud.xyz), UNLABELED, np.int64)
            labels[finite] = logits.argmax(1).cpu().numpy()[down.inverse]
            out[k] = labels
    finally:
        adapter.restore()
    return out


def evaluate_clouds(adapter: TestTimeAdapter, clouds: list[SceneCloud], ks: list[int], num_classes: int,
                    class_names: list[str] | None = None, progress=None) -> dict[int, dict]:
    """-> {k: segmentation report (miou, pixel_accuracy = point accuracy, per_class)}."""
    meters = {k: SegmentationMeter(num_classes, ignore_index=UNLABELED) for k in ks}
    for cloud in clouds:
        for k, labels in predict_over_k(adapter, cloud, ks).items():
            meters[k].update(labels, cloud.labels)
        if progress is not None:
            progress.update(1)
    return {k: m.report(class_names) for k, m in meters.items()}


def teacher_label_miou(clouds: list[SceneCloud], num_classes: int, tol: float) -> dict:
    """A class-probability teacher's own labels projected onto the points (argmax of the averaged
    views; points no view sees stay unlabelled and count as misses): the 2D model's figure on
    the same clouds, for comparison with the point network's."""
    from tst_ros.tttkd.projection import project_features

    meter = SegmentationMeter(num_classes, ignore_index=UNLABELED)
    seen = []
    for cloud in clouds:
        probs, valid = project_features(cloud.xyz, cloud.T_odom_ref, cloud.views, tol=tol)
        labels = np.full(len(cloud.xyz), UNLABELED, np.int64)
        labels[valid] = probs[torch.as_tensor(valid)].argmax(1).numpy()
        meter.update(labels, cloud.labels)
        seen.append(float(np.mean(valid)))
    return {"miou": meter.report()["miou"], "seen_fraction": float(np.mean(seen)) if seen else 0.0}
