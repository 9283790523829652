"""Shared base of the perception nodes: model serving with latest-frame scheduling and hot reload.

- Subscribes the colour image and the other camera images the loaded model takes (depth,
  thermal: `tst_ros.ros.paired_images`; paired by approximate time, a frame without a match
  within `sync_slop_s` skipped and counted; thermal taken as registered to colour) with sensor
  QoS (`sensor_qos_reliability`: auto follows the publishers, reliable, or best_effort - the
  default, from the older `best_effort`), serialized, read by `tst_ros.ros.cdr` (the pixels stay
  a view of the received buffer); only the newest frame is kept: a worker thread processes it
  and frames that arrive meanwhile replace it (never a backlog). With `pin_threads` the worker
  pins itself to the core ONNX Runtime's pool threads leave free (`tst_ros.perception.threads`).
- Subscribes `/tst/model` (ModelUpdate, transient-local). An update is verified
  (`export.verify_model`: sha256 of the file, or of manifest.json for a directory, whose
  manifest must list model.onnx and match every file it lists), loaded and warmed up in a
  background thread, and swapped in between two frames. A model that fails to load or verify
  is reported with an error log and the old one keeps serving. Versions not above the served
  one are ignored (the trainer keeps counting across restarts). When the update's path cannot
  be read here (the trainer runs on another machine), the model's files are fetched from the
  service the update names (`source`) into `model_cache_dir`, verified, and loaded from there
  (`tst_ros.ros.model_fetch`).
- Publishes the class map as vision_msgs/LabelInfo (class ids and names; segmentation adds the
  mask's unlabeled value) and the model version as vision_msgs/VisionInfo (`database_version`,
  `database_location` naming the LabelInfo topic) beside it, both transient-local, whenever the
  serving model changes.
- With `bank_dir` the node serves a per-building adapter bank instead (`tst_ros.ros.bank_switch`):
  entries swap between two frames on a `tst/building` request or by building recognition.
- Depth whose CameraInfo differs from colour's is registered (`tst_ros.ros.depth_registration`)
  or the frame is dropped with an error naming `depth_extrinsic` (`depth_not_registered`).
- Wrong-encoding and malformed inputs are reported with a throttled warning; the node keeps running.

Managed variant (`tst_ros.ros.lifecycle`): configure loads the model (`configure_resources`),
activate lets frames in (`accepting`), cleanup drops the model (`release_resources`).
Diagnostics: `tst_ros.ros.node_diagnostics.perception_diagnostics`.

Subclasses set TASK and implement `publish_outputs(predictor, image_msg, rgb, depth_m, images)`
(`images`: the other paired camera images in physical units, for `Predictor.predict`).
"""
from __future__ import annotations

import collections
import threading
import time
from pathlib import Path

import numpy as np
from rclpy.node import Node
from sensor_msgs.msg import CameraInfo, Image
from vision_msgs.msg import LabelInfo, VisionInfo

from tst_ros import modalities as registry
from tst_ros.config import PerceptionConfig
from tst_ros.msg import ModelUpdate
from tst_ros.perception.runtime import TASK_OUTPUTS, Predictor
from tst_ros.perception.threads import place_calling_thread
from tst_ros.ros.bank_switch import BankSwitch
from tst_ros.ros.cdr import CdrImage, image_from_cdr
from tst_ros.ros.conversions import camera_info_to_intrinsics, stamp_to_ns
from tst_ros.ros.depth_registration import DepthInfoPending, DepthNotRegistered, DepthRegistrar
from tst_ros.ros.images import image_to_rgb
from tst_ros.ros.model_fetch import ModelFetcher
from tst_ros.ros.node_diagnostics import perception_diagnostics
from tst_ros.ros.paired_images import PairedImages
from tst_ros.ros.parameters import declare_section, watch
from tst_ros.ros.qos import SensorSubscription, qos_latched, sensor_reliability
from tst_ros.ros.vision_info import model_info_messages

WARN_THROTTLE_S = 5.0
ONNX_FILE = "model.onnx"        # what Predictor.load reads from a model directory


# changed at runtime (`ros2 param set`): they take effect from the next frame
RUNTIME_PARAMETERS = ("score_threshold", "nms_iou")


def _unit_interval(value) -> float:
    value = float(value)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"must lie in [0, 1], got {value}")
    return value


