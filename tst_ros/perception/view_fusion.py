"""Multi-view fusion of per-frame class probabilities through the building's depth and poses.

A robot sees each surface of its building from many frames. One frame's prediction for a chair
seen edge-on may be wrong while most frames that see the same spot agree, so self-training
labels are steadier when every pixel takes the mean class distribution of all the pixels, in
all the recorded frames, whose depth lands in the same voxel of the odometry frame. Pixels
without valid depth keep their own frame's distribution.
"""
from __future__ import annotations

import numpy as np

from tst_ros import modalities as registry
from tst_ros.geometry import Intrinsics, backproject, transform, voxel_groups


def world_points(depth_mm: np.ndarray, pose: np.ndarray, intrinsics: Intrinsics) -> np.ndarray:
    """(H, W) depth in mm (0 invalid) -> (H*W, 3) points in the odometry frame, NaN where invalid."""
    camera = backproject(registry.physical(registry.DEPTH_IMAGE, depth_mm), intrinsics).reshape(-1, 3)
    return transform(np.asarray(pose, dtype=np.float64), camera)


def fuse_views(probs: np.ndarray, depth_mm: np.ndarray, poses: list[np.ndarray],
               intrinsics: list[Intrinsics], voxel: float) -> np.ndarray:
    """(N, C, H, W) per-frame class probabilities of N frames with their (N, H, W) depth in mm,
    T_odom_camera poses and intrinsics (at H x W) -> (N, C, H, W), each pixel with valid depth
    holding the mean distribution of every pixel in its voxel."""
    n, c, h, w = probs.shape
    if voxel <= 0:
        raise ValueError(f"the fusion voxel must be positive, got {voxel} m")
    if depth_mm.shape != (n, h, w) or len(poses) != n or len(intrinsics) != n:
        raise ValueError(f"fusion needs depth, a pose and intrinsics per frame: {n} frames of {h}x{w}, "
                         f"got depth {depth_mm.shape}, {len(poses)} poses, {len(intrinsics)} intrinsics")
    points = np.concatenate([world_points(d, p, k) for d, p, k in zip(depth_mm, poses, intrinsics)])
    valid = np.isfinite(points).all(1)
    flat = np.ascontiguousarray(probs.transpose(0, 2, 3, 1).reshape(-1, c))
    ids, counts = voxel_groups(points[valid], voxel)
    mean = np.stack([np.bincount(ids, weights=flat[valid, k], minlength=len(counts)) for k in range(c)], 1)
    mean /= counts[:, None]
    fused = flat.copy()
    fused[valid] = mean[ids]
    return fused.reshape(n, h, w, c).transpose(0, 3, 1, 2)
