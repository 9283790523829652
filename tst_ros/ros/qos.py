"""QoS profiles used across the graph, their construction from node parameters, and sensor
subscriptions that follow their publishers' offered QoS.

Sensor subscriptions (`SensorSubscription`, used by every node for camera, depth, IMU, cloud
and odometry topics) match the publishers as rosbag2 does: reliable when every current
publisher offers reliable, best effort otherwise; transient-local when every publisher offers
it. They start reliable and volatile - a reliable publisher, the common case, is then matched from
its first sample with no switch (a switch under load can lose what sat in the old subscription's
queue); a best-effort publisher is matched at the next check, CHECK_PERIOD_S later - and re-check
the graph periodically, recreating the subscription when the publishers' offer changes (a driver
that starts later, a second publisher). A parameter may force either reliability instead.
Model and label-map topics are transient-local so that late joiners get the last value.
"""
from __future__ import annotations

import time
from collections import deque

from rclpy.event_handler import SubscriptionEventCallbacks
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.serialization import serialize_message

from tst_ros.data.bagio import cdr_header_stamp_ns
from tst_ros.ros.timing import steady_timer

_RELIABILITY = {"reliable": ReliabilityPolicy.RELIABLE, "best_effort": ReliabilityPolicy.BEST_EFFORT}
_DURABILITY = {"volatile": DurabilityPolicy.VOLATILE, "transient_local": DurabilityPolicy.TRANSIENT_LOCAL}
SENSOR_RELIABILITY = ("auto", "reliable", "best_effort")
CHECK_PERIOD_S = 0.5       # how often an `auto` subscription compares itself with the publishers
RETIRE_GRACE_S = 1.0       # a replaced subscription lives this long after its successor matched
RETIRE_TIMEOUT_S = 10.0    # and at most this long
DEDUP_AFTER_S = 5.0        # duplicates are looked for this long after the old one is gone
DEDUP_WINDOW = 256         # samples remembered to drop the second copy during an overlap


def qos_sensor(best_effort: bool = True, depth: int = 5) -> QoSProfile:
    """Keep-last sensor stream QoS: best effort (latest frame wins) or reliable (every frame)."""
    return qos_profile("best_effort" if best_effort else "reliable", depth)


def qos_latched(depth: int = 1) -> QoSProfile:
    """Reliable, transient-local: late subscribers receive the last `depth` messages."""
    return qos_profile("reliable", depth, "transient_local")


def qos_profile(reliability: str = "reliable", depth: int = 10, durability: str = "volatile") -> QoSProfile:
    """QoS from the plain strings a node takes as parameters (e.g. `image_qos_reliability`)."""
    if reliability not in _RELIABILITY:
        raise ValueError(f"unknown QoS reliability {reliability!r}; expected one of {sorted(_RELIABILITY)}")
    if durability not in _DURABILITY:
        raise ValueError(f"unknown QoS durability {durability!r}; expected one of {sorted(_DURABILITY)}")
    if int(depth) < 1:
        raise ValueError(f"QoS depth must be >= 1, got {depth}")
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=int(depth),
                      reliability=_RELIABILITY[reliability], durability=_DURABILITY[durability])


def sensor_reliability(value: str, legacy: str = "auto") -> str:
    """The `sensor_qos_reliability` parameter checked: auto | reliable | best_effort ('best-effort'
    accepted); empty means `legacy` (what an older boolean parameter of the node asked for)."""
    value = (str(value).strip().lower().replace("-", "_")) or legacy
    if value not in SENSOR_RELIABILITY:
        raise ValueError(f"unknown sensor_qos_reliability {value!r}; expected one of {list(SENSOR_RELIABILITY)}")
    return value


def offered_qos(publishers) -> tuple[str, str] | None:
    """(reliability, durability) that matches every publisher (`TopicEndpointInfo`s), as rosbag2
    chooses it; None without publishers."""
    if not publishers:
        return None
    profiles = [info.qos_profile for info in publishers]
    reliable = all(q.reliability == ReliabilityPolicy.RELIABLE for q in profiles)
    latched = all(q.durability == DurabilityPolicy.TRANSIENT_LOCAL for q in profiles)
    return ("reliable" if reliable else "best_effort"), ("transient_local" if latched else "volatile")


def sample_key(msg):
    """What identifies a sample that may arrive twice: the header stamp and size of a raw CDR
    message (read in place: sensor messages are megabytes), else the header (stamp, frame_id) -
    re-serializing is not byte-stable (CDR padding) - or, without a header, the serialized
    message."""
    if isinstance(msg, (bytes, bytearray, memoryview)):
        try:
            return cdr_header_stamp_ns(msg), len(msg)
        except ValueError:                      # no std_msgs/Header first
            return hash(bytes(msg))
    header = getattr(msg, "header", None)
    if header is not None:
        return (header.stamp.sec, header.stamp.nanosec, header.frame_id)
    return hash(serialize_message(msg))


