"""ros2 launch tst_ros replay.launch.py bag:=PATH [rate:=1.0] [loop:=false] [config:=...] [data_dir:=...]
[namespace:=robot_a] [use_sim_time:=false] [log_level:=info] [enable_<node>:=true]

The specialise graph fed by a recorded rosbag2 instead of the simulator. The bag's topics are
published under `namespace` like every node's (absolute recorded names made relative; /clock
stays global, /tf and /tf_static are remapped into the namespace); with use_sim_time the replay
publishes the recorded /clock.
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction, SetEnvironmentVariable
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from tst_ros.ros import ADDED_ENVIRONMENT  # the project's Fast DDS profile unless the user chose transports
from tst_ros.graph.description import LAUNCH_ARGUMENTS, is_true, replay_spec, resolve, resolve_arguments


NO_SIM = ("use_sim", "enable_sim")


def _arg(context, name: str) -> str:
    return LaunchConfiguration(name).perform(context)


def _nodes(context, *args, **kwargs):
    # the bag replaces the simulator
    values = resolve_arguments(lambda name: "false" if name in NO_SIM else _arg(context, name))
    _, _, specs = resolve(**values)
    replay = replay_spec(_arg(context, "bag"), float(_arg(context, "rate")), is_true(_arg(context, "loop")),
                         namespace=values["namespace"], use_sim_time=values["use_sim_time"],
                         log_level=values["log_level"])
    return [Node(package="tst_ros", executable=spec.executable, name=spec.name,
                 namespace=spec.namespace.lstrip("/"), parameters=[spec.parameters], remappings=spec.remappings,
                 ros_arguments=["--log-level", spec.log_level], output="screen", emulate_tty=True)
            for spec in [replay] + specs]


def generate_launch_description():
    args = {k: v for k, v in LAUNCH_ARGUMENTS.items() if k not in NO_SIM}
    args.update({"bag": ("", "rosbag2 directory or file to replay"), "rate": ("1.0", "playback rate factor"),
                 "loop": ("false", "replay the bag in a loop")})
    return LaunchDescription(
        [DeclareLaunchArgument(name, default_value=default, description=text)
         for name, (default, text) in args.items()]
        + [SetEnvironmentVariable(name, value) for name, value in ADDED_ENVIRONMENT.items()]
        + [OpaqueFunction(function=_nodes)])
