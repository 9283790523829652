"""Online-rate driver of the TTT-KD benchmark (`tst-ros bench ttt-kd`): pre-rendered simulator
frames are published over real DDS at a fixed rate to a `TTTKDNode` spun in this process, and
what it publishes back is measured (clouds received, output rate, per-cloud processing time)."""
from __future__ import annotations

import time

import rclpy
from nav_msgs.msg import Odometry
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from sensor_msgs.msg import CameraInfo, Image, PointCloud2

from tst_ros.poses import matrix_to_extrinsic
from tst_ros.ros.clouds import make_xyz_rgb_cloud
from tst_ros.ros.conversions import intrinsics_to_camera_info, make_header, matrix_to_odometry
from tst_ros.ros.images import array_to_image
from tst_ros.ros.nodes.ttt_kd import TTTKDNode
from tst_ros.ros.qos import qos_sensor

CAMERA_FRAME = "camera_color_optical_frame"


def measure_online_rate(checkpoint: str, frames: list, intrinsics, T_base_camera, rate_hz: float = 1.0,
                        steps: int = 3, stride: int = 2, point_budget: int = 8000, mode: str = "online",
                        settle_s: float = 3.0) -> dict:
    """Feed pre-rendered sim frames (each with a cloud) at `rate_hz` over real DDS to a TTTKDNode
    in this process and measure its output: {"sent", "received", "output_rate_hz", ...}."""
    context = Context()
    rclpy.init(context=context)
    try:
        params = _node_parameters(checkpoint, T_base_camera, steps, mode, stride, point_budget)
        node = TTTKDNode(parameter_overrides=params, context=context, node_name="ttt_kd_rate")
        feeder = _Feeder(node.params, context)
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(node)
        executor.add_node(feeder.node)
        msgs = [_frame_messages(f) for f in frames]
        feeder.wait_for_subscriber(executor)
        feeder.feed(executor, msgs, intrinsics, rate_hz)
        feeder.wait_for_outputs(executor, len(msgs), settle_s)
        result = _summary(node, feeder.arrivals, len(msgs), rate_hz)
        executor.shutdown()
        node.destroy_node()
        feeder.node.destroy_node()
        return result
    finally:
        rclpy.shutdown(context=context)


def _node_parameters(checkpoint: str, T_base_camera, steps: int, mode: str, stride: int,
                     point_budget: int) -> list[Parameter]:
    return [Parameter("model", value=str(checkpoint)), Parameter("steps", value=int(steps)),
            Parameter("mode", value=mode), Parameter("stride", value=int(stride)),
            Parameter("point_budget", value=int(point_budget)),
            Parameter("sensor_qos_reliability", value="reliable"),
            Parameter("camera_extrinsic", value=matrix_to_extrinsic(T_base_camera))]


def _frame_messages(frame: dict) -> tuple:
    """(frame, header, cloud, colour image, depth image) of one pre-rendered frame."""
    header = make_header(frame["stamp_ns"], CAMERA_FRAME)
    return (frame, header, make_xyz_rgb_cloud(frame["xyz"], frame["rgb_cloud"], header),
            array_to_image(frame["rgb"], "rgb8", header), array_to_image(frame["depth_mm"], "16UC1", header))


class _Feeder:
    """The stimulus side: publishers on the node's input topics and the arrival times of the
    labelled clouds it publishes."""

    def __init__(self, topics: dict, context: Context):
        self.node = Node("ttt_kd_rate_feeder", context=context)
        self.arrivals: list[float] = []
        self.node.create_subscription(PointCloud2, topics["output_topic"],
                                      lambda m: self.arrivals.append(time.monotonic()), 10)
        qos = qos_sensor(best_effort=False)
        self.cloud = self.node.create_publisher(PointCloud2, topics["points_topic"], qos)
        self.image = self.node.create_publisher(Image, topics["image_topic"], qos)
        self.depth = self.node.create_publisher(Image, topics["depth_topic"], qos)
        self.info = self.node.create_publisher(CameraInfo, topics["camera_info_topic"], qos)
        self.odom = self.node.create_publisher(Odometry, topics["odom_topic"], 100)

    def wait_for_subscriber(self, executor, timeout_s: float = 10.0) -> None:
        deadline = time.monotonic() + timeout_s
        while self.cloud.get_subscription_count() == 0 and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.05)

    def feed(self, executor, msgs: list[tuple], intrinsics, rate_hz: float) -> None:
        """Publish each frame's poses, camera_info, images and then its cloud, one frame per 1/rate_hz s."""
        t_start = time.monotonic()
        for i, (frame, header, cloud, image, depth) in enumerate(msgs):
            for T, stamp in frame["poses"]:
                self.odom.publish(matrix_to_odometry(T, make_header(stamp, "odom")))
            self.info.publish(intrinsics_to_camera_info(intrinsics, header))
            self.image.publish(image)
            self.depth.publish(depth)
            executor.spin_once(timeout_sec=0.01)
            self.cloud.publish(cloud)
            next_t = t_start + (i + 1) / rate_hz
            while time.monotonic() < next_t:
                executor.spin_once(timeout_sec=max(0.0, min(0.05, next_t - time.monotonic())))

    def wait_for_outputs(self, executor, expected: int, settle_s: float) -> None:
        t_end = time.monotonic() + settle_s
        while time.monotonic() < t_end and len(self.arrivals) < expected:
            executor.spin_once(timeout_sec=0.05)


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def _summary(node: TTTKDNode, arrivals: list[float], sent: int, rate_hz: float) -> dict:
    times = list(node.process_times)
    adapted = [t for t, a in zip(times, node.process_adapted) if a]
    plain = [t for t, a in zip(times, node.process_adapted) if not a]
    return {"sent": sent, "received": len(arrivals), "dropped_by_node": node.dropped,
            "rate_in_hz": rate_hz,
            "output_rate_hz": (len(arrivals) - 1) / (arrivals[-1] - arrivals[0]) if len(arrivals) > 1 else 0.0,
            "process_mean_s": float(_mean(times)),
            "process_max_s": max(times) if times else 0.0,
            "process_adapted_mean_s": _mean(adapted),
            "process_predict_only_mean_s": _mean(plain),
            "adapted_clouds": len(adapted)}
