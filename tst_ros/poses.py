"""Time-indexed robot poses (ROS-free): PoseBuffer and the camera-extrinsic parameter format.

Nodes fill a PoseBuffer from TF or nav_msgs/Odometry (tst_ros.ros.poses.PoseSubscriber) and
look poses up at a message's stamp, never at "latest". Poses are 4x4 float64
T_odom_base; T_odom_camera = T_odom_base @ T_base_camera.
"""
from __future__ import annotations

import bisect
import threading

import numpy as np

from tst_ros.geometry import interpolate_pose, matrix_to_pose, pose_matrix


def extrinsic_to_matrix(values) -> np.ndarray:
    """Parameter `camera_extrinsic` [x, y, z, qw, qx, qy, qz] -> 4x4 T_base_camera."""
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    if v.size != 7:
        raise ValueError(f"camera extrinsic needs 7 values [x, y, z, qw, qx, qy, qz], got {v.size}")
    norm = np.linalg.norm(v[3:])
    if not norm > 1e-9:
        raise ValueError("camera extrinsic quaternion has zero length")
    return pose_matrix(v[:3], v[3:] / norm)


def matrix_to_extrinsic(T: np.ndarray) -> list[float]:
    """4x4 T_base_camera -> [x, y, z, qw, qx, qy, qz] (the parameter format)."""
    t, q = matrix_to_pose(np.asarray(T, dtype=np.float64))
    return [float(x) for x in np.concatenate([t, q])]


class PoseBuffer:
    """Stamped T_odom_base samples, interpolated at lookup (linear translation, slerp rotation).

    Samples may arrive out of order; a sample at an existing stamp replaces it. At most
    `capacity` samples are kept (the oldest are dropped). `tolerance_ns` lets a lookup
    slightly outside the buffered span return the nearest pose instead of failing.
    Thread-safe (executor callbacks may add while another thread looks up).
    """

    def __init__(self, T_base_camera: np.ndarray | None = None, capacity: int = 2000, tolerance_ns: int = 0):
        if capacity < 2:
            raise ValueError(f"PoseBuffer capacity must be >= 2, got {capacity}")
        self.capacity = int(capacity)
        self.tolerance_ns = int(tolerance_ns)
        self.T_base_camera = None if T_base_camera is None else self._checked(T_base_camera)
        self.camera_frame = ""   # the frame T_base_camera leads to, where the node edge names it
        self._stamps: list[int] = []
        self._poses: list[np.ndarray] = []
        self._lock = threading.Lock()

    @staticmethod
    def _checked(T) -> np.ndarray:
        T = np.array(T, dtype=np.float64)
        if T.shape != (4, 4):
            raise ValueError(f"pose must be a 4x4 matrix, got shape {T.shape}")
        return T

    def __len__(self) -> int:
        return len(self._stamps)

    @property
    def span_ns(self) -> tuple[int, int] | None:
        """(oldest, newest) stamp, or None when empty."""
        with self._lock:
            return (self._stamps[0], self._stamps[-1]) if self._stamps else None

    def add(self, stamp_ns: int, T_odom_base: np.ndarray) -> None:
        T = self._checked(T_odom_base)
        stamp_ns = int(stamp_ns)
        with self._lock:
            i = bisect.bisect_left(self._stamps, stamp_ns)
            if i < len(self._stamps) and self._stamps[i] == stamp_ns:
                self._poses[i] = T
                return
            self._stamps.insert(i, stamp_ns)
            self._poses.insert(i, T)
            if len(self._stamps) > self.capacity:
                del self._stamps[0], self._poses[0]

    def can_lookup(self, stamp_ns: int) -> bool:
        span = self.span_ns
        return span is not None and span[0] - self.tolerance_ns <= stamp_ns <= span[1] + self.tolerance_ns

    def lookup(self, stamp_ns: int) -> np.ndarray:
        """T_odom_base at stamp_ns; LookupError when the stamp is outside the buffered span."""
        stamp_ns = int(stamp_ns)
        with self._lock:
            if not self._stamps:
                raise LookupError(f"no pose for stamp {stamp_ns} ns: the pose buffer is empty (no odometry yet?)")
            first, last = self._stamps[0], self._stamps[-1]
            if stamp_ns < first - self.tolerance_ns or stamp_ns > last + self.tolerance_ns:
                where = "before the oldest" if stamp_ns < first else "after the newest"
                raise LookupError(f"no pose for stamp {stamp_ns} ns: it is {where} buffered pose "
                                  f"(buffer spans {first}..{last} ns, {len(self._stamps)} poses, "
                                  f"tolerance {self.tolerance_ns} ns)")
            if stamp_ns <= first:
                return self._poses[0].copy()
            if stamp_ns >= last:
                return self._poses[-1].copy()
            i = bisect.bisect_left(self._stamps, stamp_ns)
            if self._stamps[i] == stamp_ns:
                return self._poses[i].copy()
            t0, t1, T0, T1 = self._stamps[i - 1], self._stamps[i], self._poses[i - 1], self._poses[i]
        return interpolate_pose(stamp_ns, t0, T0, t1, T1)

    def T_odom_camera(self, stamp_ns: int) -> np.ndarray:
        """Camera pose in odom at stamp_ns (needs T_base_camera)."""
        if self.T_base_camera is None:
            raise ValueError("PoseBuffer has no T_base_camera (set the camera_extrinsic parameter)")
        return self.lookup(stamp_ns) @ self.T_base_camera

    def clear(self) -> None:
        with self._lock:
            self._stamps.clear()
            self._poses.clear()
