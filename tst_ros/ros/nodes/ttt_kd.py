"""`ttt_kd` node: test-time-adapted 3D point labels (TTT-KD) on the ROS graph.

Subscribes the cloud (/points, in any frame TF connects to the camera's), the colour image,
camera_info, the depth image (optional; registered into colour when the depth CameraInfo
differs, else dropped with an error naming `depth_extrinsic`: tst_ros.ros.depth_registration)
and poses (PoseSubscriber: TF, else /odom + camera_extrinsic);
publishes /tst/points_labeled (x, y, z, rgb, label UINT32, confidence FLOAT32) with the input
cloud's header and one point per input point. Callbacks only store messages; a worker thread
labels the latest cloud with tst_ros.tttkd.pipeline; a cloud replaced by a newer one before the
worker took it is skipped as stale. Every received cloud is accounted for (`stats()`: received,
labelled, skipped_stale, skipped_no_model, failed, pending), logged every `stats_period_s`
and at shutdown. Sensor subscriptions follow the publishers' offered QoS
(`sensor_qos_reliability: auto`, see tst_ros.ros.qos) unless forced reliable or best effort.
Reloads the model when /tst/model announces one whose tasks include "tttkd" (a .safetensors
file, or a directory whose manifest lists tttkd.safetensors; verified by
`tst_ros.perception.export.verify_model`, the old model keeps serving when that fails); a path
that cannot be read here is fetched from the update's `source` service into `model_cache_dir`
(`tst_ros.ros.model_fetch`).
"""
from __future__ import annotations

import sys
import threading
import time
from collections import Counter, deque
from pathlib import Path

from rclpy.node import Node
from rclpy.parameter import Parameter
from sensor_msgs.msg import CameraInfo, Image, PointCloud2

from tst_ros.ros.nodes import run_node
from tst_ros.msg import ModelUpdate
from tst_ros.config import TTTKDConfig
from tst_ros.poses import PoseBuffer
from tst_ros.ros.clouds import cloud_rgb, cloud_xyz, make_xyz_rgb_cloud
from tst_ros.ros.conversions import camera_info_to_intrinsics, stamp_to_ns
from tst_ros.ros.depth_registration import DepthInfoPending, DepthRegistrar
from tst_ros.ros.images import depth_to_metres, image_to_rgb
from tst_ros.ros.model_fetch import ModelFetcher
from tst_ros.ros.qos import SensorSubscription, qos_latched
from tst_ros.ros.parameters import declare_section
from tst_ros.ros.poses import PoseSubscriber
from tst_ros.ros.node_diagnostics import tttkd_diagnostics
from tst_ros.ros.timing import steady_timer

# Node-only parameters; the method's (teacher, steps, lr, optimizer, mode, stride, point_budget,
# voxel_size, sync_window_s, device, ...) are the `ttt_kd` config section's (declare_section).
PARAMETERS = {
    "points_topic": "points",
    "image_topic": "camera/color/image_raw",
    "camera_info_topic": "camera/color/camera_info",
    "depth_topic": "camera/depth/image_raw",     # empty: no depth (occlusion test against the cloud itself)
    "depth_camera_info_topic": "camera/depth/camera_info",  # differs from colour's: depth is registered
    "odom_topic": "odom",
    "odom_frame": "odom",                         # TF: the fixed frame clouds are accumulated in
    "base_frame": "base_link",
    "camera_frame": "camera_color_optical_frame", # the colour camera's optical frame
    "output_topic": "tst/points_labeled",
    "model_topic": "tst/model",
    # TTT-KD checkpoint (run dir or .safetensors); empty: wait for /tst/model
    "model": "",
    "checkpoint": "",                             # alias of `model`
    "pose_wait_s": 0.3,                           # wait this long for odometry to reach the cloud stamp
    "threads": 1,                                 # torch CPU threads for the worker (0: torch default); one,
                                                  # because beside the perception nodes more threads spin and stall
    "max_views": 2,
    "sensor_qos_reliability": "auto",             # auto (follow the publishers) | reliable | best_effort
    "sensor_qos_depth": 5,
    "stats_period_s": 10.0,                       # log the cloud accounting this often (0: only at shutdown)
}
CLOUD_COUNTERS = ("received", "labelled", "skipped_stale", "skipped_no_model", "failed")


