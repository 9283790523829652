"""Helpers shared by the tests that wait on nodes running in other threads or processes."""
import signal
import subprocess
import threading
import time
from contextlib import contextmanager


def wait_for(condition, timeout: float, what: str) -> None:
    """Poll `condition` every 50 ms; AssertionError naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def stop_processes(procs, sig=signal.SIGINT, timeout: float = 30.0) -> None:
    """Signal every process, then wait for each (killed when it outlives `timeout`)."""
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(sig)
    for proc in procs:
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()


@contextmanager
def spinning(num_threads: int = 3):
    """rclpy initialised and a MultiThreadedExecutor spinning in a thread; nodes added to it are
    destroyed and rclpy shut down on exit."""
    import rclpy
    from rclpy.executors import MultiThreadedExecutor

    rclpy.init()
    executor = MultiThreadedExecutor(num_threads=num_threads)
    thread = threading.Thread(target=executor.spin, daemon=True)
    thread.start()
    try:
        yield executor
    finally:
        executor.shutdown()
        for node in executor.get_nodes():
            node.destroy_node()
        rclpy.try_shutdown()
        thread.join(5)


class Spinning:
    """A node in its own context (its own DDS participant), spun by a background executor."""

    def __init__(self, make_node):
        import rclpy
        from rclpy.executors import SingleThreadedExecutor

        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = make_node(self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()

    def close(self) -> None:
        import rclpy

        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)
