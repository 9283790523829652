"""Second OS process for test_dds_*: echoes every message it receives on TOPIC back on TOPIC/echo.

Usage: python dds_echo_peer.py '[["/topic", "package.msg", "Type"], ...]'
Runs until its stdin closes (the test's end) or 120 s pass. Reliable, transient-local QoS.
"""
import json
import select
import sys
import time

import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node

from tst_ros.ros.qos import qos_profile


def main() -> int:
    specs = json.loads(sys.argv[1])
    rclpy.init()
    node = Node("dds_echo_peer")
    qos = qos_profile("reliable", 1, "transient_local")
    subscriptions, echoes = [], []
    for topic, module, name in specs:
        msg_type = getattr(__import__(module, fromlist=[name]), name)
        echoes.append(node.create_publisher(msg_type, topic + "/echo", qos))
        subscriptions.append(node.create_subscription(msg_type, topic, echoes[-1].publish, qos))
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.05)
            if select.select([sys.stdin], [], [], 0)[0] and not sys.stdin.read(1):
                break
    finally:
        node.destroy_node()
        rclpy.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
