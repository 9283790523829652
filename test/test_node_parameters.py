"""Perception node parameters come from the config dataclass (defaults and descriptions); the
runtime-changeable ones (score threshold, NMS IoU) take effect through the on-set callback and
reject bad values; the others are read-only once the node runs."""
import dataclasses

import pytest
import rclpy
from rclpy.context import Context
from rclpy.parameter import Parameter

from tst_ros.config import PerceptionConfig
from tst_ros.ros.nodes.detection import DetectionNode


@pytest.fixture
def node():
    context = Context()
    rclpy.init(context=context)
    node = DetectionNode(parameter_overrides=[Parameter("threads", value=1)], context=context)
    yield node
    node.destroy_node()
    rclpy.shutdown(context=context)


def test_parameters_are_the_config_section_with_its_defaults_and_descriptions(node):
    defaults = PerceptionConfig()
    for f in dataclasses.fields(defaults):
        expected = 1 if f.name == "threads" else getattr(defaults, f.name)
        assert node.get_parameter(f.name).value == expected, f.name
    described = node.describe_parameter("score_threshold")
    assert "config perception.score_threshold" in described.description and not described.read_only
    assert node.describe_parameter("threads").read_only


def test_runtime_parameters_take_effect_and_bad_values_are_refused(node):
    assert node.set_parameters([Parameter("score_threshold", value=0.7)])[0].successful
    assert node.score_threshold == 0.7
    refused = node.set_parameters([Parameter("nms_iou", value=1.5)])[0]
    assert not refused.successful and "nms_iou" in refused.reason and node.nms_iou == 0.5
    assert not node.set_parameters([Parameter("threads", value=2)])[0].successful
