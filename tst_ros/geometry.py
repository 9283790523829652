"""Camera, pose and voxel geometry shared by the simulator, recording, TTT-KD and label fusion (ROS-free).

Conventions: camera optical frame (x right, y down, z forward); poses are 4x4 float64
homogeneous matrices `T_a_b` mapping points in frame b to frame a (p_a = T_a_b @ p_b).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import cv2
import numpy as np
import transforms3d


@dataclass(frozen=True)
class Intrinsics:
    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int

    @classmethod
    def from_fov(cls, width: int, height: int, hfov_deg: float) -> "Intrinsics":
        fx = 0.5 * width / np.tan(np.radians(hfov_deg) / 2)
        return cls(fx, fx, (width - 1) / 2, (height - 1) / 2, width, height)

    @classmethod
    def from_matrix(cls, K, width: int, height: int) -> "Intrinsics":
        K = np.asarray(K, dtype=np.float64).reshape(3, 3)
        return cls(float(K[0, 0]), float(K[1, 1]), float(K[0, 2]), float(K[1, 2]), int(width), int(height))

    @property
    def K(self) -> np.ndarray:
        return np.array([[self.fx, 0, self.cx], [0, self.fy, self.cy], [0, 0, 1]], dtype=np.float64)

    def scaled(self, width: int, height: int) -> "Intrinsics":
        """Intrinsics of the same camera resized to width x height."""
        sx, sy = width / self.width, height / self.height
        return Intrinsics(self.fx * sx, self.fy * sy, (self.cx + 0.5) * sx - 0.5, (self.cy + 0.5) * sy - 0.5,
                          width, height)

    def fitted(self, size: int | tuple[int, int]) -> "Intrinsics":
        """Intrinsics of `fit_image` applied to an image with these intrinsics."""
        h, w = _hw(size)
        return self.scaled(w, h)

    def to_dict(self) -> dict:
        return asdict(self)


def _hw(size: int | tuple[int, int]) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def fit_image(image: np.ndarray, size: int | tuple[int, int], nearest: bool = False) -> np.ndarray:
    """The one resize every stage applies to a camera image or label map (the store, hence
    pre-training; transfer, evaluation, export and serving): the whole frame stretched to the
    network's (h, w), bilinear for colour and nearest for depth, thermal and labels (OpenCV's
    INTER_LINEAR / INTER_NEAREST). Nothing is cropped, so the encoder learns on the field of view,
    aspect and scale that serving labels."""
    h, w = _hw(size)
    if image.shape[:2] == (h, w):
        return np.ascontiguousarray(image)
    interp = cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR
    return cv2.resize(image, (w, h), interpolation=interp).reshape((h, w) + image.shape[2:])


def pixel_rays(intr: Intrinsics) -> np.ndarray:
    """(H, W, 3) camera-frame ray directions with z = 1 for every pixel centre."""
    u, v = np.meshgrid(np.arange(intr.width, dtype=np.float32), np.arange(intr.height, dtype=np.float32))
    return np.stack([(u - intr.cx) / intr.fx, (v - intr.cy) / intr.fy, np.ones_like(u)], axis=-1)


def backproject(depth_m: np.ndarray, intr: Intrinsics) -> np.ndarray:
    """Depth image (H, W) in metres (0 or NaN invalid) -> (H, W, 3) camera-frame points (NaN where invalid)."""
    d = depth_m.astype(np.float32, copy=True)
    d[~np.isfinite(d) | (d <= 0)] = np.nan
    return pixel_rays(intr) * d[..., None]


def project(points_cam: np.ndarray, intr: Intrinsics) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(N, 3) camera-frame points -> (uv (N, 2) float pixel coords, z (N,), in_front_and_bounds mask)."""
    p = np.asarray(points_cam, dtype=np.float64)
    z = p[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        u = intr.fx * p[:, 0] / z + intr.cx
        v = intr.fy * p[:, 1] / z + intr.cy
    ok = (z > 1e-6) & (u >= -0.5) & (u < intr.width - 0.5) & (v >= -0.5) & (v < intr.height - 0.5)
    return np.stack([u, v], axis=1), z, ok


def transform(T: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a 4x4 transform to (N, 3) points."""
    return points @ T[:3, :3].T + T[:3, 3]


_VOXEL_KEY_BITS = 21               # bits per axis of a packed voxel key: +-2^20 voxels (52 km at 5 cm)


def voxel_groups(points: np.ndarray, size: float) -> tuple[np.ndarray, np.ndarray]:
    """(P, 3) finite points -> (inverse (P,): each point's voxel id, counts (V,): points per voxel),
    voxels of `size` m numbered in lexicographic (x, y, z) order of their cells. The cells are packed
    into one int64 key, which `np.unique` sorts far faster than rows of three."""
    cells = np.floor(np.asarray(points, np.float64) / size).astype(np.int64) + (1 << (_VOXEL_KEY_BITS - 1))
    if cells.min(initial=0) < 0 or cells.max(initial=0) >= 1 << _VOXEL_KEY_BITS:
        raise ValueError(f"points span more than {1 << _VOXEL_KEY_BITS} voxels of {size} m along an axis")
    keys = (cells[:, 0] << (2 * _VOXEL_KEY_BITS)) | (cells[:, 1] << _VOXEL_KEY_BITS) | cells[:, 2]
    _, inverse, counts = np.unique(keys, return_inverse=True, return_counts=True)
    return inverse.reshape(-1), counts


def invert(T: np.ndarray) -> np.ndarray:
    R, t = T[:3, :3], T[:3, 3]
    out = np.eye(4)
    out[:3, :3] = R.T
    out[:3, 3] = -R.T @ t
    return out


def pose_matrix(translation, quaternion_wxyz) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = transforms3d.quaternions.quat2mat(quaternion_wxyz)
    T[:3, 3] = translation
    return T


def matrix_to_pose(T: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """4x4 -> (translation (3,), quaternion w x y z (4,))."""
    return T[:3, 3].copy(), transforms3d.quaternions.mat2quat(T[:3, :3])


def interpolate_pose(t: float, t0: float, T0: np.ndarray, t1: float, T1: np.ndarray) -> np.ndarray:
    """Pose at time t between two stamped poses (linear translation, slerp rotation)."""
    a = 0.0 if t1 == t0 else float(np.clip((t - t0) / (t1 - t0), 0.0, 1.0))
    q0 = transforms3d.quaternions.mat2quat(T0[:3, :3])
    q1 = transforms3d.quaternions.mat2quat(T1[:3, :3])
    if np.dot(q0, q1) < 0:
        q1 = -q1
    theta = np.arccos(np.clip(np.dot(q0, q1), -1.0, 1.0))
    if theta < 1e-8:
        q = q0
    else:
        q = (np.sin((1 - a) * theta) * q0 + np.sin(a * theta) * q1) / np.sin(theta)
    return pose_matrix((1 - a) * T0[:3, 3] + a * T1[:3, 3], q / np.linalg.norm(q))


# Fixed rotation from a ROS body frame (x forward, y left, z up) to the camera optical frame.
T_BODY_OPTICAL = np.array([[0, 0, 1, 0], [-1, 0, 0, 0], [0, -1, 0, 0], [0, 0, 0, 1]], dtype=np.float64)
