"""The loop's configuration as a standard ROS 2 parameters file (ROS-free: plain dicts).

A `ros__parameters` YAML names nodes (`segmentation:`, `/robot_a/segmentation:`, `/**:`):

    ttt_kd:
      ros__parameters:
        steps: 3                 # a field of the node's config section -> ttt_kd.steps
        points_topic: lidar/points   # a node-only parameter -> passed to that node as is
    /**:
      ros__parameters:
        pretrain: {steps: 300}   # a section by name, for the stages no node declares
        sensor_qos_reliability: reliable   # a plain parameter under /** -> every node

`from_ros_parameters` turns it into the nested dict `tst_ros.config.load` merges, with the
node-only values in `specialize.node_parameters` ({node: {name: value}}, `*` for every node),
which the graph description applies on top of the parameters it derives. A value given for
only one of two nodes that share a section (segmentation and detection share `perception`) or
with different values stays a per-node parameter. `to_ros_parameters` writes the defaults in
this form (`tst-ros config dump --format ros`); the nodes read the same file directly with
`--ros-args --params-file`.
"""
from __future__ import annotations

import dataclasses

# which config section each node declares its parameters from
NODE_SECTIONS = {"sim": "sim", "recorder": "record", "segmentation": "perception", "detection": "perception",
                 "ttt_kd": "ttt_kd"}
WILDCARDS = ("/**", "**")


def is_ros_parameters(data) -> bool:
    return isinstance(data, dict) and bool(data) and all(
        isinstance(v, dict) and "ros__parameters" in v for v in data.values())


def _node_name(key: str) -> str:
    return key if key in WILDCARDS else key.rstrip("/").rsplit("/", 1)[-1]


def from_ros_parameters(data: dict, section_fields: dict[str, set[str]]) -> dict:
    """`ros__parameters` YAML (as loaded) -> config dict; `section_fields`: section -> its field names."""
    config: dict = {}
    node_parameters: dict[str, dict] = {}
    by_section: dict[str, dict[str, dict]] = {}          # section -> node -> {field: value}
    for key, entry in data.items():
        node, params = _node_name(key), entry["ros__parameters"] or {}
        if not isinstance(params, dict):
            raise ValueError(f"{key}: ros__parameters must be a mapping")
        for name, value in params.items():
            if node in WILDCARDS and name in section_fields and isinstance(value, dict):
                config.setdefault(name, {}).update(value)
            elif node in NODE_SECTIONS and name in section_fields[NODE_SECTIONS[node]]:
                by_section.setdefault(NODE_SECTIONS[node], {}).setdefault(node, {})[name] = value
            else:
                node_parameters.setdefault("*" if node in WILDCARDS else node, {})[name] = value
    for section, per_node in by_section.items():
        sharing = [n for n, s in NODE_SECTIONS.items() if s == section]
        for name in {k for values in per_node.values() for k in values}:
            given = {node: values[name] for node, values in per_node.items() if name in values}
            if set(given) == set(sharing) and len({repr(v) for v in given.values()}) == 1:
                config.setdefault(section, {})[name] = next(iter(given.values()))
            else:                    # one node of several, or different values: a node parameter
                for node, value in given.items():
                    node_parameters.setdefault(node, {})[name] = value
    if node_parameters:
        config.setdefault("specialize", {})["node_parameters"] = node_parameters
    return config


def to_ros_parameters(cfg) -> dict:
    """Config -> `ros__parameters` dict: each node's section under its name, every other section
    under `/**` (ROS parameters cannot be empty lists: those are left out)."""
    def values(section) -> dict:
        return {k: v for k, v in dataclasses.asdict(section).items() if not (isinstance(v, (list, dict)) and not v)}

    out = {node: {"ros__parameters": values(getattr(cfg, section))} for node, section in NODE_SECTIONS.items()}
    node_sections = set(NODE_SECTIONS.values())
    out["/**"] = {"ros__parameters": {f.name: values(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)
                                      if f.name not in node_sections}}
    return out
