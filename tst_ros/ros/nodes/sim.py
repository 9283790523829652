"""`sim` node: the simulated building's sensor rig on a real ROS graph.

Publishes /camera/color/image_raw (rgb8), /camera/color/camera_info, /camera/depth/image_raw
(16UC1 mm, aligned to colour) with /camera/depth/camera_info (equal to colour's),
/camera/thermal/image_raw (16UC1 centi-kelvin, aligned to colour) with /camera/thermal/camera_info, /imu/data
(every IMU sample, stamped on the IMU clock, sent with the frame that closes its interval), /points
(xyz+rgb in camera_color_optical_frame, at cloud_rate_hz), /odom (odom -> base_link) and TF: /tf
(odom -> base_link) and /tf_static
(base_link -> camera, latched). With `tour` (buildings "style:seed") the rig is driven from
one building into the next every `tour_seconds` (`tst_ros.sim.tour`), and the ground-truth
building's label is published on sim/building (std_msgs/String, latched) at every change.
Paced to wall time (`realtime: true`, stamps from
the node clock) or as fast as possible with /clock (`realtime: false`, stamps from the
simulator's epoch). Rendering happens in the timer callback; all simulation is tst_ros.sim.
"""
from __future__ import annotations

import sys
import time

import rclpy
from rclpy.node import Node
from nav_msgs.msg import Odometry
from geometry_msgs.msg import TransformStamped
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import CameraInfo, Image, Imu, PointCloud2
from std_msgs.msg import String
from tf2_msgs.msg import TFMessage

from tst_ros.ros.nodes import run_node
from tst_ros.config import SimConfig
from tst_ros.poses import matrix_to_extrinsic
from tst_ros.ros.clouds import make_xyz_rgb_cloud
from tst_ros.ros.conversions import (array_to_imu, intrinsics_to_camera_info, make_header, matrix_to_odometry,
                                     matrix_to_transform, ns_to_stamp)
from tst_ros.ros.images import array_to_image
from tst_ros.ros.node_diagnostics import sim_diagnostics
from tst_ros.ros.parameters import declare_section, declare_string_list
from tst_ros.ros.qos import qos_latched, qos_profile
from tst_ros.sim.export import body_twist


TOPICS = {"rgb": "camera/color/image_raw", "camera_info": "camera/color/camera_info",
          "depth": "camera/depth/image_raw", "depth_camera_info": "camera/depth/camera_info",
          "thermal": "camera/thermal/image_raw", "thermal_camera_info": "camera/thermal/camera_info", "imu": "imu/data",
          "cloud": "points", "odom": "odom", "building": "sim/building"}  # relative: a namespace moves them


