"""Depth registered to colour (ROS-free): never pair a depth image with a colour image it is
not aligned to.

A depth stream is taken as registered when no depth CameraInfo was received (drivers that
publish depth aligned to colour, e.g. `aligned_depth_to_color`, and the simulator) or when its
CameraInfo equals the colour camera's. When the two differ, the depth image is re-projected
into the colour camera with both intrinsics and the colour <- depth transform
(`register_depth`); without that transform, or when either camera reports lens distortion
(rectified images are expected), depth is refused with an error that names what to set.
"""
from __future__ import annotations

import numpy as np

from tst_ros import modalities as registry
from tst_ros.geometry import Intrinsics, backproject, project, transform
from tst_ros.poses import extrinsic_to_matrix


class DepthNotRegistered(ValueError):
    """The depth image cannot be aligned to colour with what is known."""


def register_depth(depth_m: np.ndarray, depth_intr: Intrinsics, color_intr: Intrinsics,
                   T_color_depth: np.ndarray) -> np.ndarray:
    """(H_d, W_d) depth in metres (0 or NaN invalid) seen by the depth camera -> (H_c, W_c) depth
    in metres along the colour camera's optical axis, NaN where no depth point lands. Where
    several points land on one colour pixel the nearest wins (the others are occluded)."""
    points = backproject(np.asarray(depth_m, np.float32), depth_intr).reshape(-1, 3)
    points = points[np.isfinite(points).all(axis=1)]
    out = np.full((color_intr.height, color_intr.width), np.inf, np.float32)
    if len(points):
        uv, z, ok = project(transform(T_color_depth, points), color_intr)
        ui, vi = np.round(uv[ok]).astype(np.int64).T
        np.minimum.at(out, (vi, ui), z[ok].astype(np.float32))
    out[np.isinf(out)] = np.nan
    return out


def same_camera(a: Intrinsics, b: Intrinsics, tolerance_px: float = 0.5) -> bool:
    """Equal size and pinhole parameters within `tolerance_px` (what `scaled` rounding leaves)."""
    return (a.width, a.height) == (b.width, b.height) and all(
        abs(x - y) <= tolerance_px for x, y in ((a.fx, b.fx), (a.fy, b.fy), (a.cx, b.cx), (a.cy, b.cy)))


# `depth_extrinsic` parameter value meaning "not known" (the depth camera's pose in the colour
# optical frame [x, y, z, qw, qx, qy, qz] is then taken from TF where a node has it)
UNSET_EXTRINSIC = [0.0] * 7


class DepthAlignment:
    """What to do with each depth image, given the latest depth CameraInfo (if any)."""

    def __init__(self, T_color_depth: np.ndarray | None = None, ignore_distortion: bool = False):
        self.T_color_depth = None if T_color_depth is None else np.asarray(T_color_depth, np.float64)
        self.ignore_distortion = ignore_distortion
        self.depth_info: Intrinsics | None = None
        self.depth_distortion: np.ndarray | None = None

    @classmethod
    def from_parameters(cls, depth_extrinsic, ignore_distortion: bool) -> "DepthAlignment":
        """From the node parameters `depth_extrinsic` (UNSET_EXTRINSIC: not known) and
        `ignore_depth_distortion`."""
        values = list(depth_extrinsic)
        return cls(extrinsic_to_matrix(values) if any(values) else None, ignore_distortion=bool(ignore_distortion))

    def set_depth_info(self, intrinsics: Intrinsics, distortion=()) -> None:
        self.depth_info = intrinsics
        self.depth_distortion = np.asarray(distortion, np.float64).reshape(-1)

    def align(self, depth_m: np.ndarray, color_intr: Intrinsics | None) -> np.ndarray:
        """Depth (uint16 mm or float metres) aligned to colour: the input itself when it already
        is, else registered float metres (NaN invalid); raises
        DepthNotRegistered with what to set when it cannot be aligned."""
        if self.depth_info is None or (color_intr is not None and same_camera(self.depth_info, color_intr)):
            return depth_m
        if np.asarray(depth_m).dtype == np.uint16:          # millimetres, 0 invalid
            depth_m = registry.physical(registry.DEPTH_IMAGE, depth_m)
        if color_intr is None:
            raise DepthNotRegistered("the depth camera's CameraInfo differs from colour's, and no colour "
                                     "CameraInfo has arrived to register depth into")
        self._check_distortion()
        if self.T_color_depth is None:
            raise DepthNotRegistered(
                f"depth is not registered to colour: its CameraInfo ({_describe(self.depth_info)}) differs from "
                f"colour's ({_describe(color_intr)}); set the parameter `depth_extrinsic` [x, y, z, qw, qx, qy, qz] "
                "(the depth camera's pose in the colour optical frame) to register it, or record a depth topic "
                "aligned to colour")
        return register_depth(depth_m, self.depth_info, color_intr, self.T_color_depth)

    def _check_distortion(self) -> None:
        d = self.depth_distortion
        if self.ignore_distortion or d is None or not np.any(np.abs(d) > 1e-9):
            return
        raise DepthNotRegistered(
            f"the depth CameraInfo has lens distortion (D = {np.round(d, 5).tolist()}); registration needs "
            "rectified depth: record the rectified topic, or set `ignore_depth_distortion:=true` to register it "
            "as if it were undistorted")


def _describe(intr: Intrinsics) -> str:
    return f"{intr.width}x{intr.height}, fx {intr.fx:.1f}, fy {intr.fy:.1f}, cx {intr.cx:.1f}, cy {intr.cy:.1f}"
