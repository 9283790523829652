"""TF over real DDS between processes: a driver-like peer publishes base_link -> camera_link ->
camera_color_optical_frame and base_link -> lidar on /tf_static and a moving odom -> base_link on
/tf; a node's PoseSubscriber composes the chain and interpolates it at message stamps."""
import threading

import numpy as np
import rclpy
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node

from tst_ros.config import SimConfig
from tst_ros.geometry import interpolate_pose
from tst_ros.poses import PoseBuffer
from tst_ros.ros.poses import PoseSubscriber
from tst_ros.sim import Simulator

import tf_chain_peer
from polling import stop_processes, wait_for


def test_a_three_edge_chain_with_a_moving_base_resolves_at_message_stamps():
    sim = Simulator(SimConfig(seed=0, style="home"))
    stamp = sim.frame(5).stamp_ns
    peer = tf_chain_peer.spawn(0, 5)
    context = Context()
    rclpy.init(context=context)
    executor = SingleThreadedExecutor(context=context)
    try:
        node = Node("tf_dds_listener", context=context)
        subscriber = PoseSubscriber(node, PoseBuffer(capacity=100))
        executor.add_node(node)
        threading.Thread(target=executor.spin, daemon=True).start()
        poses, tree = subscriber.poses, subscriber.tree
        wait_for(lambda: {"lidar", "camera_link"} <= tree.frames() and poses.can_lookup(stamp), 60,
                 "the peer's static and moving transforms")

        # at a published stamp: the exact chain; between two: interpolated along the base's path
        expected = sim.T_odom_base(stamp) @ sim.T_base_camera
        np.testing.assert_allclose(poses.T_odom_camera(stamp), expected, atol=1e-6)
        half = stamp + int(0.05e9)
        before, after = stamp, stamp + int(0.1e9)
        between = interpolate_pose(half, before, sim.T_odom_base(before), after, sim.T_odom_base(after))
        np.testing.assert_allclose(poses.T_odom_camera(half), between @ sim.T_base_camera, atol=1e-6)
        assert not np.allclose(poses.T_odom_camera(half), expected, atol=1e-4), "the base moves"
        # a cloud frame elsewhere on the robot
        T_camera_lidar = np.linalg.inv(sim.T_base_camera) @ tf_chain_peer.LIDAR_EXTRINSIC
        np.testing.assert_allclose(tree.lookup("camera_color_optical_frame", "lidar", stamp), T_camera_lidar,
                                   atol=1e-6)
        assert not poses.can_lookup(stamp + int(5e9)), "no extrapolation beyond the published span"
    finally:
        executor.shutdown()
        rclpy.try_shutdown(context=context)
        stop_processes([peer])
