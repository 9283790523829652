"""Second OS process for test_replay_delivery: counts what reaches a reliable subscriber.

Usage: python replay_counter_peer.py BAG COUNTS_JSON
Subscribes (reliable, deep queue, raw bytes) to every topic of BAG and replaces COUNTS_JSON
with {topic: messages received} whenever a count changes. Runs until its stdin closes (the
test's end) or 180 s pass.
"""
import json
import os
import select
import sys
import time

import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node

from tst_ros.data.bagio import bag_topics
from tst_ros.ros.nodes.recorder import message_class
from tst_ros.ros.qos import qos_profile


def write_counts(path: str, counts: dict) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(counts, f)
    os.replace(tmp, path)


def main() -> int:
    bag, out = sys.argv[1], sys.argv[2]
    rclpy.init()
    node = Node("replay_counter_peer")
    counts = {topic: 0 for topic in bag_topics(bag)}

    def count(topic):
        def on_message(_data):
            counts[topic] += 1
        return on_message

    qos = qos_profile("reliable", 1000)
    for topic, msgtype in bag_topics(bag).items():
        node.create_subscription(message_class(msgtype), topic, count(topic), qos, raw=True)
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    written = None
    deadline = time.monotonic() + 180
    try:
        while time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.05)
            if counts != written:
                write_counts(out, counts)
                written = dict(counts)
            if select.select([sys.stdin], [], [], 0)[0] and not sys.stdin.read(1):
                break
    finally:
        node.destroy_node()
        rclpy.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
