"""`tst-ros ingest` on real rosbag2 MCAP bags holding bad input, truncated and corrupt bags.

Each kind of bad input is reported (counted by reason, warned about) and costs only what is
bad; the rest of the bag is stored.
"""
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from rclpy.serialization import serialize_message

from tst_ros.config import RecordConfig
from tst_ros.data.bagio import BagWriter
from tst_ros.data.ingest import ingest
from tst_ros.data.store import Store
from tst_ros.geometry import Intrinsics
from tst_ros.ros.conversions import array_to_imu, intrinsics_to_camera_info, make_header
from tst_ros.ros.images import array_to_image
from tst_ros.ros.nodes.recorder import RosDecoder

MS = 1_000_000
T0 = 1_700_000_000 * 10**9
W, H = 64, 48
INTR = Intrinsics.from_fov(W, H, 70)
ROOT = Path(__file__).resolve().parents[1]
TOPICS = {"rgb": ("/camera/color/image_raw", "sensor_msgs/msg/Image"),
          "depth": ("/camera/depth/image_raw", "sensor_msgs/msg/Image"),
          "camera_info": ("/camera/color/camera_info", "sensor_msgs/msg/CameraInfo"),
          "imu": ("/imu/data", "sensor_msgs/msg/Imu")}


class _Bag:
    def __init__(self, path):
        self.w = BagWriter(path)
        for topic, msgtype in TOPICS.values():
            self.w.add_topic(topic, msgtype)
        self.log = T0

    def put(self, stream, msg):
        self.log += MS
        self.w.write(TOPICS[stream][0], self.log, serialize_message(msg))


def _frame(bag, i, t, rgb_enc="rgb8", depth=None, info=True, rgb=True):
    h = make_header(t, "camera_color_optical_frame")
    for k in range(1, 21):   # 200 Hz IMU in (t - 100 ms, t]
        bag.put("imu", array_to_imu([0, 0, 9.81, 0, 0, 0.1 * i], make_header(t - 100 * MS + 5 * MS * k, "imu_link")))
    if info:
        bag.put("camera_info", intrinsics_to_camera_info(INTR, h))
    if rgb:
        img = np.full((H, W, 3), 10 * i, np.uint8)
        if rgb_enc == "rgb8":
            bag.put("rgb", array_to_image(img, "rgb8", h))
        else:  # a valid message whose encoding the recorder cannot turn into RGB
            from sensor_msgs.msg import Image
            bag.put("rgb", Image(header=h, height=H, width=W, encoding=rgb_enc, step=2 * W, data=bytes(2 * W * H)))
    bag.put("depth", depth if depth is not None else array_to_image(np.full((H, W), 2000, np.uint16), "16UC1", h))


@pytest.fixture(scope="module")
def bad_bag(tmp_path_factory):
    path = tmp_path_factory.mktemp("bad") / "bag"
    bag = _Bag(path)
    t = lambda i: T0 + i * 100 * MS  # noqa: E731
    for i in range(14):
        h = make_header(t(i), "camera_color_optical_frame")
        if i == 3:
            _frame(bag, i, t(i), rgb_enc="yuv422")                                          # unknown rgb encoding
        elif i == 4:
            _frame(bag, i, t(i), depth=array_to_image(np.zeros((H, W, 3), np.uint8), "rgb8", h))  # wrong depth enc.
        elif i == 5:
            _frame(bag, i, t(i), depth=array_to_image(np.full((24, 32), 900, np.uint16), "16UC1", h))  # size
        elif i == 6:
            d = np.full((H, W), 1.5, np.float32)
            d[0, :10], d[1, :5] = np.nan, np.inf
            _frame(bag, i, t(i), depth=array_to_image(d, "32FC1", h))                          # NaN / inf depth
            bag.put("rgb", array_to_image(np.zeros((H, W, 3), np.uint8), "rgb8",
                                          make_header(t(i) - 50 * MS, "x")))                   # out-of-order stamp
        elif i < 2:
            _frame(bag, i, t(i), info=False)                                                 # no CameraInfo yet
        elif i >= 10:
            _frame(bag, i, t(i - 10) + 7 * MS)                                               # clock jump back (loop)
        else:
            _frame(bag, i, t(i))
    bag.w.close()
    return path


