"""The launch file and `tst-ros specialize` describe the same graph.

launch/launch_ros are not installable on this machine (no ROS distribution), so the launch
file is executed against small recording stand-ins for the launch classes it uses; what
it would hand to launch_ros is compared with what the in-process runner instantiates.
"""
import importlib.util
import subprocess
import sys
import types
from pathlib import Path

import pytest

from tst_ros.graph.description import LAUNCH_ARGUMENTS, parse_remappings, resolve
from tst_ros.ros import ADDED_ENVIRONMENT
from tst_ros.ros.graph_runner import remap_arguments

ROOT = Path(__file__).resolve().parents[1]


class _Recorder:
    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs


def _launch_stand_ins(values: dict) -> dict:
    class LaunchConfiguration:
        def __init__(self, name):
            self.name = name

        def perform(self, context):
            return context[self.name]

    class LaunchDescription(_Recorder):
        pass

    launch = types.ModuleType("launch")
    launch.LaunchDescription = LaunchDescription
    actions = types.ModuleType("launch.actions")
    actions.DeclareLaunchArgument = type("DeclareLaunchArgument", (_Recorder,), {})
    actions.OpaqueFunction = type("OpaqueFunction", (_Recorder,), {})
    actions.SetEnvironmentVariable = type("SetEnvironmentVariable", (_Recorder,), {})
    subs = types.ModuleType("launch.substitutions")
    subs.LaunchConfiguration = LaunchConfiguration
    launch_ros = types.ModuleType("launch_ros")
    ros_actions = types.ModuleType("launch_ros.actions")
    ros_actions.Node = type("Node", (_Recorder,), {})
    return {"launch": launch, "launch.actions": actions, "launch.substitutions": subs, "launch_ros": launch_ros,
            "launch_ros.actions": ros_actions}


