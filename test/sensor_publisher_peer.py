"""Test peer process: publishes sensor messages at a fixed rate, as a driver would.

usage: sensor_publisher_peer.py KIND RELIABILITY RATE_HZ SECONDS [TOPIC_PREFIX]
KIND: `cloud` (4 MB PointCloud2 x,y,z,rgb on PREFIX/points) or `camera` (256x192 rgb8 image,
16UC1 depth and camera_info on PREFIX/camera/...). Waits (at most 30 s) until every topic has
a subscriber, publishes RATE_HZ * SECONDS messages per topic with QoS RELIABILITY (depth 5),
waits until reliable subscribers acknowledged them, and prints `published N`. Uses the
environment's transports (`FASTDDS_BUILTIN_TRANSPORTS=DEFAULT` for a default-transport peer).
"""
import sys
import time

import numpy as np
import rclpy
from rclpy.duration import Duration
from rclpy.node import Node
from sensor_msgs.msg import CameraInfo

from peer_exit import shut_down_and_exit
from tst_ros.ros.clouds import make_xyz_rgb_cloud
from tst_ros.ros.conversions import make_header
from tst_ros.ros.images import array_to_image
from tst_ros.ros.qos import qos_profile

CLOUD_POINTS = 4_000_000 // 16


def cloud_messages(prefix: str):
    rng = np.random.default_rng(0)
    xyz = rng.uniform(-5, 5, size=(CLOUD_POINTS, 3)).astype(np.float32)
    xyz[:, 2] = np.abs(xyz[:, 2]) + 0.5
    rgb = rng.integers(0, 256, size=(CLOUD_POINTS, 3), dtype=np.uint8)
    header = make_header(0, "camera_color_optical_frame")
    return {f"{prefix}/points": make_xyz_rgb_cloud(xyz, rgb, header)}


def camera_messages(prefix: str):
    rng = np.random.default_rng(0)
    header = make_header(0, "camera_color_optical_frame")
    rgb = rng.integers(0, 256, size=(192, 256, 3), dtype=np.uint8)
    depth = rng.integers(300, 5000, size=(192, 256), dtype=np.uint16)
    info = CameraInfo(header=header, width=256, height=192, distortion_model="plumb_bob", d=[0.0] * 5,
                      k=[200.0, 0, 128, 0, 200.0, 96, 0, 0, 1], p=[200.0, 0, 128, 0, 0, 200.0, 96, 0, 0, 0, 1, 0],
                      r=[1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0])
    return {f"{prefix}/camera/color/image_raw": array_to_image(rgb, "rgb8", header),
            f"{prefix}/camera/depth/image_raw": array_to_image(depth, "16UC1", header),
            f"{prefix}/camera/color/camera_info": info}


def main() -> None:
    kind, reliability, rate, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
    prefix = sys.argv[5] if len(sys.argv) > 5 else ""
    messages = (cloud_messages if kind == "cloud" else camera_messages)(prefix)
    rclpy.init()
    node = Node("sensor_publisher_peer")
    qos = qos_profile(reliability, 5)
    pubs = {topic: node.create_publisher(type(msg), topic, qos) for topic, msg in messages.items()}
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not all(p.get_subscription_count() for p in pubs.values()):
        rclpy.spin_once(node, timeout_sec=0.05)
    time.sleep(1.0)  # let every subscriber finish matching (and adapt its QoS to this offer)
    count, start = int(rate * seconds), time.monotonic()
    for i in range(count):
        stamp = make_header(1_700_000_000_000_000_000 + int(i * 1e9 / rate), "").stamp
        for msg in messages.values():
            msg.header.stamp = stamp
        for topic, msg in messages.items():
            pubs[topic].publish(msg)
        while time.monotonic() < start + (i + 1) / rate:
            rclpy.spin_once(node, timeout_sec=max(0.0, min(0.01, start + (i + 1) / rate - time.monotonic())))
    if reliability == "reliable":
        for p in pubs.values():
            p.wait_for_all_acked(Duration(seconds=10))
    print(f"published {count}", flush=True)
    time.sleep(0.5)
    sys.stdout.flush()
    shut_down_and_exit(node, 0)


if __name__ == "__main__":
    main()
