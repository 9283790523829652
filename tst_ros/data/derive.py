"""Derived modalities, computed from camera images already at training resolution (the
resize every stage shares is `geometry.fit_image`); ROS-free, vectorised.

- `normals_from_depth`: camera-frame surface normals from a depth image and intrinsics,
  oriented towards the camera, stored as int8 (x127), 0 where undefined.
- `kelvin_to_ck`: a float kelvin thermal image to the stored uint16 centi-kelvin.
- `canny_edges`: Canny edges of an RGB image (uint8 0/255) via OpenCV.
- `derive_modality`: any derived registry modality from its source streams (`DERIVATIONS`).
- `resample_imu`: a raw IMU window resampled to a fixed number of rows for the network.
"""
from __future__ import annotations

import cv2
import numpy as np

from tst_ros.geometry import Intrinsics

CANNY_LOW = 50
CANNY_HIGH = 150
# neighbouring depths differing by more than this fraction of the depth are a discontinuity
NORMAL_MAX_REL_STEP = 0.1


def depth_to_mm(depth_m: np.ndarray) -> tuple[np.ndarray, int]:
    """Float metres (NaN/inf/<=0 invalid) -> (uint16 mm with 0 invalid, count of non-finite pixels)."""
    finite = np.isfinite(depth_m)
    nonfinite = int(depth_m.size - np.count_nonzero(finite))
    mm = np.where(finite, depth_m, 0.0) * 1000.0
    mm = np.clip(np.rint(mm), 0, 65535).astype(np.uint16)
    return mm, nonfinite


def kelvin_to_ck(kelvin: np.ndarray) -> tuple[np.ndarray, int]:
    """Float kelvin (NaN/inf/<=0 invalid) -> (uint16 centi-kelvin with 0 invalid, count of invalid pixels)."""
    valid = np.isfinite(kelvin) & (kelvin > 0)
    ck = np.clip(np.rint(np.where(valid, kelvin, 0.0) * 100.0), 0, 65535).astype(np.uint16)
    return ck, int(kelvin.size - np.count_nonzero(valid))


def normals_from_depth(depth_mm: np.ndarray, intr: Intrinsics) -> np.ndarray:
    """(H, W) uint16 mm depth (0 invalid) -> (H, W, 3) int8 unit normals x127 (0 = undefined).

    Normals are the cross product of central differences of the back-projected points,
    oriented towards the camera; border pixels, pixels with an invalid neighbour and pixels
    across a depth discontinuity get 0.
    """
    if depth_mm.shape != (intr.height, intr.width):
        raise ValueError(f"depth {depth_mm.shape} does not match intrinsics {intr.height}x{intr.width}")
    h, w = depth_mm.shape
    out = np.zeros((h, w, 3), np.int8)
    if h < 3 or w < 3:
        return out
    z = depth_mm.astype(np.float32) * np.float32(1e-3)
    rx = ((np.arange(w, dtype=np.float32) - np.float32(intr.cx)) / np.float32(intr.fx))[None, :]
    ry = ((np.arange(h, dtype=np.float32) - np.float32(intr.cy)) / np.float32(intr.fy))[:, None]
    x, y = rx * z, ry * z
    c = (slice(1, -1), slice(1, -1))
    right, left = (slice(1, -1), slice(2, None)), (slice(1, -1), slice(None, -2))
    down, up = (slice(2, None), slice(1, -1)), (slice(None, -2), slice(1, -1))
    xu, yu, zu = x[right] - x[left], y[right] - y[left], z[right] - z[left]
    xv, yv, zv = x[down] - x[up], y[down] - y[up], z[down] - z[up]
    nx = yu * zv - zu * yv
    ny = zu * xv - xu * zv
    nz = xu * yv - yu * xv
    zc = z[c]
    limit = np.float32(2 * NORMAL_MAX_REL_STEP) * zc
    ok = ((zc > 0) & (z[right] > 0) & (z[left] > 0) & (z[down] > 0) & (z[up] > 0)
          & (np.abs(zu) < limit) & (np.abs(zv) < limit))
    norm = np.sqrt(nx * nx + ny * ny + nz * nz)
    ok &= norm > 1e-12
    # orient towards the camera: n . p < 0
    facing = nx * x[c] + ny * y[c] + nz * zc
    scale = np.where(ok, np.float32(127) / np.where(ok, norm, 1), 0).astype(np.float32)
    scale[facing > 0] *= -1
    inner = out[c]
    inner[..., 0] = np.rint(nx * scale)
    inner[..., 1] = np.rint(ny * scale)
    inner[..., 2] = np.rint(nz * scale)
    return out


def canny_edges(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (H, W) uint8 edges (0 or 255)."""
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    gray = cv2.GaussianBlur(gray, (3, 3), 0)
    return cv2.Canny(gray, CANNY_LOW, CANNY_HIGH)


# How each derived registry modality is computed: the function takes the streams that its
# registry entry lists in `derived_from`, in that order.
DERIVATIONS = {"normals": normals_from_depth, "edges": canny_edges}


def derive_modality(modality, sources: dict) -> np.ndarray | None:
    """A derived `modalities.Modality` computed from `sources` ({stream name: array or
    Intrinsics}); None when one of its `derived_from` streams is missing (None or absent)."""
    args = [sources.get(name) for name in modality.derived_from]
    if any(arg is None for arg in args):
        return None
    return DERIVATIONS[modality.name](*args)


def resample_imu(stamps_ns: np.ndarray, samples: np.ndarray, start_ns: int | None, end_ns: int,
                 rows: int) -> np.ndarray:
    """Raw window (M,), (M, 6) over (start, end] -> (rows, 6) float32 linearly interpolated at
    `rows` evenly spaced times ending at `end` (edge samples held); zeros when M == 0."""
    samples = np.asarray(samples, np.float64).reshape(-1, 6)
    if len(samples) == 0:
        return np.zeros((rows, 6), np.float32)
    t = np.asarray(stamps_ns, np.int64)
    start = int(t[0]) if start_ns is None else int(start_ns)
    step = (end_ns - start) / rows
    query = start + step * np.arange(1, rows + 1)
    rel = (t - t[0]).astype(np.float64)
    q = query - t[0]
    out = np.stack([np.interp(q, rel, samples[:, c]) for c in range(6)], axis=1)
    return out.astype(np.float32)


def image_change(a: np.ndarray, b: np.ndarray, size: int = 32) -> float:
    """Mean absolute difference (0..1) of two RGB images at a small grey thumbnail."""
    def thumb(x):
        g = cv2.cvtColor(x, cv2.COLOR_RGB2GRAY) if x.ndim == 3 else x
        return cv2.resize(g, (size, size), interpolation=cv2.INTER_AREA).astype(np.float32)
    return float(np.mean(np.abs(thumb(a) - thumb(b)))) / 255.0
