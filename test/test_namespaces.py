"""Two namespaced copies of the perception side on one domain, without crosstalk.

Two segmentation node processes run as `ros2 launch ... namespace:=robot_a` / `robot_b` would
start them (`--ros-args -r __ns:=/robot_X`), each with its own model (constant classes 2 and 4).
This process feeds each its own `/robot_X/camera/color/image_raw` with stamps of its own and
collects `/robot_X/tst/segmentation/mask` plus the root `/tst/segmentation/mask`: every mask
must arrive on its own namespace's topic only, answer a stamp sent to that namespace, and carry
that namespace's model's class.
"""
from __future__ import annotations

import subprocess
import threading
import time
from collections import defaultdict

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")

from polling import wait_for  # noqa: E402
from test_seg_det_nodes import export, sim_frames, start_node  # noqa: E402

NAMESPACES = {"robot_a": 2, "robot_b": 4}     # namespace -> the constant class its model predicts


def start_segmentation(namespace: str, model, log) -> subprocess.Popen:
    return start_node("segmentation", model, log, ["-r", f"__ns:=/{namespace}", "-p", "publish_overlay:=false"])


class Peer:
    """Per-namespace image publishers and mask subscribers (plus the root mask topic)."""

    def __init__(self):
        from rclpy.executors import SingleThreadedExecutor
        from sensor_msgs.msg import Image

        from tst_ros.ros.qos import qos_sensor

        self.ctx = rclpy.Context()
        rclpy.init(context=self.ctx)
        self.node = rclpy.create_node("namespaces_test_peer", context=self.ctx)
        qos = qos_sensor(best_effort=False, depth=10)
        self.lock = threading.Lock()
        self.masks: dict[str, list] = defaultdict(list)       # mask topic -> [(stamp, classes)]
        self.image_pubs = {ns: self.node.create_publisher(Image, f"/{ns}/camera/color/image_raw", qos)
                           for ns in NAMESPACES}
        for topic in [f"/{ns}/tst/segmentation/mask" for ns in NAMESPACES] + ["/tst/segmentation/mask"]:
            self.node.create_subscription(Image, topic, lambda m, t=topic: self._on_mask(t, m), qos)
        self.executor = SingleThreadedExecutor(context=self.ctx)
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()

    def _on_mask(self, topic, msg):
        from tst_ros.ros.conversions import stamp_to_ns
        from tst_ros.ros.images import image_to_array
        with self.lock:
            self.masks[topic].append((stamp_to_ns(msg.header.stamp), set(np.unique(image_to_array(msg)).tolist())))

    def count(self, topic) -> int:
        with self.lock:
            return len(self.masks[topic])

    def publish(self, namespace, stamp_ns, rgb):
        from tst_ros.ros.conversions import make_header
        from tst_ros.ros.images import array_to_image
        self.image_pubs[namespace].publish(array_to_image(rgb, "rgb8", make_header(stamp_ns, "camera")))

    def close(self):
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.shutdown(context=self.ctx)


def test_two_namespaced_segmentation_nodes_do_not_cross_talk(tmp_path):
    models = {ns: export(tmp_path, f"model_{ns}", constant_class=c) for ns, c in NAMESPACES.items()}
    procs = {ns: start_segmentation(ns, models[ns], tmp_path / f"{ns}.log") for ns in NAMESPACES}
    peer = Peer()
    sent: dict[str, set] = {ns: set() for ns in NAMESPACES}
    try:
        wait_for(lambda: all(p.get_subscription_count() >= 1 for p in peer.image_pubs.values()), 60,
                 "both namespaced nodes to subscribe to their own image topic")
        frames = sim_frames(4)
        deadline, i = time.monotonic() + 90, 0
        # robot_a gets even stamps, robot_b odd ones; keep feeding until both answered a few
        while time.monotonic() < deadline and min(peer.count(f"/{ns}/tst/segmentation/mask") for ns in NAMESPACES) < 3:
            for k, ns in enumerate(NAMESPACES):
                stamp = 1_000_000_000_000 + (2 * i + k) * 50_000_000
                peer.publish(ns, stamp, frames[i % len(frames)][0])
                sent[ns].add(stamp)
            i += 1
            time.sleep(0.2)
        wait_for(lambda: all(peer.count(f"/{ns}/tst/segmentation/mask") >= 3 for ns in NAMESPACES), 30,
                 "masks on both namespaced output topics")
        time.sleep(0.5)   # let anything misrouted arrive before checking the root topic
        for ns, cls in NAMESPACES.items():
            with peer.lock:
                got = list(peer.masks[f"/{ns}/tst/segmentation/mask"])
            assert {s for s, _ in got} <= sent[ns], f"{ns} answered stamps it was not sent"
            assert all(classes == {cls} for _, classes in got), f"{ns}: masks of another namespace's model"
        assert peer.count("/tst/segmentation/mask") == 0, "a namespaced node published into the root namespace"
        for ns, proc in procs.items():
            assert proc.poll() is None, (tmp_path / f"{ns}.log").read_text()
    finally:
        peer.close()
        for proc in procs.values():
            proc.terminate()
        for proc in procs.values():
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
