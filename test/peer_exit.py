"""Exit of the test peer processes: DDS teardown gets a bounded time, then the process ends
without interpreter-exit hooks. Teardown of a participant with large samples in flight was
seen to stall for minutes on a loaded machine, after the peer had done its work."""
import os
import threading

TEARDOWN_S = 10.0


def shut_down_and_exit(node, code: int) -> None:
    import rclpy

    teardown = threading.Thread(target=lambda: (node.destroy_node(), rclpy.try_shutdown()), daemon=True)
    teardown.start()
    teardown.join(TEARDOWN_S)
    os._exit(code)         # stdout was flushed by the caller; a stalled teardown must not hold the exit