class ModelServingNode(Node):
    TASK = ""
    UNLABELED_CLASS_ID: int | None = None     # output value meaning "no class", listed in LabelInfo
    MANAGED = False                           # True in the lifecycle variant (tst_ros.ros.lifecycle)

    def __init__(self, node_name: str, parameter_overrides=None, **kwargs):
        super().__init__(node_name, parameter_overrides=parameter_overrides or [], **kwargs)
        p = self.declare_parameter
        # one source of defaults and descriptions: the `perception` config section
        self.settings = declare_section(self, PerceptionConfig(), "perception", dynamic=RUNTIME_PARAMETERS)
        self.model_path = self.settings["model_path"]
        self.providers = list(self.settings["providers"])
        self.score_threshold = _unit_interval(self.settings["score_threshold"])
        self.nms_iou = _unit_interval(self.settings["nms_iou"])
        self.best_effort = bool(self.settings["best_effort"])
        self.qos_depth = int(self.settings["qos_depth"])
        self.sync_slop_s = float(self.settings["sync_slop_s"])
        self.sync_queue = int(self.settings["sync_queue"])
        self.threads = int(self.settings["threads"])
        self.pin_threads = bool(self.settings["pin_threads"])
        self.backend = str(self.settings["backend"])
        watch(self, {"score_threshold": lambda v: setattr(self, "score_threshold", _unit_interval(v)),
                     "nms_iou": lambda v: setattr(self, "nms_iou", _unit_interval(v))})
        self.fetcher = ModelFetcher.from_parameters(self)   # model_cache_dir, model_fetch_*

        self._cv = threading.Condition()
        self._latest: CdrImage | None = None
        self._waiting_for: str | None = None     # the paired image the latest frame waits on
        self._pending: tuple[Predictor, int, str] | None = None
        self._running = True
        self.predictor: Predictor | None = None
        self.model_version = 0
        self.counters = collections.Counter()
        self.process_times: collections.deque = collections.deque(maxlen=100)   # seconds, recent frames
        self.last_error = ""
        self._loading = threading.Lock()
        self.configured = self.accepting = False     # model loaded / frames let in (lifecycle)
        self._last_update: ModelUpdate | None = None

        # sensor_qos_reliability: auto | reliable | best_effort; empty: from `best_effort`
        self.sensor_reliability = sensor_reliability(p("sensor_qos_reliability", "").value,
                                                     "best_effort" if self.best_effort else "reliable")
        self.label_pub = self.create_publisher(LabelInfo, self.label_info_topic(), qos_latched())
        self.vision_info_pub = self.create_publisher(VisionInfo, self.vision_info_topic(), qos_latched())
        self._subscribe_image(registry.primary_image().topic, self._on_image)
        self.paired = PairedImages(lambda topic, callback: self._subscribe_image(topic, callback, removable=True),
                                   self._read_image, self._cv, lambda: self._latest is not None,
                                   self.sync_slop_s, self.sync_queue)
        self.depth_registrar = DepthRegistrar(self)                  # depth_extrinsic, ignore_depth_distortion
        self.camera_info, self._camera_info_sub = None, None      # colour, once a task or depth needs it
        self.create_subscription(ModelUpdate, "tst/model", self._on_model_update, qos_latched())
        self.setup_outputs()
        self.bank = BankSwitch.for_node(self)      # None unless bank_dir is set
        self._worker = threading.Thread(target=self._work_loop, name=f"{node_name}-worker", daemon=True)
        self._worker.start()
        self.diagnostics = perception_diagnostics(self)
        if not self.MANAGED:
            self.configure_resources()
            self.accepting = True

    # ---------------------------------------------------------------- subclass hooks
    def label_info_topic(self) -> str:
        raise NotImplementedError

    def vision_info_topic(self) -> str:
        return self.label_info_topic().rsplit("/", 1)[0] + "/vision_info"

    def label_threshold(self) -> float:
        """LabelInfo.threshold: the confidence threshold the outputs were cut at (none: 0)."""
        return 0.0

    def setup_outputs(self) -> None:
        raise NotImplementedError

    def publish_outputs(self, predictor: Predictor, msg: CdrImage, rgb: np.ndarray, depth_m: np.ndarray | None,
                        images: dict[str, np.ndarray]) -> None:
        raise NotImplementedError

    # ---------------------------------------------------------------- input callbacks
    def _read_image(self, data: bytes) -> CdrImage | None:
        try:
            return image_from_cdr(data)
        except ValueError as e:
            self.counters["bad_inputs"] += 1
            self.get_logger().warning(f"input skipped: {e}", throttle_duration_sec=WARN_THROTTLE_S)
            return None

    def _on_image(self, data: bytes) -> None:
        if not self.accepting:
            self.counters["frames_inactive"] += 1
            return
        msg = self._read_image(data)
        if msg is None:
            return
        with self._cv:
            if self._latest is not None:    # a frame still waiting on an image never got it
                self.counters[f"frames_without_{self._waiting_for}" if self._waiting_for else "frames_replaced"] += 1
            self._latest, self._waiting_for = msg, None
            self.counters["frames_received"] += 1
            self._cv.notify()

    def _subscribe_image(self, topic: str, callback, removable: bool = False):
        # taken serialized and read by tst_ros.ros.cdr: ~0.2 ms sooner in the callback than an
        # rclpy-deserialized Image, and the pixels are not copied
        return self._subscribe_sensor(Image, topic, callback, raw=True, removable=removable)

    def _subscribe_sensor(self, msg_type, topic: str, callback, raw: bool = False,
                          removable: bool = False) -> SensorSubscription:
        return SensorSubscription(self, msg_type, topic, callback, self.sensor_reliability, self.qos_depth, raw=raw,
                                  removable=removable)

    def _subscribe_inputs(self, predictor: Predictor) -> None:
        """Pair the camera images `predictor` takes beside colour; depth also needs both CameraInfos."""
        self.paired.require(predictor.input_modalities)
        if predictor.uses_depth:
            self._ensure_camera_info_subscription()
            self.depth_registrar.subscribe_depth_info(self._subscribe_sensor)

    def _ensure_camera_info_subscription(self) -> None:
        """The colour CameraInfo (kept in `camera_info`, handed to depth registration)."""
        if self._camera_info_sub is None:
            self._camera_info_sub = self._subscribe_sensor(CameraInfo, "camera/color/camera_info",
                                                           self._on_camera_info)

    def _on_camera_info(self, msg: CameraInfo) -> None:
        self.camera_info = msg
        try:
            self.depth_registrar.set_color_info(camera_info_to_intrinsics(msg), msg.header.frame_id)
        except ValueError as e:
            self.get_logger().warning(f"colour CameraInfo ignored: {e}", throttle_duration_sec=WARN_THROTTLE_S)

    # ---------------------------------------------------------------- worker
    def _next_frame(self) -> tuple[CdrImage, dict[str, CdrImage]] | str | None:
        """Newest frame with its paired images ({modality: message}), "swap" when a loaded model
        waits, None on shutdown."""
        with self._cv:
            while self._running:
                if self._pending is not None:
                    return "swap"
                if self._latest is not None:
                    names = self.paired.names if self.predictor is not None else ()
                    state, found = self.paired.pair(self._latest, names)
                    if state == "ok":
                        msg, self._latest = self._latest, None
                        return msg, found
                    if state == "wait":
                        self._waiting_for = found
                    else:
                        self._latest = None
                        self.counters[f"frames_without_{found}"] += 1
                        self.get_logger().warning(f"no {found} image within sync_slop_s of the colour image; "
                                                  "frame skipped", throttle_duration_sec=WARN_THROTTLE_S)
                        continue
                self._cv.wait(timeout=0.5)
        return None

    def _work_loop(self) -> None:
        while True:
            item = self._next_frame()
            if item is None:
                return
            if item == "swap":
                self._swap_if_pending()
                continue
            predictor = self.predictor
            msg, pairs = item
            if predictor is None:
                self.counters["frames_without_model"] += 1
                self.get_logger().warning("no model loaded yet (set model_path or publish /tst/model); frame skipped",
                                          throttle_duration_sec=WARN_THROTTLE_S)
                continue
            t_start = time.perf_counter()
            try:
                rgb = image_to_rgb(msg)
                images = self.paired.to_physical(pairs, rgb.shape[:2])
                depth = images.pop(registry.DEPTH_IMAGE, None)
                if depth is not None:
                    depth = self.depth_registrar.align(depth)
            except DepthInfoPending:
                self.counters["depth_info_pending"] += 1
                continue
            except DepthNotRegistered as e:
                self.counters["depth_not_registered"] += 1
                self.get_logger().error(f"frame skipped: {e}", throttle_duration_sec=WARN_THROTTLE_S)
                continue
            except ValueError as e:
                self.counters["bad_inputs"] += 1
                self.get_logger().warning(f"input skipped: {e}", throttle_duration_sec=WARN_THROTTLE_S)
                continue
            try:
                self.publish_outputs(predictor, msg, rgb, depth, images)
                self.counters["frames_processed"] += 1
                self.process_times.append(time.perf_counter() - t_start)
                if self.bank is not None:
                    self.bank.after_frame(stamp_to_ns(msg.header.stamp), rgb)
            except Exception as e:  # keep serving: one bad frame must not stop the node
                self.counters["processing_errors"] += 1
                self.get_logger().error(f"processing failed: {e}", throttle_duration_sec=WARN_THROTTLE_S)

    # ---------------------------------------------------------------- models
    def _on_model_update(self, msg: ModelUpdate) -> None:
        if (msg.tasks and self.TASK not in msg.tasks) or (self.bank is not None and self.bank.ignore_update(msg)):
            return
        self._last_update = msg
        if not self.configured:
            return          # loaded by configure_resources
        if msg.version and msg.version <= self.model_version and self.predictor is not None:
            return
        source = self.fetcher.client_for(msg.source)
        self._load(Path(msg.path), int(msg.version), msg.checksum, background=True, source=source)

    def _load(self, path: Path, version: int, checksum: str | None, background: bool, source=None) -> None:
        def work() -> None:
            nonlocal path
            with self._loading:
                try:
                    if checksum is not None:     # verified where it is, else fetched from `source`
                        path = self.fetcher.resolve(source, str(path), version, checksum, required=(ONNX_FILE,))
                    predictor = Predictor.load(path, self.providers, self.backend, self.threads, self.pin_threads,
                                               outputs=TASK_OUTPUTS[self.TASK])     # this task's part of the graph
                    self.check_task(predictor)
                    predictor.warm_up()
                except Exception as e:
                    self.reject_model(version, path, e)
                    return
                self.offer_model(predictor, version, str(path))

        if background:
            threading.Thread(target=work, name=f"{self.get_name()}-loader", daemon=True).start()
        else:
            work()

    def check_task(self, predictor: Predictor) -> None:
        if self.TASK not in predictor.tasks:
            raise ValueError(f"model {predictor.source} has tasks {predictor.tasks}, not {self.TASK!r}")

    def reject_model(self, version: int, path, error: Exception) -> None:
        self.counters["model_load_failures"] += 1
        self.last_error = f"{type(error).__name__}: {error}"
        self.get_logger().error(f"model update v{version} from {path} rejected, keeping the current model "
                                f"(v{self.model_version}): {self.last_error}")

    def offer_model(self, model, version: int, path: str) -> None:
        """Swap `model` in before the next frame: a loaded Predictor, or a function the worker
        calls there to make one (an adapter-bank entry copies its tensors in)."""
        with self._cv:
            if self.configured:
                self._pending = (model, version, path)
                self._cv.notify()

    def _swap_if_pending(self) -> None:
        with self._cv:
            pending, self._pending = self._pending, None
        if pending is None:
            return
        predictor, version, path = pending
        if callable(predictor):
            try:
                predictor = predictor()
            except Exception as e:
                self.reject_model(version, path, e)
                return
        place_calling_thread(predictor.caller_cpus)     # the worker calls run(): the core ORT's pool leaves free
        self.predictor, self.model_version = predictor, version
        self._subscribe_inputs(predictor)
        self.on_model_changed(predictor)
        self.publish_label_info(predictor)
        self.counters["model_swaps"] += 1
        self.get_logger().info(f"serving model v{version} from {path} ({predictor.backend}, "
                               f"{','.join(predictor.providers)}, inputs {predictor.input_modalities})")

    def on_model_changed(self, predictor: Predictor) -> None:
        """Hook for subclasses (e.g. cache palettes)."""

    def class_ids(self, predictor: Predictor) -> list[int]:
        return list(range(len(predictor.classes)))

    def publish_label_info(self, predictor: Predictor) -> None:
        """LabelInfo + VisionInfo (`tst_ros.ros.vision_info`), naming the bank entry when serving one."""
        label, info = model_info_messages(predictor.classes, self.class_ids(predictor), self.UNLABELED_CLASS_ID,
                                          self.label_threshold(), f"tst_ros {self.TASK}", self.label_pub.topic_name,
                                          self.model_version, self.get_clock().now().to_msg(),
                                          self.bank.active if self.bank is not None else None)
        self.label_pub.publish(label)
        self.vision_info_pub.publish(info)

    # ---------------------------------------------------------------- lifecycle
    def configure_resources(self) -> None:
        """Load `model_path` when set (now), then the last model update received (in the
        background). The managed variant fails to configure when `model_path` does not load."""
        self.configured = True
        if self.bank is not None:
            self.bank.start()        # raises when the bank or its first entry does not load
        elif self.model_path:
            self._load(Path(self.model_path), version=0, checksum=None, background=False)
            with self._cv:
                loaded = self._pending is not None or self.predictor is not None
            if self.MANAGED and not loaded:
                raise RuntimeError(f"model_path {self.model_path} not loaded: {self.last_error}")
        if self._last_update is not None:
            self._on_model_update(self._last_update)

    def release_resources(self) -> None:
        """Drop the served model and any frame waiting (configure loads it again)."""
        with self._cv:
            self.configured = False
            self._pending = self._latest = None
            self.predictor, self.model_version = None, 0

    def stats(self) -> dict:
        return {**self.counters, "model_version": self.model_version, "last_error": self.last_error}

    def destroy_node(self) -> None:
        with self._cv:
            self._running = False
            self._cv.notify_all()
        if self._worker.is_alive() and threading.current_thread() is not self._worker:
            self._worker.join(timeout=5.0)
        super().destroy_node()
