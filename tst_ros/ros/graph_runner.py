"""Run the specialise graph in one process (where `ros2 launch` is unavailable).

The nodes come from `tst_ros.graph.description` (the launch file uses the same description);
a supervisor node follows the loop on the graph itself: recorder status, trainer status,
ModelUpdate, the perception nodes' model versions (vision_msgs/VisionInfo: hot reload), and
every output topic, from which it measures deployment latency and throughput for the report.
Topic names are relative: the supervisor sits in the graph's namespace, and each node gets
its spec's namespace and log level through node-scoped `--ros-args` (`ros_arguments`).
"""
from __future__ import annotations

import importlib
import logging
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
import rclpy
from rclpy.exceptions import InvalidHandle
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from sensor_msgs.msg import Image, PointCloud2
from vision_msgs.msg import Detection2DArray, VisionInfo

from tst_ros.data.bagio import cdr_header_stamp_ns
from tst_ros.graph.description import NodeSpec
from tst_ros.msg import ModelUpdate, RecorderStatus, TrainingStatus
from tst_ros.ros.clouds import cloud_field
from tst_ros.ros.conversions import stamp_to_ns
from tst_ros.ros.images import image_to_array, image_to_rgb
from tst_ros.ros.qos import qos_latched, qos_profile

log = logging.getLogger("tst_ros.specialize")

OUTPUTS = {
    "mask": ("tst/segmentation/mask", Image),
    "overlay": ("tst/segmentation/overlay", Image),
    "detections": ("tst/detections", Detection2DArray),
    "points_labeled": ("tst/points_labeled", PointCloud2),
}
INPUT_IMAGE_TOPIC = "camera/color/image_raw"
VISION_INFO_TOPICS = {"segmentation": "tst/segmentation/vision_info", "detection": "tst/detections/vision_info"}


def remap_arguments(specs: list[NodeSpec]) -> list[str]:
    """Node-scoped remappings for rclpy.init: `-r node:from:=to`."""
    args = []
    for spec in specs:
        for src, dst in spec.remappings:
            args += ["-r", f"{spec.name}:{src}:={dst}"]
    return ["--ros-args", *args] if args else []


def ros_arguments(specs: list[NodeSpec]) -> list[str]:
    """rclpy.init arguments: the node-scoped remappings, each node's namespace (`-r node:__ns:=/ns`)
    and the log level (one per process, as each launched node has its own)."""
    args = remap_arguments(specs)[1:]
    for spec in specs:
        if spec.namespace:
            args += ["-r", f"{spec.name}:__ns:={spec.namespace}"]
    levels = {spec.log_level for spec in specs if spec.log_level != "info"}
    if len(levels) > 1:
        raise ValueError(f"one process has one log level, got {sorted(levels)}")
    if levels:
        args += ["--log-level", levels.pop()]
    return ["--ros-args", *args] if args else []


