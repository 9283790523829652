"""Polling helper shared by the tests that wait on nodes running in other threads or processes."""
import time


def wait_for(condition, timeout: float, what: str) -> None:
    """Poll `condition` every 50 ms; AssertionError naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")
