"""Message <-> numpy conversions: with `cdr` (the wire format on the perception nodes' serving
path), the one place besides the nodes that knows message layouts.

Images (sensor_msgs/Image, CompressedImage), point clouds (PointCloud2 <-> structured numpy),
CameraInfo <-> geometry.Intrinsics, Imu <-> (6,) arrays, Odometry <-> 4x4 poses, stamps and
headers, plus the graph's QoS profiles (re-exported from tst_ros.ros.qos).

Reading is zero-copy where the layout allows: `image_to_array` and `cloud_to_array` return
numpy views onto `msg.data` (rclpy stores uint8[] fields as array.array, a writable buffer),
so writing into the result writes into the message. Functions documented as returning a
new array always copy. Every malformed message raises ValueError naming what is wrong.

`cv_bridge` and `sensor_msgs_py` are used for reading when they are importable and the
layout is one they handle identically; the numpy implementation below is used otherwise.
"""
from __future__ import annotations

import array
import re
import sys

import cv2
import numpy as np
from builtin_interfaces.msg import Time
from geometry_msgs.msg import Transform
from nav_msgs.msg import Odometry
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, Imu, PointCloud2, PointField
from std_msgs.msg import Header

from tst_ros.geometry import Intrinsics, matrix_to_pose, pose_matrix
from tst_ros.ros.qos import qos_latched, qos_profile, qos_sensor  # noqa: F401  (part of this API)

try:
    from cv_bridge import CvBridge
    _BRIDGE = CvBridge()
except ImportError:
    _BRIDGE = None
try:
    from sensor_msgs_py import point_cloud2 as _pc2
except ImportError:
    _pc2 = None

NS_PER_S = 1_000_000_000
_HOST_BIG_ENDIAN = sys.byteorder == "big"

# ---------------------------------------------------------------- stamps and headers


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


def _byte_buffer(data):
    """A flat uint8 buffer over a message's data field without copying it."""
    try:
        return memoryview(data).cast("B")
    except TypeError:
        return np.asarray(data, dtype=np.uint8)


def _to_msg_bytes(arr: np.ndarray) -> array.array:
    """Contiguous array -> array.array('B'), the type rclpy keeps uint8[] fields in (one memcpy)."""
    out = array.array("B")
    out.frombytes(np.ascontiguousarray(arr).reshape(-1).view(np.uint8))
    return out

# ---------------------------------------------------------------- images

_NAMED_ENCODINGS = {
    "rgb8": ("u1", 3), "bgr8": ("u1", 3), "rgba8": ("u1", 4), "bgra8": ("u1", 4),
    "mono8": ("u1", 1), "mono16": ("u2", 1),
}
_CV_DEPTHS = {"8U": "u1", "8S": "i1", "16U": "u2", "16S": "i2", "32S": "i4", "32F": "f4", "64F": "f8"}
_CV_TYPE = re.compile(r"^(8U|8S|16U|16S|32S|32F|64F)C([1-4])$")
_RGB_SOURCES = ("rgb8", "bgr8", "rgba8", "bgra8", "mono8")
_DEPTH_MM = ("16UC1", "mono16")


def image_layout(encoding: str) -> tuple[np.dtype, int]:
    """Encoding -> (native channel dtype, channels); ValueError naming an unknown encoding."""
    if encoding in _NAMED_ENCODINGS:
        code, channels = _NAMED_ENCODINGS[encoding]
        return np.dtype(code), channels
    m = _CV_TYPE.match(encoding)
    if m is None:
        raise ValueError(f"unsupported image encoding {encoding!r}; supported: "
                         f"{', '.join(_NAMED_ENCODINGS)} and OpenCV types like 16UC1, 32FC1, 8UC3")
    return np.dtype(_CV_DEPTHS[m.group(1)]), int(m.group(2))


