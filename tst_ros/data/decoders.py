"""The decoder of in-memory payloads: simulator frames and tests push arrays rather than ROS
messages through the recording pipeline (the ROS decoder lives with the recorder node)."""
from __future__ import annotations

import numpy as np

from tst_ros.geometry import Intrinsics


class ArrayDecoder:
    """Decoder for payloads that already are arrays (simulator frames, tests).

    rgb payloads may be a dict {"rgb": array, "gt": {...}} to carry ground truth."""

    def rgb(self, p):
        rgb = p["rgb"] if isinstance(p, dict) else p
        rgb = np.asarray(rgb)
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise ValueError(f"rgb array must be (H, W, 3) uint8, got {rgb.shape} {rgb.dtype}")
        return rgb

    def ground_truth(self, p):
        return p.get("gt") if isinstance(p, dict) else None

    def depth(self, p):
        d = np.asarray(p)
        if d.ndim != 2 or d.dtype not in (np.uint16, np.float32, np.float64):
            raise ValueError(f"depth array must be (H, W) uint16 mm or float metres, got {d.shape} {d.dtype}")
        return d

    def thermal(self, p):
        t = np.asarray(p)
        if t.ndim != 2 or t.dtype not in (np.uint16, np.float32, np.float64):
            raise ValueError("thermal array must be (H, W) uint16 centi-kelvin or float kelvin, "
                             f"got {t.shape} {t.dtype}")
        return t

    def camera_info(self, p):
        if not isinstance(p, Intrinsics):
            raise ValueError(f"camera_info payload must be Intrinsics, got {type(p).__name__}")
        return p

    def depth_camera_info(self, p):
        """Intrinsics, or (Intrinsics, distortion coefficients)."""
        intr, distortion = p if isinstance(p, tuple) else (p, ())
        return self.camera_info(intr), distortion

    def imu(self, p):
        return np.asarray(p, np.float64).reshape(6)

    def odom(self, p):
        return np.asarray(p, np.float64).reshape(4, 4)

    def cloud(self, p):
        xyz, rgb = p
        return np.asarray(xyz, np.float32).reshape(-1, 3), None if rgb is None else np.asarray(rgb, np.uint8)
