"""Segmentation and detection nodes over real DDS: the nodes run in their own processes (the
installed entry points), this test process publishes simulator frames and collects outputs.

One streaming scenario feeds both nodes; the tests below check what it recorded:
frames -> masks / detections of the right size, encoding, classes and header; a hot model
swap mid-stream (every input stamp answered exactly once); a corrupt model update rejected
with an error while the old model keeps serving; a wrong-encoding frame and a truncated one
reported while the node keeps running. The detection node starts on an RGB-D model (depth
paired by stamp) and swaps to an RGB model.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")

from tst_ros.perception.export import export_model  # noqa: E402
from fixture_models import make_model_dir  # noqa: E402
from tst_ros.util import sha256_file  # noqa: E402

from polling import wait_for  # noqa: E402

CLASSES = ["wall", "floor", "chair", "table", "lamp", "sofa"]
THINGS = [2, 3, 4, 5]
RATE_HZ = 8.0
FRAME_ID = "camera_color_optical_frame"


def sim_frames(n: int) -> list:
    from tst_ros.config import SimConfig
    from tst_ros.sim import Simulator

    cfg = SimConfig(width=128, height=96)
    return [(f.rgb, f.depth_mm) for f in Simulator(cfg).frames(n)]


def export(tmp: Path, name: str, constant_class: int, inputs=("rgb",)) -> Path:
    model_dir = make_model_dir(tmp / name, CLASSES, THINGS, image_size=32, inputs=inputs,
                               constant_class=constant_class, seed=constant_class)
    rng = np.random.default_rng(0)
    frames = [(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8), rng.uniform(0.5, 4, (48, 64)).astype(np.float32))]
    return Path(export_model(model_dir, tmp / f"{name}.onnx", frames=frames)["path"])


def start_node(kind: str, model: Path, log: Path, ros_args=()) -> subprocess.Popen:
    """A perception node process (reliable, CPU, one thread), `ros_args` appended to --ros-args."""
    cmd = [sys.executable, "-m", f"tst_ros.ros.nodes.{kind}", "--ros-args", "-p", f"model_path:={model}",
           "-p", "best_effort:=false", "-p", "qos_depth:=10", "-p", "score_threshold:=0.3",
           "-p", "providers:=['CPUExecutionProvider']", "-p", "threads:=1", *ros_args]
    return subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT, env=dict(os.environ))


class Harness:
    """Publishers and recorders in this process, spun by a background executor."""

    def __init__(self):
        from rclpy.executors import SingleThreadedExecutor
        from sensor_msgs.msg import Image
        from visualization_msgs.msg import MarkerArray

        from vision_msgs.msg import Detection2DArray, LabelInfo, VisionInfo

        from tst_ros.msg import ModelUpdate
        from tst_ros.ros.qos import qos_latched, qos_sensor

        self.ctx = rclpy.Context()
        rclpy.init(context=self.ctx)
        self.node = rclpy.create_node("perception_test_harness", context=self.ctx)
        reliable = qos_sensor(best_effort=False, depth=10)
        self.image_pub = self.node.create_publisher(Image, "/camera/color/image_raw", reliable)
        self.depth_pub = self.node.create_publisher(Image, "/camera/depth/image_raw", reliable)
        self.model_pub = self.node.create_publisher(ModelUpdate, "/tst/model", qos_latched())
        self.lock = threading.Lock()
        self.masks: dict[int, list] = defaultdict(list)
        self.dets: dict[int, list] = defaultdict(list)
        self.labels: dict[str, list] = defaultdict(list)       # label_info topic -> [(class ids, names, threshold)]
        self.model_versions: dict[str, list] = defaultdict(list)   # vision_info topic -> [database_version]
        self.label_locations: dict[str, str] = {}
        self.markers = 0
        self.node.create_subscription(Image, "/tst/segmentation/mask", self._on_mask, reliable)
        self.node.create_subscription(Detection2DArray, "/tst/detections", self._on_dets, reliable)
        self.node.create_subscription(MarkerArray, "/tst/detections/markers", self._on_markers, 10)
        for task in ("segmentation", "detections"):
            self.node.create_subscription(LabelInfo, f"/tst/{task}/label_info",
                                          lambda m, t=task: self._on_label(t, m), qos_latched())
            self.node.create_subscription(VisionInfo, f"/tst/{task}/vision_info",
                                          lambda m, t=task: self._on_vision_info(t, m), qos_latched())
        self.executor = SingleThreadedExecutor(context=self.ctx)
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()

    @staticmethod
    def key(header) -> int:
        return header.stamp.sec * 1_000_000_000 + header.stamp.nanosec

    def _on_mask(self, msg):
        from tst_ros.ros.images import image_to_array
        with self.lock:
            self.masks[self.key(msg.header)].append((msg.header.frame_id, msg.encoding, msg.height, msg.width,
                                                     np.unique(image_to_array(msg))))

    def _on_dets(self, msg):
        with self.lock:
            dets = [(d.bbox.center.position.x, d.bbox.center.position.y, d.bbox.size_x, d.bbox.size_y,
                     d.results[0].hypothesis.class_id, d.results[0].hypothesis.score,
                     d.header.frame_id) for d in msg.detections]
            self.dets[self.key(msg.header)].append((msg.header.frame_id, dets))

    def _on_markers(self, msg):
        with self.lock:
            self.markers += 1

    def _on_label(self, task, msg):
        with self.lock:
            self.labels[task].append(([c.class_id for c in msg.class_map], [c.class_name for c in msg.class_map],
                                      msg.threshold))

    def _on_vision_info(self, task, msg):
        with self.lock:
            self.model_versions[task].append(msg.database_version)
            self.label_locations[task] = msg.database_location

    def versions(self, task):
        """Model versions the node announced (VisionInfo), once its LabelInfo has arrived too."""
        with self.lock:
            return list(self.model_versions[task]) if self.labels[task] else []

    def publish_frame(self, stamp_ns: int, rgb: np.ndarray, depth_mm: np.ndarray | None, encoding="rgb8"):
        from tst_ros.ros.conversions import make_header
        from tst_ros.ros.images import array_to_image
        header = make_header(stamp_ns, FRAME_ID)
        if encoding == "rgb8":
            self.image_pub.publish(array_to_image(rgb, "rgb8", header))
        else:
            self.image_pub.publish(array_to_image(rgb[..., 0].astype(np.float32), encoding, header))
        if depth_mm is not None:
            self.depth_pub.publish(array_to_image(depth_mm, "16UC1", header))

    def publish_truncated_frame(self, stamp_ns: int, rgb: np.ndarray):
        """A colour image cut off mid-pixels on the wire (published serialized)."""
        from rclpy.serialization import serialize_message

        from tst_ros.ros.conversions import make_header
        from tst_ros.ros.images import array_to_image
        data = serialize_message(array_to_image(rgb, "rgb8", make_header(stamp_ns, FRAME_ID)))
        self.image_pub.publish(data[: len(data) // 2])

    def publish_model(self, version: int, path: Path, tasks=("segmentation", "detection")):
        from tst_ros.msg import ModelUpdate
        msg = ModelUpdate(version=version, path=str(path), checksum=sha256_file(path), tasks=list(tasks),
                          modalities=["rgb"])
        msg.header.stamp = self.node.get_clock().now().to_msg()
        self.model_pub.publish(msg)

    def close(self):
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.shutdown(context=self.ctx)



@pytest.fixture(scope="module")
def scenario(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("nodes")
    model_a = export(tmp, "model_a", constant_class=2)                            # seg: all "chair"
    model_rgbd = export(tmp, "model_rgbd", constant_class=3, inputs=("rgb", "depth"))  # det: "table"
    model_b = export(tmp, "model_b", constant_class=4)                            # both after the swap: "lamp"
    corrupt = tmp / "corrupt.onnx"
    corrupt.write_bytes(model_b.read_bytes()[: len(model_b.read_bytes()) // 3])
    frames = sim_frames(12)

    logs = {"segmentation": tmp / "seg.log", "detection": tmp / "det.log"}
    procs = {"segmentation": start_node("segmentation", model_a, logs["segmentation"]),
             "detection": start_node("detection", model_rgbd, logs["detection"])}
    h = Harness()
    rec = {"stamps": [], "bad_stamp": None, "swap_sent": None, "corrupt_sent": None, "frame_shape": frames[0][0].shape}
    try:
        wait_for(lambda: h.versions("segmentation") and h.versions("detections")
                 and h.image_pub.get_subscription_count() >= 2 and h.depth_pub.get_subscription_count() >= 1,
                 30, "both nodes to start, latch their label maps and subscribe")
        time.sleep(0.5)
        i, phase, t_next = 0, "model_a", time.monotonic()
        phase_start = 0
        while phase != "done":
            stamp = 1_000_000_000_000 + i * 125_000_000
            rgb, depth = frames[i % len(frames)]
            if phase == "wrong_encoding":
                h.publish_frame(stamp, rgb, depth, encoding="32FC1")
                rec["bad_stamp"] = stamp
                phase = "truncated"
            elif phase == "truncated":
                h.publish_truncated_frame(stamp, rgb)
                rec["truncated_stamp"] = stamp
                phase, phase_start = "after_bad", i + 1
            else:
                h.publish_frame(stamp, rgb, depth)
                rec["stamps"].append(stamp)
            i += 1
            if phase == "model_a" and i - phase_start >= 10:
                h.publish_model(1, model_b)
                rec["swap_sent"] = stamp
                phase, phase_start = "swapping", i
            elif phase == "swapping" and i - phase_start >= 8 and 1 in h.versions("segmentation") \
                    and 1 in h.versions("detections"):
                h.publish_model(2, corrupt)
                rec["corrupt_sent"] = stamp
                phase, phase_start = "corrupt", i
            elif phase == "corrupt" and i - phase_start >= 10:
                phase = "wrong_encoding"
            elif phase == "after_bad" and i - phase_start >= 6:
                phase = "done"
            if i > 120:
                raise AssertionError("scenario did not progress (model swap never reported)")
            t_next += 1.0 / RATE_HZ
            time.sleep(max(0.0, t_next - time.monotonic()))
        last = rec["stamps"][-1]
        wait_for(lambda: last in h.masks and last in h.dets, 10, "outputs of the last frame")
        time.sleep(0.5)
        alive = {k: p.poll() is None for k, p in procs.items()}
    finally:
        h.close()
        for p in procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs.values():
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
    rec.update(h=h, alive=alive, logs={k: v.read_text() for k, v in logs.items()},
               exit_codes={k: p.returncode for k, p in procs.items()})
    return rec


def test_every_frame_gets_one_mask_and_one_detection_array_across_a_model_swap(scenario):
    h = scenario["h"]
    missing_masks = [s for s in scenario["stamps"] if len(h.masks[s]) != 1]
    missing_dets = [s for s in scenario["stamps"] if len(h.dets[s]) != 1]
    assert not missing_masks, f"stamps without exactly one mask: {missing_masks}\n{scenario['logs']['segmentation']}"
    assert not missing_dets, (f"stamps without exactly one detection array: {missing_dets}\n"
                              f"{scenario['logs']['detection']}")
    assert set(h.masks) == set(scenario["stamps"])        # nothing answered that was not sent


def test_masks_are_mono8_at_input_size_and_switch_class_at_the_swap(scenario):
    h = scenario["h"]
    height, width = scenario["frame_shape"][:2]
    classes_seen = []
    for s in scenario["stamps"]:
        frame_id, encoding, mh, mw, values = h.masks[s][0]
        assert (frame_id, encoding, mh, mw) == (FRAME_ID, "mono8", height, width)
        assert len(values) == 1
        classes_seen.append(int(values[0]))
    # model A (class 2) until the swap, then model B (class 4) for good, never back
    switch = classes_seen.index(4)
    assert set(classes_seen[:switch]) == {2} and set(classes_seen[switch:]) == {4}
    assert scenario["stamps"][switch] > scenario["swap_sent"]


def test_detections_have_valid_boxes_class_ids_and_input_header(scenario):
    h = scenario["h"]
    height, width = scenario["frame_shape"][:2]
    labels_over_time = []
    for s in scenario["stamps"]:
        frame_id, dets = h.dets[s][0]
        assert frame_id == FRAME_ID
        assert dets, "the biased test models always detect something"
        for cx, cy, sx, sy, class_id, score, det_frame in dets:
            assert det_frame == FRAME_ID
            assert cx - sx / 2 >= -1e-6 and cx + sx / 2 <= width + 1e-6 and sx > 0
            assert cy - sy / 2 >= -1e-6 and cy + sy / 2 <= height + 1e-6 and sy > 0
            assert int(class_id) in THINGS and 0.3 <= score <= 1.0
        labels_over_time.append({int(d[4]) for d in dets})
    # RGB-D model ("table", depth paired by stamp) before the swap, RGB model ("lamp") after
    assert labels_over_time[0] == {3} and labels_over_time[-1] == {4}


def test_label_info_is_latched_and_bumped_by_the_swap(scenario):
    h = scenario["h"]
    assert h.versions("segmentation") == [0, 1] and h.versions("detections") == [0, 1]
    assert h.label_locations == {t: f"/tst/{t}/label_info" for t in ("segmentation", "detections")}
    seg, det = h.labels["segmentation"], h.labels["detections"]
    assert len(seg) == 2 and len(det) == 2
    # segmentation lists the mask's unlabeled value (255, the uint8 maximum, as vision_msgs prescribes)
    assert seg[-1] == (list(range(len(CLASSES))) + [255], CLASSES + ["unlabeled"], 0.0)
    assert det[-1][:2] == (THINGS, [CLASSES[i] for i in THINGS]) and abs(det[-1][2] - 0.3) < 1e-6
    assert h.markers > 0


def test_corrupt_model_update_is_rejected_and_old_model_keeps_serving(scenario):
    for kind in ("segmentation", "detection"):
        log = scenario["logs"][kind]
        assert "model update v2" in log and "rejected" in log and "keeping the current model (v1)" in log, log
    h = scenario["h"]
    after = [s for s in scenario["stamps"] if s > scenario["corrupt_sent"]]
    assert after and all(int(h.masks[s][0][4][0]) == 4 for s in after)


def test_wrong_encoding_and_truncated_images_are_reported_and_node_keeps_running(scenario):
    h = scenario["h"]
    for bad in (scenario["bad_stamp"], scenario["truncated_stamp"]):
        assert bad not in h.masks and bad not in h.dets
        assert any(s > bad for s in h.masks) and any(s > bad for s in h.dets)
    for kind in ("segmentation", "detection"):
        assert "input skipped" in scenario["logs"][kind] and "32FC1" in scenario["logs"][kind]
        assert "truncated" in scenario["logs"][kind], scenario["logs"][kind]
        assert scenario["alive"][kind], f"{kind} node died:\n{scenario['logs'][kind]}"
        assert scenario["exit_codes"][kind] == 0, scenario["logs"][kind]

