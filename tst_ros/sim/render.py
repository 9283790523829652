"""Ray-cast rendering of a building with open3d's RaycastingScene.

Per hit: class-palette colour with a per-instance tint, a procedural texture evaluated at the
hit's 3D position (stripes, hashed value noise, checkers), Lambert shading from the ceiling
light of the room the hit lies in plus a hemispheric ambient term, emissive windows and lamp
shades, then auto exposure, vignetting and sensor noise. Depth is the hit's z in the camera
frame (rays have z = 1), so it is exactly aligned with colour.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tst_ros.geometry import Intrinsics, pixel_rays
from tst_ros.sim.classes import UNLABELED
from tst_ros.sim.meshes import PATTERN_SIZE
from tst_ros.sim.world import Building

LIGHT_FALLOFF_M = 3.0


@dataclass
class RenderOutput:
    depth_m: np.ndarray       # (H, W) float32, exact (noise-free) z, NaN where nothing was hit
    rgb: np.ndarray           # (H, W, 3) float32 in 0..1 before exposure/noise (linear shading result)
    semantic: np.ndarray      # (H, W) uint8
    instance: np.ndarray      # (H, W) uint16
    normals_cam: np.ndarray   # (H, W, 3) float32 unit normals in the camera frame, facing the camera
    cos_incidence: np.ndarray  # (H, W) float32 |cos| between ray and surface normal
    glass: np.ndarray         # (H, W) bool, strongly emissive surfaces (windows)


class Scene:
    """A building's triangles in one RaycastingScene plus per-triangle material tables."""

    def __init__(self, building: Building):
        import open3d as o3d

        verts, tris, tri_obj, colors, patterns, emissive = [], [], [], [], [], []
        offset = 0
        for oi, obj in enumerate(building.objects):
            for p in obj.parts:
                verts.append(p.vertices)
                tris.append(p.triangles + offset)
                offset += len(p.vertices)
                n = len(p.triangles)
                tri_obj.append(np.full(n, oi, np.int32))
                colors.append(np.repeat(p.color[None], n, 0))
                patterns.append(np.repeat(p.pattern[None], n, 0))
                emissive.append(np.full(n, p.emissive, np.float32))
        self.vertices = np.concatenate(verts).astype(np.float32)
        self.triangles = np.concatenate(tris).astype(np.uint32)
        tri_obj = np.concatenate(tri_obj)
        obj_class = np.array([o.class_id for o in building.objects], np.uint8)
        obj_inst = np.array([o.instance_id for o in building.objects], np.uint16)
        # one extra row at the end answers rays that hit nothing
        self.tri_class = np.append(obj_class[tri_obj], np.uint8(UNLABELED))
        self.tri_instance = np.append(obj_inst[tri_obj], np.uint16(0))
        self.tri_color = np.vstack([np.concatenate(colors), np.zeros((1, 3))]).astype(np.float32)
        self.tri_pattern = np.vstack([np.concatenate(patterns), np.zeros((1, PATTERN_SIZE))]).astype(np.float32)
        self.tri_emissive = np.append(np.concatenate(emissive), np.float32(0))
        lights = np.array([r.light_xyz for r in building.rooms], np.float32)
        gains = np.array([r.light_gain for r in building.rooms], np.float32)
        # each triangle is lit by the ceiling light of the room its front face looks into
        tri_room = self._triangle_rooms(building)
        self.tri_light = np.vstack([lights[tri_room], np.zeros((1, 3))]).astype(np.float32)
        self.tri_gain = np.append(gains[tri_room], np.float32(0)).astype(np.float32)
        # one packed per-triangle table so that a frame needs a single gather:
        # [colour 3 | pattern 8 | light xyz 3 | light gain 1 | emissive 1]
        self.table = np.ascontiguousarray(np.hstack([self.tri_color, self.tri_pattern, self.tri_light,
                                                     self.tri_gain[:, None], self.tri_emissive[:, None]]),
                                          dtype=np.float32)
        self.building = building
        self.raycaster = o3d.t.geometry.RaycastingScene()
        self.raycaster.add_triangles(o3d.core.Tensor(self.vertices), o3d.core.Tensor(self.triangles))
        self._o3d = o3d

    def _triangle_rooms(self, building: Building) -> np.ndarray:
        v = self.vertices[self.triangles.astype(np.int64)]
        normal = np.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0])
        normal /= np.maximum(np.linalg.norm(normal, axis=1, keepdims=True), 1e-12)
        probe = v.mean(1) + 0.05 * normal
        room = building.room_at(probe[:, :2].astype(np.float64))
        if (room < 0).any():  # outside faces of exterior walls: use the room behind them
            inner = building.room_at((v.mean(1) - 0.05 * normal)[:, :2].astype(np.float64))
            room = np.where(room < 0, inner, room)
        return np.maximum(room, 0)

    @property
    def n_triangles(self) -> int:
        return len(self.triangles)

    def cast(self, rays: np.ndarray) -> dict:
        return self.raycaster.cast_rays(self._o3d.core.Tensor(rays), nthreads=0)


def _hash_noise(cells: np.ndarray) -> np.ndarray:
    """Deterministic pseudo-random value in [0, 1) for integer lattice cells (N, 3) (uint32 arithmetic, wrapping)."""
    c = cells.astype(np.int32).view(np.uint32)
    h = c[:, 0] * np.uint32(73856093)
    h ^= c[:, 1] * np.uint32(19349663)
    h ^= c[:, 2] * np.uint32(83492791)
    h ^= h >> np.uint32(13)
    h *= np.uint32(1274126177)
    return ((h >> np.uint32(8)) & np.uint32(0xFFFF)).astype(np.float32) * np.float32(1 / 65536.0)


