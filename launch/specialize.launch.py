"""ros2 launch tst_ros specialize.launch.py [use_sim:=true] [config:=...] [data_dir:=...] [preset:=tiny]
[device:=auto] [namespace:=robot_a] [use_sim_time:=false] [log_level:=info] [enable_<node>:=true]

Starts sim (when use_sim and enable_sim), recorder, trainer, segmentation, detection and ttt_kd
(each unless enable_<node>:=false) with parameters from config/specialize.yaml, in `namespace`
(every default topic is relative, /tf and /tf_static are remapped into it; /clock,
/diagnostics stay global), at `log_level`, and
with use_sim_time (the simulator then publishes /clock). The node set comes from
tst_ros.graph.description, the same description `tst-ros specialize` runs in one process.
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction, SetEnvironmentVariable
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from tst_ros.ros import ADDED_ENVIRONMENT  # the project's Fast DDS profile unless the user chose transports
from tst_ros.graph.description import LAUNCH_ARGUMENTS, resolve, resolve_arguments


def _arg(context, name: str) -> str:
    return LaunchConfiguration(name).perform(context)


def node_action(spec):
    """A described node as a launch_ros Node (namespace relative, so an enclosing PushRosNamespace applies)."""
    return Node(package="tst_ros", executable=spec.executable, name=spec.name, namespace=spec.namespace.lstrip("/"),
                parameters=[spec.parameters], remappings=spec.remappings,
                ros_arguments=["--log-level", spec.log_level], output="screen", emulate_tty=True)


def _nodes(context, *args, **kwargs):
    _, _, specs = resolve(**resolve_arguments(lambda name: _arg(context, name)))
    return [node_action(spec) for spec in specs]


def generate_launch_description():
    return LaunchDescription(
        [DeclareLaunchArgument(name, default_value=default, description=text)
         for name, (default, text) in LAUNCH_ARGUMENTS.items()]
        + [SetEnvironmentVariable(name, value) for name, value in ADDED_ENVIRONMENT.items()]
        + [OpaqueFunction(function=_nodes)])
