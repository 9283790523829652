"""Detection node: colour image (+ depth, thermal when the model takes them) ->
vision_msgs/Detection2DArray (class ids as strings indexing LabelInfo, scores, pixel boxes) and
a MarkerArray for RViz (box outlines and labels drawn on the plane 1 m in front of the camera,
via camera_info when available), all stamped with the input header. vision_msgs/LabelInfo (thing
classes, score threshold) on /tst/detections/label_info, the model version as vision_msgs/VisionInfo on
/tst/detections/vision_info.

Model serving, latest-frame scheduling and hot reload: `_model_node.ModelServingNode`.
"""
from __future__ import annotations

import numpy as np
from geometry_msgs.msg import Point
from vision_msgs.msg import Detection2DArray
from visualization_msgs.msg import Marker, MarkerArray

from tst_ros.perception.runtime import Predictor, palette
from tst_ros.ros.cdr import CdrImage, detections_cdr
from tst_ros.ros.conversions import stamp_to_ns
from tst_ros.ros.nodes import run_node
from tst_ros.ros.nodes._model_node import ModelServingNode

MARKER_PLANE_M = 1.0


class DetectionNode(ModelServingNode):
    TASK = "detection"

    def __init__(self, node_name: str = "detection", parameter_overrides=None, **kwargs):
        super().__init__(node_name, parameter_overrides, **kwargs)

    def label_info_topic(self) -> str:
        return "tst/detections/label_info"

    def label_threshold(self) -> float:
        return self.score_threshold

    def setup_outputs(self) -> None:
        self.max_detections = int(self.settings["max_detections"])
        # typed vision_msgs/Detection2DArray; publish_outputs hands it serialized bytes of that type
        self.det_pub = self.create_publisher(Detection2DArray, "tst/detections", 10)
        self.marker_pub = self.create_publisher(MarkerArray, "tst/detections/markers", 10)
        self._ensure_camera_info_subscription()           # markers are placed with the intrinsics
        self.colours = palette(0)

    def on_model_changed(self, predictor: Predictor) -> None:
        self.colours = palette(len(predictor.classes))

    def class_ids(self, predictor: Predictor) -> list[int]:
        return [int(i) for i in predictor.thing_class_ids]

    def publish_outputs(self, predictor: Predictor, msg: CdrImage, rgb: np.ndarray, depth_m: np.ndarray | None,
                        images: dict[str, np.ndarray]) -> None:
        pred = predictor.predict(rgb, depth_m, self.score_threshold, self.nms_iou, self.max_detections,
                                 need_mask=False, images=images)
        # written as CDR directly: rclpy's field-by-field conversion of ten nested Detection2D
        # costs ~0.4 ms per frame on the serving path (tst_ros.ros.cdr)
        self.det_pub.publish(detections_cdr(stamp_to_ns(msg.header.stamp), msg.header.frame_id,
                                            pred.boxes, pred.scores, pred.labels))
        if self.marker_pub.get_subscription_count() > 0:
            self.marker_pub.publish(self.markers(predictor, msg, pred.boxes, pred.scores, pred.labels))

    def _pinhole(self, width: int, height: int) -> tuple[float, float, float, float]:
        info = self.camera_info
        if info is not None and info.k[0] > 0 and info.width == width and info.height == height:
            return float(info.k[0]), float(info.k[4]), float(info.k[2]), float(info.k[5])
        f = float(max(width, height))
        return f, f, width / 2, height / 2

    def markers(self, predictor: Predictor, msg: CdrImage, boxes: np.ndarray, scores: np.ndarray,
                labels: np.ndarray) -> MarkerArray:
        fx, fy, cx, cy = self._pinhole(msg.width, msg.height)
        z = MARKER_PLANE_M
        arr = MarkerArray()
        arr.markers.append(Marker(header=msg.header, ns="detections", action=Marker.DELETEALL))
        for i, (box, score, label) in enumerate(zip(boxes.tolist(), scores.tolist(), labels.tolist())):
            x0, y0 = (box[0] - cx) / fx * z, (box[1] - cy) / fy * z
            x1, y1 = (box[2] - cx) / fx * z, (box[3] - cy) / fy * z
            colour = self.colours[label] / 255.0
            outline = Marker(header=msg.header, ns="detections", id=2 * i, type=Marker.LINE_STRIP, action=Marker.ADD)
            outline.scale.x = 0.005
            outline.color.r, outline.color.g, outline.color.b, outline.color.a = *map(float, colour), 1.0
            outline.pose.orientation.w = 1.0
            outline.points = [Point(x=x, y=y, z=z) for x, y in ((x0, y0), (x1, y0), (x1, y1), (x0, y1), (x0, y0))]
            text = Marker(header=msg.header, ns="detections", id=2 * i + 1, type=Marker.TEXT_VIEW_FACING,
                          action=Marker.ADD)
            text.pose.position = Point(x=x0, y=y0, z=z)
            text.pose.orientation.w = 1.0
            text.scale.z = 0.03
            text.color = outline.color
            text.text = f"{predictor.classes[label]} {score:.2f}"
            arr.markers.extend([outline, text])
        return arr


def main(argv=None) -> int:
    return run_node(DetectionNode, argv, low_latency=True)


if __name__ == "__main__":
    raise SystemExit(main())
