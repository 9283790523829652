"""QoS profiles used across the graph, and their construction from node parameters.

Perception subscribers take sensor-data QoS (best effort, only the latest frame matters),
the recorder subscribes reliably, model and label-map topics are transient-local so that
late joiners get the last value.
"""
from __future__ import annotations

from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

_RELIABILITY = {"reliable": ReliabilityPolicy.RELIABLE, "best_effort": ReliabilityPolicy.BEST_EFFORT}
_DURABILITY = {"volatile": DurabilityPolicy.VOLATILE, "transient_local": DurabilityPolicy.TRANSIENT_LOCAL}


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
