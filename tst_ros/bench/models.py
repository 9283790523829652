"""Untrained, deployment-shaped perception models for latency benchmarks: the weights do not
matter there, only the shapes and the cost of running them."""
from __future__ import annotations

from pathlib import Path
from typing import Callable


def untrained_model_dir(out_dir: str | Path, classes: list[str] | None = None,
                        thing_class_ids: list[int] | None = None, image_size: int = 32, patch: int = 16,
                        inputs: tuple[str, ...] = ("rgb",), preset: str = "tiny", seed: int = 0,
                        adjust: Callable | None = None) -> Path:
    """Write a segmentation + detection model directory (as `tst-ros transfer` does) with random
    weights; `adjust(model, thing_class_ids)` may edit the model before it is saved."""
    import torch

    from tst_ros.models import build_encoder
    from tst_ros.perception.heads import save_model
    from tst_ros.perception.transfer import new_model

    torch.manual_seed(seed)
    if classes is None:
        from tst_ros.sim.classes import CLASSES, THING_CLASSES
        classes, thing_class_ids = list(CLASSES), list(THING_CLASSES)
    thing_class_ids = list(thing_class_ids if thing_class_ids is not None else range(len(classes)))
    encoder = build_encoder(preset, list(inputs), image_size, patch)
    categories = {cid: classes[cid] for cid in thing_class_ids}
    model, meta = new_model(encoder, {**encoder.describe(), "method": "untrained", "source": "untrained"}, classes,
                            categories, list(inputs), pyramid_dim=32 if preset == "tiny" and image_size <= 64 else 64)
    if adjust is not None:
        with torch.no_grad():
            adjust(model, thing_class_ids)
    save_model(model, meta, out_dir)
    return Path(out_dir)
