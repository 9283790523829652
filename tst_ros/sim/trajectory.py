"""Smooth periodic robot trajectories: a closed uniform cubic B-spline over the tour
polyline (resampled every ~0.5 m); the heading, a second B-spline over the smoothed direction
of travel, plus a slow look-around sway.

Everything is analytic: position, velocity, acceleration, yaw and yaw rate at any time, so
the IMU is exactly consistent with the poses (before its noise and bias are added).
"""
from __future__ import annotations

import numpy as np

GRAVITY = 9.81


def _resample_closed(poly: np.ndarray, spacing: float) -> np.ndarray:
    closed = np.vstack([poly, poly[:1]])
    pts = []
    for a, b in zip(closed[:-1], closed[1:]):
        n = max(1, int(round(np.linalg.norm(b - a) / spacing)))
        pts.append(a + (b - a) * (np.arange(n)[:, None] / n))
    return np.vstack(pts)


class Trajectory:
    """Planar robot motion (base_link on the floor, yaw only) along a closed tour."""

    def __init__(self, tour: np.ndarray, speed_mps: float, spacing: float = 0.5,
                 sway_rad: float = 0.25, sway_period_s: float = 9.0):
        tour = np.asarray(tour, np.float64)
        if tour.ndim != 2 or tour.shape[1] != 2 or len(tour) < 3:
            raise ValueError(f"tour must be (P>=3, 2) points, got shape {tour.shape}")
        if speed_mps <= 0:
            raise ValueError(f"speed must be positive, got {speed_mps}")
        self.control = _resample_closed(tour, spacing)
        self.n = len(self.control)
        self.dt = spacing / speed_mps            # time per control interval
        self.period_s = self.n * self.dt
        self.sway_rad = sway_rad
        self.sway_w = 2 * np.pi / sway_period_s
        self._heading_control()

    def _heading_control(self, smooth: int = 2) -> None:
        """Unwrapped heading per control point (direction of travel, circularly smoothed).

        The heading is its own B-spline rather than the velocity direction, so sharp corners
        of the tour become gentle turns instead of spikes in yaw rate."""
        P = self.control
        d = np.roll(P, -1, axis=0) - np.roll(P, 1, axis=0)
        h = np.unwrap(np.arctan2(d[:, 1], d[:, 0]))
        step = np.angle(np.exp(1j * (h[0] - h[-1])))
        wrap = h[-1] + step - h[0]  # total turning over one lap, a multiple of 2 pi
        # extend periodically (value at k + n is value at k + wrap) and smooth with a box filter
        ext = np.concatenate([h[-smooth:] - wrap, h, h[:smooth] + wrap])
        kernel = np.ones(2 * smooth + 1) / (2 * smooth + 1)
        self.heading = np.convolve(ext, kernel, mode="valid")
        self.heading_wrap = float(wrap)

    def _heading_values(self, t):
        u = np.mod(np.asarray(t, np.float64) / self.dt, self.n)
        i = np.floor(u).astype(np.int64)
        s = u - i
        vals = []
        for k in (-1, 0, 1, 2):
            j = i + k
            vals.append(self.heading[j % self.n] + self.heading_wrap * np.floor_divide(j, self.n))
        return vals, s

    def _basis(self, t):
        u = np.mod(np.asarray(t, np.float64) / self.dt, self.n)
        i = np.floor(u).astype(np.int64)
        s = (u - i)[..., None]
        idx = [(i + k) % self.n for k in (-1, 0, 1, 2)]
        P = [self.control[j] for j in idx]
        return P, s

    def position(self, t) -> np.ndarray:
        P, s = self._basis(t)
        b = [(1 - s) ** 3 / 6, (3 * s**3 - 6 * s**2 + 4) / 6, (-3 * s**3 + 3 * s**2 + 3 * s + 1) / 6, s**3 / 6]
        return sum(bk * pk for bk, pk in zip(b, P))

    def velocity(self, t) -> np.ndarray:
        P, s = self._basis(t)
        b = [-(1 - s) ** 2 / 2, 1.5 * s**2 - 2 * s, -1.5 * s**2 + s + 0.5, s**2 / 2]
        return sum(bk * pk for bk, pk in zip(b, P)) / self.dt

    def acceleration(self, t) -> np.ndarray:
        P, s = self._basis(t)
        b = [1 - s, 3 * s - 2, 1 - 3 * s, s]
        return sum(bk * pk for bk, pk in zip(b, P)) / self.dt**2

    def yaw(self, t) -> np.ndarray:
        H, s = self._heading_values(t)
        b = [(1 - s) ** 3 / 6, (3 * s**3 - 6 * s**2 + 4) / 6, (-3 * s**3 + 3 * s**2 + 3 * s + 1) / 6, s**3 / 6]
        heading = sum(bk * hk for bk, hk in zip(b, H))
        return heading + self.sway_rad * np.sin(self.sway_w * np.asarray(t, np.float64))

    def yaw_rate(self, t) -> np.ndarray:
        H, s = self._heading_values(t)
        b = [-(1 - s) ** 2 / 2, 1.5 * s**2 - 2 * s, -1.5 * s**2 + s + 0.5, s**2 / 2]
        heading_rate = sum(bk * hk for bk, hk in zip(b, H)) / self.dt
        return heading_rate + self.sway_rad * self.sway_w * np.cos(self.sway_w * np.asarray(t, np.float64))

    def pose(self, t: float) -> np.ndarray:
        """T_odom_base (4x4) at time t (seconds)."""
        p, yaw = self.position(t), float(self.yaw(t))
        T = np.eye(4)
        c, s = np.cos(yaw), np.sin(yaw)
        T[:2, :2] = [[c, -s], [s, c]]
        T[:2, 3] = p
        return T

    def imu_ideal(self, t) -> np.ndarray:
        """(N, 6) noise-free [accel (specific force, imu frame) | gyro] at times t."""
        t = np.atleast_1d(np.asarray(t, np.float64))
        a, yaw = self.acceleration(t), self.yaw(t)
        c, s = np.cos(yaw), np.sin(yaw)
        out = np.zeros((len(t), 6))
        out[:, 0] = c * a[:, 0] + s * a[:, 1]
        out[:, 1] = -s * a[:, 0] + c * a[:, 1]
        out[:, 2] = GRAVITY
        out[:, 5] = self.yaw_rate(t)
        return out

    def sample_xy(self, step_m: float) -> np.ndarray:
        """Points along one period, about `step_m` apart."""
        n = max(8, int(np.ceil(self.period_s * np.linalg.norm(self.velocity(0.0)) / step_m)) * 2)
        return self.position(np.linspace(0, self.period_s, n, endpoint=False))
