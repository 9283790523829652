"""sensor_msgs/Image and CompressedImage <-> numpy: encodings, reading colour and the
one-channel camera images (depth, thermal) in the modality registry's physical units, and
building messages from arrays (`cdr` shares `fit_image_array` for the serving path).

`image_to_array` returns a view onto `msg.data` (rclpy stores uint8[] fields as array.array,
a writable buffer), so writing into the result writes into the message; functions documented
as returning a new array always copy. Every malformed message raises ValueError naming what
is wrong. `cv_bridge` reads the layouts it handles identically when it is importable.
"""
from __future__ import annotations

import re
import sys

import cv2
import numpy as np
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from tst_ros import modalities as registry
from tst_ros.ros.conversions import byte_buffer, to_msg_bytes

try:
    from cv_bridge import CvBridge
    _BRIDGE = CvBridge()
except ImportError:
    _BRIDGE = None

_HOST_BIG_ENDIAN = sys.byteorder == "big"

_NAMED_ENCODINGS = {
    "rgb8": ("u1", 3), "bgr8": ("u1", 3), "rgba8": ("u1", 4), "bgra8": ("u1", 4),
    "mono8": ("u1", 1), "mono16": ("u2", 1),
}
_CV_DEPTHS = {"8U": "u1", "8S": "i1", "16U": "u2", "16S": "i2", "32S": "i4", "32F": "f4", "64F": "f8"}
_CV_TYPE = re.compile(r"^(8U|8S|16U|16S|32S|32F|64F)C([1-4])$")
_RGB_SOURCES = registry.primary_image().encodings


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
    buf = byte_buffer(msg.data)
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


def camera_image_to_physical(msg: Image, modality) -> np.ndarray:
    """New (H, W) float32 one-channel camera image in the registry modality's physical units
    (depth metres, thermal kelvin), NaN where invalid: an integer encoding carries the stored
    value (times `modality.scale`, `invalid_value` invalid), a float one the physical value
    (non-finite or <= 0 invalid). ValueError for an encoding the modality does not list."""
    if msg.encoding not in modality.encodings:
        raise ValueError(f"unsupported {modality.name} encoding {msg.encoding!r}; expected one of {modality.encodings}")
    arr = image_to_array(msg)
    if arr.ndim != 2:
        raise ValueError(f"{modality.name} image must have one channel, got encoding {msg.encoding!r}")
    if arr.dtype.kind in "ui":
        return registry.physical(modality.name, arr)
    out = np.array(arr, dtype=np.float32, copy=True)
    out[~(out > 0) | ~np.isfinite(out)] = np.nan
    return out


def depth_to_metres(msg: Image) -> np.ndarray:
    """New (H, W) float32 depth in metres, NaN where invalid (16UC1/mono16 mm with 0 invalid, or 32FC1 m)."""
    return camera_image_to_physical(msg, registry.get(registry.DEPTH_IMAGE))


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
    msg.data = to_msg_bytes(arr)
    return msg


def compressed_to_rgb(msg: CompressedImage) -> np.ndarray:
    """New (H, W, 3) uint8 RGB decoded from a jpeg or png CompressedImage."""
    if "compresseddepth" in msg.format.lower():
        raise ValueError(f"compressed image format {msg.format!r} is a depth format, not colour")
    buf = np.frombuffer(byte_buffer(msg.data), dtype=np.uint8)
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
    msg.data = to_msg_bytes(encoded)
    return msg
