"""Objects of a simulated building: their parts, class, instance id and floor footprints."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from tst_ros.sim.classes import CLASSES
from tst_ros.sim.meshes import Part


@dataclass
class Footprint:
    """Oriented rectangle on the floor (centre, half sizes, yaw) blocking the robot."""
    cx: float
    cy: float
    hx: float
    hy: float
    yaw: float = 0.0

    def aabb(self) -> tuple[float, float, float, float]:
        c, s = abs(np.cos(self.yaw)), abs(np.sin(self.yaw))
        ex, ey = c * self.hx + s * self.hy, s * self.hx + c * self.hy
        return self.cx - ex, self.cy - ey, self.cx + ex, self.cy + ey

    def distance(self, pts: np.ndarray) -> np.ndarray:
        """Distance from (N, 2) points to the rectangle (0 inside)."""
        c, s = np.cos(self.yaw), np.sin(self.yaw)
        d = pts - (self.cx, self.cy)
        lx, ly = d[:, 0] * c + d[:, 1] * s, -d[:, 0] * s + d[:, 1] * c
        qx, qy = np.maximum(np.abs(lx) - self.hx, 0), np.maximum(np.abs(ly) - self.hy, 0)
        return np.hypot(qx, qy)


@dataclass
class WorldObject:
    class_id: int
    parts: list[Part]
    footprints: list[Footprint] = field(default_factory=list)
    z_range: tuple[float, float] = (0.0, 0.0)
    instance_id: int = 0          # assigned by Building (0 for stuff)
    room: int = -1
    removable: bool = True      # may be dropped to keep the robot's path clear

    @property
    def name(self) -> str:
        return CLASSES[self.class_id]
