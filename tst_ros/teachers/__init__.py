"""Teacher modalities: outputs of frozen pre-trained networks stored beside the sensor streams
and reconstructed by TST-MM like any sensor (the top layer of the modality dictionary).

A registry entry (`tst_ros.modalities.Modality`) with a `teacher` spec is a teacher modality.
The spec names its implementation:

- `"package.module:ClassName"`: a `Teacher` subclass, built as `ClassName(modality, device)`;
- `"onnx:PATH"`: any ONNX model with one (1, 3, H, W) image input and a dense output
  (`tst_ros.teachers.onnx.OnnxTeacher`).

`tst-ros dataset teach` (`tst_ros.data.teach`) runs each teacher once per stored sample and
writes its output into the store's `teachers/<modality>/` sub-store. Nothing else names a
teacher modality: adding one is adding a registry entry.
"""
from __future__ import annotations

import importlib

import numpy as np


class TeacherUnavailable(RuntimeError):
    """A teacher that cannot be loaded (missing package, corrupt or absent weights)."""


class Teacher:
    """A frozen network that turns a batch of stored frames into one teacher modality.

    `__call__(rgb (B, S, S, 3) uint8, depth_mm (B, S, S) uint16 | None)` returns a (B, h, w[, C])
    array in the modality's storage dtype: image kinds at the stored size S, feature maps on
    any grid covering the whole frame (the loader resamples them). `describe()` gives the
    source, version and license recorded with the stored outputs."""

    batch = 16                      # frames per call during teaching

    def __init__(self, modality, device: str = "cpu"):
        self.modality = modality
        self.device = device

    def __call__(self, rgb: np.ndarray, depth_mm: np.ndarray | None = None) -> np.ndarray:
        raise NotImplementedError

    def describe(self) -> dict:
        return {"class": f"{type(self).__module__}:{type(self).__qualname__}"}

    # Teachers whose output depends on statistics of the dataset (e.g. a PCA basis) fit them
    # once, on frames spread over the dataset, before the first sample is taught; the state
    # is stored with the outputs so that later (incremental) runs reuse it.
    fits_state = False

    def fit(self, rgb: np.ndarray, depth_mm: np.ndarray | None = None) -> None:
        pass

    def state(self) -> dict[str, np.ndarray]:
        return {}

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        pass


def load_teacher(modality, device: str = "cpu") -> Teacher:
    """The `Teacher` of a registry entry; any failure to build it is a `TeacherUnavailable`
    that names the modality and its spec."""
    spec = modality.teacher
    if not spec:
        raise ValueError(f"modality {modality.name!r} is not a teacher modality")
    try:
        if spec.startswith("onnx:"):
            from tst_ros.teachers.onnx import OnnxTeacher
            return OnnxTeacher(modality, device, path=spec[len("onnx:"):])
        module_name, _, class_name = spec.partition(":")
        cls = getattr(importlib.import_module(module_name), class_name)
        return cls(modality, device)
    except TeacherUnavailable:
        raise
    except Exception as e:  # noqa: BLE001 - any failure to build a teacher is reported the same way
        raise TeacherUnavailable(f"teacher {modality.name!r} ({spec}) could not be loaded: "
                                 f"{type(e).__name__}: {e}") from e
