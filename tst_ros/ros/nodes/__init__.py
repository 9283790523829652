"""ROS 2 nodes: each converts messages, schedules work and calls the ROS-free core."""
from __future__ import annotations

import signal
import sys
import threading


def run_node(node_cls, argv: list[str] | None = None, finished=None, low_latency: bool = False,
             exit_code=None) -> int:
    """`main()` of every node: rclpy.init, spin until SIGINT/SIGTERM (or `finished(node)`),
    destroy the node (nodes stop their workers and children there) and shut down. Returns
    `exit_code(node)` (after the node was destroyed), else 0.

    `--managed` in `argv` (before --ros-args) starts the node's managed (lifecycle) variant,
    `tst_ros.ros.lifecycle.managed_variant`; it waits unconfigured for `<node>/change_state`.

    `low_latency` spins rclpy's EventsExecutor (C++ event queue) instead of the Python
    SingleThreadedExecutor: measured ~0.9 ms less from a published image to the start of
    its processing plus the output's publish (`tst-ros bench perception`)."""
    import rclpy
    from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor

    from tst_ros.ros.lifecycle import managed_variant, split_managed_flag

    managed, argv = split_managed_flag(list(argv if argv is not None else sys.argv))
    cls = managed_variant(node_cls) if managed else node_cls     # ValueError: no managed variant
    rclpy.init(args=argv)
    node = cls()
    if low_latency:
        from rclpy.experimental import EventsExecutor
        executor = EventsExecutor()
    else:
        executor = SingleThreadedExecutor()
    executor.add_node(node)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        while not stop.is_set() and rclpy.ok() and not (finished and finished(node)):
            executor.spin_once(timeout_sec=0.1)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if hasattr(node, "stats"):
            node.get_logger().info(f"shutting down: {node.stats()}")
        executor.remove_node(node)
        node.destroy_node()
        executor.shutdown()
        rclpy.try_shutdown()
    return int(exit_code(node)) if exit_code else 0
