"""Node edge of depth registration for nodes that pair depth with colour as it arrives
(segmentation, detection, ttt_kd): the colour and depth CameraInfos from the graph, the depth ->
colour transform from the parameter `depth_extrinsic` or else from TF, and
tst_ros.data.registration.DepthAlignment to align each depth image or refuse it.

A depth image from a camera whose CameraInfo differs from colour's is re-projected into the
colour camera; when that is not possible (no transform, lens distortion) `align` raises
DepthNotRegistered with the parameter to set, and the node drops the frame and counts it:
unregistered depth is never paired with colour silently.
"""
from __future__ import annotations

import numpy as np
from sensor_msgs.msg import CameraInfo

from tst_ros.data.registration import UNSET_EXTRINSIC, DepthAlignment, DepthNotRegistered
from tst_ros.ros.conversions import camera_info_to_intrinsics

__all__ = ["DepthRegistrar", "DepthNotRegistered", "DepthInfoPending"]


class DepthInfoPending(DepthNotRegistered):
    """A depth CameraInfo is published but has not arrived yet: whether depth is registered is
    not known, so the frame waits (is skipped) rather than being taken as registered."""


class DepthRegistrar:
    """Declares `depth_extrinsic` and `ignore_depth_distortion` (unless the node has them).
    The node hands it the colour camera (`set_color_info`, from the CameraInfo subscription the
    node has anyway) and lets it subscribe the depth CameraInfo once depth is needed
    (`subscribe_depth_info`). `tree` (a tst_ros.frames.TransformTree) supplies the depth ->
    colour transform when the parameter is unset; a transform found there is kept."""

    def __init__(self, node, tree=None):
        for name, default in (("depth_extrinsic", UNSET_EXTRINSIC), ("ignore_depth_distortion", False)):
            if not node.has_parameter(name):
                node.declare_parameter(name, default)
        self.alignment = DepthAlignment.from_parameters(node.get_parameter("depth_extrinsic").value,
                                                        node.get_parameter("ignore_depth_distortion").value)
        self.node, self.tree = node, tree
        self.color_info = None
        self.color_frame = self.depth_frame = ""
        self.depth_info_subscription = None

    def subscribe_depth_info(self, subscribe, topic: str = "camera/depth/camera_info") -> None:
        """Subscribe the depth CameraInfo through `subscribe(msg_type, topic, callback)` (once)."""
        if self.depth_info_subscription is None:
            self.depth_info_subscription = subscribe(CameraInfo, topic, self._on_depth_info)

    def set_color_info(self, intrinsics, frame_id: str) -> None:
        self.color_info, self.color_frame = intrinsics, frame_id

    def _on_depth_info(self, msg: CameraInfo) -> None:
        try:
            intrinsics = camera_info_to_intrinsics(msg)
        except ValueError as e:
            self.node.get_logger().warning(f"depth CameraInfo ignored: {e}", throttle_duration_sec=10.0)
            return
        self.alignment.set_depth_info(intrinsics, list(msg.d))
        self.depth_frame = msg.header.frame_id

    def _depth_info_published(self) -> bool:
        sub = self.depth_info_subscription
        return sub is not None and sub.subscription is not None and sub.subscription.get_publisher_count() > 0

    def align(self, depth_m: np.ndarray) -> np.ndarray:
        """Depth aligned to colour (the input itself when it already is); DepthNotRegistered
        with what to set when it cannot be."""
        if self.alignment.depth_info is None and self._depth_info_published():
            raise DepthInfoPending("the depth CameraInfo is published but has not arrived yet")
        if self.alignment.T_color_depth is None and self.tree is not None and self.color_frame and self.depth_frame:
            try:
                self.alignment.T_color_depth = self.tree.lookup(self.color_frame, self.depth_frame, 0)
            except LookupError:
                pass                    # not (yet) in TF: align() says what to set
        return self.alignment.align(depth_m, self.color_info)
