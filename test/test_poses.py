"""PoseBuffer (interpolation, range errors, out-of-order inserts) and PoseSubscriber over real rclpy."""
import time

import numpy as np
import pytest
import rclpy
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter

from tst_ros.geometry import pose_matrix
from tst_ros.poses import PoseBuffer, extrinsic_to_matrix, matrix_to_extrinsic

S = 1_000_000_000


def yaw_pose(x, yaw):
    return pose_matrix([x, 2.0 * x, 0.5], [np.cos(yaw / 2), 0, 0, np.sin(yaw / 2)])


def test_lookup_interpolates_translation_and_rotation():
    buf = PoseBuffer()
    buf.add(10 * S, yaw_pose(0.0, 0.0))
    buf.add(11 * S, yaw_pose(1.0, np.pi / 2))
    np.testing.assert_allclose(buf.lookup(10 * S + S // 4), yaw_pose(0.25, np.pi / 8), atol=1e-12)
    np.testing.assert_allclose(buf.lookup(11 * S), yaw_pose(1.0, np.pi / 2), atol=1e-12)
    np.testing.assert_allclose(buf.lookup(10 * S), yaw_pose(0.0, 0.0), atol=1e-12)


def test_out_of_order_inserts_are_sorted_and_duplicates_replace():
    buf = PoseBuffer()
    for t in (3, 1, 4, 0, 2):
        buf.add(t * S, yaw_pose(float(t), 0.1 * t))
    buf.add(2 * S, yaw_pose(20.0, 0.0))
    assert len(buf) == 5 and buf.span_ns == (0, 4 * S)
    np.testing.assert_allclose(buf.lookup(2 * S)[:3, 3], [20.0, 40.0, 0.5])
    np.testing.assert_allclose(buf.lookup(3 * S + S // 2), yaw_pose(3.5, 0.35), atol=1e-12)


def test_lookup_outside_the_buffer_raises_lookup_error():
    buf = PoseBuffer()
    with pytest.raises(LookupError, match="empty"):
        buf.lookup(0)
    buf.add(5 * S, np.eye(4))
    buf.add(6 * S, np.eye(4))
    with pytest.raises(LookupError, match="before the oldest"):
        buf.lookup(5 * S - 1)
    with pytest.raises(LookupError, match=r"after the newest.*spans 5000000000\.\.6000000000"):
        buf.lookup(6 * S + 1)
    assert not buf.can_lookup(7 * S) and buf.can_lookup(5 * S + 1)
    tolerant = PoseBuffer(tolerance_ns=10)
    tolerant.add(0, yaw_pose(1.0, 0.0))
    tolerant.add(100, yaw_pose(2.0, 0.0))
    np.testing.assert_allclose(tolerant.lookup(105), yaw_pose(2.0, 0.0))
    with pytest.raises(LookupError):
        tolerant.lookup(111)


def test_capacity_drops_the_oldest_pose():
    buf = PoseBuffer(capacity=3)
    for t in range(5):
        buf.add(t, np.eye(4))
    assert len(buf) == 3 and buf.span_ns == (2, 4)


def test_camera_pose_composes_the_extrinsic():
    T_base_camera = extrinsic_to_matrix([0.1, 0.0, 0.3, 0.5, -0.5, 0.5, -0.5])
    buf = PoseBuffer(T_base_camera=T_base_camera)
    buf.add(0, yaw_pose(1.0, 0.3))
    buf.add(S, yaw_pose(1.0, 0.3))
    np.testing.assert_allclose(buf.T_odom_camera(S // 2), yaw_pose(1.0, 0.3) @ T_base_camera, atol=1e-12)
    np.testing.assert_allclose(extrinsic_to_matrix(matrix_to_extrinsic(T_base_camera)), T_base_camera, atol=1e-12)
    with pytest.raises(ValueError, match="T_base_camera"):
        PoseBuffer().T_odom_camera(0)
    with pytest.raises(ValueError, match="7 values"):
        extrinsic_to_matrix([0, 0, 0])
    with pytest.raises(ValueError, match="4x4"):
        buf.add(0, np.eye(3))


def test_pose_subscriber_fills_the_buffer_from_odometry():
    from tst_ros.ros import conversions as conv
    from tst_ros.ros.poses import PoseSubscriber

    context = Context()
    rclpy.init(context=context)
    extrinsic = [0.2, 0.0, 0.4, 0.5, -0.5, 0.5, -0.5]
    try:
        listener = Node("pose_listener", context=context,
                        parameter_overrides=[Parameter("camera_extrinsic", value=extrinsic)])
        talker = Node("odom_talker", context=context)
        buf = PoseBuffer()
        sub = PoseSubscriber(listener, buf, odom_topic="odom_pose_test", use_tf=False)
        np.testing.assert_allclose(buf.T_base_camera, extrinsic_to_matrix(extrinsic))
        pub = talker.create_publisher(type(conv.matrix_to_odometry(np.eye(4))), "odom_pose_test", 100)
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(listener)
        executor.add_node(talker)
        deadline = time.monotonic() + 10
        while pub.get_subscription_count() == 0 and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.05)
        for t in (2, 0, 1):
            pub.publish(conv.matrix_to_odometry(yaw_pose(float(t), 0.2 * t), conv.make_header(t * S, "odom")))
        while sub.received < 3 and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.05)
        assert sub.received == 3 and not sub.use_tf
        np.testing.assert_allclose(buf.lookup(S + S // 2), yaw_pose(1.5, 0.3), atol=1e-9)
        np.testing.assert_allclose(buf.T_odom_camera(S), yaw_pose(1.0, 0.2) @ extrinsic_to_matrix(extrinsic),
                                   atol=1e-9)
        sub.destroy()
        executor.shutdown()
        listener.destroy_node()
        talker.destroy_node()
    finally:
        rclpy.shutdown(context=context)
