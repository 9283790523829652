"""`recorder` node: time-locked multimodal capture into the dataset store (+ optional raw MCAP).

Subscribes to RGB (`Image` or `CompressedImage`), depth (16UC1 mm / 32FC1 m), thermal (16UC1
centi-kelvin / 32FC1 kelvin, registered to colour), `CameraInfo`,
`Imu`, `PointCloud2` and `Odometry` with raw (serialized) subscriptions whose QoS follows the
publishers as rosbag2's does (`sensor_qos_reliability: auto`, the default: reliable - no frame
lost - when every publisher offers reliable, best effort so that a best-effort driver still
reaches the recorder; `reliable: false` is the older spelling of best_effort). The callback only reads the header stamp
from the CDR bytes and queues them; a worker thread writes the raw bytes to the MCAP bag
(as `ros2 bag record` would, no re-encoding), then feeds `tst_ros.data.pipeline` - the same
sync/derive/store code as `tst-ros ingest` - and group-commits the store. Status
(`tst_ros/RecorderStatus`: samples written = committed, drops by reason, rate, disk use) is
published every `status_period_s` (default 0.5 s).

`RosDecoder` turns (msgtype, CDR bytes) into arrays with `rclpy.serialization` and the
`tst_ros.ros` images, clouds and conversions modules; bag ingest uses it too, so there is one
conversion path.

Managed variant (`tst_ros.ros.lifecycle`): configure opens the store, raw bag and worker
(`configure_resources`), activate lets messages in (`accepting`), deactivate stops taking them
(what was received is still written), cleanup flushes and closes (`release_resources`).
Diagnostics: `tst_ros.ros.node_diagnostics.recorder_diagnostics`.
"""
from __future__ import annotations

import importlib
import json
import queue
import sys
import threading
import time

import numpy as np
from rclpy.node import Node
from rclpy.serialization import deserialize_message
from sensor_msgs.msg import CompressedImage, Image

from tst_ros import modalities as registry
from tst_ros.ros.nodes import run_node
from tst_ros.config import RecordConfig
from tst_ros.data.bagio import cdr_header_stamp_ns
from tst_ros.data.pipeline import DEFAULT_TOPICS, RecordingPipeline, open_store
from tst_ros.data.registration import UNSET_EXTRINSIC, DepthAlignment
from tst_ros.poses import extrinsic_to_matrix
from tst_ros.ros.clouds import cloud_rgb, cloud_xyz
from tst_ros.ros.conversions import camera_info_to_intrinsics, imu_to_array, make_header, odometry_to_matrix
from tst_ros.ros.images import compressed_to_rgb, image_to_array, image_to_rgb
from tst_ros.ros.node_diagnostics import recorder_diagnostics
from tst_ros.ros.parameters import declare_section
from tst_ros.ros.qos import SensorSubscription, sensor_reliability
from tst_ros.ros.timing import steady_timer

STREAM_TYPES = {"rgb": "sensor_msgs/msg/Image", "depth": "sensor_msgs/msg/Image", "thermal": "sensor_msgs/msg/Image",
                "camera_info": "sensor_msgs/msg/CameraInfo", "depth_camera_info": "sensor_msgs/msg/CameraInfo",
                "imu": "sensor_msgs/msg/Imu",
                "cloud": "sensor_msgs/msg/PointCloud2", "odom": "nav_msgs/msg/Odometry"}
DEPTH_ENCODINGS = registry.get("depth").encodings         # mm, or metres as float
THERMAL_ENCODINGS = registry.get("thermal").encodings     # centi-kelvin, or kelvin as float


def message_class(msgtype: str):
    """'sensor_msgs/msg/Image' -> the rclpy message class (ValueError if not importable)."""
    try:
        pkg, kind, name = msgtype.split("/")
        return getattr(importlib.import_module(f"{pkg}.{kind}"), name)
    except (ValueError, ImportError, AttributeError) as e:
        raise ValueError(f"message type {msgtype!r} is not available in this ROS environment ({e})") from None


