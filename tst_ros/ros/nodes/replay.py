"""`replay` node (and `tst-ros replay BAG`): publish a rosbag2 bag's messages with their
recorded timing (rate factor, loop, start offset).

Messages are published as the bag's raw CDR bytes (`Publisher.publish(bytes)` ->
publish_raw), so nothing is decoded or re-encoded. Timing comes from
`tst_ros.data.replay.ReplayTimer`; publishing runs on a worker thread. With
`publish_clock` the recorded receive time is also published on /clock; `restamp_loops`
keeps looped data moving forward in time (header stamps patched in the CDR bytes);
`duration` stops after that many seconds; `wait_for_subscribers` waits (up to that many
seconds) until every topic has a subscriber before starting.
"""
from __future__ import annotations

import json
import sys
import threading
import time

from rclpy.node import Node
from rosgraph_msgs.msg import Clock

from tst_ros.ros.nodes import run_node
from tst_ros.data.bagio import bag_topics
from tst_ros.data.replay import ReplayTimer
from tst_ros.ros import conversions as conv
from tst_ros.ros.nodes.recorder import message_class
from tst_ros.ros.qos import qos_profile


class ReplayNode(Node):
    def __init__(self, parameter_overrides=None, name: str = "replay"):
        super().__init__(name, parameter_overrides=parameter_overrides or [])
        p = {k: self.declare_parameter(k, v).value for k, v in dict(
            bag="", rate=1.0, loop=False, start_offset=0.0, topics=[""], publish_clock=False,
            reliable=True, qos_depth=50, restamp_loops=False, loop_gap=0.0, duration=0.0,
            wait_for_subscribers=0.0).items()}
        if not p["bag"]:
            raise ValueError("parameter 'bag' (path of a rosbag2 directory or .mcap file) is required")
        self.bag = p["bag"]
        wanted = {t for t in p["topics"] if t}
        available = bag_topics(self.bag)
        if not available:
            raise ValueError(f"bag {self.bag} has no readable messages")
        qos = qos_profile("reliable" if p["reliable"] else "best_effort", int(p["qos_depth"]))
        self.publishers_by_topic = {}
        for topic, msgtype in sorted(available.items()):
            if wanted and topic not in wanted:
                continue
            try:
                self.publishers_by_topic[topic] = self.create_publisher(message_class(msgtype), topic, qos)
            except ValueError as e:
                self.get_logger().warning(f"not replaying {topic}: {e}")
        self.clock_pub = self.create_publisher(Clock, "/clock", 10) if p["publish_clock"] else None
        self.published = 0
        self.done = threading.Event()
        self._stop = threading.Event()
        self.timer = ReplayTimer(self.bag, rate=p["rate"], loop=p["loop"], start_offset_s=p["start_offset"],
                                 topics=set(self.publishers_by_topic), stop=self._stop,
                                 restamp_loops=p["restamp_loops"], loop_gap_s=p["loop_gap"])
        self.duration = float(p["duration"])
        self.wait_for_subscribers = float(p["wait_for_subscribers"])
        self.published_by_topic = {t: 0 for t in self.publishers_by_topic}
        self._thread = threading.Thread(target=self._run, name="replay", daemon=True)
        self.get_logger().info(f"replaying {len(self.publishers_by_topic)} topics of {self.bag} at rate "
                               f"{p['rate']}{' (loop)' if p['loop'] else ''} from +{p['start_offset']} s")
        self._thread.start()

    def _run(self) -> None:
        deadline = time.monotonic() + self.wait_for_subscribers
        while time.monotonic() < deadline and not all(
                p.get_subscription_count() for p in self.publishers_by_topic.values()):
            time.sleep(0.05)
        end = time.monotonic() + self.duration if self.duration > 0 else float("inf")
        try:
            for msg, _, _ in self.timer:
                if time.monotonic() >= end:
                    break
                if self.clock_pub is not None:
                    self.clock_pub.publish(Clock(clock=conv.ns_to_stamp(msg.log_time_ns)))
                self.publishers_by_topic[msg.topic].publish(msg.data)
                self.published += 1
                self.published_by_topic[msg.topic] += 1
        except Exception as e:  # noqa: BLE001 - report any failure (e.g. a damaged bag) and stop
            self.get_logger().error(f"replay stopped: {e}")
        finally:
            self.get_logger().info(f"replay finished: {self.published} messages in {self.timer.passes} pass(es); "
                                   f"per topic: {json.dumps(self.published_by_topic)}")
            self.done.set()

    def destroy_node(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        super().destroy_node()


def main(argv: list[str] | None = None) -> int:
    return run_node(ReplayNode, argv, finished=lambda node: node.done.is_set())


if __name__ == "__main__":
    sys.exit(main())
