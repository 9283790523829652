"""2D -> 3D feature projection for TTT-KD (as in OpenScene).

A point (in some reference frame with pose `T_odom_ref`) is seen by a view (an image with its
camera pose `T_odom_camera`, intrinsics and optionally an aligned depth image) when, after
world -> camera with the inverse camera pose and pinhole projection:
  z > 0, the pixel is inside the image, and |D(u, v) - z| <= tol (depth occlusion test).
Without a depth image the occlusion test runs against a z-buffer rendered from the points
themselves. Teacher features are sampled bilinearly (or nearest) at the projected pixel and
averaged over all views that see the point.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from tst_ros import geometry
from tst_ros.geometry import Intrinsics

DEFAULT_OCCLUSION_TOL_M = 0.10


@dataclass
class View:
    """One camera frame: teacher features covering the whole image, its pose and intrinsics."""
    features: torch.Tensor              # (C, h, w) float, covers the full image
    T_odom_camera: np.ndarray           # (4, 4) camera pose at the image stamp
    intrinsics: Intrinsics              # of the image (and of the aligned depth)
    depth_m: np.ndarray | None = None   # (H, W) metres, NaN or 0 = invalid; None: z-buffer of the points


def points_in_camera(points_ref: np.ndarray, T_odom_ref: np.ndarray, T_odom_camera: np.ndarray) -> np.ndarray:
    """Reference-frame points -> camera-frame points (world -> camera with the inverse camera pose)."""
    T_camera_ref = geometry.invert(T_odom_camera) @ T_odom_ref
    return geometry.transform(T_camera_ref, np.asarray(points_ref, dtype=np.float64))


def nearest_pixel(uv: np.ndarray, intr: Intrinsics) -> tuple[np.ndarray, np.ndarray]:
    """Float pixel coordinates -> clipped integer (col, row) of the nearest pixel centre."""
    u = np.clip(np.rint(np.nan_to_num(uv[:, 0])), 0, intr.width - 1).astype(np.int64)
    v = np.clip(np.rint(np.nan_to_num(uv[:, 1])), 0, intr.height - 1).astype(np.int64)
    return u, v


def zbuffer(points_cam: np.ndarray, intr: Intrinsics) -> np.ndarray:
    """(H, W) nearest z of the given camera-frame points per pixel (NaN where no point falls)."""
    uv, z, ok = geometry.project(points_cam, intr)
    u, v = nearest_pixel(uv[ok], intr)
    flat = np.full(intr.height * intr.width, np.inf)
    np.minimum.at(flat, v * intr.width + u, z[ok])
    flat[np.isinf(flat)] = np.nan
    return flat.reshape(intr.height, intr.width)


def visibility(points_cam: np.ndarray, intr: Intrinsics, depth_m: np.ndarray | None,
               tol: float = DEFAULT_OCCLUSION_TOL_M) -> tuple[np.ndarray, np.ndarray]:
    """-> (uv (N, 2) pixel coordinates, valid (N,) bool): z > 0, in bounds, not occluded."""
    uv, z, ok = geometry.project(points_cam, intr)
    ok &= np.isfinite(z)
    if depth_m is None:
        depth_m = zbuffer(points_cam[ok], intr)
    elif depth_m.shape != (intr.height, intr.width):
        raise ValueError(f"depth image is {depth_m.shape[1]}x{depth_m.shape[0]} but the intrinsics are "
                         f"{intr.width}x{intr.height}; depth must be aligned to the colour image")
    u, v = nearest_pixel(uv, intr)
    d = depth_m[v, u].astype(np.float64)
    with np.errstate(invalid="ignore"):
        ok &= np.isfinite(d) & (d > 0) & (np.abs(d - z) <= tol)
    return uv, ok


def sample_features(features: torch.Tensor, uv: np.ndarray, image_size: tuple[int, int],
                    mode: str = "bilinear") -> torch.Tensor:
    """Sample a (C, h, w) feature map covering a W x H image at pixel coordinates uv -> (N, C)."""
    width, height = image_size
    grid = torch.as_tensor(np.asarray(uv, dtype=np.float32)).clone()
    grid[:, 0] = (grid[:, 0] + 0.5) / width * 2 - 1      # pixel centres -> [-1, 1], align_corners=False
    grid[:, 1] = (grid[:, 1] + 0.5) / height * 2 - 1
    out = F.grid_sample(features[None].float(), grid.view(1, 1, -1, 2), mode=mode,
                        padding_mode="border", align_corners=False)
    return out[0, :, 0].T.contiguous()


def project_features(points_ref: np.ndarray, T_odom_ref: np.ndarray, views: list[View],
                     tol: float = DEFAULT_OCCLUSION_TOL_M, mode: str = "bilinear"
                     ) -> tuple[torch.Tensor, np.ndarray]:
    """Average the teacher features of every view that sees each point.

    Returns (features (N, C) float32, zero where unseen; valid (N,) bool = seen by >= 1 view).
    """
    if not views:
        raise ValueError("project_features needs at least one view")
    points_ref = np.asarray(points_ref, dtype=np.float64)
    n = len(points_ref)
    channels = views[0].features.shape[0]
    total = torch.zeros(n, channels)
    count = np.zeros(n, dtype=np.int64)
    for view in views:
        if view.features.shape[0] != channels:
            raise ValueError("all views must carry features with the same number of channels")
        cam = points_in_camera(points_ref, T_odom_ref, view.T_odom_camera)
        uv, ok = visibility(cam, view.intrinsics, view.depth_m, tol)
        if not ok.any():
            continue
        idx = torch.as_tensor(np.flatnonzero(ok))
        size = (view.intrinsics.width, view.intrinsics.height)
        total.index_add_(0, idx, sample_features(view.features, uv[ok], size, mode))
        count += ok
    valid = count > 0
    total[torch.as_tensor(valid)] /= torch.as_tensor(count[valid], dtype=torch.float32)[:, None]
    return total, valid
