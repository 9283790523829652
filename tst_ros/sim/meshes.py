"""Mesh primitives (boxes, cylinders, ellipsoids) as vertex/triangle arrays, and Part, the
coloured and textured piece of geometry that objects are built from."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# texture parameter layout of a part (see render.texture):
# [fx, fy, fz, stripe_amp, noise_scale, noise_amp, checker_scale, checker_amp]
PATTERN_SIZE = 8


@dataclass
class Part:
    vertices: np.ndarray          # (V, 3) float32
    triangles: np.ndarray         # (T, 3) int32
    color: np.ndarray             # (3,) float32, 0..1
    pattern: np.ndarray = field(default_factory=lambda: np.zeros(PATTERN_SIZE, np.float32))
    emissive: float = 0.0         # 0: shaded, >0: self-lit with this gain

    def transformed(self, R: np.ndarray, t) -> "Part":
        v = (self.vertices @ np.asarray(R, np.float32).T + np.asarray(t, np.float32)).astype(np.float32)
        return Part(v, self.triangles, self.color, self.pattern, self.emissive)


_BOX_CORNERS = np.array([[x, y, z] for x in (-0.5, 0.5) for y in (-0.5, 0.5) for z in (-0.5, 0.5)], np.float32)
_BOX_TRIS = np.array([
    [0, 1, 3], [0, 3, 2], [4, 6, 7], [4, 7, 5],      # -x, +x
    [0, 4, 5], [0, 5, 1], [2, 3, 7], [2, 7, 6],      # -y, +y
    [0, 2, 6], [0, 6, 4], [1, 5, 7], [1, 7, 3],      # -z, +z
], np.int32)


def rot_z(yaw: float) -> np.ndarray:
    c, s = np.cos(yaw), np.sin(yaw)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]], np.float32)


def box(center, size) -> tuple[np.ndarray, np.ndarray]:
    """Axis-aligned box with its centre and full size (sx, sy, sz)."""
    v = _BOX_CORNERS * np.asarray(size, np.float32) + np.asarray(center, np.float32)
    return v.astype(np.float32), _BOX_TRIS.copy()


def cylinder(center_bottom, radius: float, height: float, segments: int = 16,
             radius_top: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Vertical (optionally tapered) capped cylinder standing on `center_bottom`."""
    rt = radius if radius_top is None else radius_top
    a = np.linspace(0, 2 * np.pi, segments, endpoint=False)
    ring = np.stack([np.cos(a), np.sin(a)], 1)
    bottom = np.concatenate([ring * radius, np.zeros((segments, 1))], 1)
    top = np.concatenate([ring * rt, np.full((segments, 1), height)], 1)
    v = (np.concatenate([bottom, top, [[0, 0, 0], [0, 0, height]]]).astype(np.float32)
         + np.asarray(center_bottom, np.float32))
    i = np.arange(segments)
    j = (i + 1) % segments
    sides = np.concatenate([np.stack([i, j, segments + j], 1), np.stack([i, segments + j, segments + i], 1)])
    cb, ct = 2 * segments, 2 * segments + 1
    caps = np.concatenate([np.stack([np.full(segments, cb), j, i], 1),
                           np.stack([np.full(segments, ct), segments + i, segments + j], 1)])
    return v, np.concatenate([sides, caps]).astype(np.int32)


def ellipsoid(center, radii, rings: int = 8, segments: int = 12) -> tuple[np.ndarray, np.ndarray]:
    """UV ellipsoid with `rings` latitude bands."""
    theta = np.linspace(0, np.pi, rings + 1)[1:-1]
    phi = np.linspace(0, 2 * np.pi, segments, endpoint=False)
    t, p = np.meshgrid(theta, phi, indexing="ij")
    body = np.stack([np.sin(t) * np.cos(p), np.sin(t) * np.sin(p), np.cos(t)], -1).reshape(-1, 3)
    v = np.concatenate([[[0, 0, 1]], body, [[0, 0, -1]]]) * np.asarray(radii) + np.asarray(center)
    n_body = len(theta)
    tris = []
    idx = lambda r, s: 1 + r * segments + (s % segments)  # noqa: E731
    s = np.arange(segments)
    tris.append(np.stack([np.zeros(segments, int), idx(0, s), idx(0, s + 1)], 1))
    for r in range(n_body - 1):
        tris.append(np.stack([idx(r, s), idx(r + 1, s), idx(r + 1, s + 1)], 1))
        tris.append(np.stack([idx(r, s), idx(r + 1, s + 1), idx(r, s + 1)], 1))
    last = 1 + n_body * segments
    tris.append(np.stack([np.full(segments, last), idx(n_body - 1, s + 1), idx(n_body - 1, s)], 1))
    return v.astype(np.float32), np.concatenate(tris).astype(np.int32)
