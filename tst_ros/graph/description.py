"""The one description of the specialise graph.

`launch/specialize.launch.py` turns it into launch_ros `Node` actions on a ROS 2
workstation; `tst-ros specialize` instantiates the same nodes in one process where
`ros2 launch` is unavailable. Both read the same `config/specialize.yaml` and the same
arguments (namespace, use_sim_time, log level, which nodes run), so the node set,
parameters, namespace and remappings cannot drift apart.
"""
from __future__ import annotations

import dataclasses
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path

from tst_ros.config import Config
from tst_ros.ros_params import NODE_SECTIONS


@dataclass
class NodeSpec:
    name: str                       # node name, also the `ros2 run tst_ros <executable>` name
    executable: str
    node_class: str                 # "module:Class" used for in-process runs
    parameters: dict = field(default_factory=dict)
    remappings: list[tuple[str, str]] = field(default_factory=list)
    namespace: str = ""             # "" or "/robot_a"; the nodes' topic names are relative to it
    log_level: str = "info"


# per-node switches (launch arguments enable_X, `tst-ros specialize --enable-X/--no-enable-X`)
SWITCHABLE = ("sim", "recorder", "trainer", "segmentation", "detection", "ttt_kd")
LOG_LEVELS = ("debug", "info", "warn", "error", "fatal")
CLOCK_SOURCES = ("sim", "replay")   # publish /clock themselves, so they run on the machine's clock


def normalize_namespace(namespace: str) -> str:
    """"robot_a", "/robot_a/" -> "/robot_a"; "" or "/" -> "" (the root namespace)."""
    namespace = namespace.strip().strip("/")
    return f"/{namespace}" if namespace else ""


NAMESPACED_TF = (("/tf", "tf"), ("/tf_static", "tf_static"))


def apply_graph_options(specs: list[NodeSpec], *, namespace: str = "", use_sim_time: bool = False,
                        log_level: str = "info") -> list[NodeSpec]:
    """Namespace, log level and use_sim_time for every node; in a namespace /tf and /tf_static
    are remapped into it (two robots publish the same frame names). With use_sim_time the nodes take
    time from /clock, which the clock source publishes: the simulator (then not real-time) or
    replay (publish_clock); the clock source itself runs on the machine's clock."""
    if log_level.lower() not in LOG_LEVELS:
        raise ValueError(f"log_level must be one of {', '.join(LOG_LEVELS)}, got {log_level!r}")
    for spec in specs:
        spec.namespace = normalize_namespace(namespace)
        spec.log_level = log_level.lower()
        if spec.namespace:      # as multi-robot stacks do: each robot's TF stays in its namespace
            spec.remappings += [(src, dst) for src, dst in NAMESPACED_TF if (src, dst) not in spec.remappings]
        if not use_sim_time:
            continue
        if spec.name == "sim":
            spec.parameters["realtime"] = False
        elif spec.name == "replay":
            spec.parameters["publish_clock"] = True
        else:
            spec.parameters["use_sim_time"] = True
    return specs


def _ros_parameters(section) -> dict:
    """Config section -> ROS parameter dict (ROS parameters cannot be empty lists)."""
    out = {}
    for key, value in dataclasses.asdict(section).items():
        if isinstance(value, list) and not value:
            continue
        out[key] = value
    return out


def parse_remappings(entries: list[str]) -> dict[str, list[tuple[str, str]]]:
    """["node:/from:=/to", ...] -> {node: [(from, to)]}."""
    out: dict[str, list[tuple[str, str]]] = {}
    for entry in entries:
        node, sep, rule = entry.partition(":")
        src, arrow, dst = rule.partition(":=")
        if not sep or not arrow or not node or not src or not dst:
            raise ValueError(f"remapping {entry!r} must look like node:/from:=/to")
        out.setdefault(node, []).append((src, dst))
    return out


def pipeline_command(config_path: str | Path, run_dir: str | Path, dataset: str | Path) -> list[str]:
    """The trainer's child command: the whole offline pipeline with progress lines on stdout."""
    return [sys.executable, "-m", "tst_ros.cli", "pipeline", "--config", str(config_path), "--run", str(run_dir),
            "--data", str(dataset), "--progress-jsonl"]


