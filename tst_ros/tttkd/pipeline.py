"""Deployment-side TTT-KD (ROS-free): buffers recent images, finds the ones within the sync
window of a cloud's stamp, builds teacher views with the camera pose at each image stamp,
and runs the test-time adapter on the cloud. The `ttt_kd` node only converts messages and
calls `CloudLabeler`; the benchmark drives the same class.
"""
from __future__ import annotations

import threading
from collections import OrderedDict, deque

import numpy as np

from tst_ros.geometry import Intrinsics
from tst_ros.poses import PoseBuffer
from tst_ros.tttkd.adapt import UNLABELED, Prediction, TestTimeAdapter
from tst_ros.tttkd.checkpoint import load_checkpoint
from tst_ros.tttkd.projection import View
from tst_ros.tttkd.teachers import Teacher, make_teacher, teacher_from_description


class CloudLabeler:
    """Checkpoint + teacher + adapter + short image/depth buffers."""

    def __init__(self, checkpoint: str, poses: PoseBuffer, teacher: str = "auto", steps: int = 3,
                 lr: float = 1e-4, mode: str = "episodic", stride: int = 1, point_budget: int = 8000,
                 voxel_size: float = 0.05, sync_window_s: float = 0.25, max_views: int = 2,
                 depth_slop_s: float = 0.03, image_buffer: int = 16, device: str = "cpu",
                 teacher_obj: Teacher | None = None, optimizer: str = "adam", adapt_label_head: bool = False):
        from tst_ros.util import resolve_device
        device = resolve_device(device)
        model, reducer, meta = load_checkpoint(checkpoint, device=device)
        self.meta = meta
        self.checkpoint = str(checkpoint)
        self.classes = list(meta.get("classes", []))
        if teacher_obj is not None:
            self.teacher = teacher_obj
        elif teacher in ("", "auto"):
            self.teacher = teacher_from_description(meta["teacher"], device=device)
        else:
            self.teacher = make_teacher(teacher, device=device)
        if self.teacher.dim != reducer.in_dim:
            raise ValueError(f"teacher {self.teacher.describe()} gives {self.teacher.dim} channels but checkpoint "
                             f"{checkpoint} was trained with {reducer.in_dim}-channel teacher features "
                             f"({meta.get('teacher')})")
        self.adapter = TestTimeAdapter(model, reducer, steps=steps, lr=lr, mode=mode, stride=stride,
                                       point_budget=point_budget, voxel_size=voxel_size, device=device,
                                       optimizer=optimizer, adapt_label_head=adapt_label_head)
        self.poses = poses
        self.sync_window_ns = int(sync_window_s * 1e9)
        self.depth_slop_ns = int(depth_slop_s * 1e9)
        self.max_views = int(max_views)
        self.intrinsics: Intrinsics | None = None
        self._images: deque = deque(maxlen=image_buffer)   # (stamp_ns, rgb)
        self._depths: deque = deque(maxlen=image_buffer)   # (stamp_ns, depth_m)
        self._features: OrderedDict = OrderedDict()        # stamp_ns -> teacher features
        self._lock = threading.Lock()

    # ------------------------------------------------------------------------- inputs
    @staticmethod
    def _add(buffer: deque, stamp_ns: int, item) -> None:
        """Append, or replace an entry with the same stamp (a re-sent frame is one view)."""
        for i, (s, _) in enumerate(buffer):
            if s == stamp_ns:
                buffer[i] = (stamp_ns, item)
                return
        buffer.append((stamp_ns, item))

    def add_image(self, stamp_ns: int, rgb: np.ndarray) -> None:
        with self._lock:
            self._add(self._images, int(stamp_ns), rgb)

    def add_depth(self, stamp_ns: int, depth_m: np.ndarray) -> None:
        with self._lock:
            self._add(self._depths, int(stamp_ns), depth_m)

    def set_intrinsics(self, intrinsics: Intrinsics) -> None:
        self.intrinsics = intrinsics
        if hasattr(self.teacher, "intrinsics"):
            self.teacher.intrinsics = intrinsics  # teachers that derive normals from depth need them

    # ------------------------------------------------------------------------- views
    def _nearest_depth(self, stamp_ns: int) -> np.ndarray | None:
        best = min(self._depths, key=lambda d: abs(d[0] - stamp_ns), default=None)
        if best is None or abs(best[0] - stamp_ns) > self.depth_slop_ns:
            return None
        return best[1]

    def _teacher_features(self, stamp_ns: int, rgb: np.ndarray, depth: np.ndarray | None):
        if stamp_ns not in self._features:
            self._features[stamp_ns] = self.teacher.features(rgb, depth)
            while len(self._features) > 4:
                self._features.popitem(last=False)
        return self._features[stamp_ns]

    def views(self, cloud_stamp_ns: int, messages: list[str]) -> list[View]:
        """Teacher views of the images within the sync window of the cloud (nearest first)."""
        with self._lock:
            near = sorted((im for im in self._images if abs(im[0] - cloud_stamp_ns) <= self.sync_window_ns),
                          key=lambda im: abs(im[0] - cloud_stamp_ns))[: self.max_views]
            paired = [(s, rgb, self._nearest_depth(s)) for s, rgb in near]
        if not paired:
            messages.append(f"no image within the sync window (±{self.sync_window_ns / 1e9:.3f} s) of the cloud")
            return []
        if self.intrinsics is None:
            messages.append("no camera_info received yet: cannot project teacher features")
            return []
        out = []
        for stamp, rgb, depth in paired:
            if rgb.shape[:2] != (self.intrinsics.height, self.intrinsics.width):
                messages.append(f"image {rgb.shape[1]}x{rgb.shape[0]} does not match camera_info "
                                f"{self.intrinsics.width}x{self.intrinsics.height}; skipped")
                continue
            try:
                T = self.poses.T_odom_camera(stamp)
            except (LookupError, ValueError) as e:
                messages.append(f"image at {stamp} ns skipped: {e}")
                continue
            out.append(View(self._teacher_features(stamp, rgb, depth), T, self.intrinsics, depth))
        return out

    # ------------------------------------------------------------------------- clouds
    def camera_frame_points(self, stamp_ns: int, xyz: np.ndarray, frame_id: str = "") -> np.ndarray:
        """The cloud in the camera optical frame, where the backbone was trained. A cloud in
        another frame (a LiDAR, the depth camera) is moved there with the TF tree at its stamp;
        with odometry only, no other frame is known and such a cloud is refused."""
        camera_frame = getattr(self.poses, "camera_frame", "")
        if not frame_id or not camera_frame or frame_id.lstrip("/") == camera_frame:
            return xyz
        if not hasattr(self.poses, "tree"):            # odometry only: a PoseBuffer
            raise LookupError(f"the cloud is in frame {frame_id!r}, but without TF only the camera frame "
                              f"{camera_frame!r} is known (publish TF, or the cloud in the camera frame)")
        T_camera_cloud = self.poses.tree.lookup(camera_frame, frame_id, stamp_ns)
        return (xyz @ T_camera_cloud[:3, :3].T + T_camera_cloud[:3, 3]).astype(np.float32)

    def label(self, stamp_ns: int, xyz: np.ndarray, rgb: np.ndarray | None, frame_id: str = "") -> Prediction:
        """Label a cloud given in `frame_id` (default: the camera optical frame) at `stamp_ns`
        (one label per input point)."""
        messages: list[str] = []
        try:
            xyz = self.camera_frame_points(stamp_ns, np.asarray(xyz, np.float32).reshape(-1, 3), frame_id)
        except LookupError as e:
            messages.append(f"cloud not labelled: {e}")
            n = len(np.asarray(xyz).reshape(-1, 3))
            return Prediction(np.full(n, UNLABELED, np.uint32), np.zeros(n, np.float32),
                              {"points": n, "adapted": False, "steps": 0, "messages": messages})
        try:
            T_odom_ref = self.poses.T_odom_camera(stamp_ns)
            pose_ok = True
        except (LookupError, ValueError) as e:
            messages.append(f"no camera pose at the cloud stamp ({e}); labelling without adaptation "
                            "in the camera's mounting frame")
            T_odom_ref = self.poses.T_base_camera if self.poses.T_base_camera is not None else np.eye(4)
            pose_ok = False
        due = self.adapter.steps > 0 and self.adapter.should_adapt() and pose_ok
        views = self.views(stamp_ns, messages) if due else []
        pred = self.adapter.process(xyz, rgb, T_odom_ref, views, steps=None if pose_ok else 0)
        pred.info["messages"] = messages + pred.info["messages"]
        pred.info["views"] = len(views)
        return pred