class SimNode(Node):
    def __init__(self, parameter_overrides=None, sim_cfg: SimConfig | None = None, name: str = "sim", **kwargs):
        super().__init__(name, parameter_overrides=parameter_overrides or [], **kwargs)
        cfg = sim_cfg or SimConfig()
        self.sim_cfg = SimConfig(**declare_section(self, cfg, "sim"))   # defaults and descriptions: SimConfig
        if not self.sim_cfg.tour:                 # an empty default is not declared by declare_section
            self.sim_cfg.tour = declare_string_list(self, SimConfig, "sim", "tour")
        p = {
            "start_frame": 0, "shutdown_when_done": False,
            "odom_frame": "odom", "base_frame": "base_link", "camera_frame": "camera_color_optical_frame",
            "imu_frame": "imu_link", "qos_reliability": "reliable", "qos_depth": 10,
            **{f"topic_{k}": v for k, v in TOPICS.items()},
        }
        for key, value in p.items():
            self.declare_parameter(key, value)
        get = lambda k: self.get_parameter(k).value  # noqa: E731
        self.realtime = self.sim_cfg.realtime
        self.frames_total = self.sim_cfg.frames
        self.shutdown_when_done = bool(get("shutdown_when_done"))
        self.frame_ids = {k: str(get(f"{k}_frame")) for k in ("odom", "base", "camera", "imu")}

        from tst_ros.sim import Simulator
        from tst_ros.sim.simulator import SIM_EPOCH_NS

        from tst_ros.sim.tour import Tour

        start_ns = self.get_clock().now().nanoseconds if self.realtime else SIM_EPOCH_NS
        self.tour = Tour(self.sim_cfg, self.sim_cfg.tour, start_ns=start_ns) if self.sim_cfg.tour else None
        self.sim = self.tour or Simulator(self.sim_cfg, start_ns=start_ns)
        self.building = ""
        # realtime: frame k is due at start + k / rate on the node clock; the first frame index
        # is `start_frame` but stamps start now
        self.start_frame = int(get("start_frame"))
        self.stamp_offset = self.sim.stamp_ns(0) - self.sim.stamp_ns(self.start_frame)
        self.wall_start_ns = start_ns
        self.next_index = self.start_frame
        self.last_stamp_ns: int | None = None
        self.skipped = 0
        qos = qos_profile(str(get("qos_reliability")), int(get("qos_depth")))
        self.pubs = {
            "rgb": self.create_publisher(Image, get("topic_rgb"), qos),
            "camera_info": self.create_publisher(CameraInfo, get("topic_camera_info"), qos),
            "depth": self.create_publisher(Image, get("topic_depth"), qos),
            "depth_camera_info": self.create_publisher(CameraInfo, get("topic_depth_camera_info"), qos),
            "thermal": self.create_publisher(Image, get("topic_thermal"), qos),
            "thermal_camera_info": self.create_publisher(CameraInfo, get("topic_thermal_camera_info"), qos),
            "imu": self.create_publisher(Imu, get("topic_imu"), qos_profile(str(get("qos_reliability")), 200)),
            "cloud": self.create_publisher(PointCloud2, get("topic_cloud"), qos),
            "odom": self.create_publisher(Odometry, get("topic_odom"), qos),
            "building": self.create_publisher(String, get("topic_building"), qos_latched()),
        }
        self.clock_pub = None if self.realtime else self.create_publisher(Clock, "/clock", 10)
        self.camera_extrinsic = matrix_to_extrinsic(self.sim.T_base_camera)
        # what tf2_ros's broadcasters do, without tf2_ros (no wheel): /tf depth 100, /tf_static latched
        self.tf_pub = self.create_publisher(TFMessage, "/tf", qos_profile("reliable", 100))
        self.tf_static_pub = self.create_publisher(TFMessage, "/tf_static", qos_latched(1))
        self.tf_static_pub.publish(TFMessage(transforms=[
            self._transform(self.sim.T_base_camera, self.sim.start_ns, "base", "camera")]))
        self.published = 0
        self.render_s = 0.0
        self.done = False
        self.paused = False
        period = 1.0 / self.sim_cfg.camera_rate_hz if self.realtime else 0.0
        self.timer = self.create_timer(period, self._tick)
        self.diagnostics = sim_diagnostics(self)
        where = f"tour {self.sim_cfg.tour} ({self.sim_cfg.tour_seconds} s each)" if self.tour else \
            f"seed={self.sim_cfg.seed} style={self.sim_cfg.style}"
        self.get_logger().info(
            f"sim {where} {self.sim_cfg.width}x{self.sim_cfg.height} "
            f"camera {self.sim_cfg.camera_rate_hz} Hz, imu {self.sim_cfg.imu_rate_hz} Hz, cloud "
            f"{self.sim_cfg.cloud_rate_hz} Hz, {'realtime' if self.realtime else 'as fast as possible with /clock'}; "
            f"camera_extrinsic={[round(v, 4) for v in self.camera_extrinsic]}")

    def _transform(self, T, stamp_ns, parent, child):
        msg = TransformStamped()
        msg.header = make_header(stamp_ns, self.frame_ids[parent])
        msg.child_frame_id = self.frame_ids[child]
        msg.transform = matrix_to_transform(T)
        return msg

    def set_paused(self, paused: bool) -> None:
        """Stop / resume rendering (the in-process demo pauses the rig while it trains).
        On resume the real-time clock jumps to the frame due now."""
        if paused != self.paused:
            self.paused = paused
            self.get_logger().info("paused" if paused else "resumed")

    def _tick(self) -> None:
        if self.done or self.paused:
            return
        if self.frames_total and self.published >= self.frames_total:
            self.done = True
            self.timer.cancel()
            self.get_logger().info(f"published {self.published} frames; done")
            if self.shutdown_when_done:
                rclpy.try_shutdown()
            return
        index, since = self.next_index, None
        if self.realtime:
            # like a camera driver that cannot keep up: publish the frame due now, drop the
            # late ones (stamps stay on wall time); the IMU window reaches back to the last frame
            due = self.start_frame + int((self.get_clock().now().nanoseconds - self.wall_start_ns)
                                         * self.sim_cfg.camera_rate_hz / 1e9)
            if due > index:
                self.skipped += due - index
                index = due
                since = self.last_stamp_ns
        t0 = time.perf_counter()
        frame = self.sim.frame(index, imu_since_ns=since)
        self.render_s += time.perf_counter() - t0
        self.publish_frame(frame, self.tour.simulator(index) if self.tour else self.sim)
        self.published += 1
        self.next_index = index + 1
        self.last_stamp_ns = frame.stamp_ns

    def publish_frame(self, frame, sim) -> None:
        off = self.stamp_offset
        stamp = frame.stamp_ns + off
        if self.clock_pub is not None:
            self.clock_pub.publish(Clock(clock=ns_to_stamp(stamp)))
        building = frame.gt.get("building", "")
        if building != self.building:
            self.building = building
            self.pubs["building"].publish(String(data=building))
            self.get_logger().info(f"now in building {building}")
        for s, vec in zip(frame.imu_stamps_ns, frame.imu):
            self.pubs["imu"].publish(array_to_imu(vec, make_header(int(s) + off, self.frame_ids["imu"])))
        twist = body_twist(sim, frame.stamp_ns)
        self.pubs["odom"].publish(matrix_to_odometry(
            frame.T_odom_base, make_header(stamp, self.frame_ids["odom"]), self.frame_ids["base"], twist))
        self.tf_pub.publish(TFMessage(transforms=[self._transform(frame.T_odom_base, stamp, "odom", "base")]))
        header = make_header(stamp, self.frame_ids["camera"])
        self.pubs["camera_info"].publish(intrinsics_to_camera_info(self.sim.intrinsics, header))
        # the simulated depth is registered to colour, so its CameraInfo is colour's (as aligned-depth drivers do)
        self.pubs["depth_camera_info"].publish(intrinsics_to_camera_info(self.sim.intrinsics, header))
        self.pubs["rgb"].publish(array_to_image(frame.rgb, "rgb8", header))
        self.pubs["depth"].publish(array_to_image(frame.depth_mm, "16UC1", header))
        if frame.thermal_ck is not None:       # registered to colour too: colour's CameraInfo
            self.pubs["thermal_camera_info"].publish(intrinsics_to_camera_info(self.sim.intrinsics, header))
            self.pubs["thermal"].publish(array_to_image(frame.thermal_ck, "16UC1", header))
        if frame.cloud_xyz is not None:
            self.pubs["cloud"].publish(make_xyz_rgb_cloud(frame.cloud_xyz, frame.cloud_rgb, header))


def main(argv: list[str] | None = None) -> int:
    return run_node(SimNode, argv)


if __name__ == "__main__":
    sys.exit(main())