def _rotate(v: np.ndarray, R: np.ndarray) -> np.ndarray:
    """(N, 3) @ R.T without a matmul over a tiny inner dimension (slow for N x 3 arrays)."""
    out = v[:, 0:1] * R[:, 0]
    out += v[:, 1:2] * R[:, 1]
    out += v[:, 2:3] * R[:, 2]
    return out


def _dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return a[:, 0] * b[:, 0] + a[:, 1] * b[:, 1] + a[:, 2] * b[:, 2]


def texture(hit: np.ndarray, pattern: np.ndarray) -> np.ndarray:
    """Procedural texture factor (N,) at world points `hit` (N, 3) for per-hit parameters (N, 8)."""
    stripes = np.sin(_dot(hit, pattern[:, 0:3]))
    noise = _hash_noise(np.floor(hit * pattern[:, 4:5])) * 2 - 1
    check = np.floor(hit * pattern[:, 6:7]).astype(np.int32)
    checker = ((check[:, 0] + check[:, 1] + check[:, 2]) & 1).astype(np.float32) * 2 - 1
    return 1 + pattern[:, 3] * stripes + pattern[:, 5] * noise + pattern[:, 7] * checker


class Renderer:
    def __init__(self, scene: Scene, intrinsics: Intrinsics, style):
        self.scene, self.intr, self.style = scene, intrinsics, style
        self.rays_cam = pixel_rays(intrinsics).reshape(-1, 3).astype(np.float32)
        self.inv_ray_len = (1 / np.linalg.norm(self.rays_cam, axis=1)).astype(np.float32)
        self._rays = np.empty((len(self.rays_cam), 6), np.float32)
        u = (np.arange(intrinsics.width) - intrinsics.cx) / intrinsics.width
        v = (np.arange(intrinsics.height) - intrinsics.cy) / intrinsics.height
        r2 = (u[None, :] ** 2 + v[:, None] ** 2) / 0.5
        self.vignette = (1 - style.vignette * r2).astype(np.float32).reshape(-1)
        self.light_rgb = np.asarray(style.light_rgb, np.float32)

    def render(self, T_world_camera: np.ndarray) -> RenderOutput:
        H, W = self.intr.height, self.intr.width
        R = T_world_camera[:3, :3].astype(np.float32)
        origin = T_world_camera[:3, 3].astype(np.float32)
        dirs = _rotate(self.rays_cam, R)
        self._rays[:, :3] = origin
        self._rays[:, 3:] = dirs
        res = self.scene.cast(self._rays)
        t = res["t_hit"].numpy()
        prim = res["primitive_ids"].numpy().astype(np.intp)
        miss = ~np.isfinite(t)
        any_miss = bool(miss.any())
        if any_miss:
            prim[miss] = self.scene.n_triangles
            t = np.where(miss, np.float32(0), t)
        n = res["primitive_normals"].numpy()
        facing = _dot(n, dirs)
        n *= np.where(facing > 0, np.float32(-1), np.float32(1))[:, None]
        cos_inc = np.abs(facing) * self.inv_ray_len
        hit = dirs * t[:, None]
        hit += origin

        sc = self.scene
        m = np.take(sc.table, prim, axis=0)
        tex = texture(hit, m[:, 3:11])
        to_light = m[:, 11:14] - hit
        d2 = _dot(to_light, to_light)
        lambert = np.maximum(_dot(n, to_light), 0) / np.sqrt(np.maximum(d2, 1e-6))
        light = m[:, 14] * lambert / (1 + d2 * np.float32(1 / LIGHT_FALLOFF_M**2))
        light += np.float32(self.style.ambient) * (0.85 + 0.15 * n[:, 2])
        emissive = m[:, 15]
        glow = emissive > 0
        if glow.any():
            light[glow] = np.maximum(light[glow], emissive[glow])
        light *= tex
        rgb = m[:, 0:3] * light[:, None]
        rgb *= self.light_rgb

        depth = np.where(miss, np.float32(np.nan), t) if any_miss else t
        normals_cam = _rotate(n, R.T)
        return RenderOutput(depth.reshape(H, W), rgb.reshape(H, W, 3), np.take(sc.tri_class, prim).reshape(H, W),
                            np.take(sc.tri_instance, prim).reshape(H, W), normals_cam.reshape(H, W, 3),
                            cos_inc.reshape(H, W), (emissive > 1.0).reshape(H, W))

    def expose(self, rgb_linear: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Auto exposure (mean brightness to the style's target), vignetting, tone curve, noise, 8-bit."""
        H, W = rgb_linear.shape[:2]
        flat = rgb_linear.reshape(-1, 3)
        mean = float(flat[::7].mean())
        gain = np.float32(np.clip(self.style.exposure / max(mean, 1e-4), 0.25, 6.0))
        x = flat * (gain * self.vignette)[:, None]
        x /= 1 + 0.25 * x  # soft shoulder instead of hard clipping
        x *= np.float32(255 * 1.25)
        noise = rng.standard_normal(x.shape, dtype=np.float32)
        noise *= np.float32(self.style.rgb_noise)
        x += noise
        np.clip(x, 0, 255, out=x)
        return x.astype(np.uint8).reshape(H, W, 3)
