"""The sensor rig: camera mounting, the RGB-D depth model (noise and holes), the IMU model
(bias and white noise on analytic motion) and back-projected point clouds."""
from __future__ import annotations

import numpy as np

from tst_ros.geometry import T_BODY_OPTICAL

CAMERA_XYZ = (0.05, 0.0, 1.15)     # camera optical centre in base_link (m)
CAMERA_PITCH_DEG = 8.0             # tilted down


def default_T_base_camera(xyz=CAMERA_XYZ, pitch_deg: float = CAMERA_PITCH_DEG) -> np.ndarray:
    """T_base_camera: base_link -> camera_color_optical_frame (camera looks along base x, tilted down)."""
    p = np.radians(pitch_deg)
    Ry = np.array([[np.cos(p), 0, np.sin(p), 0], [0, 1, 0, 0], [-np.sin(p), 0, np.cos(p), 0], [0, 0, 0, 1]])
    T = Ry @ T_BODY_OPTICAL
    T[:3, 3] = xyz
    return T


def depth_sensor(depth_m: np.ndarray, cos_incidence: np.ndarray, glass: np.ndarray, rng: np.random.Generator,
                 style) -> np.ndarray:
    """Exact depth (H, W) metres -> 16UC1 millimetres with noise and holes (0 = invalid).

    Noise grows with the square of the distance; holes where the surface is beyond range,
    too close, seen at a grazing angle, glass, or at random (speckle dropout)."""
    z = depth_m + (rng.standard_normal(depth_m.shape, dtype=np.float32)
                   * (np.float32(style.depth_noise) * depth_m * depth_m))
    bad = (~np.isfinite(z) | (z > style.max_range_m) | (z < style.min_range_m)
           | (cos_incidence < style.grazing_cos) | glass)
    bad |= rng.random(depth_m.shape, dtype=np.float32) < style.depth_dropout
    mm = np.rint(np.where(bad, 0, z) * 1000)
    return np.clip(mm, 0, 65535).astype(np.uint16)


class ImuModel:
    """Constant bias plus a slow deterministic drift and white noise, per axis."""

    def __init__(self, rng: np.random.Generator, style):
        self.accel_bias = rng.uniform(-1, 1, 3) * style.accel_bias
        self.gyro_bias = rng.uniform(-1, 1, 3) * style.gyro_bias
        self.drift_phase = rng.uniform(0, 2 * np.pi, 6)
        self.style = style

    def bias(self, t: np.ndarray) -> np.ndarray:
        base = np.concatenate([self.accel_bias, self.gyro_bias])
        return base * (1 + 0.3 * np.sin(2 * np.pi * np.asarray(t)[:, None] / 120.0 + self.drift_phase))

    def measure(self, ideal: np.ndarray, t: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        sigma = np.array([self.style.accel_noise] * 3 + [self.style.gyro_noise] * 3)
        return (ideal + self.bias(t) + rng.standard_normal(ideal.shape) * sigma).astype(np.float32)


def backproject_pixels(depth_mm: np.ndarray, rays_cam: np.ndarray, stride: int) -> tuple[np.ndarray, np.ndarray]:
    """Points of the valid pixels on a stride grid: ((N, 3) float32 camera frame, (N,) flat pixel indices)."""
    H, W = depth_mm.shape
    idx = (np.arange(0, H, stride)[:, None] * W + np.arange(0, W, stride)[None, :]).reshape(-1)
    z = depth_mm.reshape(-1)[idx]
    idx = idx[z > 0]
    zm = depth_mm.reshape(-1)[idx].astype(np.float32) * np.float32(0.001)
    return rays_cam[idx] * zm[:, None], idx


# Surface temperature (K) per class for the thermal camera: rooms at ~295 K, windows cold (the
# outside), lamps and screens warm, plants cooler (evaporation), sinks and toilets cool (water).
CLASS_TEMPERATURE_K = {"wall": 294.5, "floor": 293.5, "ceiling": 296.0, "door": 294.0, "window": 284.0,
                       "bed": 296.0, "chair": 295.0, "table": 294.5, "sofa": 296.5, "cabinet": 294.5,
                       "shelf": 294.5, "desk": 294.5, "lamp": 318.0, "tv": 307.0, "plant": 291.5,
                       "picture": 294.8, "toilet": 292.0, "sink": 291.0}
UNLABELED_TEMPERATURE_K = 294.0
THERMAL_NETD_K = 0.05              # temporal noise (noise-equivalent temperature difference)
THERMAL_INSTANCE_SPREAD_K = 1.5    # per-object offset, fixed per instance
THERMAL_BLUR_FRACTION = 1 / 200    # optics blur sigma as a fraction of the image width
THERMAL_LAPSE_K_PER_M = 0.8        # warm air rises: surfaces are warmer higher up the room


def _temperature_lut() -> np.ndarray:
    from tst_ros.sim.classes import CLASSES
    lut = np.full(256, UNLABELED_TEMPERATURE_K, np.float32)
    for i, name in enumerate(CLASSES):
        lut[i] = CLASS_TEMPERATURE_K[name]
    return lut


_TEMPERATURE = _temperature_lut()


def thermal_sensor(semantic: np.ndarray, instance: np.ndarray, height_m: np.ndarray,
                   rng: np.random.Generator) -> np.ndarray:
    """Ground-truth classes, instances and surface heights above the floor (H, W) -> 16UC1
    thermal image in centi-kelvin: the class temperature, a fixed offset per object instance
    and a vertical air gradient, blurred by the optics, with temporal noise."""
    import cv2

    height = np.nan_to_num(height_m, nan=1.2, posinf=1.2, neginf=1.2).astype(np.float32)
    t = _TEMPERATURE[semantic] + np.float32(THERMAL_LAPSE_K_PER_M) * (height - np.float32(1.2))
    # a fixed, instance-specific offset (Knuth's multiplicative hash of the id, in [-0.5, 0.5))
    offset = ((instance.astype(np.uint64) * np.uint64(2654435761)) % np.uint64(1000)).astype(np.float32) / 1000 - 0.5
    t = t + np.where(instance > 0, offset * np.float32(THERMAL_INSTANCE_SPREAD_K), 0).astype(np.float32)
    sigma = max(0.5, semantic.shape[1] * THERMAL_BLUR_FRACTION)
    t = cv2.GaussianBlur(t, (0, 0), sigma)
    t += rng.standard_normal(t.shape, dtype=np.float32) * np.float32(THERMAL_NETD_K)
    return np.clip(np.rint(t * 100), 1, 65535).astype(np.uint16)