def image_to_array(msg: Image) -> np.ndarray:
    """(H, W) or (H, W, C) array in the encoding's own channel order and dtype.

    A view onto msg.data when the message is little-endian (row padding from `step` is
    skipped through strides); big-endian data is byte-swapped into a new native array.
    """
    base, channels = image_layout(msg.encoding)
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    pixel_bytes = base.itemsize * channels
    if step < w * pixel_bytes:
        raise ValueError(f"image step {step} is smaller than width * bytes per pixel = {w} * {pixel_bytes} "
                         f"= {w * pixel_bytes} for encoding {msg.encoding!r}")
    buf = _byte_buffer(msg.data)
    if buf.nbytes != step * h:
        raise ValueError(f"image data length {buf.nbytes} does not match step * height = {step} * {h} = {step * h}")
    if _BRIDGE is not None and step % pixel_bytes == 0:
        return _BRIDGE.imgmsg_to_cv2(msg, desired_encoding="passthrough")
    shape, strides = (h, w), (step, pixel_bytes)
    if channels > 1:
        shape, strides = shape + (channels,), strides + (base.itemsize,)
    if h * w == 0:
        return np.zeros(shape, base)
    arr = np.ndarray(shape, base.newbyteorder(">" if msg.is_bigendian else "<"), buffer=buf, strides=strides)
    return arr if arr.dtype.isnative else arr.astype(base)


def image_to_rgb(msg: Image) -> np.ndarray:
    """(H, W, 3) uint8 RGB: a view for rgb8, a new contiguous array for the other encodings."""
    if msg.encoding not in _RGB_SOURCES:
        raise ValueError(f"cannot convert image encoding {msg.encoding!r} to RGB; expected one of {_RGB_SOURCES}")
    arr = image_to_array(msg)
    if msg.encoding == "rgb8":
        return arr
    if msg.encoding == "rgba8":
        return np.ascontiguousarray(arr[..., :3])
    code = {"bgr8": cv2.COLOR_BGR2RGB, "bgra8": cv2.COLOR_BGRA2RGB, "mono8": cv2.COLOR_GRAY2RGB}[msg.encoding]
    return cv2.cvtColor(np.ascontiguousarray(arr), code)


def depth_to_metres(msg: Image) -> np.ndarray:
    """New (H, W) float32 depth in metres, NaN where invalid (16UC1/mono16 mm with 0 invalid, or 32FC1 m)."""
    if msg.encoding in _DEPTH_MM:
        mm = image_to_array(msg)
        out = mm.astype(np.float32)
        out *= np.float32(0.001)
        out[mm == 0] = np.nan
        return out
    if msg.encoding == "32FC1":
        out = np.array(image_to_array(msg), dtype=np.float32, copy=True)
        out[~(out > 0) | ~np.isfinite(out)] = np.nan
        return out
    raise ValueError(f"unsupported depth encoding {msg.encoding!r}; expected 16UC1 or mono16 (mm) or 32FC1 (m)")


def fit_image_array(arr: np.ndarray, encoding: str) -> tuple[np.ndarray, int]:
    """Check an (H, W) or (H, W, C) array against `encoding` -> (C-contiguous array in the
    encoding's native dtype, row step in bytes); ValueError when shape or dtype do not fit."""
    base, channels = image_layout(encoding)
    arr = np.asarray(arr)
    if arr.ndim == 3 and channels == 1 and arr.shape[2] == 1:
        arr = arr[..., 0]
    fits = (arr.ndim == 2 and channels == 1) or (arr.ndim == 3 and arr.shape[2] == channels)
    if not fits:
        raise ValueError(f"array of shape {arr.shape} does not fit encoding {encoding!r} ({channels} channel(s))")
    if arr.dtype.newbyteorder("=") != base:
        raise ValueError(f"array dtype {arr.dtype} does not match encoding {encoding!r} (expects {base})")
    return np.ascontiguousarray(arr.astype(base, copy=False)), arr.shape[1] * channels * base.itemsize


def array_to_image(arr: np.ndarray, encoding: str, header: Header | None = None) -> Image:
    """(H, W) or (H, W, C) array -> Image; dtype and channel count must match the encoding."""
    arr, step = fit_image_array(arr, encoding)
    msg = Image(height=arr.shape[0], width=arr.shape[1], encoding=encoding, is_bigendian=int(_HOST_BIG_ENDIAN),
                step=step)
    if header is not None:
        msg.header = header
    msg.data = _to_msg_bytes(arr)
    return msg


