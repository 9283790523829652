"""Timers on the machine's steady clock.

With `use_sim_time` a node's own clock follows `/clock`, and so do its `create_timer` timers:
they stop when the simulator pauses or a replay ends. Work that must go on whatever the
simulated time does (the trainer following its child, status heartbeats, QoS re-checks) uses
`steady_timer`; stamps and anything measured in sensor time keep using `node.get_clock()`.
"""
from __future__ import annotations

from rclpy.clock import Clock, ClockType


def steady_timer(node, period_s: float, callback, callback_group=None):
    """`node.create_timer` on the steady clock (not the node's ROS/simulated clock)."""
    return node.create_timer(period_s, callback, callback_group=callback_group,
                             clock=Clock(clock_type=ClockType.STEADY_TIME))
