"""A ROS-free transform tree: stamped parent->child transforms between named frames, composed
along the chain between any two frames and interpolated at a message's stamp.

This is what a node needs from TF: `/tf` edges are dynamic (a PoseBuffer per edge, looked up
at the stamp), `/tf_static` edges are fixed. `lookup(target, source, stamp_ns)` returns
T_target_source, the 4x4 matrix that maps points given in `source` into `target`, walking
the tree up from both frames to their common ancestor (as tf2 does). `FramePoses` answers
the pose questions of the rest of the package (T_odom_camera at a stamp) from such a tree, so
poses from TF and poses from odometry take one code path downstream.
"""
from __future__ import annotations

import threading

import numpy as np

from tst_ros.poses import PoseBuffer


def _frame(name: str) -> str:
    return name.lstrip("/")


class TransformTree:
    """Frames with at most one parent each; edges are static or time-indexed. Thread-safe."""

    def __init__(self, capacity: int = 2000, tolerance_ns: int = 0):
        self.capacity, self.tolerance_ns = capacity, tolerance_ns
        self._parent: dict[str, str] = {}
        self._static: dict[str, np.ndarray] = {}        # child -> T_parent_child
        self._dynamic: dict[str, PoseBuffer] = {}       # child -> stamped T_parent_child
        self._lock = threading.Lock()

    def frames(self) -> set[str]:
        with self._lock:
            return self._frames()

    def _frames(self) -> set[str]:
        return set(self._parent) | set(self._parent.values())

    def set_transform(self, parent: str, child: str, T_parent_child: np.ndarray, stamp_ns: int | None = None) -> None:
        """Add an edge sample; `stamp_ns` None makes the edge static (as /tf_static does)."""
        parent, child = _frame(parent), _frame(child)
        if parent == child:
            raise ValueError(f"a transform from frame {parent!r} to itself is not an edge")
        with self._lock:
            known = self._parent.get(child)
            if known is not None and known != parent:
                raise ValueError(f"frame {child!r} already has parent {known!r}; a frame has one parent "
                                 f"(got {parent!r})")
            self._parent[child] = parent
            if stamp_ns is None:
                self._static[child] = np.array(T_parent_child, dtype=np.float64)
                self._dynamic.pop(child, None)
                return
            buffer = self._dynamic.setdefault(child, PoseBuffer(capacity=self.capacity,
                                                                tolerance_ns=self.tolerance_ns))
            self._static.pop(child, None)
        buffer.add(stamp_ns, T_parent_child)

    def _chain_to_root(self, frame: str) -> list[str]:
        chain = [frame]
        while chain[-1] in self._parent:
            chain.append(self._parent[chain[-1]])
            if len(chain) > 1000:
                raise ValueError(f"the transform tree has a cycle through {frame!r}")
        return chain

    def _edge(self, child: str, stamp_ns: int) -> np.ndarray:
        """T_parent_child at the stamp (LookupError names the edge when it cannot)."""
        if child in self._static:
            return self._static[child]
        try:
            return self._dynamic[child].lookup(stamp_ns)
        except LookupError as e:
            raise LookupError(f"{self._parent[child]} -> {child}: {e}") from None

    def lookup(self, target: str, source: str, stamp_ns: int) -> np.ndarray:
        """T_target_source at `stamp_ns`; LookupError when the frames are not connected or an
        edge has no sample around the stamp."""
        target, source = _frame(target), _frame(source)
        with self._lock:
            up_source, up_target = self._chain_to_root(source), self._chain_to_root(target)
            common = next((f for f in up_source if f in set(up_target)), None)
            if common is None:
                raise LookupError(f"frames {source!r} and {target!r} are not connected "
                                  f"(known frames: {sorted(self._frames())})")
            T_common_source = np.eye(4)
            for child in up_source[:up_source.index(common)]:
                T_common_source = self._edge(child, stamp_ns) @ T_common_source
            T_common_target = np.eye(4)
            for child in up_target[:up_target.index(common)]:
                T_common_target = self._edge(child, stamp_ns) @ T_common_target
        return np.linalg.inv(T_common_target) @ T_common_source

    def can_lookup(self, target: str, source: str, stamp_ns: int) -> bool:
        try:
            self.lookup(target, source, stamp_ns)
            return True
        except LookupError:
            return False


class FramePoses:
    """The PoseBuffer interface (T_odom_camera, can_lookup, T_base_camera) answered by a tree,
    and where the tree does not connect odom and the camera at a stamp (no /tf publisher, or
    only part of the chain on /tf), by `fallback` (a PoseBuffer: /odom plus the extrinsic)."""

    def __init__(self, tree: TransformTree, odom_frame: str = "odom", base_frame: str = "base_link",
                 camera_frame: str = "camera_color_optical_frame", fallback: PoseBuffer | None = None):
        self.tree, self.fallback = tree, fallback
        self.odom_frame, self.base_frame, self.camera_frame = odom_frame, base_frame, camera_frame

    def T_odom_camera(self, stamp_ns: int) -> np.ndarray:
        try:
            return self.tree.lookup(self.odom_frame, self.camera_frame, stamp_ns)
        except LookupError as tree_error:
            if self.fallback is None:
                raise
            try:
                return self.fallback.T_odom_camera(stamp_ns)
            except LookupError as odometry_error:
                raise LookupError(f"TF: {tree_error}; odometry: {odometry_error}") from None

    def can_lookup(self, stamp_ns: int) -> bool:
        return (self.tree.can_lookup(self.odom_frame, self.camera_frame, stamp_ns)
                or (self.fallback is not None and self.fallback.can_lookup(stamp_ns)))

    @property
    def T_base_camera(self) -> np.ndarray | None:
        """base -> camera where that part of the chain is static in the tree, else the
        fallback's extrinsic (None while unknown)."""
        try:
            return self.tree.lookup(self.base_frame, self.camera_frame, 0)
        except LookupError:
            return self.fallback.T_base_camera if self.fallback is not None else None
