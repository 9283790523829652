"""Test peer process: the real `sim` node, held back until every sensor topic has a subscriber
(so that a recorder started first sees frame 0), then publishing `frames` frames and exiting.

usage: recorder_sim_peer.py FRAMES [ros parameter overrides as name:=value ...]
"""
import sys
import time

import rclpy
from rclpy.parameter import Parameter

from peer_exit import shut_down_and_exit

from tst_ros.ros.nodes.sim import SimNode


def main() -> None:
    frames = int(sys.argv[1])
    overrides = [Parameter("frames", value=frames), Parameter("realtime", value=False)]
    for text in sys.argv[2:]:
        name, value = text.split(":=", 1)
        overrides.append(Parameter(name, value=type_of(value)(value)))
    rclpy.init()
    node = SimNode(parameter_overrides=overrides)
    node.timer.cancel()
    deadline = time.monotonic() + 20
    topics = ["rgb", "depth", "camera_info", "imu", "odom"] + (["cloud"] if node.sim_cfg.cloud_rate_hz > 0 else [])
    while time.monotonic() < deadline and not all(node.pubs[t].get_subscription_count() for t in topics):
        rclpy.spin_once(node, timeout_sec=0.05)
    time.sleep(0.5)  # let the subscriber finish matching every writer
    node.timer.reset()
    while rclpy.ok() and not node.done:
        rclpy.spin_once(node, timeout_sec=0.1)
    print(f"published {node.published}", flush=True)
    end = time.monotonic() + 1.0  # keep writers alive while reliable delivery completes
    while time.monotonic() < end:
        rclpy.spin_once(node, timeout_sec=0.1)
    sys.stdout.flush()
    shut_down_and_exit(node, 0)


def type_of(value: str):
    for t in (int, float):
        try:
            t(value)
            return t
        except ValueError:
            pass
    return str


if __name__ == "__main__":
    main()
