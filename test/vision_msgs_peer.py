"""Second OS process for test_vision_msgs_interop: a plain vision_msgs consumer.

Imports rclpy and vision_msgs only (never tst_ros), as a third-party tool would. Subscribes to
vision_msgs/Detection2DArray on DETECTIONS and, transient-local, to vision_msgs/LabelInfo and
VisionInfo beside it; once it holds a detection array with at least one detection and both
infos, prints one JSON line (what it received, the publishers' type names and hashes as the
graph reports them, and whether any tst_ros module was loaded) and exits 0. Exits 1 after 120 s
or when its stdin closes first.

Usage: python vision_msgs_peer.py /tst/detections /tst/detections/label_info /tst/detections/vision_info
"""
import json
import select
import sys
import time

import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from vision_msgs.msg import Detection2DArray, LabelInfo, VisionInfo

TIMEOUT_S = 120.0


def summary(node: Node, topics: list[str], got: dict) -> dict:
    dets, labels, info = got["detections"], got["label_info"], got["vision_info"]
    publishers = {t: [(p.topic_type, str(p.topic_type_hash)) for p in node.get_publishers_info_by_topic(t)]
                  for t in topics}
    return {
        "tst_ros_loaded": sorted(m for m in sys.modules if m.split(".")[0] == "tst_ros"),
        "publishers": publishers,
        "header": [dets.header.frame_id, dets.header.stamp.sec, dets.header.stamp.nanosec],
        "detections": [[d.header.frame_id, d.bbox.center.position.x, d.bbox.center.position.y, d.bbox.size_x,
                        d.bbox.size_y, d.results[0].hypothesis.class_id, d.results[0].hypothesis.score]
                       for d in dets.detections],
        "class_map": [[c.class_id, c.class_name] for c in labels.class_map],
        "threshold": labels.threshold,
        "database_version": info.database_version,
        "database_location": info.database_location,
    }


def main() -> int:
    topics = sys.argv[1:4]
    rclpy.init()
    node = Node("vision_msgs_consumer")
    got: dict = {}
    reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL)

    def on_detections(msg: Detection2DArray) -> None:
        if msg.detections:
            got["detections"] = msg

    node.create_subscription(Detection2DArray, topics[0], on_detections, reliable)
    node.create_subscription(LabelInfo, topics[1], lambda m: got.__setitem__("label_info", m), latched)
    node.create_subscription(VisionInfo, topics[2], lambda m: got.__setitem__("vision_info", m), latched)
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    deadline = time.monotonic() + TIMEOUT_S
    code = 1
    try:
        while time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.05)
            if len(got) == 3:
                print(json.dumps(summary(node, topics, got)), flush=True)
                code = 0
                break
            if select.select([sys.stdin], [], [], 0)[0] and not sys.stdin.read(1):
                break
        if code:
            print(f"vision_msgs peer: received only {sorted(got)}", file=sys.stderr, flush=True)
    finally:
        node.destroy_node()
        rclpy.shutdown()
    return code


if __name__ == "__main__":
    sys.exit(main())