class RosDecoder:
    """Pipeline decoder for ROS payloads: (msgtype, CDR bytes) tuples or rclpy messages."""

    def __init__(self):
        self._classes: dict[str, type] = {}

    def message(self, payload):
        if not isinstance(payload, tuple):
            return payload
        msgtype, data = payload
        cls = self._classes.get(msgtype)
        if cls is None:
            cls = self._classes[msgtype] = message_class(msgtype)
        try:
            return deserialize_message(bytes(data), cls)
        except Exception as e:  # noqa: BLE001 - rclpy raises assorted types for bad CDR
            raise ValueError(f"cannot deserialize {msgtype} ({len(data)} bytes): {e}") from None

    def rgb(self, payload) -> np.ndarray:
        msg = self.message(payload)
        if isinstance(msg, CompressedImage):
            return compressed_to_rgb(msg)
        if isinstance(msg, Image):
            return image_to_rgb(msg)
        raise ValueError(f"rgb stream carries {type(msg).__name__}, expected Image or CompressedImage")

    def ground_truth(self, payload):
        return None

    def depth(self, payload) -> np.ndarray:
        msg = self.message(payload)
        if not isinstance(msg, Image):
            raise ValueError(f"depth stream carries {type(msg).__name__}, expected Image")
        if msg.encoding not in DEPTH_ENCODINGS:
            raise ValueError(f"unsupported depth encoding {msg.encoding!r}; expected one of {DEPTH_ENCODINGS}")
        arr = image_to_array(msg)
        # 16-bit stays in mm (0 invalid); 32FC1 metres keep inf/NaN so the pipeline can count them
        return arr if arr.dtype == np.uint16 else arr.astype(np.float32)

    def thermal(self, payload) -> np.ndarray:
        msg = self.message(payload)
        if not isinstance(msg, Image) or msg.encoding not in THERMAL_ENCODINGS:
            raise ValueError(f"thermal stream carries {type(msg).__name__} "
                             f"{getattr(msg, 'encoding', '')!r}; expected an Image in one of {THERMAL_ENCODINGS}")
        arr = image_to_array(msg)
        return arr if arr.dtype == np.uint16 else arr.astype(np.float32)

    def camera_info(self, payload):
        return camera_info_to_intrinsics(self.message(payload))

    def depth_camera_info(self, payload):
        msg = self.message(payload)
        return camera_info_to_intrinsics(msg), list(msg.d)

    def imu(self, payload) -> np.ndarray:
        return imu_to_array(self.message(payload))

    def odom(self, payload) -> np.ndarray:
        return odometry_to_matrix(self.message(payload))

    def cloud(self, payload):
        msg = self.message(payload)
        xyz = cloud_xyz(msg)
        try:
            rgb = cloud_rgb(msg)
        except ValueError:
            rgb = None
        return xyz, rgb


# base_link -> camera optical frame when nothing else is known: identity (a camera mounted at
# base_link); set `camera_extrinsic` for a real rig (the graph sets the simulated rig's)
IDENTITY_EXTRINSIC = [0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0]


