"""`/diagnostics` for every node: one `diagnostic_msgs/DiagnosticStatus` per node, once a second.

A node creates `NodeDiagnostics(node, status, rates)`; this module owns the publisher, the
timer and the rates. `status()` returns (level, message, values): level is OK, WARN or ERROR
(the strings or DiagnosticStatus levels), values a flat dict written as key/values. `rates`
maps a key (e.g. `input_rate_hz`) to a function returning a monotonically increasing counter;
its rate is the counter's increase over the last `window_s` seconds (monotonic clock). The
status is named after the node's fully qualified name, `hardware_id` "tst_ros".

Where `diagnostic_msgs` is not importable the node runs without diagnostics and says so once.
What each node reports is in `tst_ros.ros.node_diagnostics`.
"""
from __future__ import annotations

import time
from collections import deque
from typing import Callable

from rclpy.clock import Clock, ClockType

try:
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
except ImportError:  # the node still runs; NodeDiagnostics logs that diagnostics are off
    DiagnosticArray = DiagnosticStatus = KeyValue = None

TOPIC = "/diagnostics"      # absolute, as diagnostic aggregators expect
HARDWARE_ID = "tst_ros"
OK, WARN, ERROR = "OK", "WARN", "ERROR"
LEVELS = {OK: 0, WARN: 1, ERROR: 2}
_warned_unavailable = False


def available() -> bool:
    return DiagnosticArray is not None


def level_number(level) -> int:
    """OK/WARN/ERROR as a string, an int or a DiagnosticStatus level (bytes) -> 0/1/2."""
    if isinstance(level, str):
        return LEVELS[level]
    return level[0] if isinstance(level, bytes) else int(level)


def format_value(value) -> str:
    if isinstance(value, float):
        return f"{value:.3f}".rstrip("0").rstrip(".") if value == value else "nan"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


class RateWindow:
    """Rates (per second) of monotonically increasing counters over a sliding time window."""

    def __init__(self, window_s: float = 5.0, clock=time.monotonic):
        self.window_s, self.clock = float(window_s), clock
        self.history: deque = deque()

    def update(self, counters: dict[str, float]) -> dict[str, float]:
        now = self.clock()
        self.history.append((now, dict(counters)))
        while len(self.history) > 2 and now - self.history[1][0] >= self.window_s:
            self.history.popleft()
        t0, first = self.history[0]
        dt = now - t0
        return {k: (max(0.0, v - first.get(k, v)) / dt if dt > 0 else 0.0) for k, v in counters.items()}


class NodeDiagnostics:
    """The node's DiagnosticStatus on /diagnostics every `period_s` (see the module docstring)."""

    def __init__(self, node, status: Callable[[], tuple], rates: dict[str, Callable[[], float]] | None = None,
                 period_s: float = 1.0, window_s: float = 5.0, hardware_id: str = HARDWARE_ID):
        self.node, self.status, self.rates = node, status, dict(rates or {})
        self.hardware_id = hardware_id
        self.window = RateWindow(window_s)
        self.publisher = self.timer = None
        self.last: dict = {}
        if not available():
            global _warned_unavailable
            if not _warned_unavailable:
                _warned_unavailable = True
                node.get_logger().warning("diagnostic_msgs is not importable: /diagnostics is off")
            return
        self.publisher = node.create_publisher(DiagnosticArray, TOPIC, 10)
        # steady clock: the heartbeat goes on when a simulated /clock (use_sim_time) stops
        self.timer = node.create_timer(period_s, self.publish, clock=Clock(clock_type=ClockType.STEADY_TIME))

    def collect(self) -> tuple[int, str, dict]:
        """(level, message, values) now, rates included; a failing status is reported as ERROR."""
        try:
            rates = self.window.update({k: float(f()) for k, f in self.rates.items()})
            level, message, values = self.status()
        except Exception as e:  # noqa: BLE001 - diagnostics must never take the node down
            return LEVELS[ERROR], f"diagnostics failed: {type(e).__name__}: {e}", {}
        return level_number(level), str(message), {**rates, **values}

    def publish(self) -> None:
        level, message, values = self.collect()
        self.last = {"level": level, "message": message, "values": values}
        status = DiagnosticStatus(level=bytes([level]), name=self.node.get_fully_qualified_name(),
                                  message=message, hardware_id=self.hardware_id,
                                  values=[KeyValue(key=str(k), value=format_value(v)) for k, v in values.items()])
        msg = DiagnosticArray(status=[status])
        msg.header.stamp = self.node.get_clock().now().to_msg()
        self.publisher.publish(msg)
