"""Segmentation node: colour image (+ depth, thermal when the model takes them) -> class mask
(mono8, 255 = unlabeled) and an rgb8 overlay, both stamped with the input header;
vision_msgs/LabelInfo (class ids and names, 255 = "unlabeled") on /tst/segmentation/label_info,
the model version as vision_msgs/VisionInfo on /tst/segmentation/vision_info.

Model serving, latest-frame scheduling and hot reload: `_model_node.ModelServingNode`.
"""
from __future__ import annotations

import numpy as np
from sensor_msgs.msg import Image

from tst_ros.perception.runtime import IGNORE_LABEL, Predictor, overlay, palette
from tst_ros.ros.cdr import CdrImage, image_cdr
from tst_ros.ros.conversions import stamp_to_ns
from tst_ros.ros.nodes import run_node
from tst_ros.ros.nodes._model_node import ModelServingNode


class SegmentationNode(ModelServingNode):
    TASK = "segmentation"
    UNLABELED_CLASS_ID = IGNORE_LABEL

    def __init__(self, node_name: str = "segmentation", parameter_overrides=None, **kwargs):
        super().__init__(node_name, parameter_overrides, **kwargs)

    def label_info_topic(self) -> str:
        return "tst/segmentation/label_info"

    def setup_outputs(self) -> None:
        self.publish_overlay = bool(self.settings["publish_overlay"])
        self.mask_pub = self.create_publisher(Image, "tst/segmentation/mask", 10)
        self.overlay_pub = self.create_publisher(Image, "tst/segmentation/overlay", 10)
        self.colours = palette(0)

    def on_model_changed(self, predictor: Predictor) -> None:
        self.colours = palette(len(predictor.classes))

    def publish_outputs(self, predictor: Predictor, msg: CdrImage, rgb: np.ndarray, depth_m: np.ndarray | None,
                        images: dict[str, np.ndarray]) -> None:
        pred = predictor.predict(rgb, depth_m, need_boxes=False, images=images)
        stamp_ns, frame_id = stamp_to_ns(msg.header.stamp), msg.header.frame_id
        self.mask_pub.publish(image_cdr(stamp_ns, frame_id, "mono8", pred.mask))      # CDR written directly
        if self.publish_overlay and self.overlay_pub.get_subscription_count() > 0:
            self.overlay_pub.publish(image_cdr(stamp_ns, frame_id, "rgb8", overlay(rgb, pred.mask, self.colours)))


def main(argv=None) -> int:
    return run_node(SegmentationNode, argv, low_latency=True)


if __name__ == "__main__":
    raise SystemExit(main())
