"""The sim node in its own OS process on real Fast DDS: every sensor topic arrives in this
process with consistent stamps and frame ids, the cloud is the back-projection of the depth
image with the same stamp, and the as-fast-as-possible mode drives /clock."""
import os
import subprocess
import sys
import time
from collections import defaultdict

import numpy as np
import rclpy
from nav_msgs.msg import Odometry
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import CameraInfo, Image, Imu, PointCloud2

from tst_ros.geometry import backproject
from tst_ros.ros.clouds import cloud_xyz
from tst_ros.ros.conversions import camera_info_to_intrinsics, stamp_to_ns
from tst_ros.ros.images import depth_to_metres
from tst_ros.ros.qos import qos_profile

TOPICS = {"/camera/color/image_raw": Image, "/camera/color/camera_info": CameraInfo,
          "/camera/depth/image_raw": Image, "/imu/data": Imu, "/points": PointCloud2, "/odom": Odometry}
TIMEOUT_S = 40.0


def start_sim(tmp_path, **params):
    args = [sys.executable, "-m", "tst_ros.ros.nodes.sim", "--ros-args"]
    for k, v in {"width": 64, "height": 48, "camera_rate_hz": 10.0, "imu_rate_hz": 200.0, "cloud_rate_hz": 5.0,
                 **params}.items():
        args += ["-p", f"{k}:={str(v).lower() if isinstance(v, bool) else v}"]
    log = open(tmp_path / "sim.log", "w")
    return subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=os.environ.copy()), tmp_path / "sim.log"


def collect(topics, done, log_path):
    ctx = Context()
    rclpy.init(context=ctx)
    node = Node("sim_listener", context=ctx)
    got = defaultdict(list)
    subs = [node.create_subscription(t, name, lambda m, n=name: got[n].append(m), qos_profile("reliable", 500))
            for name, t in topics.items()]
    ex = SingleThreadedExecutor(context=ctx)
    ex.add_node(node)
    deadline = time.monotonic() + TIMEOUT_S
    try:
        while not done(got):
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out; received {({k: len(v) for k, v in got.items()})}; sim log:\n"
                                     + log_path.read_text())
            ex.spin_once(timeout_sec=0.05)
    finally:
        del subs
        ex.shutdown()
        node.destroy_node()
        rclpy.shutdown(context=ctx)
    return got


def stop(proc):
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


def test_sim_node_publishes_every_sensor_topic_with_consistent_stamps_and_frames(tmp_path):
    proc, log = start_sim(tmp_path, realtime=True)
    try:
        got = collect(TOPICS, lambda g: len(g["/points"]) >= 3 and len(g["/camera/color/image_raw"]) >= 6, log)
    finally:
        stop(proc)
    stamp = lambda m: stamp_to_ns(m.header.stamp)  # noqa: E731
    images = {stamp(m): m for m in got["/camera/color/image_raw"]}
    depths = {stamp(m): m for m in got["/camera/depth/image_raw"]}
    infos = {stamp(m): m for m in got["/camera/color/camera_info"]}
    odoms = {stamp(m): m for m in got["/odom"]}
    for m in got["/camera/color/image_raw"]:
        assert (m.encoding == "rgb8" and m.header.frame_id == "camera_color_optical_frame"
                and (m.width, m.height) == (64, 48))
    for m in got["/camera/depth/image_raw"]:
        assert m.encoding == "16UC1" and m.header.frame_id == "camera_color_optical_frame"
    for m in got["/odom"]:
        assert m.header.frame_id == "odom" and m.child_frame_id == "base_link"
    common = sorted(set(images) & set(depths) & set(infos) & set(odoms))
    assert len(common) >= 4, "image, depth, camera_info and odom share stamps"
    assert set(np.diff(common).tolist()) <= {100_000_000, 200_000_000, 300_000_000}
    imu_stamps = np.array([stamp(m) for m in got["/imu/data"]])
    assert all(m.header.frame_id == "imu_link" for m in got["/imu/data"])
    assert (np.diff(imu_stamps) == 5_000_000).all(), "IMU at 200 Hz, in order, none missing"
    az = np.array([m.linear_acceleration.z for m in got["/imu/data"]])
    assert abs(az.mean() - 9.81) < 0.2
    # wall-clock stamps in realtime mode
    assert abs(common[-1] / 1e9 - time.time()) < 30
    intr = camera_info_to_intrinsics(infos[common[0]])
    checked = 0
    for cloud in got["/points"]:
        s = stamp(cloud)
        assert cloud.header.frame_id == "camera_color_optical_frame"
        assert s in images, "every cloud shares its stamp with an image"
        if s in depths:
            xyz = cloud_xyz(cloud)
            d = depth_to_metres(depths[s])
            pts = backproject(d, intr)[::2, ::2].reshape(-1, 3)
            pts = pts[np.isfinite(pts[:, 2])]
            np.testing.assert_allclose(xyz, pts, atol=1e-5)
            checked += 1
    assert checked >= 2


def test_sim_node_as_fast_as_possible_publishes_clock_matching_stamps(tmp_path):
    proc, log = start_sim(tmp_path, realtime=False, frames=100000, cloud_rate_hz=0.0)
    try:
        got = collect({"/clock": Clock, "/camera/color/image_raw": Image},
                      lambda g: len(g["/camera/color/image_raw"]) >= 20, log)
    finally:
        stop(proc)
    clock = {stamp_to_ns(m.clock) for m in got["/clock"]}
    stamps = [stamp_to_ns(m.header.stamp) for m in got["/camera/color/image_raw"]]
    # each topic is matched on its own: images may arrive before the /clock subscription matched
    assert clock, "no /clock received"
    after_clock = [s for s in stamps if s >= min(clock)]
    assert len(after_clock) >= 10 and set(after_clock) <= clock
    assert all(d % 100_000_000 == 0 and d > 0 for d in np.diff(stamps)), "sim time advances in camera periods"