def describe(cfg: Config, *, use_sim: bool = True, config_path: str | Path = "", run_dir: str | Path | None = None,
             remappings: dict[str, list[tuple[str, str]]] | None = None, enabled: dict[str, bool] | None = None,
             namespace: str = "", use_sim_time: bool = False, log_level: str = "info") -> list[NodeSpec]:
    """Nodes of the specialise loop, in start order, with their parameters. `enabled` switches
    nodes off by name (missing: on); without `use_sim` there is no simulator either."""
    run_dir = Path(run_dir or cfg.specialize.output)
    dataset = Path(cfg.record.dataset)
    if not dataset.is_absolute():
        dataset = run_dir / dataset.name
    remappings = remappings if remappings is not None else parse_remappings(cfg.specialize.remappings)
    def section(node: str) -> dict:         # the config section the node declares its parameters from
        return _ros_parameters(getattr(cfg, NODE_SECTIONS[node]))

    record = {**section("recorder"), "dataset": str(dataset), "max_samples": cfg.specialize.record_frames}
    trainer = {
        "min_samples": cfg.specialize.record_frames,
        "run_dir": str(run_dir / "pretrain"),
        "command": shlex.join(pipeline_command(config_path, run_dir, dataset)),
        "dataset": str(dataset),
        "stop_timeout_s": 6.0,  # SIGINT must stop the whole graph within 10 s
    }
    ttt = {**section("ttt_kd"), "checkpoint": str(run_dir / "tttkd")}
    specs = [
        NodeSpec("sim", "sim", "tst_ros.ros.nodes.sim:SimNode", section("sim")),
        NodeSpec("recorder", "recorder", "tst_ros.ros.nodes.recorder:RecorderNode", record),
        NodeSpec("trainer", "trainer", "tst_ros.ros.nodes.trainer:TrainerNode", trainer),
        NodeSpec("segmentation", "segmentation", "tst_ros.ros.nodes.segmentation:SegmentationNode",
                 section("segmentation")),
        NodeSpec("detection", "detection", "tst_ros.ros.nodes.detection:DetectionNode", section("detection")),
        NodeSpec("ttt_kd", "ttt_kd", "tst_ros.ros.nodes.ttt_kd:TTTKDNode", ttt),
    ]
    if use_sim:  # without TF, nodes that need camera poses take the simulated rig's extrinsic
        rig = sim_camera_extrinsic()
        for spec in specs:
            if spec.name in ("recorder", "ttt_kd"):
                spec.parameters["camera_extrinsic"] = rig
    else:
        specs = specs[1:]
    unknown = set(enabled or {}) - set(SWITCHABLE)
    if unknown:
        raise ValueError(f"unknown node(s) {sorted(unknown)}; switchable: {', '.join(SWITCHABLE)}")
    specs = [spec for spec in specs if (enabled or {}).get(spec.name, True)]
    given = cfg.specialize.node_parameters
    for spec in specs:
        spec.remappings = list(remappings.get(spec.name, []))
        spec.parameters.update({**given.get("*", {}), **given.get(spec.name, {})})
    return apply_graph_options(specs, namespace=namespace, use_sim_time=use_sim_time, log_level=log_level)


def sim_camera_extrinsic() -> list[float]:
    """base_link -> colour optical frame of the simulated rig, as the `camera_extrinsic` parameter."""
    from tst_ros.poses import matrix_to_extrinsic
    from tst_ros.sim.rig import default_T_base_camera

    return matrix_to_extrinsic(default_T_base_camera())


def replay_spec(bag: str, rate: float = 1.0, loop: bool = False, *, namespace: str = "", use_sim_time: bool = False,
                log_level: str = "info") -> NodeSpec:
    """The `replay` node that stands in for the simulator in launch/replay.launch.py. Its topics
    move under the namespace like every other node's (the bag's absolute names made relative);
    with use_sim_time it publishes /clock."""
    if not bag:
        raise ValueError("replay needs a bag: bag:=PATH")
    spec = NodeSpec("replay", "replay", "tst_ros.ros.nodes.replay:ReplayNode",
                    {"bag": str(bag), "rate": float(rate), "loop": bool(loop)})
    return apply_graph_options([spec], namespace=namespace, use_sim_time=use_sim_time, log_level=log_level)[0]


