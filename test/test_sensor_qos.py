"""Sensor subscriptions follow their publishers' offered QoS (as rosbag2 does), over real Fast DDS:
best effort until a publisher is known, reliable and transient-local when every publisher offers
it, best effort again when a best-effort publisher joins; a stream that continues through a QoS
change arrives without a gap or a duplicate; parameters can force either reliability."""
import threading
import time

import pytest
import rclpy
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from std_msgs.msg import String

from tst_ros.ros.qos import SensorSubscription, offered_qos, qos_profile, sensor_reliability

from polling import wait_for


@pytest.fixture
def graph():
    context = Context()
    rclpy.init(context=context)
    node, peer = Node("qos_subscriber", context=context), Node("qos_publisher", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    executor.add_node(peer)
    thread = threading.Thread(target=executor.spin, daemon=True)
    thread.start()
    yield node, peer
    executor.shutdown()
    node.destroy_node()
    peer.destroy_node()
    rclpy.try_shutdown(context=context)


def test_the_parameter_values():
    assert sensor_reliability("") == "auto" and sensor_reliability("", "best_effort") == "best_effort"
    assert sensor_reliability("Best-Effort") == "best_effort" and sensor_reliability("reliable") == "reliable"
    with pytest.raises(ValueError):
        sensor_reliability("sometimes")
    assert offered_qos([]) is None


def test_auto_follows_the_publishers_offer(graph):
    node, peer = graph
    topic = f"/qos_follow_{id(node)}"
    received = []
    sub = SensorSubscription(node, String, topic, lambda m: received.append(m.data), "auto", depth=5)
    assert sub.qos == ("reliable", "volatile")
    latched = peer.create_publisher(String, topic, qos_profile("reliable", 1, "transient_local"))
    latched.publish(String(data="before"))
    wait_for(lambda: sub.qos == ("reliable", "transient_local"), 15, "a reliable transient-local subscription")
    wait_for(lambda: "before" in received, 15, "the latched sample through the transient-local subscription")
    wait_for(lambda: sub.describe() == "reliable/transient_local (auto)", 1, "describe()")
    peer.create_publisher(String, topic, qos_profile("best_effort", 5))
    wait_for(lambda: sub.qos == ("best_effort", "volatile"), 15, "best effort once a best-effort publisher joins")
    assert sub.changes == 2
    sub.destroy()


def test_a_stream_continues_through_the_qos_change_without_gap_or_duplicate(graph):
    node, peer = graph
    topic = f"/qos_stream_{id(node)}"
    received = []
    sub = SensorSubscription(node, String, topic, lambda m: received.append(int(m.data)), "auto", depth=50)
    pub = peer.create_publisher(String, topic, qos_profile("reliable", 50, "transient_local"))
    wait_for(lambda: pub.get_subscription_count() >= 1, 15, "the subscription to match")
    sent = 0
    deadline = time.monotonic() + 20
    while (sub.changes == 0 or sub._retiring or sent < 150) and time.monotonic() < deadline:
        pub.publish(String(data=str(sent)))
        sent += 1
        time.sleep(0.01)
    wait_for(lambda: received and received[-1] == sent - 1, 15, "the last sample")
    assert sub.qos == ("reliable", "transient_local") and sub.changes == 1 and not sub._retiring
    first = received[0]
    assert received == list(range(first, sent)), (first, sent, len(received))
    sub.destroy()


def test_forced_reliability_stays(graph):
    node, peer = graph
    topic = f"/qos_forced_{id(node)}"
    sub = SensorSubscription(node, String, topic, lambda m: None, "best_effort")
    pub = peer.create_publisher(String, topic, qos_profile("reliable", 5))
    wait_for(lambda: pub.get_subscription_count() >= 1, 15, "the subscription to match")
    assert sub.check() is False and sub.qos == ("best_effort", "volatile") and sub.changes == 0
    sub.destroy()


def test_qos_changes_do_not_stop_a_multithreaded_executor():
    """The in-process graph spins every node on one MultiThreadedExecutor (its spin loop,
    `spin_until_stopped`): replacing a subscription while other threads build the wait set
    must not stop it."""
    from rclpy.executors import MultiThreadedExecutor

    from tst_ros.ros.graph_runner import spin_until_stopped

    context = Context()
    rclpy.init(context=context)
    node, peer = Node("qos_mt_subscriber", context=context), Node("qos_mt_publisher", context=context)
    executor = MultiThreadedExecutor(num_threads=4, context=context)
    executor.add_node(node)
    executor.add_node(peer)
    failures = []
    stopping = threading.Event()

    def spin():
        try:
            spin_until_stopped(executor, stopping)
        except Exception as e:  # noqa: BLE001 - recorded for the assertion
            failures.append(repr(e))

    thread = threading.Thread(target=spin, daemon=True)
    thread.start()
    try:
        topic = f"/qos_mt_{id(node)}"
        subs = [SensorSubscription(node, String, topic, lambda m: None, "auto", depth=5, check_period_s=0.01)
                for _ in range(24)]
        timer = peer.create_timer(0.005, lambda: None)      # keeps the wait set busy
        for round_ in range(10):
            reliable = peer.create_publisher(String, topic, qos_profile("reliable", 5))
            wait_for(lambda: all(s.qos[0] == "reliable" for s in subs) or failures, 20, "the switch to reliable")
            best_effort = peer.create_publisher(String, topic, qos_profile("best_effort", 5))
            wait_for(lambda: all(s.qos[0] == "best_effort" for s in subs) or failures, 20, "the switch back")
            peer.destroy_publisher(reliable)
            peer.destroy_publisher(best_effort)
        assert not failures and thread.is_alive(), failures
        peer.destroy_timer(timer)
    finally:
        stopping.set()
        thread.join(timeout=30)
        executor.shutdown()
        node.destroy_node()
        peer.destroy_node()
        rclpy.try_shutdown(context=context)


def test_a_raw_sample_is_identified_by_its_header_stamp_and_size():
    from rclpy.serialization import serialize_message
    from sensor_msgs.msg import Image

    from tst_ros.ros.qos import sample_key

    a = Image(height=2, width=2, encoding="mono8", step=2, data=bytes(4))
    a.header.stamp.sec, a.header.stamp.nanosec = 5, 7
    b = Image(height=2, width=2, encoding="mono8", step=2, data=bytes(4))
    b.header.stamp.sec = 6
    raw_a, raw_b = serialize_message(a), serialize_message(b)
    assert sample_key(raw_a) == sample_key(bytes(raw_a)) == (5_000_000_007, len(raw_a))
    assert sample_key(raw_b) != sample_key(raw_a)