def compressed_to_rgb(msg: CompressedImage) -> np.ndarray:
    """New (H, W, 3) uint8 RGB decoded from a jpeg or png CompressedImage."""
    if "compresseddepth" in msg.format.lower():
        raise ValueError(f"compressed image format {msg.format!r} is a depth format, not colour")
    buf = np.frombuffer(_byte_buffer(msg.data), dtype=np.uint8)
    if buf.size == 0:
        raise ValueError("compressed image has no data")
    bgr = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError(f"could not decode compressed image (format {msg.format!r}, {buf.size} bytes)")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def rgb_to_compressed(arr: np.ndarray, fmt: str = "jpeg", header: Header | None = None,
                      jpeg_quality: int = 90) -> CompressedImage:
    """(H, W, 3) uint8 RGB -> CompressedImage (format string as image_transport writes it)."""
    ext = {"jpeg": ".jpg", "jpg": ".jpg", "png": ".png"}.get(fmt.lower())
    if ext is None:
        raise ValueError(f"unsupported compression format {fmt!r}; expected 'jpeg' or 'png'")
    arr = np.asarray(arr)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"rgb_to_compressed needs an (H, W, 3) uint8 array, got {arr.shape} {arr.dtype}")
    params = [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)] if ext == ".jpg" else []
    ok, encoded = cv2.imencode(ext, cv2.cvtColor(arr, cv2.COLOR_RGB2BGR), params)
    if not ok:
        raise ValueError(f"OpenCV could not encode a {arr.shape} image as {fmt}")
    name = "jpeg" if ext == ".jpg" else "png"
    msg = CompressedImage(format=f"rgb8; {name} compressed bgr8")
    if header is not None:
        msg.header = header
    msg.data = _to_msg_bytes(encoded)
    return msg

# ---------------------------------------------------------------- point clouds

_FIELD_DTYPES = {PointField.INT8: "i1", PointField.UINT8: "u1", PointField.INT16: "i2", PointField.UINT16: "u2",
                 PointField.INT32: "i4", PointField.UINT32: "u4", PointField.FLOAT32: "f4",
                 PointField.FLOAT64: "f8"}
_DTYPE_FIELDS = {np.dtype(code): datatype for datatype, code in _FIELD_DTYPES.items()}


def cloud_dtype(fields, point_step: int) -> np.dtype:
    """Structured little-endian dtype of one point (itemsize = point_step, padding kept)."""
    names, formats, offsets = [], [], []
    for f in fields:
        if f.datatype not in _FIELD_DTYPES:
            raise ValueError(f"point field {f.name!r} has unknown PointField datatype {f.datatype}")
        if not f.name:
            raise ValueError("point field with an empty name")
        if f.name in names:
            raise ValueError(f"point field {f.name!r} appears twice")
        base = np.dtype("<" + _FIELD_DTYPES[f.datatype])
        count = max(int(f.count), 1)
        end = int(f.offset) + base.itemsize * count
        if end > point_step:
            raise ValueError(f"point field {f.name!r} (offset {f.offset}, {base.itemsize * count} bytes) "
                             f"extends past point_step {point_step}")
        names.append(f.name)
        formats.append(base if count == 1 else (base, (count,)))
        offsets.append(int(f.offset))
    return np.dtype({"names": names, "formats": formats, "offsets": offsets, "itemsize": int(point_step)})


def _check_cloud(msg: PointCloud2) -> None:
    if msg.is_bigendian:
        raise ValueError("big-endian point clouds (is_bigendian=True) are not supported; "
                         "publish little-endian data")
    h, w, point_step, row_step = int(msg.height), int(msg.width), int(msg.point_step), int(msg.row_step)
    if h * w > 0 and point_step <= 0:
        raise ValueError(f"point cloud has {h * w} points but point_step {point_step}")
    if row_step < w * point_step:
        raise ValueError(f"point cloud row_step {row_step} is smaller than width * point_step = "
                         f"{w} * {point_step} = {w * point_step}")
    n = _byte_buffer(msg.data).nbytes
    if n != row_step * h:
        raise ValueError(f"point cloud data length {n} does not match row_step * height = "
                         f"{row_step} * {h} = {row_step * h}")


