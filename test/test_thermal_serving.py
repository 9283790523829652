"""Serving a model that takes a thermal image: pairing camera images with colour by stamp,
converting them to physical units, and the segmentation node over real DDS (its own process,
the installed entry point) following the served model's inputs.

The node scenario runs one node through: an RGB model (no thermal subscription), a hot swap to
an RGB-thermal model (thermal subscribed; every paired frame answered with the mask the model
gives for that colour and thermal image), a thermal image of the wrong encoding (reported, the
node keeps serving), colour frames whose thermal image is off by more than the slop or absent
(no mask, counted in /diagnostics), and a swap back to an RGB model (thermal unsubscribed).
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")
pytest.importorskip("diagnostic_msgs")

from fixture_models import make_model_dir  # noqa: E402
from polling import Spinning, wait_for  # noqa: E402
from tst_ros.perception.export import export_model  # noqa: E402
from tst_ros.util import sha256_file  # noqa: E402

CLASSES = ["wall", "floor", "chair", "table", "lamp", "window"]
THINGS = [2, 3, 4]
FRAME_ID = "camera_color_optical_frame"
T0 = 1_000_000_000_000
SLOP_S = 0.05
TIMEOUT_S = 60.0            # generous: node processes start on a shared 2-core machine


def _image(stamp_ns: int, array: np.ndarray, encoding: str):
    from tst_ros.ros.conversions import make_header
    from tst_ros.ros.images import array_to_image
    return array_to_image(array, encoding, make_header(stamp_ns, FRAME_ID))


# ------------------------------------------------------------------ pairing and conversion
def test_pairing_takes_the_nearest_stamp_within_the_slop_whatever_the_arrival_order():
    from tst_ros.ros.conversions import stamp_to_ns
    from tst_ros.ros.paired_images import pair_nearest

    ms = 1_000_000
    blank = np.zeros((2, 2), np.uint16)
    queue = [_image(T0 + t * ms, blank, "16UC1") for t in (30, 10, 50)]     # arrived out of order
    slop = 5 * ms

    def paired(t_ms):
        state, msg = pair_nearest(_image(T0 + t_ms * ms, blank, "16UC1"), queue, slop)
        return state, None if msg is None else (stamp_to_ns(msg.header.stamp) - T0) // ms

    assert paired(12) == ("ok", 10)
    assert paired(47) == ("ok", 50)
    assert paired(31) == ("ok", 30)
    assert paired(20) == ("none", None)     # nothing within 5 ms, and later images show none will come
    assert paired(60) == ("wait", None)     # no image yet near or after it: one may still arrive
    assert pair_nearest(_image(T0, blank, "16UC1"), [], slop) == ("wait", None)


def test_thermal_centi_kelvin_becomes_kelvin_resampled_to_colour_and_a_wrong_encoding_is_named():
    from tst_ros.ros.paired_images import PairedImages

    ck = np.array([[29500, 0], [30000, 28000]], np.uint16)
    out = PairedImages.to_physical({"thermal": _image(T0, ck, "16UC1")}, (4, 4))
    assert out["thermal"].dtype == np.float32 and out["thermal"].shape == (4, 4)
    np.testing.assert_allclose(out["thermal"][::2, ::2], [[295.0, np.nan], [300.0, 280.0]])
    assert np.isnan(out["thermal"][:2, 2:]).all()          # invalid (0) stays invalid when resampled
    kelvin = np.array([[295.5, np.inf]], np.float32)
    np.testing.assert_allclose(PairedImages.to_physical({"thermal": _image(T0, kelvin, "32FC1")}, (1, 2))["thermal"],
                               [[295.5, np.nan]])
    depth = PairedImages.to_physical({"depth": _image(T0, np.full((2, 2), 1500, np.uint16), "16UC1")}, (4, 4))
    assert depth["depth"].shape == (2, 2) and np.allclose(depth["depth"], 1.5)    # registered by the node
    with pytest.raises(ValueError, match="thermal encoding 'rgb8'"):
        PairedImages.to_physical({"thermal": _image(T0, np.zeros((2, 2, 3), np.uint8), "rgb8")}, (2, 2))


# ------------------------------------------------------------------ the node over DDS
def _export(tmp: Path, name: str, inputs, constant_class=None, seed=0) -> Path:
    model_dir = make_model_dir(tmp / name, CLASSES, THINGS, image_size=32, inputs=inputs,
                               constant_class=constant_class, seed=seed)
    return Path(export_model(model_dir, tmp / f"{name}.onnx", frames=[f[:3] for f in _frames(1)])["path"])


def _frames(n: int) -> list:
    """(rgb, depth metres, {"thermal": kelvin}) of simulated frames; the thermal image is centi-kelvin on the wire."""
    from tst_ros.config import SimConfig
    from tst_ros.sim import Simulator

    return [(f.rgb, f.depth_mm.astype(np.float32) / 1000, {"thermal": f.thermal_ck.astype(np.float32) / 100},
             f.thermal_ck) for f in Simulator(SimConfig(width=64, height=48)).frames(n)]


class Harness:
    """Colour, thermal and model publishers; masks and /diagnostics recorded, spun in a thread."""

    def __init__(self):
        from diagnostic_msgs.msg import DiagnosticArray
        from sensor_msgs.msg import Image
        from vision_msgs.msg import VisionInfo

        from tst_ros.msg import ModelUpdate
        from tst_ros.ros.qos import qos_latched, qos_sensor

        self.spinning = Spinning(lambda context: rclpy.create_node("thermal_serving_harness", context=context))
        self.node = self.spinning.node
        reliable = qos_sensor(best_effort=False, depth=10)
        self.image_pub = self.node.create_publisher(Image, "/camera/color/image_raw", reliable)
        self.thermal_pub = self.node.create_publisher(Image, "/camera/thermal/image_raw", reliable)
        self.model_pub = self.node.create_publisher(ModelUpdate, "/tst/model", qos_latched())
        self.lock = threading.Lock()
        self.masks: dict[int, np.ndarray] = {}
        self.versions: list[int] = []
        self.values: dict[str, str] = {}      # the node's last diagnostics
        self.node.create_subscription(Image, "/tst/segmentation/mask", self._on_mask, reliable)
        self.node.create_subscription(VisionInfo, "/tst/segmentation/vision_info",
                                      lambda m: self._append(self.versions, m.database_version), qos_latched())
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 50)

    def _append(self, target: list, value) -> None:
        with self.lock:
            target.append(value)

    def _on_mask(self, msg) -> None:
        from tst_ros.ros.conversions import stamp_to_ns
        from tst_ros.ros.images import image_to_array
        with self.lock:
            self.masks[stamp_to_ns(msg.header.stamp)] = np.array(image_to_array(msg))

    def _on_diagnostics(self, msg) -> None:
        for status in msg.status:
            if status.name == "/segmentation":
                with self.lock:
                    self.values = {kv.key: kv.value for kv in status.values}

    def count(self, key: str) -> int:
        with self.lock:
            return int(self.values.get(key, 0))

    def has_mask(self, stamp: int) -> bool:
        with self.lock:
            return stamp in self.masks

    def served(self, version: int) -> bool:
        with self.lock:
            return version in self.versions

    def publish(self, stamp_ns: int, rgb: np.ndarray, thermal: np.ndarray | None = None, thermal_stamp_ns=None,
                thermal_encoding: str = "16UC1") -> None:
        self.image_pub.publish(_image(stamp_ns, rgb, "rgb8"))
        if thermal is not None:
            self.thermal_pub.publish(_image(thermal_stamp_ns or stamp_ns, thermal, thermal_encoding))

    def publish_model(self, version: int, path: Path) -> None:
        from tst_ros.msg import ModelUpdate
        msg = ModelUpdate(version=version, path=str(path), checksum=sha256_file(path), tasks=["segmentation"])
        msg.header.stamp = self.node.get_clock().now().to_msg()
        self.model_pub.publish(msg)

    def close(self) -> None:
        self.spinning.close()


@pytest.fixture(scope="module")
def scenario(tmp_path_factory):
    from tst_ros.perception.runtime import Predictor

    tmp = tmp_path_factory.mktemp("thermal_serving")
    rgb_model = _export(tmp, "rgb", ("rgb",), constant_class=2)
    thermal_model = _export(tmp, "rgb_thermal", ("rgb", "thermal"), seed=5)      # untrained: input-dependent masks
    rgb_after = _export(tmp, "rgb_after", ("rgb",), constant_class=4)
    frames = _frames(6)
    log = tmp / "segmentation.log"
    proc = subprocess.Popen([sys.executable, "-m", "tst_ros.ros.nodes.segmentation", "--ros-args",
                             "-p", f"model_path:={rgb_model}", "-p", "best_effort:=false", "-p", "qos_depth:=10",
                             "-p", f"sync_slop_s:={SLOP_S}", "-p", "providers:=['CPUExecutionProvider']",
                             "-p", "threads:=1"], stdout=log.open("w"), stderr=subprocess.STDOUT, env=dict(os.environ))
    h = Harness()
    rec = {"paired": [], "skipped": [], "frames": frames}
    s = 1_000_000_000
    try:
        wait_for(lambda: h.served(0) and h.image_pub.get_subscription_count() >= 1, TIMEOUT_S,
                 "the node to serve the RGB model")
        rec["thermal_subscribers_rgb"] = h.thermal_pub.get_subscription_count()

        h.publish_model(1, thermal_model)
        wait_for(lambda: h.served(1) and h.thermal_pub.get_subscription_count() >= 1, TIMEOUT_S,
                 "the swap to the RGB-thermal model and its thermal subscription")
        for i, (rgb, _, _, ck) in enumerate(frames):                    # paired: answered one by one
            stamp = T0 + i * s
            h.publish(stamp, rgb, ck)
            wait_for(lambda: h.has_mask(stamp), TIMEOUT_S, f"the mask of paired frame {i}")
            rec["paired"].append(stamp)

        rgb, ck = frames[0][0], frames[0][3]
        rec["bad_encoding"] = T0 + 10 * s
        h.publish(rec["bad_encoding"], rgb, np.dstack([ck.astype(np.uint8)] * 3), thermal_encoding="rgb8")
        # handled before the next frame comes (a later frame would replace it unseen on a busy machine)
        wait_for(lambda: h.count("drops.bad_inputs") >= 1, TIMEOUT_S, "the node to report the wrong encoding")
        unanswered = [(T0 + (11 + k) * s, True) for k in range(3)]      # thermal 0.5 s off: beyond the slop
        unanswered += [(T0 + (14 + k) * s, False) for k in range(3)]    # no thermal at all
        for stamp, with_thermal in unanswered:
            # one frame at a time (the node reports it received) so that none is merely replaced
            # by the next before the node has looked at it
            received = len(rec["paired"]) + 1 + len(rec["skipped"]) + 1
            if with_thermal:
                h.publish(stamp, rgb, ck, thermal_stamp_ns=stamp + s // 2)
            else:
                h.publish(stamp, rgb)
            rec["skipped"].append(stamp)
            wait_for(lambda: h.count("frames_received") >= received, TIMEOUT_S, "the node to receive the frame")
        rec["resumed"] = T0 + 17 * s
        h.publish(rec["resumed"], rgb, ck)
        wait_for(lambda: h.has_mask(rec["resumed"]), TIMEOUT_S, "the mask of the next paired frame")
        wait_for(lambda: h.count("drops.frames_without_thermal") >= len(rec["skipped"])
                 and h.count("frames_processed") >= len(rec["paired"]) + 1, TIMEOUT_S,
                 "/diagnostics to count the frames without thermal")
        with h.lock:
            rec["diagnostics"] = dict(h.values)

        h.publish_model(2, rgb_after)
        wait_for(lambda: h.served(2) and h.thermal_pub.get_subscription_count() == 0, TIMEOUT_S,
                 "the swap back to an RGB model to unsubscribe thermal")
        rec["colour_only"] = T0 + 18 * s
        h.publish(rec["colour_only"], rgb)
        wait_for(lambda: h.has_mask(rec["colour_only"]), TIMEOUT_S, "a mask without thermal from the RGB model")
        rec["alive"] = proc.poll() is None
    finally:
        h.close()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
    predictor = Predictor.load(thermal_model, ["CPUExecutionProvider"], threads=1, pin_threads=False)
    rec.update(h=h, log=log.read_text(), predictor=predictor)
    return rec


def test_rgb_model_does_not_subscribe_thermal_and_rgb_thermal_model_does(scenario):
    assert scenario["thermal_subscribers_rgb"] == 0
    assert "inputs ['rgb', 'thermal']" in scenario["log"]


def test_every_paired_frame_gets_the_mask_the_model_gives_for_its_colour_and_thermal_image(scenario):
    h, predictor = scenario["h"], scenario["predictor"]
    blank_differs = False
    for stamp, (rgb, _, images, _) in zip(scenario["paired"], scenario["frames"]):
        expected = predictor.predict(rgb, need_boxes=False, images=images).mask
        got = h.masks[stamp]
        assert got.shape == rgb.shape[:2]
        assert np.mean(got != expected) < 1e-3, f"mask of {stamp} differs from the model's\n{scenario['log']}"
        blank = predictor.predict(rgb, need_boxes=False, images={"thermal": np.full(rgb.shape[:2], np.nan)}).mask
        blank_differs |= bool(np.any(blank != expected))
    assert blank_differs, "the test model ignores thermal: the check above would not see it missing"


def test_frames_without_a_thermal_image_within_the_slop_are_skipped_and_counted(scenario):
    h = scenario["h"]
    assert not [s for s in scenario["skipped"] if s in h.masks]
    assert int(scenario["diagnostics"]["drops.frames_without_thermal"]) == len(scenario["skipped"])
    assert "no thermal image within sync_slop_s" in scenario["log"]


def test_a_thermal_image_of_the_wrong_encoding_is_reported_and_the_node_keeps_serving(scenario):
    assert scenario["bad_encoding"] not in scenario["h"].masks
    assert "unsupported thermal encoding 'rgb8'" in scenario["log"]
    assert int(scenario["diagnostics"]["drops.bad_inputs"]) >= 1
    assert scenario["resumed"] in scenario["h"].masks and scenario["alive"]


def test_swapping_back_to_an_rgb_model_unsubscribes_thermal_and_serves_colour_alone(scenario):
    mask = scenario["h"].masks[scenario["colour_only"]]
    assert set(np.unique(mask).tolist()) == {4}
