"""Stamps, headers, CameraInfo, Imu, Odometry, Transform and QoS conversions."""
import numpy as np
import pytest
import transforms3d
from rclpy.qos import DurabilityPolicy, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo

from tst_ros.geometry import Intrinsics, pose_matrix
from tst_ros.ros.clouds import cloud_dtype, cloud_xyz, make_xyz_rgb_cloud
from tst_ros.ros.conversions import (array_to_imu, camera_info_to_intrinsics, imu_to_array, intrinsics_to_camera_info,
                                     make_header, matrix_to_odometry, matrix_to_transform, ns_to_stamp,
                                     odometry_to_matrix, stamp_to_ns, transform_to_matrix)
from tst_ros.ros.qos import qos_latched, qos_profile, qos_sensor


def random_pose(seed):
    rng = np.random.default_rng(seed)
    q = rng.normal(size=4)
    return pose_matrix(rng.normal(size=3) * 5, q / np.linalg.norm(q))


def test_stamps_round_trip_to_the_nanosecond():
    for ns in (0, 1, 999_999_999, 1_000_000_000, 1_700_000_000_123_456_789):
        stamp = ns_to_stamp(ns)
        assert stamp_to_ns(stamp) == ns and 0 <= stamp.nanosec < 1_000_000_000
    header = make_header(3_000_000_007, "odom")
    assert (header.stamp.sec, header.stamp.nanosec, header.frame_id) == (3, 7, "odom")
    with pytest.raises(ValueError, match="negative stamp"):
        ns_to_stamp(-1)


def test_camera_info_round_trips_intrinsics():
    intr = Intrinsics(fx=525.5, fy=524.25, cx=319.5, cy=239.75, width=640, height=480)
    msg = intrinsics_to_camera_info(intr, make_header(9, "camera_color_optical_frame"))
    assert msg.distortion_model == "plumb_bob" and list(msg.d) == [0.0] * 5
    assert msg.p[0] == 525.5 and msg.p[2] == 319.5 and msg.p[3] == 0.0 and msg.p[10] == 1.0
    assert msg.header.frame_id == "camera_color_optical_frame"
    assert camera_info_to_intrinsics(msg) == intr


def test_uncalibrated_camera_info_is_rejected():
    with pytest.raises(ValueError, match="no positive focal length"):
        camera_info_to_intrinsics(CameraInfo(width=640, height=480))


def test_imu_round_trip_and_unknown_orientation():
    vec = np.array([0.1, -9.81, 0.25, 0.01, -0.02, 1.5])
    msg = array_to_imu(vec, make_header(5, "imu_link"))
    assert np.array_equal(imu_to_array(msg), vec)
    assert msg.orientation_covariance[0] == -1.0 and msg.header.frame_id == "imu_link"
    oriented = array_to_imu(vec, orientation_wxyz=[0.0, 1.0, 0.0, 0.0])
    assert oriented.orientation.x == 1.0 and oriented.orientation_covariance[0] == 0.0
    with pytest.raises(ValueError, match="6 values"):
        array_to_imu([1, 2, 3])


def test_odometry_round_trips_a_pose():
    for seed in range(5):
        T = random_pose(seed)
        msg = matrix_to_odometry(T, make_header(11, "odom"), "base_link", twist6=[1, 0, 0, 0, 0, 0.5])
        assert (msg.header.frame_id, msg.child_frame_id) == ("odom", "base_link")
        assert msg.twist.twist.linear.x == 1.0 and msg.twist.twist.angular.z == 0.5
        np.testing.assert_allclose(odometry_to_matrix(msg), T, atol=1e-12)
    msg = matrix_to_odometry(np.eye(4))
    msg.pose.pose.orientation.w = 0.0
    with pytest.raises(ValueError, match="zero length"):
        odometry_to_matrix(msg)
    with pytest.raises(ValueError, match="4x4"):
        matrix_to_odometry(np.eye(3))


def test_transform_round_trip_matches_transforms3d():
    T = random_pose(11)
    tf = matrix_to_transform(T)
    q = [tf.rotation.w, tf.rotation.x, tf.rotation.y, tf.rotation.z]
    np.testing.assert_allclose(transforms3d.quaternions.quat2mat(q), T[:3, :3], atol=1e-12)
    np.testing.assert_allclose(transform_to_matrix(tf), T, atol=1e-12)


def test_qos_profiles():
    sensor = qos_sensor()
    assert sensor.reliability == ReliabilityPolicy.BEST_EFFORT and sensor.depth == 5
    reliable = qos_sensor(best_effort=False, depth=20)
    assert reliable.reliability == ReliabilityPolicy.RELIABLE and reliable.depth == 20
    latched = qos_latched()
    assert latched.durability == DurabilityPolicy.TRANSIENT_LOCAL and latched.reliability == ReliabilityPolicy.RELIABLE
    with pytest.raises(ValueError, match="reliability 'sometimes'"):
        qos_profile("sometimes")
    with pytest.raises(ValueError, match="depth must be >= 1"):
        qos_profile("reliable", 0)


def test_sensor_msgs_py_is_used_for_plain_layouts_when_importable(monkeypatch):
    class PointCloud2Module:
        @staticmethod
        def read_points(msg):
            return np.frombuffer(msg.data, cloud_dtype(msg.fields, msg.point_step))

    monkeypatch.setattr("tst_ros.ros.clouds._pc2", PointCloud2Module)
    xyz = np.arange(12, dtype=np.float32).reshape(4, 3)
    msg = make_xyz_rgb_cloud(xyz)
    assert np.array_equal(cloud_xyz(msg), xyz)
    msg.fields[0].name = "q"
    with pytest.raises(ValueError, match="no x field"):
        cloud_xyz(msg)
