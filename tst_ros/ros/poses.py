"""Node edge of pose handling: fill a tst_ros.poses.PoseBuffer from the graph.

Every edge of /tf and /tf_static (tf2_msgs/TFMessage: the real package, or the wire-identical
one built from `interfaces/` where ROS is not installed) goes into a
tst_ros.frames.TransformTree, so chains such as odom->base_link->camera_link->
camera_color_optical_frame (and clouds in any frame of the tree) resolve at message stamps.
Where the tree does not connect odom and the camera, odom->base_link comes from
nav_msgs/Odometry on `odom` and the camera extrinsic from the node parameter
`camera_extrinsic` [x, y, z, qw, qx, qy, qz] (identity by default). `PoseSubscriber.poses`
answers T_odom_camera at a stamp from whichever source has it (tst_ros.frames.FramePoses).
"""
from __future__ import annotations

import importlib.util

import numpy as np
from nav_msgs.msg import Odometry

from tst_ros.frames import FramePoses, TransformTree
from tst_ros.poses import PoseBuffer, extrinsic_to_matrix, matrix_to_extrinsic
from tst_ros.ros.conversions import odometry_to_matrix, stamp_to_ns, transform_to_matrix
from tst_ros.ros.qos import qos_latched, qos_profile

TF_AVAILABLE = importlib.util.find_spec("tf2_msgs") is not None


class PoseSubscriber:
    """Subscribes `node` to poses and adds them to `buffer`.

    Declares the parameter `camera_extrinsic` (default: the buffer's T_base_camera, else
    identity) unless the node already has it, and sets buffer.T_base_camera from it.
    """

    def __init__(self, node, buffer: PoseBuffer, odom_topic: str = "odom", odom_frame: str = "odom",
                 base_frame: str = "base_link", camera_frame: str = "camera_color_optical_frame",
                 qos=None, use_tf: bool | None = None):
        self.node, self.buffer = node, buffer
        self.odom_frame, self.base_frame, self.camera_frame = odom_frame, base_frame, camera_frame
        self.received = 0
        self._warned_frames = False
        self._apply_extrinsic_parameter()
        self.use_tf = TF_AVAILABLE if use_tf is None else bool(use_tf)
        qos = qos if qos is not None else qos_profile("reliable", 100)
        self.tree = TransformTree(capacity=buffer.capacity, tolerance_ns=buffer.tolerance_ns)
        # what the node asks for poses: the TF tree, falling back to odometry plus the extrinsic
        buffer.camera_frame = camera_frame
        self.poses = FramePoses(self.tree, odom_frame, base_frame, camera_frame, fallback=buffer) \
            if self.use_tf else buffer
        self._subs = [node.create_subscription(Odometry, odom_topic, self._on_odometry, qos)]
        if self.use_tf:
            from tf2_msgs.msg import TFMessage
            self._subs += [node.create_subscription(TFMessage, "/tf", self._on_tf, qos),
                           node.create_subscription(TFMessage, "/tf_static", self._on_tf_static, qos_latched(100))]

    def _apply_extrinsic_parameter(self) -> None:
        if not self.node.has_parameter("camera_extrinsic"):
            default = self.buffer.T_base_camera if self.buffer.T_base_camera is not None else np.eye(4)
            self.node.declare_parameter("camera_extrinsic", matrix_to_extrinsic(default))
        values = self.node.get_parameter("camera_extrinsic").value
        self.buffer.T_base_camera = extrinsic_to_matrix(values)

    def _on_odometry(self, msg: Odometry) -> None:
        frames_ok = (msg.header.frame_id.lstrip("/") in ("", self.odom_frame)
                     and msg.child_frame_id.lstrip("/") in ("", self.base_frame))
        if not frames_ok and not self._warned_frames:
            self._warned_frames = True
            self.node.get_logger().warning(
                f"odometry is {msg.header.frame_id}->{msg.child_frame_id}, expected "
                f"{self.odom_frame}->{self.base_frame}; using it as such")
        self.buffer.add(stamp_to_ns(msg.header.stamp), odometry_to_matrix(msg))
        self.received += 1

    def _on_tf(self, msg) -> None:
        self._add_transforms(msg, static=False)

    def _on_tf_static(self, msg) -> None:
        self._add_transforms(msg, static=True)

    def _add_transforms(self, msg, static: bool) -> None:
        for t in msg.transforms:
            stamp = None if static else stamp_to_ns(t.header.stamp)
            try:
                self.tree.set_transform(t.header.frame_id, t.child_frame_id, transform_to_matrix(t.transform), stamp)
            except ValueError as e:
                self.node.get_logger().warning(f"transform ignored: {e}", throttle_duration_sec=10.0)
                continue
            self.received += 1

    def destroy(self) -> None:
        for sub in self._subs:
            self.node.destroy_subscription(sub)
        self._subs = []
