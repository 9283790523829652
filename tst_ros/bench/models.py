"""Untrained, deployment-shaped perception models for latency benchmarks: the weights do not
matter there, only the shapes and the cost of running them."""
from __future__ import annotations

from pathlib import Path
from typing import Callable


def untrained_model_dir(out_dir: str | Path, classes: list[str] | None = None,
                        thing_class_ids: list[int] | None = None, image_size: int = 32, patch: int = 16,
                        inputs: tuple[str, ...] = ("rgb",), preset: str = "tiny", seed: int = 0,
                        adjust: Callable | None = None, encoder_file: str | Path | None = None,
                        input_stem: bool | None = None, flip_average: bool = False) -> Path:
    """Write a segmentation + detection model directory (as `tst-ros transfer` does) with random
    weights; `adjust(model, thing_class_ids)` may edit the model before it is saved. With
    `encoder_file` the encoder is that file's (as a frozen-encoder transfer leaves it), and
    `preset`, `image_size` and `patch` are the file's; `input_stem` None: the transfer default;
    `flip_average`: served averaged with the mirror image, as `transfer.flip_average` asks."""
    import torch

    from tst_ros.models import build_encoder, load_encoder
    from tst_ros.perception.heads import save_model
    from tst_ros.perception.transfer import new_model

    torch.manual_seed(seed)
    if classes is None:
        from tst_ros.sim.classes import CLASSES, THING_CLASSES
        classes, thing_class_ids = list(CLASSES), list(THING_CLASSES)
    thing_class_ids = list(thing_class_ids if thing_class_ids is not None else range(len(classes)))
    encoder = load_encoder(encoder_file)[0] if encoder_file else build_encoder(preset, list(inputs), image_size, patch)
    categories = {cid: classes[cid] for cid in thing_class_ids}
    small = encoder.describe()["preset"] == "tiny" and encoder.image_size <= 64
    model, meta = new_model(encoder, {**encoder.describe(), "method": "untrained", "source": "untrained"}, classes,
                            categories, list(inputs), pyramid_dim=32 if small else 64, input_stem=input_stem)
    meta["flip_average"] = bool(flip_average)
    if adjust is not None:
        with torch.no_grad():
            adjust(model, thing_class_ids)
    save_model(model, meta, out_dir)
    return Path(out_dir)
