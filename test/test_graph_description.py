"""The launch file and `tst-ros specialize` describe the same graph.

launch/launch_ros are not installable on this machine (no ROS distribution), so the launch
file is executed against small recording stand-ins for the launch classes it uses; what
it would hand to launch_ros is compared with what the in-process runner instantiates.
"""
import importlib.util
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
