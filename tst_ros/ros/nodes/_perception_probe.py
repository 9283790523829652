"""Stream probe for the perception benchmark: publishes colour + depth frames at a fixed rate
(header stamp = wall-clock publish time) and records, per output topic, the end-to-end
latency from publishing a frame to receiving its mask / detections in this process.
The perception nodes themselves run in other processes (`spawn_node`)."""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections import defaultdict

import numpy as np
import rclpy
from rclpy.executors import SingleThreadedExecutor
from sensor_msgs.msg import Image

from tst_ros.msg import Detection2DArray
from tst_ros.ros.conversions import array_to_image, make_header, stamp_to_ns
from tst_ros.ros.qos import qos_sensor

OUTPUTS = {"segmentation": ("/tst/segmentation/mask", Image), "detection": ("/tst/detections", Detection2DArray)}


def spawn_node(kind: str, model_path: str, log_path: str, extra: list[str] | None = None) -> subprocess.Popen:
    cmd = [sys.executable, "-m", f"tst_ros.ros.nodes.{kind}", "--ros-args", "-p", f"model_path:={model_path}",
           "-p", "providers:=['CPUExecutionProvider']"] + list(extra or [])
    return subprocess.Popen(cmd, stdout=open(log_path, "w"), stderr=subprocess.STDOUT, env=dict(os.environ))


class StreamProbe:
    def __init__(self, frames: list[tuple[np.ndarray, np.ndarray]], kinds=("segmentation",), frame_id: str = "camera_color_optical_frame"):
        self.frames = frames
        self.frame_id = frame_id
        self.ctx = rclpy.Context()
        rclpy.init(context=self.ctx)
        self.node = rclpy.create_node("perception_probe", context=self.ctx)
        self.image_pub = self.node.create_publisher(Image, "/camera/color/image_raw", qos_sensor(False, 5))
        self.depth_pub = self.node.create_publisher(Image, "/camera/depth/image_raw", qos_sensor(False, 5))
        self.lock = threading.Lock()
        self.latencies: dict[str, list[float]] = defaultdict(list)
        self.received: dict[str, int] = defaultdict(int)
        self.detections: dict[str, int] = defaultdict(int)    # boxes received (detection outputs)
        self.recording = False
        for kind in kinds:
            topic, typ = OUTPUTS[kind]
            self.node.create_subscription(typ, topic, lambda m, k=kind: self._on_output(k, m), qos_sensor(False, 10))
        self.executor = SingleThreadedExecutor(context=self.ctx)
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()
        # messages are built once; only the stamp changes per publish
        self.images = [array_to_image(rgb, "rgb8", make_header(0, frame_id)) for rgb, _ in frames]
        self.depths = [array_to_image(d, "16UC1", make_header(0, frame_id)) for _, d in frames]

    def _on_output(self, kind: str, msg) -> None:
        now = time.time_ns()
        with self.lock:
            self.received[kind] += 1
            self.detections[kind] += len(getattr(msg, "detections", ()))
            if self.recording:
                self.latencies[kind].append((now - stamp_to_ns(msg.header.stamp)) / 1e6)

    def wait_for_subscribers(self, count: int, timeout: float = 30.0) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.image_pub.get_subscription_count() >= count:
                return
            time.sleep(0.05)
        raise RuntimeError(f"only {self.image_pub.get_subscription_count()} of {count} nodes subscribed the image topic")

    def stream(self, seconds: float, rate_hz: float = 30.0, record: bool = True, on_tick=None) -> int:
        """Publish frames at `rate_hz` for `seconds`; returns frames published."""
        with self.lock:
            self.recording = record
        period = 1.0 / rate_hz
        t_next = time.monotonic()
        end = t_next + seconds
        i = 0
        while time.monotonic() < end:
            stamp = make_header(time.time_ns(), self.frame_id).stamp
            img, depth = self.images[i % len(self.images)], self.depths[i % len(self.depths)]
            img.header.stamp = stamp
            depth.header.stamp = stamp
            self.depth_pub.publish(depth)
            self.image_pub.publish(img)
            i += 1
            if on_tick is not None:
                on_tick(i)
            t_next += period
            time.sleep(max(0.0, t_next - time.monotonic()))
        time.sleep(0.3)
        with self.lock:
            self.recording = False
        return i

    def take(self, kind: str) -> list[float]:
        with self.lock:
            out, self.latencies[kind] = self.latencies[kind], []
        return out

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.shutdown(context=self.ctx)
