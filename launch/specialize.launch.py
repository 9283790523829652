"""ros2 launch tst_ros specialize.launch.py [use_sim:=true] [config:=...] [data_dir:=...] [preset:=tiny] [device:=auto]

Starts sim (when use_sim), recorder, trainer, segmentation, detection and ttt_kd with
parameters from config/specialize.yaml. The node set comes from tst_ros.graph.description,
the same description `tst-ros specialize` runs in one process.
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction, SetEnvironmentVariable
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from tst_ros.ros import ADDED_ENVIRONMENT  # Fast DDS LARGE_DATA transports unless the user chose others
from tst_ros.graph.description import LAUNCH_ARGUMENTS, resolve


def _arg(context, name: str) -> str:
    return LaunchConfiguration(name).perform(context)


def _nodes(context, *args, **kwargs):
    _, _, specs = resolve(
        use_sim=_arg(context, "use_sim").lower() in ("1", "true", "yes", "on"),
        config=_arg(context, "config"), data_dir=_arg(context, "data_dir"),
        preset=_arg(context, "preset"), device=_arg(context, "device"))
    return [Node(package="tst_ros", executable=spec.executable, name=spec.name, parameters=[spec.parameters],
                 remappings=spec.remappings, output="screen", emulate_tty=True)
            for spec in specs]


def generate_launch_description():
    return LaunchDescription(
        [DeclareLaunchArgument(name, default_value=default, description=text)
         for name, (default, text) in LAUNCH_ARGUMENTS.items()]
        + [SetEnvironmentVariable(name, value) for name, value in ADDED_ENVIRONMENT.items()]
        + [OpaqueFunction(function=_nodes)])