class TTTKDNode(Node):
    def __init__(self, parameter_overrides: list[Parameter] | None = None, node_name: str = "ttt_kd", **kwargs):
        super().__init__(node_name, parameter_overrides=parameter_overrides or [], **kwargs)
        p = declare_section(self, TTTKDConfig(), "ttt_kd")
        for name, default in PARAMETERS.items():
            p[name] = self.declare_parameter(name, default).value
        self.params = p
        self.fetcher = ModelFetcher.from_parameters(self)   # model_cache_dir, model_fetch_*
        self.pose_subscriber = PoseSubscriber(self, PoseBuffer(capacity=4000, tolerance_ns=int(0.05e9)),
                                              odom_topic=p["odom_topic"], odom_frame=p["odom_frame"],
                                              base_frame=p["base_frame"], camera_frame=p["camera_frame"])
        self.poses = self.pose_subscriber.poses
        self.labeler = None
        self._labeler_lock = threading.Lock()
        self._images: deque = deque(maxlen=16)
        self._depths: deque = deque(maxlen=16)
        self._intrinsics = None
        self._latest_cloud: PointCloud2 | None = None
        self._cloud_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self.counts = Counter({name: 0 for name in CLOUD_COUNTERS})
        self._in_progress = False
        self.rejected_updates = 0
        self.model_version = 0          # of the last /tst/model update loaded (0: none or `model`)
        self.process_times: list[float] = []
        self.process_adapted: list[bool] = []
        self.last_info: dict = {}
        self._warned: set[str] = set()

        self.publisher = self.create_publisher(PointCloud2, p["output_topic"], 10)
        inputs = [(PointCloud2, "points_topic", self._on_cloud), (Image, "image_topic", self._on_image),
                  (CameraInfo, "camera_info_topic", self._on_camera_info), (Image, "depth_topic", self._on_depth)]
        self.sensor_subscriptions = {
            key: SensorSubscription(self, cls, p[key], callback, p["sensor_qos_reliability"], p["sensor_qos_depth"])
            for cls, key, callback in inputs if p[key]}
        self.depth_registrar = DepthRegistrar(self, tree=self.pose_subscriber.tree)
        if p["depth_topic"]:
            self.depth_registrar.subscribe_depth_info(
                lambda cls, topic, callback: SensorSubscription(self, cls, topic, callback, p["sensor_qos_reliability"],
                                                                p["sensor_qos_depth"]),
                p["depth_camera_info_topic"])
        if float(p["stats_period_s"]) > 0:
            steady_timer(self, float(p["stats_period_s"]), self._log_stats)
        self.create_subscription(ModelUpdate, p["model_topic"], self._on_model, qos_latched())
        initial = p["model"] or p["checkpoint"]
        if initial and not Path(initial).exists():    # e.g. the run directory TTT-KD training will write
            self.get_logger().warning(f"TTT-KD model {initial} does not exist yet: waiting for /tst/model")
        elif initial:
            self._load(initial)
        self._worker = threading.Thread(target=self._work, name="ttt_kd_worker", daemon=True)
        self._worker.start()
        self.diagnostics = tttkd_diagnostics(self)

    # ------------------------------------------------------------------ model
    def _load(self, path: str) -> bool:
        from tst_ros.tttkd.pipeline import CloudLabeler
        p = self.params
        try:
            labeler = CloudLabeler(path, self.poses, teacher=p["teacher"], steps=p["steps"], lr=p["lr"],
                                   mode=p["mode"], stride=p["stride"], point_budget=p["point_budget"],
                                   voxel_size=p["voxel_size"], sync_window_s=p["sync_window_s"],
                                   max_views=p["max_views"], device=p["device"], optimizer=p["optimizer"],
                                   adapt_label_head=p["adapt_label_head"])
        except (OSError, ValueError, KeyError) as e:
            self.get_logger().error(f"cannot load TTT-KD model {path}: {e}")
            return False
        labeler.adapter.stop_requested = self._stop.is_set      # shutdown ends adaptation between steps
        with self._labeler_lock:
            old = self.labeler
            for stamp, rgb in self._images:
                labeler.add_image(stamp, rgb)
            for stamp, depth in self._depths:
                labeler.add_depth(stamp, depth)
            if self._intrinsics is not None:
                labeler.set_intrinsics(self._intrinsics)
            self.labeler = labeler
        self.get_logger().info(f"TTT-KD model loaded from {path} (teacher {labeler.teacher.describe()['teacher']}, "
                               f"mode {p['mode']}, k={p['steps']}, stride {p['stride']})"
                               + (" [reloaded]" if old else ""))
        return True

    def _on_model(self, msg: ModelUpdate) -> None:
        if not {"tttkd", "ttt-kd", "ttt_kd"} & set(msg.tasks):
            return
        source = self.fetcher.client_for(msg.source)
        threading.Thread(target=self._load_update, args=(msg.path, msg.checksum, source, int(msg.version)),
                         daemon=True).start()

    def _load_update(self, path: str, checksum: str, source=None, version: int = 0) -> None:
        from tst_ros.tttkd.checkpoint import CHECKPOINT_FILE, checkpoint_path
        try:   # verified where it is, else fetched from `source` into the model cache
            file = checkpoint_path(self.fetcher.resolve(source, path, version, checksum, required=(CHECKPOINT_FILE,)))
        except (OSError, ValueError) as e:
            self.rejected_updates += 1
            self.get_logger().error(f"model update from {path} rejected, keeping the current model: {e}")
            return
        if self._load(str(file)):
            self.model_version = version

    # ------------------------------------------------------------------ inputs (cheap)
    def _on_image(self, msg: Image) -> None:
        self._buffer("image", msg, image_to_rgb, self._images)

    def _on_depth(self, msg: Image) -> None:
        # registered into the colour camera, or dropped with what to set (DepthNotRegistered)
        self._buffer("depth", msg, lambda m: self.depth_registrar.align(depth_to_metres(m)), self._depths)

    def _buffer(self, kind: str, msg: Image, convert, buffer: deque) -> None:
        """Keep a converted copy of a recent image or depth frame for the cloud that will need it."""
        try:
            array = convert(msg).copy()
        except DepthInfoPending:
            return
        except ValueError as e:
            self._warn_once(kind, f"{kind} dropped: {e}")
            return
        stamp = stamp_to_ns(msg.header.stamp)
        buffer.append((stamp, array))
        labeler = self.labeler
        if labeler is not None:
            getattr(labeler, f"add_{kind}")(stamp, array)

    def _on_camera_info(self, msg: CameraInfo) -> None:
        try:
            self._intrinsics = camera_info_to_intrinsics(msg)
        except ValueError as e:
            self._warn_once("camera_info", f"camera_info ignored: {e}")
            return
        self.depth_registrar.set_color_info(self._intrinsics, msg.header.frame_id)
        labeler = self.labeler
        if labeler is not None:
            labeler.set_intrinsics(self._intrinsics)

    def _on_cloud(self, msg: PointCloud2) -> None:
        with self._cloud_lock:
            self.counts["received"] += 1
            if self._latest_cloud is not None:
                self.counts["skipped_stale"] += 1
            self._latest_cloud = msg
        self._wake.set()

    # ------------------------------------------------------------------ accounting
    @property
    def published(self) -> int:
        return self.counts["labelled"]

    @property
    def dropped(self) -> int:
        return self.counts["skipped_stale"]

    def _count(self, name: str) -> None:
        with self._cloud_lock:
            self.counts[name] += 1
            self._in_progress = False

    def stats(self) -> dict:
        """Where every received cloud went: received == labelled + skipped_stale + skipped_no_model
        + failed + pending (waiting for the worker or being labelled)."""
        with self._cloud_lock:
            out = {name: self.counts[name] for name in CLOUD_COUNTERS}
            out["pending"] = int(self._latest_cloud is not None) + int(self._in_progress)
        out["subscriptions"] = {key: sub.describe() for key, sub in self.sensor_subscriptions.items()}
        return out

    def _log_stats(self) -> None:
        stats = self.stats()
        if stats["received"]:
            self.get_logger().info("clouds: " + ", ".join(f"{k} {stats[k]}" for k in (*CLOUD_COUNTERS, "pending")))

    # ------------------------------------------------------------------ worker
    def _wait_for_pose(self, stamp_ns: int) -> None:
        """Odometry may trail the cloud by a few ms: wait (bounded) until the buffer covers the stamp."""
        deadline = time.monotonic() + float(self.params["pose_wait_s"])
        while not self.poses.can_lookup(stamp_ns) and time.monotonic() < deadline and not self._stop.is_set():
            span = getattr(self.poses, "span_ns", None)  # a TF tree has no single span
            if span is not None and stamp_ns < span[0]:
                return  # older than anything buffered: waiting cannot help
            time.sleep(0.01)

    def _work(self) -> None:
        from tst_ros.tttkd.adapt import AdaptationStopped      # torch: in the worker, not at start-up

        if int(self.params["threads"]) > 0:
            import torch
            torch.set_num_threads(int(self.params["threads"]))
        while not self._stop.is_set():
            if not self._wake.wait(timeout=0.2):
                continue
            self._wake.clear()
            with self._cloud_lock:
                msg, self._latest_cloud = self._latest_cloud, None
                self._in_progress = msg is not None
            if msg is None:
                continue
            labeler = self.labeler
            if labeler is None:
                self._count("skipped_no_model")
                self._warn_once("nomodel", "no TTT-KD model yet (parameter `model` or /tst/model): clouds are skipped")
                continue
            try:
                self._label_and_publish(labeler, msg)
            except AdaptationStopped:
                return
            except Exception as e:  # a bad cloud must never kill the worker
                self._count("failed")
                self.get_logger().error(f"cloud at {stamp_to_ns(msg.header.stamp)} ns not labelled: {e}")

    def _label_and_publish(self, labeler, msg: PointCloud2) -> None:
        t0 = time.perf_counter()
        self._wait_for_pose(stamp_to_ns(msg.header.stamp))
        xyz = cloud_xyz(msg)
        names = {f.name for f in msg.fields}
        rgb = cloud_rgb(msg) if ("rgb" in names or "rgba" in names) else None
        pred = labeler.label(stamp_to_ns(msg.header.stamp), xyz, rgb, frame_id=msg.header.frame_id)
        for m in pred.info.get("messages", []):
            if m.startswith("online mode"):
                continue
            self._warn_once(m.split(":")[0][:40], m)
        out = make_xyz_rgb_cloud(xyz, rgb, msg.header, extra={"label": pred.labels, "confidence": pred.confidence},
                                 is_dense=msg.is_dense)
        self.publisher.publish(out)
        self._count("labelled")
        self.last_info = pred.info
        self.process_times.append(time.perf_counter() - t0)
        self.process_adapted.append(bool(pred.info.get("adapted")))

    def _warn_once(self, key: str, text: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            self.get_logger().warning(text)

    def destroy_node(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._worker.is_alive():     # it stops between two steps; a step is seconds at most
            self._worker.join(timeout=60.0)
        super().destroy_node()


def main(argv: list[str] | None = None) -> int:
    return run_node(TTTKDNode, argv)


if __name__ == "__main__":
    sys.exit(main())
