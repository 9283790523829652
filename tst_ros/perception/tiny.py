"""Small untrained perception models for tests and latency benchmarks (weights do not matter
there, only shapes and cost). `constant_class` biases the heads so that every pixel gets that
class and every detection that thing class, which makes a served model recognisable."""
from __future__ import annotations

from pathlib import Path


def make_model_dir(out_dir: str | Path, classes: list[str] | None = None, thing_class_ids: list[int] | None = None,
                   image_size: int = 32, patch: int = 16, inputs: tuple[str, ...] = ("rgb",), preset: str = "tiny",
                   constant_class: int | None = None, seed: int = 0) -> Path:
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
    model, meta = new_model(encoder, {**encoder.describe(), "method": "untrained", "source": "tiny"}, classes,
                            categories, list(inputs), pyramid_dim=32 if preset == "tiny" and image_size <= 64 else 64)
    if constant_class is not None:
        with torch.no_grad():
            model.seg_head.classify.weight.zero_()
            model.seg_head.classify.bias.fill_(-10.0)
            model.seg_head.classify.bias[constant_class] = 10.0
            if constant_class in thing_class_ids:
                model.det_head.heatmap.bias.fill_(-10.0)
                model.det_head.heatmap.bias[thing_class_ids.index(constant_class)] = 2.0
    save_model(model, meta, out_dir)
    return Path(out_dir)
