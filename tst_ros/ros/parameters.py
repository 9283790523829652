"""Node parameters declared from the config dataclasses: one source of defaults and of their
descriptions (the comment beside each field in tst_ros/config.py), so `ros2 param describe`,
the YAML config and `tst-ros config dump` all agree.

Parameters are read-only once the node runs unless they are listed as dynamic; a dynamic one
takes effect through the node's on-set callback (`watch`).
"""
from __future__ import annotations

import dataclasses
import functools
import inspect
import re
from typing import Any, Callable

from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult

_FIELD_LINE = re.compile(r"^\s+(\w+)\s*:[^#]*#\s*(.+?)\s*$")


@functools.lru_cache(maxsize=None)
def field_descriptions(section_cls: type) -> dict[str, str]:
    """{field: the comment written beside it in the dataclass source}."""
    try:
        source = inspect.getsource(section_cls)
    except (OSError, TypeError):
        return {}
    return {m.group(1): m.group(2) for m in map(_FIELD_LINE.match, source.splitlines()) if m}


def declare_section(node, section: Any, section_name: str, dynamic: tuple[str, ...] = ()) -> dict[str, Any]:
    """Declare every field of the dataclass instance `section` as a parameter of `node` (its value
    the default, overridable as usual) and return the values the node got."""
    notes = field_descriptions(type(section))
    values = {}
    for f in dataclasses.fields(section):
        default = getattr(section, f.name)
        if isinstance(default, list) and not default:
            continue                                  # ROS cannot type an empty list
        text = f"{notes.get(f.name, f.name)} (config {section_name}.{f.name})"
        descriptor = ParameterDescriptor(description=text, read_only=f.name not in dynamic)
        values[f.name] = node.declare_parameter(f.name, default, descriptor).value
    return values


def declare_string_list(node, section_cls: type, section_name: str, name: str) -> list[str]:
    """A list[str] field of a config section whose default is empty, which `declare_section`
    leaves out (ROS cannot type an empty list): declared as a string array without a value,
    read-only; unset -> []."""
    from rclpy.parameter import Parameter

    text = f"{field_descriptions(section_cls).get(name, name)} (config {section_name}.{name})"
    value = node.declare_parameter(name, Parameter.Type.STRING_ARRAY,
                                   ParameterDescriptor(description=text, read_only=True)).value
    return list(value or [])


def watch(node, handlers: dict[str, Callable[[Any], None]]) -> None:
    """Apply a set of dynamic parameters at runtime: each handler gets the new value; a value a
    handler rejects (ValueError) fails the whole set with its message."""
    def on_set(params) -> SetParametersResult:
        for param in params:
            handler = handlers.get(param.name)
            if handler is None:
                continue
            try:
                handler(param.value)
            except (TypeError, ValueError) as e:
                return SetParametersResult(successful=False, reason=f"{param.name}: {e}")
        return SetParametersResult(successful=True)

    node.add_on_set_parameters_callback(on_set)
