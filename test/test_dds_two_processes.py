"""Real Fast DDS between two OS processes: every custom message, the locally generated standard
interfaces (vision_msgs, tf2_msgs), a 640x480 rgb8 Image, a 16UC1
depth Image and a 100k-point PointCloud2 go out to a separate echo process and come back
bit-exactly (reliable QoS), with Fast DDS's default transports (UDP + shared memory) and with
the project's profile (large shared-memory segment, UDP)."""
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import rclpy
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node

from geometry_msgs.msg import TransformStamped
from tf2_msgs.msg import TFMessage
from vision_msgs.msg import (Detection2D, Detection2DArray, LabelInfo, ObjectHypothesisWithPose, VisionClass,
                             VisionInfo)

from tst_ros.msg import ModelUpdate, RecorderStatus, TrainingStatus
from tst_ros.ros.clouds import cloud_field, cloud_rgb, cloud_xyz, make_xyz_rgb_cloud
from tst_ros.ros.conversions import make_header
from tst_ros.ros.images import array_to_image, image_to_array, image_to_rgb
from tst_ros.ros.qos import qos_profile

PEER = Path(__file__).with_name("dds_echo_peer.py")
TIMEOUT_S = 20.0
RESEND_S = 0.5


def detection(i, header):
    d = Detection2D(header=header, id=f"det-{i}")
    d.bbox.center.position.x, d.bbox.center.position.y, d.bbox.center.theta = 320.125 + i, 0.1, -0.3
    d.bbox.size_x, d.bbox.size_y = 40.5, 1e-9
    for cls, score in (("chair", 0.875), ("table", 0.1)):
        h = ObjectHypothesisWithPose()
        h.hypothesis.class_id, h.hypothesis.score = cls, score
        h.pose.pose.position.z = 2.5
        h.pose.covariance[35] = 0.01
        d.results.append(h)
    return d


def custom_messages(header):
    names = {0: "wall", 1: "floor", 7: "chair", 65535: "ünïcode ✓"}
    label_info = LabelInfo(header=header, threshold=0.25,
                           class_map=[VisionClass(class_id=i, class_name=n) for i, n in names.items()])
    vision_info = VisionInfo(header=header, method="tst_ros detection", database_location="/tst/detections/label_info",
                             database_version=3)
    tf = TransformStamped(header=header, child_frame_id="base_link")
    tf.transform.translation.x, tf.transform.rotation.z, tf.transform.rotation.w = 1.5, 0.6, 0.8
    update = ModelUpdate(header=header, version=12, path="/tmp/runs/model-12", checksum="ab" * 32,
                         tasks=["segmentation", "detection"], modalities=["rgb", "depth"],
                         metric_names=["miou", "map"], metric_values=[0.345, 0.315])
    status = TrainingStatus(header=header, stage="pretrain", step=120, total_steps=400, loss=0.4375,
                            samples_per_second=31.5, eta_seconds=88.0, message="epoch 2")
    recorder = RecorderStatus(header=header, samples_written=2**40 + 3, rate_hz=9.75, disk_bytes=123456789,
                              drop_reasons=["no_depth", "sync"], drop_counts=[4, 2**63], dataset_path="data/x",
                              recording=True)
    return {
        "detection": detection(0, header),
        "detections": Detection2DArray(header=header, detections=[detection(i, header) for i in range(5)]),
        "label_info": label_info, "vision_info": vision_info, "tf": TFMessage(transforms=[tf, tf]),
        "model": update, "trainer_status": status, "recorder_status": recorder,
    }


def sensor_messages(header):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, size=(480, 640, 3), dtype=np.uint8)
    depth = rng.integers(0, 2**16, size=(480, 640), dtype=np.uint16)
    xyz = rng.normal(size=(100_000, 3)).astype(np.float32)
    xyz[::1000] = np.nan
    colours = rng.integers(0, 256, size=(100_000, 3), dtype=np.uint8)
    cloud = make_xyz_rgb_cloud(xyz, colours, header, extra={"label": np.arange(100_000, dtype=np.uint32)})
    arrays = {"image": rgb, "depth": depth, "cloud": (xyz, colours)}
    return {"image": array_to_image(rgb, "rgb8", header), "depth": array_to_image(depth, "16UC1", header),
            "cloud": cloud}, arrays


