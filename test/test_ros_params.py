"""The configuration as a standard ROS 2 parameters file: the dump reads back to the same
config, node entries map onto their sections or stay node parameters, and a node started with
`--ros-args --params-file` takes its values from the same file."""
import subprocess
import sys

import yaml

from tst_ros import config
from tst_ros.graph.description import describe

PARAMS = """
segmentation:
  ros__parameters:
    score_threshold: 0.4
    nms_iou: 0.3
detection:
  ros__parameters:
    score_threshold: 0.4
/robot_a/ttt_kd:
  ros__parameters:
    steps: 3
    points_topic: lidar/points
/**:
  ros__parameters:
    pretrain: {steps: 120, batch: 8}
    log_every: 7
"""


def test_the_ros_dump_of_the_defaults_loads_back_to_the_defaults(tmp_path):
    out = subprocess.run([sys.executable, "-m", "tst_ros.cli", "config", "dump", "--format", "ros"],
                         capture_output=True, text=True, check=True).stdout
    data = yaml.safe_load(out)
    assert all("ros__parameters" in entry for entry in data.values())
    assert data["detection"]["ros__parameters"]["score_threshold"] == config.Config().perception.score_threshold
    (tmp_path / "params.yaml").write_text(out)
    assert config.load(tmp_path / "params.yaml") == config.Config()


def test_node_entries_go_to_their_section_or_stay_node_parameters(tmp_path):
    (tmp_path / "params.yaml").write_text(PARAMS)
    cfg = config.load(tmp_path / "params.yaml")
    assert cfg.perception.score_threshold == 0.4              # both nodes of the section, one value
    assert cfg.perception.nms_iou == config.Config().perception.nms_iou
    assert cfg.ttt_kd.steps == 3 and (cfg.pretrain.steps, cfg.pretrain.batch) == (120, 8)
    assert cfg.specialize.node_parameters == {"segmentation": {"nms_iou": 0.3},
                                              "ttt_kd": {"points_topic": "lidar/points"}, "*": {"log_every": 7}}
    specs = {s.name: s.parameters for s in describe(cfg, run_dir=tmp_path / "run")}
    assert specs["segmentation"]["nms_iou"] == 0.3 and specs["detection"]["nms_iou"] == cfg.perception.nms_iou
    assert specs["ttt_kd"]["points_topic"] == "lidar/points" and specs["ttt_kd"]["steps"] == 3
    assert all(p["log_every"] == 7 for p in specs.values())


def test_a_node_reads_the_same_file_with_params_file(tmp_path):
    import rclpy
    from rclpy.context import Context

    from tst_ros.ros.nodes.detection import DetectionNode

    data = yaml.safe_load(subprocess.run([sys.executable, "-m", "tst_ros.cli", "config", "dump", "--format", "ros"],
                                         capture_output=True, text=True, check=True).stdout)
    data["detection"]["ros__parameters"].update(score_threshold=0.55, qos_depth=4)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(data))
    context = Context()
    rclpy.init(args=["--ros-args", "--params-file", str(path)], context=context)
    try:
        node = DetectionNode(context=context)
        assert node.score_threshold == 0.55 and node.qos_depth == 4
        node.destroy_node()
    finally:
        rclpy.try_shutdown(context=context)