LAUNCH_ARGUMENTS = {
    "use_sim": ("true", "start the simulated building (false: real sensors or a bag)"),
    "namespace": ("", "namespace of every node and topic (e.g. robot_a), /tf and /tf_static included; "
                      "/clock, /diagnostics stay global"),
    "use_sim_time": ("false", "nodes take time from /clock (the simulator then publishes it, not in real time)"),
    "log_level": ("info", "log level of every node: debug | info | warn | error | fatal"),
    **{f"enable_{name}": ("true", f"start the {name} node" + (" (with use_sim)" if name == "sim" else ""))
       for name in SWITCHABLE},
    "config": ("", "YAML config (default: the package's config/specialize.yaml)"),
    "data_dir": ("", "run directory for the dataset, checkpoints, models and report (default: specialize.output)"),
    "preset": ("", "encoder preset: tiny-imagenet, tiny-imagenet-rgbd-maps, tiny, s, b, ... (default: the config's)"),
    "device": ("", "training device: auto | cpu | cuda (default: from the config)"),
}


def default_config_path() -> Path:
    """config/specialize.yaml from the installed share directory, else from the source tree."""
    try:
        from ament_index_python.packages import get_package_share_directory
        path = Path(get_package_share_directory("tst_ros")) / "config" / "specialize.yaml"
        if path.exists():
            return path
    except (ImportError, LookupError, ValueError, OSError):
        pass
    return Path(__file__).resolve().parents[2] / "config" / "specialize.yaml"


def argument_overrides(data_dir: str = "", preset: str = "", device: str = "") -> list[str]:
    """Launch/command-line arguments -> config overrides (shared by both entry points)."""
    out = []
    if data_dir:
        out.append(f"specialize.output={data_dir}")
    if preset:
        out.append(f"pretrain.preset={preset}")
    if device:
        out.append(f"pretrain.device={device}")
    return out


def resolve(*, use_sim: bool = True, config: str = "", data_dir: str = "", preset: str = "", device: str = "",
            overrides: list[str] | None = None, enabled: dict[str, bool] | None = None, namespace: str = "",
            use_sim_time: bool = False, log_level: str = "info") -> tuple[Config, Path, list[NodeSpec]]:
    """Load the config, save it resolved into the run directory, describe the graph."""
    from tst_ros.config import load, save_resolved

    config_path = Path(config) if config else default_config_path()
    cfg = load(config_path, argument_overrides(data_dir, preset, device) + list(overrides or []))
    check_choices(cfg)
    run_dir = Path(cfg.specialize.output).resolve()
    resolved = save_resolved(cfg, run_dir)
    return cfg, run_dir, describe(cfg, use_sim=use_sim, config_path=resolved, run_dir=run_dir, enabled=enabled,
                                  namespace=namespace, use_sim_time=use_sim_time, log_level=log_level)


def check_choices(cfg: Config) -> None:
    """Fail on an unknown encoder preset before anything runs, not after the recording (torch-free:
    the launch process stays light)."""
    from tst_ros.encoder_presets import preset

    preset(cfg.pretrain.preset)


def is_true(value: str) -> bool:
    """A launch argument's truth value ("true", "1", "yes", "on"; anything else is false)."""
    return str(value).strip().lower() in ("1", "true", "yes", "on")


def resolve_arguments(get) -> dict:
    """Launch argument values (`get(name) -> str`) -> keyword arguments of `resolve`: the launch
    files and `tst-ros specialize` (which maps its options onto the same names) share this."""
    return dict(use_sim=is_true(get("use_sim")), config=get("config"), data_dir=get("data_dir"),
                preset=get("preset"), device=get("device"), namespace=get("namespace"),
                use_sim_time=is_true(get("use_sim_time")), log_level=get("log_level") or "info",
                enabled={name: is_true(get(f"enable_{name}")) for name in SWITCHABLE})