def test_bad_input_is_counted_and_costs_only_what_is_bad(bad_bag, tmp_path, caplog):
    warnings = []
    report = ingest(bad_bag, tmp_path / "ds", RecordConfig(image_size=32), RosDecoder(), progress=False,
                    warn=warnings.append)
    c = report["counts"]
    assert report["error"] is None
    assert c["bad_encoding:rgb"] == 1 and c["bad_encoding:depth"] == 1 and c["size_mismatch:depth"] == 1
    assert c["nonfinite_depth_frames"] == 1 and c["nonfinite_depth_pixels"] == 5
    assert c["out_of_order:rgb"] == 1 and c["clock_jump_back"] == 1
    # frames 0 and 1 precede the first CameraInfo: they wait for it and get its (static) intrinsics
    assert "missing_camera_info" not in c
    text = "\n".join(warnings)
    for needle in ("yuv422", "'rgb8'", "32x24", "inf", "not after", "jumped back"):
        assert needle in text, needle
    store = Store(tmp_path / "ds")
    assert len(store) == 13       # 14 frames, only the undecodable RGB frame is lost
    by_value = {int(store.read(e["seq"])["rgb"][0, 0, 0]) // 10: e for e in store.entries}
    assert 3 not in by_value
    assert not by_value[4]["present"]["depth"] and by_value[4]["missing"]["depth"] == "bad_encoding"
    assert by_value[4]["present"]["rgb"] and by_value[4]["present"]["imu"]
    assert by_value[5]["missing"]["depth"] == "size_mismatch"
    d6 = store.read(by_value[6]["seq"])["depth"]
    assert d6.max() == 1500 and (d6 == 0).sum() > 0
    assert by_value[0]["present"]["normals"] and by_value[2]["present"]["normals"]
    assert by_value[0]["intrinsics"] == by_value[2]["intrinsics"]
    # the frame after the undecodable one carries its IMU window: no gap
    w2, w4 = by_value[2]["imu_window_ns"], by_value[4]["imu_window_ns"]
    assert w4[0] == by_value[2]["stamp_ns"] and len(store.read(by_value[4]["seq"])["imu_raw"]) == 40
    assert w2[1] == by_value[2]["stamp_ns"]


def test_frames_without_any_camera_info_are_stored_without_normals_and_counted(tmp_path):
    bag = _Bag(tmp_path / "no_info")
    for i in range(5):
        _frame(bag, i, T0 + (i + 1) * 100 * MS, info=False)
    bag.w.close()
    warnings = []
    report = ingest(tmp_path / "no_info", tmp_path / "ds", RecordConfig(image_size=32), RosDecoder(), progress=False,
                    warn=warnings.append)
    store = Store(tmp_path / "ds")
    assert len(store) == 5 and report["counts"]["missing_camera_info"] == 5
    assert all(not e["present"]["normals"] and e["missing"]["normals"] == "missing_camera_info" for e in store.entries)
    assert all(e["present"]["rgb"] and e["present"]["depth"] for e in store.entries)
    assert any("CameraInfo" in w for w in warnings)


def _cut(src: Path, dst: Path, fraction: float, garbage: bool):
    shutil.copytree(src, dst)
    mcap = next(dst.glob("*.mcap"))
    data = bytearray(mcap.read_bytes())
    cut = int(len(data) * fraction)
    if garbage:
        data[cut:cut + 4000] = b"\xab" * 4000
    else:
        data = data[:cut]
    mcap.write_bytes(bytes(data))


@pytest.fixture(scope="module")
def big_bag(tmp_path_factory):
    """20 good frames of 320x240: several MCAP chunks, so that damage leaves intact chunks before it."""
    global W, H, INTR
    path = tmp_path_factory.mktemp("big") / "bag"
    saved = W, H, INTR
    W, H = 320, 240
    INTR = Intrinsics.from_fov(W, H, 70)
    try:
        bag = _Bag(path)
        for i in range(20):
            _frame(bag, i, T0 + i * 100 * MS)
        bag.w.close()
    finally:
        W, H, INTR = saved
    return path


@pytest.mark.parametrize("garbage", [False, True], ids=["truncated", "corrupt"])
def test_damaged_bag_gives_clear_error_and_keeps_what_was_read(big_bag, tmp_path, garbage):
    damaged = tmp_path / "damaged"
    _cut(big_bag, damaged, 0.6, garbage)
    out = tmp_path / "ds"
    proc = subprocess.run([sys.executable, "-m", "tst_ros.cli", "ingest", str(damaged), "--out", str(out),
                           "--image-size", "32", "--no-progress"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert "truncated or corrupt" in proc.stderr or "damaged" in proc.stderr, proc.stderr
    assert "kept the" in proc.stderr
    store = Store(out)
    assert 2 <= len(store) < 20
    for e in store.entries:
        store.read(e["seq"], verify=True)