def spin_until(executor, condition, what, peer_log):
    deadline = time.monotonic() + TIMEOUT_S
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {TIMEOUT_S} s waiting for {what}; peer output:\n"
                                 + Path(peer_log).read_text())
        executor.spin_once(timeout_sec=0.05)


@pytest.mark.parametrize("transports", ["DEFAULT", "PROFILE"])
def test_messages_cross_two_processes_bit_exactly(transports, monkeypatch):
    if transports == "DEFAULT":
        monkeypatch.setenv("FASTDDS_BUILTIN_TRANSPORTS", transports)
        monkeypatch.delenv("FASTDDS_DEFAULT_PROFILES_FILE", raising=False)  # a profile would take precedence
    header = make_header(1_700_000_000_123_456_789, "camera_color_optical_frame")
    messages = {**custom_messages(header)}
    sensors, arrays = sensor_messages(header)
    messages.update(sensors)
    topics = {key: f"/tst_test_{os.getpid()}_{transports.lower()}/{key}" for key in messages}

    context = Context()
    rclpy.init(context=context)
    node = Node("dds_two_process_test", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    qos = qos_profile("reliable", 1, "transient_local")
    received = {}
    publishers = {}
    for key, msg in messages.items():
        publishers[key] = node.create_publisher(type(msg), topics[key], qos)
        node.create_subscription(type(msg), topics[key] + "/echo", lambda m, k=key: received.setdefault(k, m), qos)
    specs = [[topics[k], type(m).__module__.rsplit(".", 1)[0], type(m).__name__] for k, m in messages.items()]
    log = tempfile.NamedTemporaryFile(prefix="dds_peer_", suffix=".log", delete=False)
    peer = subprocess.Popen([sys.executable, str(PEER), json.dumps(specs)], stdin=subprocess.PIPE,
                            stdout=log, stderr=subprocess.STDOUT, env=os.environ.copy())
    try:
        assert peer.pid != os.getpid()
        spin_until(executor, lambda: all(p.get_subscription_count() for p in publishers.values()),
                   "the peer to subscribe to every topic", log.name)
        # Right after matching, Fast DDS sometimes delivers a first sample only at the next reliable
        # heartbeat (seconds later); publishing again what has not come back keeps the test fast.
        next_send = {key: 0.0 for key in messages}

        def all_echoed():
            for key in set(messages) - set(received):
                if time.monotonic() >= next_send[key]:
                    publishers[key].publish(messages[key])
                    next_send[key] = time.monotonic() + RESEND_S
            return len(received) == len(messages)

        spin_until(executor, all_echoed, "echoes of every message", log.name)
    finally:
        peer.stdin.close()
        try:
            peer.wait(timeout=10)
        except subprocess.TimeoutExpired:
            peer.kill()
        executor.shutdown()
        node.destroy_node()
        rclpy.shutdown(context=context)
        os.unlink(log.name)

    for key in custom_messages(header):
        assert received[key] == messages[key], key
    assert received["detections"].detections[4].results[0].hypothesis.class_id == "chair"
    assert received["label_info"].class_map[-1].class_name == "ünïcode ✓"
    for key in ("image", "depth", "cloud"):
        sent, echo = messages[key], received[key]
        assert bytes(echo.data) == bytes(sent.data), key
        assert echo.header == header
    assert np.array_equal(image_to_rgb(received["image"]), arrays["image"])
    assert np.array_equal(image_to_array(received["depth"]), arrays["depth"])
    cloud = received["cloud"]
    assert (cloud.width, cloud.point_step, cloud.fields) == (100_000, 20, messages["cloud"].fields)
    xyz, colours = arrays["cloud"]
    assert np.array_equal(cloud_xyz(cloud).view(np.uint32), xyz.view(np.uint32))
    assert np.array_equal(cloud_rgb(cloud), colours)
    assert np.array_equal(cloud_field(cloud, "label"), np.arange(100_000))
