"""ros2 launch tst_ros replay.launch.py bag:=PATH [rate:=1.0] [loop:=false] [config:=...] [data_dir:=...]

The specialise graph fed by a recorded rosbag2 instead of the simulator.
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction, SetEnvironmentVariable
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from tst_ros.ros import ADDED_ENVIRONMENT  # Fast DDS LARGE_DATA transports unless the user chose others
from tst_ros.graph.description import LAUNCH_ARGUMENTS, replay_spec, resolve


def _arg(context, name: str) -> str:
    return LaunchConfiguration(name).perform(context)


def _nodes(context, *args, **kwargs):
    _, _, specs = resolve(use_sim=False, config=_arg(context, "config"), data_dir=_arg(context, "data_dir"),
                          preset=_arg(context, "preset"), device=_arg(context, "device"))
    specs = [replay_spec(_arg(context, "bag"), float(_arg(context, "rate")),
                         _arg(context, "loop").lower() in ("1", "true", "yes", "on"))] + specs
    return [Node(package="tst_ros", executable=spec.executable, name=spec.name, parameters=[spec.parameters],
                 remappings=spec.remappings, output="screen", emulate_tty=True)
            for spec in specs]


def generate_launch_description():
    args = {k: v for k, v in LAUNCH_ARGUMENTS.items() if k != "use_sim"}
    args.update({"bag": ("", "rosbag2 directory or file to replay"), "rate": ("1.0", "playback rate factor"),
                 "loop": ("false", "replay the bag in a loop")})
    return LaunchDescription(
        [DeclareLaunchArgument(name, default_value=default, description=text)
         for name, (default, text) in args.items()]
        + [SetEnvironmentVariable(name, value) for name, value in ADDED_ENVIRONMENT.items()]
        + [OpaqueFunction(function=_nodes)])