def instantiate(spec: NodeSpec) -> Node:
    module_name, class_name = spec.node_class.split(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    overrides = [Parameter(k, value=v) for k, v in spec.parameters.items()]
    return cls(parameter_overrides=overrides)


@dataclass
class Observed:
    """What the supervisor saw on the graph."""
    recorder: RecorderStatus | None = None
    trainer: TrainingStatus | None = None
    model: ModelUpdate | None = None
    label_versions: dict[str, int] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    deploy_counts: dict[str, int] = field(default_factory=lambda: defaultdict(int))  # after the hot reload
    latency_ms: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    first_seen: dict[str, float] = field(default_factory=dict)
    samples: dict[str, object] = field(default_factory=dict)   # last overlay / mask / labels for the report
    hot_loaded_at: float | None = None


class Supervisor(Node):
    """Watches the loop's topics; never publishes anything the loop depends on."""

    def __init__(self, collect_samples: bool = True, namespace: str = ""):
        super().__init__("tst_supervisor", namespace=namespace)
        self.seen = Observed()
        self.lock = threading.Lock()
        self.collect = collect_samples
        self.create_subscription(RecorderStatus, "tst/recorder/status", self._recorder, 10)
        self.create_subscription(TrainingStatus, "tst/trainer/status", self._trainer, 10)
        self.create_subscription(ModelUpdate, "tst/model", self._model, qos_latched())
        for task, topic in VISION_INFO_TOPICS.items():
            self.create_subscription(VisionInfo, topic, lambda m, t=task: self._vision_info(t, m), qos_latched())
        for key, (topic, cls) in OUTPUTS.items():
            self.create_subscription(cls, topic, lambda m, k=key: self._output(k, m), qos_profile("best_effort", 5))
        # arrival time of each input image: latency = output arrival - input arrival (same stamp)
        self.image_arrivals: dict[int, int] = {}
        self.create_subscription(Image, INPUT_IMAGE_TOPIC, self._input_image, qos_profile("best_effort", 5), raw=True)

    def _input_image(self, data: bytes):
        now = self.get_clock().now().nanoseconds
        with self.lock:
            self.image_arrivals[cdr_header_stamp_ns(data)] = now
            if len(self.image_arrivals) > 600:
                for stamp in sorted(self.image_arrivals)[:300]:
                    del self.image_arrivals[stamp]

    def _recorder(self, msg):
        self.seen.recorder = msg

    def _trainer(self, msg):
        self.seen.trainer = msg

    def _model(self, msg):
        if not msg.tasks or "segmentation" in msg.tasks:  # intermediate encoder checkpoints are not deployed
            self.seen.model = msg

    def _vision_info(self, task, msg):
        with self.lock:
            self.seen.label_versions[task] = int(msg.database_version)
            if self.hot_loaded() and self.seen.hot_loaded_at is None:
                self.seen.hot_loaded_at = time.monotonic()

    def hot_loaded(self) -> bool:
        m = self.seen.model
        return m is not None and all(self.seen.label_versions.get(t) == m.version for t in VISION_INFO_TOPICS)

    def _output(self, key, msg):
        now_ns = self.get_clock().now().nanoseconds
        with self.lock:
            self.seen.counts[key] += 1
            self.seen.first_seen.setdefault(key, time.monotonic())
            if self.seen.hot_loaded_at is not None:
                self.seen.deploy_counts[key] += 1
            arrived = self.image_arrivals.get(stamp_to_ns(msg.header.stamp))
            if self.seen.hot_loaded_at is not None and arrived is not None:
                self.seen.latency_ms[key].append((now_ns - arrived) / 1e6)
            if not self.collect:
                return
            if key == "overlay":
                self.seen.samples["overlay"] = image_to_rgb(msg).copy()
            elif key == "mask":
                self.seen.samples["mask"] = np.array(image_to_array(msg))
            elif key == "detections":
                self.seen.samples["detections"] = [
                    (d.bbox.center.position.x, d.bbox.center.position.y, d.bbox.size_x, d.bbox.size_y,
                     d.results[0].hypothesis.class_id if d.results else "",
                     d.results[0].hypothesis.score if d.results else 0.0)
                    for d in msg.detections]
            elif key == "points_labeled":
                self.seen.samples["point_labels"] = np.array(cloud_field(msg, "label"))


def spin_until_stopped(executor, stopping: threading.Event) -> None:
    """Spin a multi-threaded executor until `stopping` is set or rclpy shuts down. A sensor
    subscription replaced after a QoS change (`ros/qos.py`) can be destroyed by one executor
    thread while another builds its wait set from the entity list it read just before; rclpy
    then raises InvalidHandle in the spinning thread. The next wait set no longer holds the
    destroyed entity, so spinning goes on."""
    while not stopping.is_set() and executor.context.ok():
        try:
            executor.spin_once(timeout_sec=0.1)
        except InvalidHandle:
            continue
        except (ExternalShutdownException, rclpy.executors.ShutdownException):
            return


class DrainingExecutor(MultiThreadedExecutor):
    """A MultiThreadedExecutor whose shutdown lets the callbacks already handed to its thread
    pool finish before the base class destroys the executor's guard condition. rclpy does it
    the other way round: a callback still queued then ends by triggering the destroyed guard
    condition, and its task prints "The following exception was never retrieved: cannot use
    Destroyable because destruction was requested" when it is collected. Only shut it down
    once nothing spins it any more (the pool takes no new work afterwards)."""

    def shutdown(self, timeout_sec: float | None = None, *, wait_for_threads: bool = True) -> bool:
        if wait_for_threads:
            self._executor.shutdown(wait=True)      # the pool (rclpy keeps it in _executor)
        return super().shutdown(timeout_sec, wait_for_threads=wait_for_threads)


class Graph:
    """The specialise nodes plus a supervisor on one multi-threaded executor."""

    def __init__(self, specs: list[NodeSpec], threads: int = 6):
        self.specs = specs
        self.nodes: list[Node] = []
        self.threads = threads
        self.supervisor: Supervisor | None = None
        self.executor: DrainingExecutor | None = None
        self._spin_thread: threading.Thread | None = None
        self._stopping = threading.Event()

    def start(self) -> "Graph":
        rclpy.init(args=ros_arguments(self.specs), signal_handler_options=rclpy.signals.SignalHandlerOptions.NO)
        self.executor = DrainingExecutor(num_threads=self.threads)
        self.supervisor = Supervisor(namespace=self.specs[0].namespace if self.specs else "")
        self.executor.add_node(self.supervisor)
        for spec in self.specs:
            node = instantiate(spec)
            self.nodes.append(node)
            self.executor.add_node(node)
        self._spin_thread = threading.Thread(target=self._spin, name="graph-executor", daemon=True)
        self._spin_thread.start()
        return self

    def _spin(self):
        spin_until_stopped(self.executor, self._stopping)

    def stop(self, timeout_s: float = 8.0) -> None:
        """Stop every node (the trainer stops its child gracefully) and shut rclpy down."""
        deadline = time.monotonic() + timeout_s
        for node in reversed(self.nodes):
            close = getattr(node, "close", None) or getattr(node, "shutdown", None)
            try:
                if callable(close):
                    close()
            except Exception as e:  # noqa: BLE001 - keep stopping the rest
                log.warning(f"stopping {node.get_name()}: {e}")
            if time.monotonic() > deadline:
                break
        everything = self.nodes + ([self.supervisor] if self.supervisor else [])
        if self.executor is not None:
            # stop spinning first, then let queued callbacks finish: none may still run when
            # its node is destroyed below
            self._stopping.set()
            if self._spin_thread is not None:
                self._spin_thread.join(timeout=max(1.0, deadline - time.monotonic()))
            self.executor.shutdown(timeout_sec=max(1.0, deadline - time.monotonic()))
            for node in everything:
                self.executor.remove_node(node)
        for node in everything:
            try:
                node.destroy_node()
            except Exception:  # noqa: BLE001
                pass
        if rclpy.ok():
            rclpy.shutdown()
