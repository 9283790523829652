"""`replay` node (and `tst-ros replay BAG`): publish a rosbag2 bag's messages with their
recorded timing (rate factor, loop, start offset).

Messages are published as the bag's raw CDR bytes (`Publisher.publish(bytes)` ->
publish_raw), so nothing is decoded or re-encoded. Timing comes from
`tst_ros.data.replay.ReplayTimer`; publishing runs on a worker thread. With
`publish_clock` the recorded receive time is also published on /clock; `restamp_loops`
keeps looped data moving forward in time (header stamps patched in the CDR bytes);
`duration` stops after that many seconds; `wait_for_subscribers` waits (up to that many
seconds) until every topic has a subscriber, then `DISCOVERY_SETTLE_S` more for the
subscribers to discover the publishers in turn, before starting.

A bag records resolved (absolute) names. They are published relative to the node's namespace
(`/camera/color/image_raw` -> `camera/color/image_raw`, so `/robot_a/camera/color/image_raw`
under `robot_a`; unchanged in the root namespace), except the ROS-wide topics in
`GLOBAL_TOPICS` (`/tf`, `/tf_static`, `/clock`, ...); `absolute_topics: true` keeps every name
as recorded.

Before the node reports itself done (end of the bag, `duration` reached, a damaged bag or a
stop), it waits up to `ack_timeout` seconds until every reliable subscriber has acknowledged
everything published, so that a replay process that exits right after its last message
still delivers it; publishers left unacknowledged are logged. A bag that turns out damaged
mid-stream is reported as an error after what was read before the damage has been published,
and `main()` (`tst-ros replay`) then exits with status 1. At `rate` <= 0 (as fast as possible)
publishing is paced by the same acknowledgements, every `qos_depth` messages per topic, so the
publisher's history never overwrites a message a reliable subscriber has not received.
"""
from __future__ import annotations

import json
import sys
import threading
import time

from rclpy.duration import Duration
from rclpy.node import Node
from rosgraph_msgs.msg import Clock

from tst_ros.ros.nodes import run_node
from tst_ros.data.bagio import BagReadError, bag_topics
from tst_ros.data.replay import ReplayTimer
from tst_ros.ros import conversions as conv
from tst_ros.ros.nodes.recorder import message_class
from tst_ros.ros.node_diagnostics import replay_diagnostics
from tst_ros.ros.qos import qos_profile

GLOBAL_TOPICS = frozenset({"/tf", "/tf_static", "/clock", "/diagnostics", "/rosout", "/parameter_events"})
DISCOVERY_SETTLE_S = 0.5       # after every topic has a subscriber (see ReplayNode._run)


def graph_name(bag_topic: str, absolute: bool) -> str:
    """The name a bag topic is published under (relative to the namespace unless `absolute`)."""
    if absolute or bag_topic in GLOBAL_TOPICS:
        return bag_topic
    return bag_topic.lstrip("/")


