"""Small untrained perception models for the tests. `constant_class` biases the heads so that
every pixel gets that class and every detection that thing class, which makes a served model
recognisable on the wire."""
from __future__ import annotations

from pathlib import Path

from tst_ros.bench.models import untrained_model_dir


def _predict_constant(cls: int):
    def adjust(model, thing_class_ids: list[int]) -> None:
        model.seg_head.classify.weight.zero_()
        model.seg_head.classify.bias.fill_(-10.0)
        model.seg_head.classify.bias[cls] = 10.0
        if cls in thing_class_ids:
            model.det_head.heatmap.bias.fill_(-10.0)
            model.det_head.heatmap.bias[thing_class_ids.index(cls)] = 2.0
    return adjust


def make_model_dir(out_dir: str | Path, *args, constant_class: int | None = None, **kwargs) -> Path:
    """`tst_ros.bench.models.untrained_model_dir` with an optional constant prediction."""
    adjust = _predict_constant(constant_class) if constant_class is not None else None
    return untrained_model_dir(out_dir, *args, adjust=adjust, **kwargs)
