"""sensor_msgs/PointCloud2 <-> structured numpy: field layouts, xyz and packed-rgb reading,
and building clouds (with PCL/RViz-style packed colour) from arrays.

`cloud_to_array` returns a view onto `msg.data` (point and row padding skipped through
strides); functions documented as returning a new array always copy. Every malformed
message raises ValueError naming what is wrong. `sensor_msgs_py` reads the layouts it
handles identically when it is importable.
"""
from __future__ import annotations

import cv2
import numpy as np
from sensor_msgs.msg import PointCloud2, PointField
from std_msgs.msg import Header

from tst_ros.ros.conversions import byte_buffer, to_msg_bytes

try:
    from sensor_msgs_py import point_cloud2 as _pc2
except ImportError:
    _pc2 = None

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
    n = byte_buffer(msg.data).nbytes
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
    return np.ndarray(shape, dtype, buffer=byte_buffer(msg.data), strides=strides)


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
        quads = np.ndarray((1, arr.size, 4), f32, buffer=byte_buffer(msg.data))
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
    msg.data = to_msg_bytes(points)
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