class ReplayNode(Node):
    def __init__(self, parameter_overrides=None, name: str = "replay"):
        super().__init__(name, parameter_overrides=parameter_overrides or [])
        p = {k: self.declare_parameter(k, v).value for k, v in dict(
            bag="", rate=1.0, loop=False, start_offset=0.0, topics=[""], publish_clock=False,
            reliable=True, qos_depth=50, restamp_loops=False, loop_gap=0.0, duration=0.0,
            wait_for_subscribers=0.0, ack_timeout=10.0, absolute_topics=False).items()}
        if not p["bag"]:
            raise ValueError("parameter 'bag' (path of a rosbag2 directory or .mcap file) is required")
        if p["ack_timeout"] < 0:
            raise ValueError(f"parameter 'ack_timeout' must be >= 0 s, got {p['ack_timeout']}")
        self.bag = p["bag"]
        self.absolute_topics = bool(p["absolute_topics"])
        self.publishers_by_topic = self._create_publishers(
            {t for t in p["topics"] if t}, qos_profile("reliable" if p["reliable"] else "best_effort",
                                                       int(p["qos_depth"])))
        self.clock_pub = self.create_publisher(Clock, "/clock", 10) if p["publish_clock"] else None
        self.published = 0
        self.error: str | None = None          # why the replay stopped early (a damaged bag), if it did
        self.unacknowledged: list[str] = []    # topics not fully acknowledged within ack_timeout
        self.done = threading.Event()
        self._stop = threading.Event()
        self.timer = ReplayTimer(self.bag, rate=p["rate"], loop=p["loop"], start_offset_s=p["start_offset"],
                                 topics=set(self.publishers_by_topic), stop=self._stop,
                                 restamp_loops=p["restamp_loops"], loop_gap_s=p["loop_gap"])
        self.duration = float(p["duration"])
        self.wait_for_subscribers = float(p["wait_for_subscribers"])
        self.ack_timeout = float(p["ack_timeout"])
        self.qos_depth = max(1, int(p["qos_depth"]))
        self._unpaced: set[str] = set()
        self.published_by_topic = {t: 0 for t in self.publishers_by_topic}
        self._thread = threading.Thread(target=self._run, name="replay", daemon=True)
        self.diagnostics = replay_diagnostics(self)
        self.get_logger().info(f"replaying {len(self.publishers_by_topic)} topics of {self.bag} at rate "
                               f"{p['rate']}{' (loop)' if p['loop'] else ''} from +{p['start_offset']} s")
        self._thread.start()

    def _create_publishers(self, wanted: set[str], qos) -> dict:
        available = bag_topics(self.bag)
        if not available:
            raise ValueError(f"bag {self.bag} has no readable messages")
        publishers = {}
        for topic, msgtype in sorted(available.items()):
            if wanted and topic.lstrip("/") not in {w.lstrip("/") for w in wanted}:
                continue
            try:
                publishers[topic] = self.create_publisher(message_class(msgtype),
                                                          graph_name(topic, self.absolute_topics), qos)
            except ValueError as e:
                self.get_logger().warning(f"not replaying {topic}: {e}")
        return publishers

    def _run(self) -> None:
        deadline = time.monotonic() + self.wait_for_subscribers
        def subscribed() -> bool:
            return all(p.get_subscription_count() for p in self.publishers_by_topic.values())

        while time.monotonic() < deadline and not self._stop.is_set() and not subscribed():
            time.sleep(0.05)
        if self.wait_for_subscribers > 0 and subscribed():
            # The publisher sees a subscriber once it has discovered the reader; the reader may
            # discover the publisher a little later and, being volatile, drops what came before.
            self._stop.wait(DISCOVERY_SETTLE_S)
        try:
            self._publish()
        except BagReadError as e:
            self.error = f"{e}; published the {self.published} messages read before the damage"
        except Exception as e:  # noqa: BLE001 - report any failure and stop
            self.error = f"{type(e).__name__}: {e} (after {self.published} messages)"
        finally:
            if self.error:
                self.get_logger().error(f"replay stopped: {self.error}")
            self.unacknowledged = self._wait_for_acknowledgements()
            self.get_logger().info(f"replay finished: {self.published} messages in {self.timer.passes} pass(es); "
                                   f"per topic: {json.dumps(self.published_by_topic)}")
            self.done.set()

    def _publish(self) -> None:
        end = time.monotonic() + self.duration if self.duration > 0 else float("inf")
        for msg, _, _ in self.timer:
            if time.monotonic() >= end:
                break
            if self.clock_pub is not None:
                self.clock_pub.publish(Clock(clock=conv.ns_to_stamp(msg.log_time_ns)))
            if self.timer.rate <= 0:
                self._pace_by_acknowledgements(msg.topic)
            self.publishers_by_topic[msg.topic].publish(msg.data)
            self.published += 1
            self.published_by_topic[msg.topic] += 1

    def _pace_by_acknowledgements(self, topic: str) -> None:
        """As fast as possible means as fast as the reliable subscribers take it: every qos_depth
        messages, wait until the previous ones are acknowledged, so that the publisher's history
        (KEEP_LAST qos_depth) never drops a message a subscriber has not received yet. A topic
        whose subscribers do not acknowledge within ack_timeout is no longer paced."""
        sent = self.published_by_topic[topic]
        if not sent or sent % self.qos_depth or topic in self._unpaced:
            return
        if not self.publishers_by_topic[topic].wait_for_all_acked(Duration(nanoseconds=int(self.ack_timeout * 1e9))):
            self._unpaced.add(topic)
            self.get_logger().warning(f"{topic}: subscribers did not acknowledge within {self.ack_timeout:g} s "
                                      f"(ack_timeout); publishing on without waiting for them")

    def _wait_for_acknowledgements(self) -> list[str]:
        """Wait (ack_timeout seconds in all) until every reliable subscriber has acknowledged every
        message; returns the topics still unacknowledged (best-effort publishers count as done)."""
        publishers = dict(self.publishers_by_topic)
        if self.clock_pub is not None:
            publishers["/clock"] = self.clock_pub
        start = time.monotonic()
        deadline = start + self.ack_timeout
        unacked = []
        for topic, pub in publishers.items():
            left = max(0.0, deadline - time.monotonic())
            if not pub.wait_for_all_acked(Duration(nanoseconds=int(left * 1e9))):
                unacked.append(topic)
        if unacked:
            self.get_logger().warning(
                f"{len(unacked)} of {len(publishers)} publishers not fully acknowledged by their reliable "
                f"subscribers after {self.ack_timeout:g} s (ack_timeout): {', '.join(unacked)}")
        else:
            self.get_logger().info(f"every subscriber acknowledged every message "
                                   f"({time.monotonic() - start:.2f} s)")
        return unacked

    def destroy_node(self) -> None:
        self._stop.set()
        self._thread.join(timeout=self.ack_timeout + 10)
        super().destroy_node()


def main(argv: list[str] | None = None) -> int:
    """Exit status 1 when the bag turned out damaged (what was read before it was published)."""
    return run_node(ReplayNode, argv, finished=lambda node: node.done.is_set(),
                    exit_code=lambda node: 1 if node.error else 0)


if __name__ == "__main__":
    sys.exit(main())