def cloud_to_array(msg: PointCloud2) -> np.ndarray:
    """Structured array (N,) for unorganized clouds (height 1) or (H, W) for organized ones.

    A view onto msg.data (point and row padding skipped through strides).
    """
    _check_cloud(msg)
    dtype = cloud_dtype(msg.fields, int(msg.point_step))
    h, w, row_step = int(msg.height), int(msg.width), int(msg.row_step)
    shape, strides = ((w,), (dtype.itemsize,)) if h <= 1 else ((h, w), (row_step, dtype.itemsize))
    if h * w == 0:
        return np.zeros(shape if h <= 1 else (h, w), dtype)
    if _pc2 is not None and row_step == w * dtype.itemsize and all(f.count <= 1 for f in msg.fields):
        return np.asarray(_pc2.read_points(msg)).reshape(shape)
    return np.ndarray(shape, dtype, buffer=_byte_buffer(msg.data), strides=strides)


def _field_names(arr: np.ndarray) -> str:
    return ", ".join(arr.dtype.names) or "none"


def cloud_field(msg: PointCloud2, name: str) -> np.ndarray:
    """New contiguous (N,) array of one field (N = H*W for organized clouds, row-major)."""
    arr = cloud_to_array(msg)
    if name not in arr.dtype.names:
        raise ValueError(f"point cloud has no field {name!r} (fields: {_field_names(arr)})")
    return np.ascontiguousarray(arr[name].reshape((arr.size,) + arr.dtype[name].shape))


def cloud_xyz(msg: PointCloud2) -> np.ndarray:
    """New (N, 3) float32 array of x, y, z (NaN rows kept; the caller filters)."""
    arr = cloud_to_array(msg)
    missing = [c for c in "xyz" if c not in arr.dtype.names]
    if missing:
        raise ValueError(f"point cloud has no {'/'.join(missing)} field(s) (fields: {_field_names(arr)}); "
                         "cannot read xyz")
    f32 = np.dtype("<f4")
    x_off = arr.dtype.fields["x"][1]
    packed = all(arr.dtype.fields[c][0] == f32 and arr.dtype.fields[c][1] == x_off + 4 * i
                 for i, c in enumerate("xyz"))
    tight = int(msg.height) <= 1 or int(msg.row_step) == int(msg.width) * arr.dtype.itemsize
    if packed and tight and arr.size and x_off == 0 and arr.dtype.itemsize == 16:
        # x y z + one 4-byte field (padding or rgb): drop the 4th float channel in one pass.
        quads = np.ndarray((1, arr.size, 4), f32, buffer=_byte_buffer(msg.data))
        return cv2.cvtColor(quads, cv2.COLOR_BGRA2BGR).reshape(arr.size, 3)
    out = np.empty((arr.size, 3), np.float32)
    for i, c in enumerate("xyz"):
        out[:, i] = arr[c].reshape(-1)
    return out


def cloud_rgb(msg: PointCloud2) -> np.ndarray:
    """New (N, 3) uint8 RGB unpacked from a packed 4-byte `rgb` or `rgba` field (0x00RRGGBB)."""
    arr = cloud_to_array(msg)
    name = next((n for n in ("rgb", "rgba") if n in arr.dtype.names), None)
    if name is None or arr.dtype[name].itemsize != 4:
        raise ValueError(f"point cloud has no packed 4-byte rgb/rgba field (fields: {_field_names(arr)})")
    packed = np.ascontiguousarray(arr[name].reshape(-1)).view(np.uint8).reshape(1, -1, 4)
    if packed.shape[1] == 0:
        return np.zeros((0, 3), np.uint8)
    return cv2.cvtColor(packed, cv2.COLOR_BGRA2RGB).reshape(-1, 3)  # little-endian bytes: b, g, r, _