class SensorSubscription:
    """A sensor subscription whose reliability and durability follow the topic's publishers
    (`reliability='auto'`) or are fixed ('reliable' | 'best_effort', volatile).

    A change of QoS creates the new subscription first and destroys the old one shortly after the
    new one has matched every publisher, so no sample is lost in between; while both exist (and
    briefly after), a sample that comes through both is delivered once (`sample_key`). Fixed QoS
    hands the callback to rclpy as it is.
    `subscription` is the current rclpy subscription, `qos` its (reliability, durability),
    `changes` counts the QoS changes."""

    def __init__(self, node, msg_type, topic: str, callback, reliability: str = "auto", depth: int = 5,
                 raw: bool = False, check_period_s: float = CHECK_PERIOD_S, removable: bool = False):
        self.node, self.msg_type, self.callback, self.depth, self.raw = node, msg_type, callback, int(depth), raw
        self.removable = removable      # may be destroyed while the node spins (`destroy`)
        self.mode = sensor_reliability(reliability)
        self.qos = ("reliable" if self.mode == "auto" else self.mode), "volatile"
        self.changes = 0
        self._requested_topic = topic
        self._seen: set = set()
        self._seen_order: deque = deque()
        self._dedup_until = 0.0
        self._retiring: list = []
        self._matched_at: float | None = None
        self.subscription = self._create()
        self.topic = self.subscription.topic_name        # resolved: namespace and remappings applied
        self._timer = None
        if self.mode == "auto":
            self._timer = steady_timer(node, check_period_s, self.check)  # also while /clock stops
            self.check()

    def _create(self):
        profile = qos_profile(self.qos[0], self.depth, self.qos[1])
        # No QoS event handlers on a subscription that may be replaced or removed: rclpy's executors
        # add event handlers to the wait set without re-checking them, so destroying one while
        # another thread builds the wait set kills that executor ("cannot use Destroyable").
        quiet = {"event_callbacks": SubscriptionEventCallbacks(use_default_callbacks=False)}
        if self.mode != "auto":
            return self.node.create_subscription(self.msg_type, self._requested_topic, self.callback, profile,
                                                 raw=self.raw, **(quiet if self.removable else {}))
        return self.node.create_subscription(self.msg_type, self._requested_topic, self._deliver, profile,
                                             raw=self.raw, **quiet)

    def _deliver(self, msg) -> None:
        # Keys of the last DEDUP_WINDOW samples are kept at all times: a new transient-local
        # subscription is handed the publisher's history again, samples from before the change.
        key = sample_key(msg)
        if self._dedup_until and time.monotonic() > self._dedup_until:
            self._dedup_until = 0.0
        if self._dedup_until and key in self._seen:
            return
        self._seen.add(key)
        self._seen_order.append(key)
        if len(self._seen_order) > DEDUP_WINDOW:
            self._seen.discard(self._seen_order.popleft())
        self.callback(msg)

    def check(self) -> bool:
        """Match the current publishers' offer (auto only); True when a new subscription was created."""
        if self.subscription is None or self.mode != "auto":
            return False
        publishers = self.node.get_publishers_info_by_topic(self.topic)
        self._retire(len(publishers))
        wanted = offered_qos(publishers)
        if wanted is None or wanted == self.qos:
            return False
        self._retiring.append((time.monotonic(), self.subscription))
        self._matched_at = None
        self._dedup_until = float("inf")
        self.qos = wanted
        self.subscription = self._create()
        self.changes += 1
        self.node.get_logger().info(f"{self.topic}: publishers offer {wanted[0]}/{wanted[1]}, subscription follows")
        return True

    def _retire(self, publishers: int) -> None:
        """Destroy replaced subscriptions RETIRE_GRACE_S after the current one has matched every
        publisher (samples that reached only the old one are taken from it meanwhile)."""
        if not self._retiring:
            return
        now = time.monotonic()
        if self._matched_at is None and self.subscription.get_publisher_count() >= publishers:
            self._matched_at = now
        done = self._matched_at is not None and now - self._matched_at >= RETIRE_GRACE_S
        keep = []
        for since, old in self._retiring:
            if done or now - since > RETIRE_TIMEOUT_S:
                self.node.destroy_subscription(old)
            else:
                keep.append((since, old))
        self._retiring = keep
        if not keep:
            self._dedup_until = now + DEDUP_AFTER_S      # late copies through the new subscription

    def describe(self) -> str:
        return f"{self.qos[0]}/{self.qos[1]}" + (" (auto)" if self.mode == "auto" else "")

    def destroy(self) -> None:
        if self._timer is not None:
            self.node.destroy_timer(self._timer)
            self._timer = None
        for _, old in self._retiring:
            self.node.destroy_subscription(old)
        self._retiring = []
        if self.subscription is not None:
            self.node.destroy_subscription(self.subscription)
            self.subscription = None
