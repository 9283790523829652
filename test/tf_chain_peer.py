"""Second OS process for test_tf_dds: publishes a robot's TF as a driver stack would.

Usage: python tf_chain_peer.py SEED FRAME
/tf_static (latched): base_link -> camera_link -> camera_color_optical_frame (the simulated
rig's camera extrinsic split in two) and base_link -> lidar (`LIDAR_EXTRINSIC`); /tf:
odom -> base_link of simulator SEED (home) at FRAME's stamp +-0.4 s in 0.1-s steps, the base
moving along its trajectory. Republishes /tf every 0.2 s until its stdin closes or 120 s pass.
"""
import select
import sys
import time

import numpy as np
import rclpy
from rclpy.node import Node
from tf2_msgs.msg import TFMessage

from tst_ros.config import SimConfig
from tst_ros.geometry import pose_matrix
from tst_ros.ros.conversions import make_header, matrix_to_transform
from tst_ros.ros.qos import qos_latched, qos_profile
from tst_ros.sim import Simulator

LIDAR_EXTRINSIC = pose_matrix([0.1, 0.05, 1.4], [np.cos(np.pi / 12), 0.0, 0.0, np.sin(np.pi / 12)])
CAMERA_LINK = pose_matrix([0.05, 0.0, 1.1], [1.0, 0.0, 0.0, 0.0])    # base_link -> camera_link
OFFSETS_S = np.round(np.arange(-0.4, 0.41, 0.1), 3)


def transform(parent: str, child: str, T: np.ndarray, stamp_ns: int):
    from geometry_msgs.msg import TransformStamped

    msg = TransformStamped()
    msg.header = make_header(stamp_ns, parent)
    msg.child_frame_id = child
    msg.transform = matrix_to_transform(T)
    return msg


def main() -> int:
    seed, frame_index = int(sys.argv[1]), int(sys.argv[2])
    sim = Simulator(SimConfig(seed=seed, style="home"))
    stamp = sim.frame(frame_index).stamp_ns
    rclpy.init()
    node = Node("tf_chain_peer")
    static = node.create_publisher(TFMessage, "/tf_static", qos_latched(1))
    dynamic = node.create_publisher(TFMessage, "/tf", qos_profile("reliable", 100))
    static.publish(TFMessage(transforms=[
        transform("base_link", "camera_link", CAMERA_LINK, stamp),
        transform("camera_link", "camera_color_optical_frame", np.linalg.inv(CAMERA_LINK) @ sim.T_base_camera, stamp),
        transform("base_link", "lidar", LIDAR_EXTRINSIC, stamp)]))
    moving = [transform("odom", "base_link", sim.T_odom_base(stamp + int(dt * 1e9)), stamp + int(dt * 1e9))
              for dt in OFFSETS_S]
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            dynamic.publish(TFMessage(transforms=moving))
            rclpy.spin_once(node, timeout_sec=0.2)
            if select.select([sys.stdin], [], [], 0)[0] and not sys.stdin.read(1):
                break
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


def spawn(seed: int, frame: int):
    """Start this peer as its own process (stdin open: closing it stops the peer)."""
    import subprocess

    return subprocess.Popen([sys.executable, __file__, str(seed), str(frame)], stdin=subprocess.PIPE)


if __name__ == "__main__":
    sys.exit(main())
