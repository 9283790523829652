"""Export a simulated run as a rosbag2 MCAP (sensor topics only, written with `rosbags`, no
ROS install needed) plus its ground truth alongside in `<bag>_gt.npz`.

Topics, types and frame ids match the `sim` node (README, "The graph"): /camera/color/image_raw
(rgb8), /camera/color/camera_info, /camera/depth/image_raw (16UC1 mm), /camera/thermal/image_raw
(16UC1 centi-kelvin), /imu/data (every
sample), /points (x, y, z, rgb), /odom. Log time = header stamp.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from tst_ros.geometry import matrix_to_pose
from tst_ros.sim.classes import CLASSES

TOPIC_TYPES = {
    "/camera/color/image_raw": "sensor_msgs/msg/Image",
    "/camera/color/camera_info": "sensor_msgs/msg/CameraInfo",
    "/camera/depth/image_raw": "sensor_msgs/msg/Image",
    "/camera/thermal/image_raw": "sensor_msgs/msg/Image",
    "/imu/data": "sensor_msgs/msg/Imu",
    "/points": "sensor_msgs/msg/PointCloud2",
    "/odom": "nav_msgs/msg/Odometry",
}
FRAME_IDS = {"odom": "odom", "base": "base_link", "camera": "camera_color_optical_frame", "imu": "imu_link"}


def typestore():
    from rosbags.typesys import Stores, get_typestore

    store = getattr(Stores, "ROS2_KILTED", None) or Stores.ROS2_JAZZY
    return get_typestore(store)


class _Messages:
    """Builds rosbags message objects for simulator frames."""

    def __init__(self, ts):
        self.ts = ts
        T = ts.types
        self.Time, self.Header = T["builtin_interfaces/msg/Time"], T["std_msgs/msg/Header"]
        self.Image, self.CameraInfo, self.Roi = (T["sensor_msgs/msg/Image"], T["sensor_msgs/msg/CameraInfo"],
                                                 T["sensor_msgs/msg/RegionOfInterest"])
        self.Imu, self.PointCloud2, self.PointField = (T["sensor_msgs/msg/Imu"], T["sensor_msgs/msg/PointCloud2"],
                                                       T["sensor_msgs/msg/PointField"])
        self.Odometry, self.Vector3, self.Quaternion = (T["nav_msgs/msg/Odometry"], T["geometry_msgs/msg/Vector3"],
                                                        T["geometry_msgs/msg/Quaternion"])
        self.Point, self.Pose, self.PoseCov = (T["geometry_msgs/msg/Point"], T["geometry_msgs/msg/Pose"],
                                               T["geometry_msgs/msg/PoseWithCovariance"])
        self.Twist, self.TwistCov = T["geometry_msgs/msg/Twist"], T["geometry_msgs/msg/TwistWithCovariance"]

    def header(self, stamp_ns: int, frame_id: str):
        return self.Header(stamp=self.Time(sec=int(stamp_ns // 10**9), nanosec=int(stamp_ns % 10**9)),
                           frame_id=frame_id)

    def image(self, arr: np.ndarray, encoding: str, header):
        arr = np.ascontiguousarray(arr)
        h, w = arr.shape[:2]
        return self.Image(header=header, height=h, width=w, encoding=encoding, is_bigendian=0,
                          step=arr.strides[0], data=arr.view(np.uint8).reshape(-1))

    def camera_info(self, intr, header):
        K = intr.K
        P = np.hstack([K, np.zeros((3, 1))])
        return self.CameraInfo(header=header, height=intr.height, width=intr.width, distortion_model="plumb_bob",
                               d=np.zeros(5), k=K.reshape(-1), r=np.eye(3).reshape(-1), p=P.reshape(-1), binning_x=0,
                               binning_y=0, roi=self.Roi(x_offset=0, y_offset=0, height=0, width=0, do_rectify=False))

    def imu(self, vec, header):
        cov = np.zeros(9)
        ocov = cov.copy()
        ocov[0] = -1.0
        return self.Imu(header=header, orientation=self.Quaternion(x=0.0, y=0.0, z=0.0, w=1.0),
                        orientation_covariance=ocov,
                        angular_velocity=self.Vector3(x=float(vec[3]), y=float(vec[4]), z=float(vec[5])),
                        angular_velocity_covariance=cov,
                        linear_acceleration=self.Vector3(x=float(vec[0]), y=float(vec[1]), z=float(vec[2])),
                        linear_acceleration_covariance=cov)

    def cloud(self, xyz: np.ndarray, rgb: np.ndarray, header):
        n = len(xyz)
        pts = np.empty(n, np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("rgb", "<u4")]))
        pts["x"], pts["y"], pts["z"] = xyz[:, 0], xyz[:, 1], xyz[:, 2]
        r, g, b = (rgb[:, i].astype(np.uint32) for i in range(3))
        pts["rgb"] = (r << 16) | (g << 8) | b
        F = self.PointField
        fields = [F(name=name, offset=4 * i, datatype=7, count=1) for i, name in enumerate(("x", "y", "z", "rgb"))]
        return self.PointCloud2(header=header, height=1, width=n, fields=fields, is_bigendian=False, point_step=16,
                                row_step=16 * n, data=pts.view(np.uint8).reshape(-1), is_dense=True)

    def odometry(self, T: np.ndarray, twist6: np.ndarray, header, child: str):
        t, q = matrix_to_pose(T)
        pose = self.Pose(position=self.Point(x=float(t[0]), y=float(t[1]), z=float(t[2])),
                         orientation=self.Quaternion(x=float(q[1]), y=float(q[2]), z=float(q[3]), w=float(q[0])))
        twist = self.Twist(linear=self.Vector3(x=float(twist6[0]), y=float(twist6[1]), z=float(twist6[2])),
                           angular=self.Vector3(x=float(twist6[3]), y=float(twist6[4]), z=float(twist6[5])))
        return self.Odometry(header=header, child_frame_id=child, pose=self.PoseCov(pose=pose, covariance=np.zeros(36)),
                             twist=self.TwistCov(twist=twist, covariance=np.zeros(36)))


def body_twist(sim, stamp_ns: int) -> np.ndarray:
    """[vx vy vz wx wy wz] of base_link in its own frame at a stamp."""
    t = np.atleast_1d(sim.time_s(stamp_ns))
    v = sim.trajectory.velocity(t)[0]
    yaw = float(sim.trajectory.yaw(t)[0])
    c, s = np.cos(yaw), np.sin(yaw)
    return np.array([c * v[0] + s * v[1], -s * v[0] + c * v[1], 0.0, 0.0, 0.0, float(sim.trajectory.yaw_rate(t)[0])])


def gt_path(bag: str | os.PathLike) -> Path:
    bag = Path(bag)
    return bag.with_name(bag.name + "_gt.npz")


def export_bag(sim, out: str | os.PathLike, frames: int, start: int = 0, overwrite: bool = False,
               progress: bool = True) -> dict:
    """Write `frames` frames of `sim` to the rosbag2 MCAP directory `out` and the ground truth
    to `<out>_gt.npz`; returns counts per topic."""
    from rosbags.rosbag2 import StoragePlugin, Writer
    from tqdm import tqdm

    from tst_ros.util import atomic_write

    out = Path(out)
    if frames < 1:
        raise ValueError(f"--frames must be >= 1, got {frames}")
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; pass --overwrite to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent)) / out.name
    ts = typestore()
    M = _Messages(ts)
    counts = {t: 0 for t in TOPIC_TYPES}
    gt = {"stamp_ns": [], "index": [], "semantic": [], "instance": [], "T_odom_base": [], "T_odom_camera": [],
          "boxes": [], "cloud_labels": [], "cloud_frame": []}
    with Writer(tmp, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        conns = {t: writer.add_connection(t, mt, typestore=ts) for t, mt in TOPIC_TYPES.items()}

        def write(topic, msg, stamp):
            writer.write(conns[topic], stamp, ts.serialize_cdr(msg, TOPIC_TYPES[topic]))
            counts[topic] += 1

        for frame in tqdm(sim.frames(frames, start=start), total=frames, desc="export", disable=not progress):
            s = frame.stamp_ns
            for st, vec in zip(frame.imu_stamps_ns, frame.imu):
                write("/imu/data", M.imu(vec, M.header(int(st), FRAME_IDS["imu"])), int(st))
            write("/odom", M.odometry(frame.T_odom_base, body_twist(sim, s), M.header(s, FRAME_IDS["odom"]),
                                      FRAME_IDS["base"]), s)
            h = M.header(s, FRAME_IDS["camera"])
            write("/camera/color/camera_info", M.camera_info(sim.intrinsics, h), s)
            write("/camera/color/image_raw", M.image(frame.rgb, "rgb8", h), s)
            write("/camera/depth/image_raw", M.image(frame.depth_mm, "16UC1", h), s)
            if frame.thermal_ck is not None:
                write("/camera/thermal/image_raw", M.image(frame.thermal_ck, "16UC1", h), s)
            if frame.cloud_xyz is not None:
                write("/points", M.cloud(frame.cloud_xyz, frame.cloud_rgb, h), s)
                gt["cloud_labels"].append(frame.gt["cloud_labels"])
                gt["cloud_frame"].append(np.full(len(frame.gt["cloud_labels"]), frame.index, np.int64))
            gt["stamp_ns"].append(s)
            gt["index"].append(frame.index)
            gt["semantic"].append(frame.gt["semantic"])
            gt["instance"].append(frame.gt["instance"])
            gt["T_odom_base"].append(frame.T_odom_base)
            gt["T_odom_camera"].append(frame.gt["T_odom_camera"])
            b = frame.gt["boxes"]
            gt["boxes"].append(np.hstack([np.full((len(b), 1), frame.index, np.float32), b]))
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    shutil.rmtree(tmp.parent, ignore_errors=True)
    arrays = {
        "stamp_ns": np.array(gt["stamp_ns"], np.int64), "index": np.array(gt["index"], np.int64),
        "semantic": np.stack(gt["semantic"]), "instance": np.stack(gt["instance"]),
        "T_odom_base": np.stack(gt["T_odom_base"]), "T_odom_camera": np.stack(gt["T_odom_camera"]),
        "boxes": np.concatenate(gt["boxes"]) if gt["boxes"] else np.zeros((0, 7), np.float32),
        "cloud_labels": np.concatenate(gt["cloud_labels"]) if gt["cloud_labels"] else np.zeros(0, np.uint8),
        "cloud_frame": np.concatenate(gt["cloud_frame"]) if gt["cloud_frame"] else np.zeros(0, np.int64),
        "T_base_camera": sim.T_base_camera, "K": sim.intrinsics.K, "classes": np.array(CLASSES),
    }

    def save(tmp_path: str) -> None:
        with open(tmp_path, "wb") as f:
            np.savez_compressed(f, **arrays)
    atomic_write(gt_path(out), save)
    return {"bag": str(out), "ground_truth": str(gt_path(out)), "frames": frames, "counts": counts}
