"""A teacher modality from any ONNX file (`teacher="onnx:PATH"` in a registry entry): one
(1, 3, H, W) image input, a dense (1, C, h, w) output (`tst_ros.tttkd.teachers.ONNXTeacher`
runs it). Feature maps are stored on the model's output grid; image kinds are resized to the
frame and cast to the storage dtype (the model must output values in that dtype's range)."""
from __future__ import annotations

import numpy as np
import torch.nn.functional as F

from tst_ros.teachers import Teacher


class OnnxTeacher(Teacher):
    batch = 1

    def __init__(self, modality, device: str = "cpu", *, path: str):
        super().__init__(modality, device)
        from tst_ros.tttkd.teachers import ONNXTeacher
        self.runner = ONNXTeacher(path)
        if self.runner.dim != modality.channels:
            raise ValueError(f"{path} outputs {self.runner.dim} channels, modality {modality.name!r} "
                             f"has {modality.channels}")

    def describe(self) -> dict:
        return {**super().describe(), **self.runner.describe()}

    def __call__(self, rgb: np.ndarray, depth_mm: np.ndarray | None = None) -> np.ndarray:
        out = []
        for frame in rgb:
            fmap = self.runner.features(frame)
            if self.modality.kind != "feature_map":
                fmap = F.interpolate(fmap[None], size=frame.shape[:2], mode="bilinear", align_corners=False)[0]
            out.append(fmap.permute(1, 2, 0).numpy())
        arr = np.stack(out)
        dtype = np.dtype(self.modality.storage_dtype)
        if dtype.kind in "iu":
            arr = np.clip(np.rint(arr), np.iinfo(dtype).min, np.iinfo(dtype).max)
        arr = arr.astype(dtype)
        return arr[..., 0] if self.modality.channels == 1 and self.modality.kind == "image" else arr