def array_to_cloud(points: np.ndarray, header: Header | None = None, is_dense: bool | None = None) -> PointCloud2:
    """Structured array (N,) or organized (H, W) -> PointCloud2 keeping field offsets and padding.

    is_dense defaults to "x, y, z (when present) are all finite".
    """
    points = np.asarray(points)
    if points.dtype.names is None:
        raise ValueError(f"array_to_cloud needs a structured array with named fields, got dtype {points.dtype}")
    if points.ndim not in (1, 2):
        raise ValueError(f"array_to_cloud needs shape (N,) or (H, W), got {points.shape}")
    fields, little = [], {"names": [], "formats": [], "offsets": [], "itemsize": points.dtype.itemsize}
    for name in points.dtype.names:
        fdt, offset = points.dtype.fields[name][:2]
        base = fdt.base
        datatype = _DTYPE_FIELDS.get(base.newbyteorder("<")) if base.names is None else None
        if datatype is None:
            raise ValueError(f"field {name!r} has dtype {fdt} which a PointField cannot hold "
                             "(int8/16/32, uint8/16/32, float32/64 scalars or fixed-size arrays)")
        count = int(np.prod(fdt.shape)) if fdt.shape else 1
        fields.append(PointField(name=name, offset=int(offset), datatype=datatype, count=count))
        little["names"].append(name)
        little["formats"].append(base.newbyteorder("<") if count == 1 else (base.newbyteorder("<"), fdt.shape))
        little["offsets"].append(int(offset))
    points = points.astype(np.dtype(little), copy=False)
    h, w = (1, points.shape[0]) if points.ndim == 1 else points.shape
    if is_dense is None:
        is_dense = not all(c in points.dtype.names for c in "xyz") or bool(
            all(np.isfinite(points[c]).all() for c in "xyz"))
    msg = PointCloud2(height=h, width=w, fields=sorted(fields, key=lambda f: f.offset), is_bigendian=False,
                      point_step=points.dtype.itemsize, row_step=points.dtype.itemsize * w, is_dense=bool(is_dense))
    if header is not None:
        msg.header = header
    msg.data = _to_msg_bytes(points)
    return msg


def make_xyz_rgb_cloud(xyz: np.ndarray, rgb: np.ndarray | None = None, header: Header | None = None,
                       extra: dict[str, np.ndarray] | None = None, is_dense: bool | None = None) -> PointCloud2:
    """Unorganized cloud with float32 x, y, z, an optional packed `rgb` (FLOAT32, 0x00RRGGBB as
    PCL and RViz expect) and extra per-point fields (e.g. label uint32, confidence float32)."""
    xyz = np.asarray(xyz)
    if xyz.ndim != 2 or xyz.shape[1] != 3:
        raise ValueError(f"xyz must have shape (N, 3), got {xyz.shape}")
    n = xyz.shape[0]
    columns = [("x", "<f4"), ("y", "<f4"), ("z", "<f4")]
    if rgb is not None:
        rgb = np.asarray(rgb)
        if rgb.shape != (n, 3) or rgb.dtype != np.uint8:
            raise ValueError(f"rgb must be ({n}, 3) uint8, got {rgb.shape} {rgb.dtype}")
        columns.append(("rgb", "<u4"))
    extra = {name: np.asarray(v) for name, v in (extra or {}).items()}
    for name, values in extra.items():
        if values.shape != (n,):
            raise ValueError(f"extra field {name!r} must have shape ({n},), got {values.shape}")
        columns.append((name, values.dtype.newbyteorder("<")))
    points = np.empty(n, np.dtype(columns))
    for i, c in enumerate("xyz"):
        points[c] = xyz[:, i]
    if rgb is not None and n:
        bgra = cv2.cvtColor(np.ascontiguousarray(rgb).reshape(1, n, 3), cv2.COLOR_RGB2BGRA).reshape(n, 4)
        bgra[:, 3] = 0
        points["rgb"] = bgra.view("<u4").reshape(n)  # 0x00RRGGBB
    for name, values in extra.items():
        points[name] = values
    msg = array_to_cloud(points, header, is_dense)
    for f in msg.fields:
        if f.name == "rgb":
            f.datatype = PointField.FLOAT32
    return msg

# ---------------------------------------------------------------- camera info, IMU, odometry


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
