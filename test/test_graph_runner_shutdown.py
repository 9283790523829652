"""The in-process graph's executor shuts down without leaving failed callback tasks behind."""
from __future__ import annotations

import gc
import threading
import time

import pytest

rclpy = pytest.importorskip("rclpy")

from tst_ros.ros.graph_runner import DrainingExecutor  # noqa: E402


def test_draining_executor_shutdown_leaves_no_unretrieved_callback_errors(capfd):
    fired = 0

    def tick():
        nonlocal fired
        fired += 1

    for _ in range(10):        # the plain MultiThreadedExecutor printed the error in ~half the rounds
        ctx = rclpy.Context()
        rclpy.init(context=ctx)
        executor = DrainingExecutor(num_threads=4, context=ctx)
        nodes = [rclpy.create_node(f"ticker_{i}", context=ctx) for i in range(3)]
        for node in nodes:
            node.create_timer(0.005, tick)
            executor.add_node(node)
        stop = threading.Event()

        def spin():
            while not stop.is_set():
                executor.spin_once(timeout_sec=0.05)

        spinner = threading.Thread(target=spin)
        spinner.start()
        time.sleep(0.1)
        stop.set()
        spinner.join()
        executor.shutdown(timeout_sec=2.0)
        for node in nodes:
            executor.remove_node(node)
            node.destroy_node()
        rclpy.shutdown(context=ctx)
        gc.collect()
    assert fired > 0
    assert "never retrieved" not in capfd.readouterr().err
