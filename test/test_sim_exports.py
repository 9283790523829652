"""Exports: the MCAP bag is readable by rosbags and by the mcap reader with the expected topics,
types and counts (ground truth alongside, not in the sensor topics); the COCO-style labeled set
round-trips through its reader; the preview writes a PNG."""
import json
from collections import Counter

import numpy as np

from tst_ros.cli import main as tst_ros
from tst_ros.config import SimConfig
from tst_ros.sim import CLASSES, THING_CLASSES, Simulator
from tst_ros.sim.export import TOPIC_TYPES, gt_path

FRAMES = 12


def test_exported_bag_is_readable_by_rosbags_and_mcap_with_expected_topics_and_counts(tmp_path):
    bag = tmp_path / "run"
    assert tst_ros(["sim", "export", "--out", str(bag), "--frames", str(FRAMES), "--width", "64", "--height", "48",
                    "--set", "sim.cloud_rate_hz=5"]) == 0
    imu_per_frame = int(SimConfig().imu_rate_hz / SimConfig().camera_rate_hz)
    expected = {"/camera/color/image_raw": FRAMES, "/camera/color/camera_info": FRAMES,
                "/camera/depth/image_raw": FRAMES, "/camera/thermal/image_raw": FRAMES, "/odom": FRAMES,
                "/points": FRAMES // 2,
                "/imu/data": FRAMES * imu_per_frame}

    from rosbags.highlevel import AnyReader
    with AnyReader([bag]) as reader:
        assert {c.topic: c.msgtype for c in reader.connections} == TOPIC_TYPES
        counts = Counter()
        stamps = {}
        for conn, t, raw in reader.messages():
            counts[conn.topic] += 1
            msg = reader.deserialize(raw, conn.msgtype)
            assert msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec == t
            stamps.setdefault(conn.topic, []).append(t)
            if conn.topic == "/camera/depth/image_raw" and counts[conn.topic] == 3:
                depth = msg.data.view(np.uint16).reshape(msg.height, msg.width)
                assert msg.encoding == "16UC1" and msg.header.frame_id == "camera_color_optical_frame"
            if conn.topic == "/camera/thermal/image_raw" and counts[conn.topic] == 3:
                thermal = msg.data.view(np.uint16).reshape(msg.height, msg.width)
                assert msg.encoding == "16UC1" and msg.header.frame_id == "camera_color_optical_frame"
    assert dict(counts) == expected
    sim = Simulator(SimConfig(width=64, height=48, cloud_rate_hz=5))
    np.testing.assert_array_equal(depth, sim.frame(2).depth_mm)
    np.testing.assert_array_equal(thermal, sim.frame(2).thermal_ck)
    assert stamps["/camera/color/image_raw"] == [sim.stamp_ns(i) for i in range(FRAMES)]

    from mcap.reader import make_reader
    (mcap_file,) = bag.glob("*.mcap")
    with open(mcap_file, "rb") as f:
        reader = make_reader(f)
        counts = Counter()
        schemas = {}
        for schema, channel, message in reader.iter_messages():
            counts[channel.topic] += 1
            schemas[channel.topic] = schema.name
            assert channel.message_encoding == "cdr"
    assert dict(counts) == expected
    assert schemas == TOPIC_TYPES

    gt = np.load(gt_path(bag))
    assert gt["semantic"].shape == (FRAMES, 48, 64) and gt["instance"].shape == (FRAMES, 48, 64)
    assert gt["T_odom_base"].shape == (FRAMES, 4, 4) and list(gt["classes"]) == CLASSES
    np.testing.assert_array_equal(gt["stamp_ns"], stamps["/camera/color/image_raw"])
    assert len(gt["cloud_labels"]) == len(gt["cloud_frame"]) > 0


def test_labeled_set_round_trips_with_masks_inside_boxes(tmp_path):
    out = tmp_path / "labeled"
    assert tst_ros(["sim", "labeled-set", "--out", str(out), "--images", "6", "--buildings", "2",
                    "--width", "96", "--height", "72"]) == 0
    coco = json.loads((out / "instances.json").read_text())
    assert {c["id"] for c in coco["categories"]} == set(THING_CLASSES)
    assert {(i["seed"], i["style"]) for i in coco["images"]} == {(1000, "office"), (1001, "loft")}
    assert json.loads((out / "classes.json").read_text()) == CLASSES
    from tst_ros.sim.labeled_set import load
    items, classes = load(out)
    assert classes == CLASSES and len(items) == 6
    total = 0
    for item in items:
        assert item["rgb"].shape == (72, 96, 3) and item["semantic"].shape == (72, 96)
        assert item["depth_mm"].dtype == np.uint16
        for (x0, y0, x1, y1), label, mask in zip(item["boxes"], item["labels"], item["masks"]):
            ys, xs = np.nonzero(mask)
            assert x0 <= xs.min() and xs.max() < x1 and y0 <= ys.min() and ys.max() < y1
            assert (item["semantic"][mask] == label).all()
            total += 1
    assert total == len(coco["annotations"]) > 0
    # the rendered frame behind the first image is reproducible from its seed/style/frame
    first = coco["images"][0]
    f = Simulator(SimConfig(seed=first["seed"], style=first["style"], width=96, height=72)).frame(first["frame"])
    np.testing.assert_array_equal(items[0]["semantic"], f.gt["semantic"])


def test_held_out_set_of_the_test_building_uses_seed_zero(tmp_path):
    from tst_ros.sim.labeled_set import plan
    assert plan(50, ["home"], seed=0) == [(0, "home", 50)]
    assert plan(70, ["office", "loft"], seed=1000) == [(1000, "office", 24), (1001, "loft", 23), (1002, "office", 23)]


def test_preview_writes_a_png_contact_sheet(tmp_path):
    out = tmp_path / "sheet.png"
    assert tst_ros(["sim", "preview", "--out", str(out), "--frames", "1", "--width", "64", "--height", "48"]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