class RecorderNode(Node):
    """See the module docstring. Parameters mirror `RecordConfig` plus topics and QoS."""

    MANAGED = False     # True in the lifecycle variant (tst_ros.ros.lifecycle)

    def __init__(self, parameter_overrides=None, record_cfg: RecordConfig | None = None, name: str = "recorder",
                 **kwargs):
        super().__init__(name, parameter_overrides=parameter_overrides or [], **kwargs)
        base = record_cfg or RecordConfig()
        p = self._declare(base)
        self.cfg = RecordConfig(**{k: p[k] for k in base.__dataclass_fields__})
        # resolved (namespace, remappings): the raw bag and the store's source record the names on the graph
        self.topics = {s: self.resolve_topic_name(p[f"{s}_topic"]) if p[f"{s}_topic"] else "" for s in DEFAULT_TOPICS}
        self._rgb_type = "sensor_msgs/msg/CompressedImage" if p["rgb_compressed"] else STREAM_TYPES["rgb"]
        self._params = p
        self._log = self.get_logger()
        self.store = self.pipeline = self.bag = self._worker = None     # opened by configure_resources
        self.accepting = False      # messages are taken only while True (lifecycle: active)
        self._commit_interval = float(p["commit_interval_s"])
        self._idle_release_s = float(p["idle_release_s"])
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._received = 0
        self._received_by_topic: dict[str, int] = {}
        self._bad_stamps = 0
        self._inactive_drops = 0       # messages that arrived while not active (lifecycle)
        self._max_queue = 0
        self._rate_hist: list[tuple[float, int]] = [(time.monotonic(), 0)]
        self._disk = (0.0, 0)
        self._reliability = reliability = sensor_reliability(p["sensor_qos_reliability"],
                                                             "auto" if self.cfg.reliable else "best_effort")
        self._subs = []
        for stream, topic in self.topics.items():
            if not topic:
                continue
            msgtype = self._rgb_type if stream == "rgb" else STREAM_TYPES[stream]
            callback = self._callback(stream, topic, msgtype)
            depth = int(p["imu_qos_depth"] if stream == "imu" else p["qos_depth"])
            self._subs.append(SensorSubscription(self, message_class(msgtype), topic, callback, reliability,
                                                 depth, raw=True))
        from tst_ros.msg import RecorderStatus
        self._status_cls = RecorderStatus
        self.status_pub = self.create_publisher(RecorderStatus, p["status_topic"], 10)
        steady_timer(self, float(p["status_period_s"]), self.publish_status)  # a heartbeat, also while /clock stops
        self.diagnostics = recorder_diagnostics(self)
        if not self.MANAGED:
            self.configure_resources()
            self.accepting = True

    def configure_resources(self) -> None:
        """Open the store (and raw bag) and start the worker (lifecycle: configure)."""
        p = self._params
        source = {"kind": "ros", "node": self.get_fully_qualified_name(), "topics": self.topics}
        self.store = open_store(self.cfg.dataset, self.cfg, source)
        self.pipeline = RecordingPipeline(self.store, self.cfg, RosDecoder(),
                                          T_base_camera=extrinsic_to_matrix(p["camera_extrinsic"]),
                                          warn=self._log.warning, commit_every=1 << 30,
                                          expected=tuple(s for s, t in self.topics.items() if t),
                                          depth_alignment=DepthAlignment.from_parameters(
                                              p["depth_extrinsic"], p["ignore_depth_distortion"]))
        self.bag = None
        if self.cfg.bag:
            from tst_ros.data.bagio import BagWriter
            self.bag = BagWriter(self.cfg.bag)
            for stream, topic in self.topics.items():
                if topic:
                    self.bag.add_topic(topic, self._rgb_type if stream == "rgb" else STREAM_TYPES[stream])
        self._rate_hist = [(time.monotonic(), len(self.store))]
        self._disk = (0.0, self.store.disk_bytes())
        self._stop = threading.Event()
        self._worker = threading.Thread(target=self._work, name="recorder-worker", daemon=True)
        self._worker.start()
        self._log.info(f"recording {sorted(k for k, v in self.topics.items() if v)} into {self.cfg.dataset} "
                       f"({len(self.store)} samples already there), image_size {self.cfg.image_size}, "
                       f"{self._reliability} QoS"
                       + (f", raw bag {self.cfg.bag}" if self.bag else ""))

    def release_resources(self) -> None:
        """Stop the worker, flush, close store and bag (lifecycle: cleanup)."""
        self.close()

    def _declare(self, base: RecordConfig) -> dict:
        declared = declare_section(self, base, "record")      # defaults and descriptions: RecordConfig
        params = {f"{s}_topic": t for s, t in DEFAULT_TOPICS.items()}
        # sensor_qos_reliability: auto | reliable | best_effort; empty: from `reliable` (true: auto)
        # IMU arrives 20x as often as frames: its queue must absorb the bursts a busy publisher sends
        params.update(rgb_compressed=False, qos_depth=50, imu_qos_depth=1000, sensor_qos_reliability="",
                      status_topic="tst/recorder/status", status_period_s=0.5, commit_interval_s=0.2,
                      idle_release_s=1.0, camera_extrinsic=IDENTITY_EXTRINSIC, depth_extrinsic=UNSET_EXTRINSIC,
                      ignore_depth_distortion=False)
        return {**declared, **{k: self.declare_parameter(k, v).value for k, v in params.items()}}

    # ------------------------------------------------------------------ subscription side
    def _callback(self, stream: str, topic: str, msgtype: str):
        clock = self.get_clock()

        def on_message(data: bytes) -> None:
            if not self.accepting:
                self._inactive_drops += 1
                return
            try:
                stamp = cdr_header_stamp_ns(data)
            except ValueError as e:
                self._bad_stamps += 1
                self._log.warning(f"{topic}: {e}; message dropped", throttle_duration_sec=5.0)
                return
            self._queue.put((stream, topic, msgtype, clock.now().nanoseconds, stamp, data))
        return on_message

    # ------------------------------------------------------------------ worker side
    def _work(self) -> None:
        last_commit = last_message = time.monotonic()
        while True:
            try:
                item = self._queue.get(timeout=0.05)
            except queue.Empty:
                if self._stop.is_set():
                    break
                if time.monotonic() - last_message > self._idle_release_s and self.pipeline.sync.pending:
                    with self._lock:   # inputs went quiet: stop waiting for slower streams
                        self.pipeline.release_pending()
                self._commit()
                last_commit = time.monotonic()
                continue
            last_message = time.monotonic()
            stream, topic, msgtype, recv_ns, stamp, data = item
            self._received += 1
            self._received_by_topic[topic] = self._received_by_topic.get(topic, 0) + 1
            self._max_queue = max(self._max_queue, self._queue.qsize())
            if self.bag is not None:
                self.bag.write(topic, recv_ns, data)
            with self._lock:
                if not self.pipeline.full:
                    self.pipeline.push(stream, stamp, (msgtype, data))
            now = time.monotonic()
            if now - last_commit >= self._commit_interval or self._queue.empty():
                self._commit()
                last_commit = now

    def _commit(self) -> None:
        with self._lock:
            self.pipeline.commit()

    def received(self) -> dict[str, int]:
        """Messages taken from each subscribed topic so far (by the worker)."""
        return dict(self._received_by_topic)

    @property
    def samples_written(self) -> int:
        return self.pipeline.committed if self.pipeline is not None else 0

    def counts(self) -> dict[str, int]:
        with self._lock:
            out = self.pipeline.all_counts() if self.pipeline is not None else {}
        if self._bad_stamps:
            out["bad_header_stamp"] = self._bad_stamps
        if self._inactive_drops:
            out["inactive"] = self._inactive_drops
        return out

    def publish_status(self) -> None:
        now = time.monotonic()
        written = self.samples_written
        self._rate_hist = [(t, n) for t, n in self._rate_hist if now - t <= 5.0] + [(now, written)]
        t0, n0 = self._rate_hist[0]
        rate = (written - n0) / (now - t0) if now > t0 else 0.0
        if now - self._disk[0] > 2.0 and self.store is not None:
            self._disk = (now, self.store.disk_bytes())
        counts = self.counts()
        msg = self._status_cls()
        msg.header = make_header(self.get_clock().now().nanoseconds, "")
        msg.samples_written = written
        msg.rate_hz = float(rate)
        msg.disk_bytes = int(self._disk[1])
        msg.drop_reasons = list(counts)
        msg.drop_counts = [int(v) for v in counts.values()]
        msg.dataset_path = str(self.cfg.dataset)
        msg.recording = (self.accepting and self.pipeline is not None and not self.pipeline.full
                         and not self._stop.is_set())
        self.status_pub.publish(msg)

    def close(self) -> None:
        """Stop the worker, flush pending frames, close store and bag (idempotent)."""
        if self._worker is None or self._stop.is_set():
            return
        self._stop.set()
        self._worker.join(timeout=30)
        with self._lock:
            self.pipeline.flush()
            self.store.close()
        if self.bag is not None:
            self.bag.close()
        self._log.info(f"recorder stopped: {self.pipeline.committed} samples in {self.cfg.dataset}; "
                       f"received {self._received} messages; counts: {json.dumps(self.counts())}")

    def destroy_node(self) -> None:
        self.close()
        super().destroy_node()


def main(argv: list[str] | None = None) -> int:
    return run_node(RecorderNode, argv)


if __name__ == "__main__":
    sys.exit(main())
