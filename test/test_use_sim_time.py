"""use_sim_time: a node started with it takes time from /clock.

A recorder node (in this process, as `tst-ros specialize --use-sim-time` runs it) gets
`use_sim_time: true`; a peer publishes /clock far from wall time. The recorder's status is
stamped on that simulated time, and its heartbeat keeps coming after /clock stops (it runs on
the steady clock, so a paused simulator cannot stall the graph).
"""
from __future__ import annotations

import threading
import time

import pytest

rclpy = pytest.importorskip("rclpy")

from polling import wait_for  # noqa: E402

SIM_START_S = 4242


def test_a_node_with_use_sim_time_stamps_on_clock_time(tmp_path):
    from rclpy.executors import MultiThreadedExecutor
    from rclpy.parameter import Parameter
    from rosgraph_msgs.msg import Clock

    from tst_ros.msg import RecorderStatus
    from tst_ros.ros.conversions import ns_to_stamp, stamp_to_ns
    from tst_ros.ros.nodes.recorder import RecorderNode

    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    params = [Parameter("use_sim_time", value=True), Parameter("dataset", value=str(tmp_path / "store")),
              Parameter("status_period_s", value=0.2)]
    recorder = RecorderNode(parameter_overrides=params, context=ctx)
    peer = rclpy.create_node("clock_peer", context=ctx)
    clock_pub = peer.create_publisher(Clock, "/clock", 10)
    stamps: list[int] = []
    lock = threading.Lock()

    def on_status(msg):
        with lock:
            stamps.append(stamp_to_ns(msg.header.stamp))
    peer.create_subscription(RecorderStatus, "tst/recorder/status", on_status, 10)
    executor = MultiThreadedExecutor(num_threads=2, context=ctx)
    executor.add_node(recorder)
    executor.add_node(peer)
    spin = threading.Thread(target=executor.spin, daemon=True)
    spin.start()
    sim_ns = SIM_START_S * 1_000_000_000
    try:
        def on_sim_time() -> bool:
            nonlocal sim_ns
            sim_ns += 50_000_000
            clock_pub.publish(Clock(clock=ns_to_stamp(sim_ns)))
            with lock:
                return any(SIM_START_S * 1e9 <= s <= sim_ns for s in stamps)
        wait_for(on_sim_time, 60, "a recorder status stamped on /clock time")
        assert recorder.get_clock().now().nanoseconds <= sim_ns           # the node clock is the simulated one
        with lock:
            n = len(stamps)
        wait_for(lambda: len(stamps) >= n + 3, 30, "status heartbeats while /clock stands still")
        with lock:
            assert all(s <= sim_ns for s in stamps[n:]), "a status stamped past the last /clock"
            assert all(s < 1e15 for s in stamps if s), "a status stamped on wall time"
    finally:
        executor.shutdown()
        recorder.destroy_node()
        peer.destroy_node()
        rclpy.shutdown(context=ctx)
