"""Stream probe for the perception benchmark: publishes colour + depth frames at a fixed rate
(header stamp = wall-clock publish time) and records, per output topic, the end-to-end
latency from publishing a frame to receiving its mask / detections in this process.
The perception nodes themselves run in other processes (`spawn_node`).

Outputs are subscribed serialized: the arrival time is taken when the message reaches this
process (stamp read from the CDR header), then the message is deserialized into its Python
class and the time after that is recorded too ("decoded"). The difference is the cost of a
Python consumer (0.7-0.9 ms for ten nested Detection2D messages in the benchmark), not of
the node. The probe spins rclpy's EventsExecutor, as the nodes do.
"""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections import defaultdict

import numpy as np
import rclpy
from rclpy.experimental import EventsExecutor
from rclpy.serialization import deserialize_message, serialize_message
from sensor_msgs.msg import Image
from vision_msgs.msg import Detection2DArray

from tst_ros.data.bagio import cdr_header_stamp_ns, restamp_cdr
from tst_ros.ros.conversions import make_header
from tst_ros.ros.images import array_to_image
from tst_ros.ros.qos import qos_sensor

OUTPUTS = {"segmentation": ("/tst/segmentation/mask", Image), "detection": ("/tst/detections", Detection2DArray)}


def spawn_node(kind: str, model_path: str, log_path: str, extra: list[str] | None = None) -> subprocess.Popen:
    cmd = [sys.executable, "-m", f"tst_ros.ros.nodes.{kind}", "--ros-args", "-p", f"model_path:={model_path}",
           "-p", "providers:=['CPUExecutionProvider']"] + list(extra or [])
    return subprocess.Popen(cmd, stdout=open(log_path, "w"), stderr=subprocess.STDOUT, env=dict(os.environ))


class StreamProbe:
    def __init__(self, frames: list[tuple[np.ndarray, np.ndarray]], kinds=("segmentation",),
                 frame_id: str = "camera_color_optical_frame"):
        self.frames = frames
        self.ctx = rclpy.Context()
        rclpy.init(context=self.ctx)
        self.node = rclpy.create_node("perception_probe", context=self.ctx)
        self.image_pub = self.node.create_publisher(Image, "/camera/color/image_raw", qos_sensor(False, 5))
        self.depth_pub = self.node.create_publisher(Image, "/camera/depth/image_raw", qos_sensor(False, 5))
        self.lock = threading.Lock()
        self.latencies: dict[str, list[float]] = defaultdict(list)          # at arrival
        self.decoded_latencies: dict[str, list[float]] = defaultdict(list)  # after deserializing
        self.received: dict[str, int] = defaultdict(int)
        self.detections: dict[str, int] = defaultdict(int)    # boxes received (detection outputs)
        self.recording = False
        for kind in kinds:
            topic, typ = OUTPUTS[kind]
            self.node.create_subscription(typ, topic, lambda m, k=kind, t=typ: self._on_output(k, t, m),
                                          qos_sensor(False, 10), raw=True)
        self.executor = EventsExecutor(context=self.ctx)
        self.executor.add_node(self.node)
        self._spinning = True
        # spin_once loop: EventsExecutor.spin() in a second thread does not return on shutdown
        self.thread = threading.Thread(target=self._spin, daemon=True)
        self.thread.start()
        # frames are serialized once and published as CDR, as a bag replay publishes them; only
        # the header stamp is rewritten per publish (0.1 ms less per image than rclpy converting
        # a Python Image: the stimulus's own cost, not the node's)
        self.images = [serialize_message(array_to_image(rgb, "rgb8", make_header(0, frame_id))) for rgb, _ in frames]
        self.depths = [serialize_message(array_to_image(d, "16UC1", make_header(0, frame_id))) for _, d in frames]

    def _spin(self) -> None:
        while self._spinning:
            self.executor.spin_once(timeout_sec=0.1)

    def _on_output(self, kind: str, msg_type, data: bytes) -> None:
        arrived = time.time_ns()
        stamp = cdr_header_stamp_ns(data)
        msg = deserialize_message(data, msg_type)
        decoded = time.time_ns()
        with self.lock:
            self.received[kind] += 1
            self.detections[kind] += len(getattr(msg, "detections", ()))
            if self.recording:
                self.latencies[kind].append((arrived - stamp) / 1e6)
                self.decoded_latencies[kind].append((decoded - stamp) / 1e6)

    def wait_for_subscribers(self, count: int, timeout: float = 30.0) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.image_pub.get_subscription_count() >= count:
                return
            time.sleep(0.05)
        raise RuntimeError(f"only {self.image_pub.get_subscription_count()} of {count} nodes subscribed "
                           "the image topic")

    def stream(self, seconds: float, rate_hz: float = 30.0, record: bool = True, on_tick=None) -> int:
        """Publish frames at `rate_hz` for `seconds`; returns frames published."""
        with self.lock:
            self.recording = record
        period = 1.0 / rate_hz
        t_next = time.monotonic()
        end = t_next + seconds
        i = 0
        while time.monotonic() < end:
            stamp = time.time_ns()
            self.depth_pub.publish(restamp_cdr(self.depths[i % len(self.depths)], stamp))
            self.image_pub.publish(restamp_cdr(self.images[i % len(self.images)], stamp))
            i += 1
            if on_tick is not None:
                on_tick(i)
            t_next += period
            time.sleep(max(0.0, t_next - time.monotonic()))
        time.sleep(0.3)
        with self.lock:
            self.recording = False
        return i

    def take(self, kind: str) -> tuple[list[float], list[float]]:
        """(latencies at arrival, latencies after deserializing) in ms recorded since the last take."""
        with self.lock:
            out = self.latencies.pop(kind, []), self.decoded_latencies.pop(kind, [])
        return out

    def close(self) -> None:
        self._spinning = False
        self.thread.join(timeout=5.0)
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.shutdown(context=self.ctx)