def _launch_nodes(path: Path, values: dict, monkeypatch) -> list[dict]:
    for name, module in _launch_stand_ins(values).items():
        monkeypatch.setitem(sys.modules, name, module)
    spec = importlib.util.spec_from_file_location("launch_under_test", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    description = module.generate_launch_description()
    entities = description.args[0]
    declared = {e.args[0]: e.kwargs["default_value"] for e in entities if type(e).__name__ == "DeclareLaunchArgument"}
    context = {**declared, **values}
    (opaque,) = [e for e in entities if type(e).__name__ == "OpaqueFunction"]
    environment = dict(e.args for e in entities if type(e).__name__ == "SetEnvironmentVariable")
    assert environment == ADDED_ENVIRONMENT     # the transports tst_ros.ros selects (none if the user chose)
    return [n.kwargs for n in opaque.kwargs["function"](context)], declared


@pytest.mark.parametrize("use_sim", ["true", "false"])
def test_launch_file_and_specialize_describe_the_same_nodes(tmp_path, monkeypatch, use_sim):
    config = tmp_path / "c.yaml"
    config.write_text("specialize:\n  remappings: ['segmentation:/camera/color/image_raw:=/cam/rgb']\n"
                      "pretrain:\n  steps: 7\n")
    values = {"use_sim": use_sim, "config": str(config), "data_dir": str(tmp_path / "run"), "preset": "s",
              "device": "cpu"}
    launched, declared = _launch_nodes(ROOT / "launch" / "specialize.launch.py", values, monkeypatch)
    assert set(declared) == set(LAUNCH_ARGUMENTS)

    _, _, specs = resolve(use_sim=use_sim == "true", config=str(config), data_dir=str(tmp_path / "run"),
                          preset="s", device="cpu")
    assert [n["name"] for n in launched] == [s.name for s in specs]
    assert ("sim" in [s.name for s in specs]) == (use_sim == "true")
    for node, spec in zip(launched, specs):
        assert node["package"] == "tst_ros"
        assert node["executable"] == spec.executable
        assert node["parameters"] == [spec.parameters]
        assert node["remappings"] == spec.remappings
    seg = next(s for s in specs if s.name == "segmentation")
    assert seg.remappings == [("/camera/color/image_raw", "/cam/rgb")]
    # the in-process runner passes the same remappings, scoped to the node
    assert remap_arguments(specs) == ["--ros-args", "-r", "segmentation:/camera/color/image_raw:=/cam/rgb"]
    trainer = next(s for s in specs if s.name == "trainer")
    assert "pipeline" in trainer.parameters["command"]


GRAPH_ARGUMENTS = {"namespace": "robot_a", "use_sim_time": "true", "log_level": "debug",
                   "enable_detection": "false", "enable_trainer": "false"}


def test_graph_arguments_reach_launch_and_specialize_alike(tmp_path, monkeypatch):
    """namespace, use_sim_time, log_level and enable_X: the launch file and `tst-ros specialize`
    (its options, parsed by the real CLI parser) build the same nodes."""
    from tst_ros.cli import build_parser
    from tst_ros.graph.cli import graph_values
    from tst_ros.graph.description import resolve_arguments
    from tst_ros.ros.graph_runner import ros_arguments

    values = {"use_sim": "true", "config": "", "data_dir": str(tmp_path / "run"), "preset": "", "device": "",
              **GRAPH_ARGUMENTS}
    launched, declared = _launch_nodes(ROOT / "launch" / "specialize.launch.py", values, monkeypatch)
    assert {"namespace", "use_sim_time", "log_level", "enable_sim", "enable_recorder", "enable_trainer",
            "enable_segmentation", "enable_detection", "enable_ttt_kd"} <= set(declared)
    args = build_parser().parse_args(["specialize", "--data-dir", str(tmp_path / "run"), "--namespace", "robot_a",
                                      "--use-sim-time", "--log-level", "debug", "--no-enable-detection",
                                      "--no-enable-trainer"])
    _, _, specs = resolve(**resolve_arguments(graph_values(args).__getitem__))
    assert [n["name"] for n in launched] == [s.name for s in specs] == ["sim", "recorder", "segmentation", "ttt_kd"]
    for node, spec in zip(launched, specs):
        # relative in the launch file, so that an enclosing PushRosNamespace still applies
        assert node["namespace"] == "robot_a" and spec.namespace == "/robot_a"
        assert node["ros_arguments"] == ["--log-level", "debug"]
        assert node["remappings"] == spec.remappings and ("/tf", "tf") in spec.remappings
        assert node["parameters"] == [spec.parameters]
        # every node on /clock, which the simulator (then not real-time) publishes
        assert spec.parameters.get("use_sim_time") is (None if spec.name == "sim" else True)
    assert next(s for s in specs if s.name == "sim").parameters["realtime"] is False
    # in one process: each node in the namespace, one log level
    in_process = ros_arguments(specs)
    assert "sim:__ns:=/robot_a" in in_process and in_process[-2:] == ["--log-level", "debug"]
    # each robot's TF in its namespace, in one process too
    assert "ttt_kd:/tf:=tf" in in_process and "sim:/tf_static:=tf_static" in in_process
    # --nodes picks the same set
    args = build_parser().parse_args(["specialize", "--data-dir", str(tmp_path / "run"),
                                      "--nodes", "sim,recorder,segmentation,ttt_kd"])
    _, _, specs = resolve(**resolve_arguments(graph_values(args).__getitem__))
    assert [s.name for s in specs] == ["sim", "recorder", "segmentation", "ttt_kd"]
    assert all(s.namespace == "" and "use_sim_time" not in s.parameters for s in specs)


def test_replay_launch_takes_the_graph_arguments(tmp_path, monkeypatch):
    values = {"bag": str(tmp_path / "bag"), "rate": "1.0", "loop": "false", "config": "",
              "data_dir": str(tmp_path), "preset": "", "device": "", **GRAPH_ARGUMENTS}
    launched, declared = _launch_nodes(ROOT / "launch" / "replay.launch.py", values, monkeypatch)
    assert "use_sim" not in declared and "enable_sim" not in declared
    assert [n["name"] for n in launched] == ["replay", "recorder", "segmentation", "ttt_kd"]
    assert all(n["namespace"] == "robot_a" for n in launched)
    assert launched[0]["parameters"][0]["publish_clock"] is True      # the clock source with use_sim_time
    assert all(n["parameters"][0]["use_sim_time"] is True for n in launched[1:])


def test_bag_topics_are_found_by_relative_or_absolute_name():
    from tst_ros.data.ingest import resolve_topics
    from tst_ros.ros.nodes.replay import graph_name

    found = resolve_topics({"/camera/color/image_raw/compressed": "x", "/points": "y", "odom": "z"})
    assert found == {"rgb": "/camera/color/image_raw/compressed", "cloud": "/points", "odom": "odom"}
    assert graph_name("/camera/color/image_raw", absolute=False) == "camera/color/image_raw"
    assert graph_name("/camera/color/image_raw", absolute=True) == "/camera/color/image_raw"
    assert graph_name("/tf", absolute=False) == "/tf"


def test_every_described_node_has_an_executable_and_a_class():
    _, _, specs = resolve(use_sim=True, data_dir="/tmp/tst-desc-check")
    for spec in specs:
        assert (ROOT / "scripts" / "nodes" / spec.executable).is_file()
        module, cls = spec.node_class.split(":")
        assert (ROOT / Path(*module.split("."))).with_suffix(".py").is_file()


def test_replay_launch_puts_a_replay_node_in_front(tmp_path, monkeypatch):
    values = {"bag": str(tmp_path / "bag"), "rate": "2.0", "loop": "true", "config": "", "data_dir": str(tmp_path),
              "preset": "", "device": ""}
    launched, _ = _launch_nodes(ROOT / "launch" / "replay.launch.py", values, monkeypatch)
    assert launched[0]["name"] == "replay"
    assert launched[0]["parameters"] == [{"bag": str(tmp_path / "bag"), "rate": 2.0, "loop": True}]
    assert "sim" not in [n["name"] for n in launched]


def test_bad_remapping_is_rejected_with_the_expected_form():
    with pytest.raises(ValueError, match="node:/from:=/to"):
        parse_remappings(["segmentation/camera:=x"])


def test_only_the_simulated_graph_gives_nodes_the_rigs_camera_extrinsic():
    from tst_ros.config import Config
    from tst_ros.graph.description import describe, sim_camera_extrinsic

    with_sim = {s.name: s.parameters for s in describe(Config(), use_sim=True)}
    for name in ("recorder", "ttt_kd"):
        assert with_sim[name]["camera_extrinsic"] == sim_camera_extrinsic()
    without = {s.name: s.parameters for s in describe(Config(), use_sim=False)}
    assert "sim" not in without and all("camera_extrinsic" not in p for p in without.values())


def test_an_unknown_encoder_preset_fails_before_the_run_directory_is_made(tmp_path):
    with pytest.raises(ValueError, match="unknown encoder preset 'tinyy'.*tiny-imagenet-rgbd-maps"):
        resolve(data_dir=str(tmp_path / "run"), overrides=["pretrain.preset=tinyy"])
    assert not (tmp_path / "run").exists()
    # the check keeps the launch process light: resolving a graph never loads torch
    script = ("import sys; from tst_ros.graph.description import resolve; "
              f"resolve(data_dir={str(tmp_path / 'ok')!r}); assert 'torch' not in sys.modules, 'torch loaded'")
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "ok" / "config.yaml").is_file()
