"""Message <-> numpy conversions shared by every node: stamps and headers, the byte buffers of
uint8[] message fields, CameraInfo <-> geometry.Intrinsics, Imu <-> (6,) arrays, Odometry and
Transform <-> 4x4 poses. Images live in `images`, point clouds in `clouds`; with `cdr` (the
perception nodes' serving path) these modules are the one place besides the nodes that knows
message layouts. Every malformed message raises ValueError naming what is wrong.
"""
from __future__ import annotations

import array

import numpy as np
from builtin_interfaces.msg import Time
from geometry_msgs.msg import Transform
from nav_msgs.msg import Odometry
from sensor_msgs.msg import CameraInfo, Imu
from std_msgs.msg import Header

from tst_ros.geometry import Intrinsics, matrix_to_pose, pose_matrix

NS_PER_S = 1_000_000_000

# ---------------------------------------------------------------- stamps, headers, byte fields


def stamp_to_ns(stamp) -> int:
    """builtin_interfaces/Time -> integer nanoseconds."""
    return int(stamp.sec) * NS_PER_S + int(stamp.nanosec)


def ns_to_stamp(ns: int) -> Time:
    ns = int(ns)
    if ns < 0:
        raise ValueError(f"cannot represent a negative stamp ({ns} ns) as builtin_interfaces/Time")
    return Time(sec=ns // NS_PER_S, nanosec=ns % NS_PER_S)


def make_header(stamp_ns: int, frame_id: str) -> Header:
    return Header(stamp=ns_to_stamp(stamp_ns), frame_id=frame_id)


def byte_buffer(data):
    """A flat uint8 buffer over a message's data field without copying it."""
    try:
        return memoryview(data).cast("B")
    except TypeError:
        return np.asarray(data, dtype=np.uint8)


def to_msg_bytes(arr: np.ndarray) -> array.array:
    """Contiguous array -> array.array('B'), the type rclpy keeps uint8[] fields in (one memcpy)."""
    out = array.array("B")
    out.frombytes(np.ascontiguousarray(arr).reshape(-1).view(np.uint8))
    return out

# ---------------------------------------------------------------- camera info, IMU, odometry, transforms


def camera_info_to_intrinsics(msg: CameraInfo) -> Intrinsics:
    k = np.asarray(msg.k, dtype=np.float64).reshape(-1)
    if k.size != 9 or not (k[0] > 0 and k[4] > 0):
        raise ValueError(f"camera_info K has no positive focal length (K={k.tolist()}); is the camera calibrated?")
    if msg.width <= 0 or msg.height <= 0:
        raise ValueError(f"camera_info has no image size ({msg.width}x{msg.height})")
    return Intrinsics.from_matrix(k, msg.width, msg.height)


def intrinsics_to_camera_info(intr: Intrinsics, header: Header | None = None) -> CameraInfo:
    """Pinhole CameraInfo without distortion (plumb_bob with zero coefficients)."""
    msg = CameraInfo(width=int(intr.width), height=int(intr.height), distortion_model="plumb_bob")
    if header is not None:
        msg.header = header
    msg.d = [0.0] * 5
    msg.k = intr.K.reshape(-1)
    msg.r = np.eye(3).reshape(-1)
    msg.p = np.hstack([intr.K, np.zeros((3, 1))]).reshape(-1)
    return msg


def imu_to_array(msg: Imu) -> np.ndarray:
    """(6,) float64 [ax ay az gx gy gz] (m/s^2, rad/s)."""
    a, g = msg.linear_acceleration, msg.angular_velocity
    return np.array([a.x, a.y, a.z, g.x, g.y, g.z], dtype=np.float64)


def array_to_imu(vec6, header: Header | None = None, orientation_wxyz=None) -> Imu:
    """(6,) [ax ay az gx gy gz] -> Imu; without an orientation, orientation_covariance[0] = -1
    marks it as unknown (REP 145)."""
    v = np.asarray(vec6, dtype=np.float64).reshape(-1)
    if v.size != 6:
        raise ValueError(f"IMU vector must have 6 values [ax ay az gx gy gz], got {v.size}")
    msg = Imu()
    if header is not None:
        msg.header = header
    a, g = msg.linear_acceleration, msg.angular_velocity
    a.x, a.y, a.z, g.x, g.y, g.z = (float(x) for x in v)
    if orientation_wxyz is None:
        msg.orientation_covariance[0] = -1.0
    else:
        q = msg.orientation
        q.w, q.x, q.y, q.z = (float(x) for x in orientation_wxyz)
    return msg


def odometry_to_matrix(msg: Odometry) -> np.ndarray:
    """Odometry pose -> 4x4 float64 T_<header.frame_id>_<child_frame_id>."""
    p, q = msg.pose.pose.position, msg.pose.pose.orientation
    quat = np.array([q.w, q.x, q.y, q.z], dtype=np.float64)
    norm = np.linalg.norm(quat)
    if not norm > 1e-9:
        raise ValueError("odometry orientation quaternion has zero length")
    return pose_matrix((p.x, p.y, p.z), quat / norm)


def matrix_to_odometry(T: np.ndarray, header: Header | None = None, child_frame_id: str = "base_link",
                       twist6=None) -> Odometry:
    """4x4 pose (+ optional body twist [vx vy vz wx wy wz]) -> Odometry."""
    T = np.asarray(T, dtype=np.float64)
    if T.shape != (4, 4):
        raise ValueError(f"pose must be a 4x4 matrix, got shape {T.shape}")
    t, q = matrix_to_pose(T)
    msg = Odometry(child_frame_id=child_frame_id)
    if header is not None:
        msg.header = header
    pose = msg.pose.pose
    pose.position.x, pose.position.y, pose.position.z = (float(x) for x in t)
    pose.orientation.w, pose.orientation.x, pose.orientation.y, pose.orientation.z = (float(x) for x in q)
    if twist6 is not None:
        v = np.asarray(twist6, dtype=np.float64).reshape(6)
        lin, ang = msg.twist.twist.linear, msg.twist.twist.angular
        lin.x, lin.y, lin.z, ang.x, ang.y, ang.z = (float(x) for x in v)
    return msg


def transform_to_matrix(transform) -> np.ndarray:
    """geometry_msgs/Transform -> 4x4 float64."""
    t, q = transform.translation, transform.rotation
    quat = np.array([q.w, q.x, q.y, q.z], dtype=np.float64)
    norm = np.linalg.norm(quat)
    if not norm > 1e-9:
        raise ValueError("transform rotation quaternion has zero length")
    return pose_matrix((t.x, t.y, t.z), quat / norm)


def matrix_to_transform(T: np.ndarray) -> Transform:
    T = np.asarray(T, dtype=np.float64)
    if T.shape != (4, 4):
        raise ValueError(f"pose must be a 4x4 matrix, got shape {T.shape}")
    t, q = matrix_to_pose(T)
    msg = Transform()
    msg.translation.x, msg.translation.y, msg.translation.z = (float(x) for x in t)
    msg.rotation.w, msg.rotation.x, msg.rotation.y, msg.rotation.z = (float(x) for x in q)
    return msg
