"""`tst-ros bench convert`: cost of turning sensor messages into numpy arrays.

Every conversion is timed against `numpy.frombuffer(msg.data).copy()` of the same message
(the cost of touching the bytes once), interleaved call by call in the same run; figures are
medians of single-call times. Targets: image and cloud ratios <= 3.
"""
from __future__ import annotations

import time

import numpy as np

TARGET_RATIO = 3.0


def _median_us(fn, baseline, reps: int) -> tuple[float, float]:
    """Median single-call times (us) of fn and baseline, measured alternately."""
    fn(), baseline()
    t_fn, t_base = np.empty(reps), np.empty(reps)
    clock = time.perf_counter_ns
    for i in range(reps):
        t0 = clock()
        baseline()
        t1 = clock()
        fn()
        t2 = clock()
        t_base[i], t_fn[i] = t1 - t0, t2 - t1
    return float(np.median(t_fn)) / 1e3, float(np.median(t_base)) / 1e3


def _messages():
    from tst_ros.ros.clouds import make_xyz_rgb_cloud
    from tst_ros.ros.conversions import make_header
    from tst_ros.ros.images import array_to_image

    rng = np.random.default_rng(0)
    header = make_header(1_000_000_000, "camera_color_optical_frame")
    rgb = rng.integers(0, 256, size=(480, 640, 3), dtype=np.uint8)
    depth = rng.integers(0, 10_000, size=(480, 640), dtype=np.uint16)
    xyz = rng.normal(size=(100_000, 3)).astype(np.float32)
    colours = rng.integers(0, 256, size=(100_000, 3), dtype=np.uint8)
    return {
        "rgb": rgb, "xyz": xyz, "colours": colours, "depth": depth, "header": header,
        "image": array_to_image(rgb, "rgb8", header),
        "image_bgr8": array_to_image(np.ascontiguousarray(rgb[..., ::-1]), "bgr8", header),
        "depth_msg": array_to_image(depth, "16UC1", header),
        "cloud": make_xyz_rgb_cloud(xyz, colours, header),
    }


def run(quick: bool = False) -> dict:
    from tst_ros.ros.clouds import cloud_rgb, cloud_to_array, cloud_xyz, make_xyz_rgb_cloud
    from tst_ros.ros.images import array_to_image, depth_to_metres, image_to_rgb

    m = _messages()
    reps = 300 if quick else 3000

    def baseline_of(msg):
        return lambda: np.frombuffer(msg.data, dtype=np.uint8).copy()

    cases = {
        "image": (lambda: image_to_rgb(m["image"]), m["image"]),
        "image_owned": (lambda: image_to_rgb(m["image"]).copy(), m["image"]),
        "image_bgr8": (lambda: image_to_rgb(m["image_bgr8"]), m["image_bgr8"]),
        "depth": (lambda: depth_to_metres(m["depth_msg"]), m["depth_msg"]),
        "cloud": (lambda: cloud_xyz(m["cloud"]), m["cloud"]),
        "cloud_view": (lambda: cloud_to_array(m["cloud"]), m["cloud"]),
        "cloud_xyz_rgb": (lambda: (cloud_xyz(m["cloud"]), cloud_rgb(m["cloud"])), m["cloud"]),
        "publish_image": (lambda: array_to_image(m["rgb"], "rgb8", m["header"]), m["image"]),
        "publish_cloud": (lambda: make_xyz_rgb_cloud(m["xyz"], m["colours"], m["header"]), m["cloud"]),
    }
    out: dict = {"repetitions": reps, "image.bytes": len(m["image"].data), "cloud.points": m["cloud"].width,
                 "cloud.bytes": len(m["cloud"].data)}
    for name, (fn, msg) in cases.items():
        t_fn, t_base = _median_us(fn, baseline_of(msg), reps)
        out[f"{name}.convert_us"] = round(t_fn, 1)
        out[f"{name}.frombuffer_copy_us"] = round(t_base, 1)
        out[f"{name}.ratio"] = round(t_fn / t_base, 3)
    for name in ("image", "cloud"):
        out[f"{name}.target_ratio"] = TARGET_RATIO
        out[f"{name}.meets_target"] = out[f"{name}.ratio"] <= TARGET_RATIO
    out["meets_target"] = out["image.meets_target"] and out["cloud.meets_target"]
    out["notes"] = ("image: image_to_rgb on rgb8 (zero-copy view); image_owned: same plus a copy; "
                    "cloud: cloud_xyz to a new (N,3) float32 array; cloud_view: cloud_to_array structured view; "
                    "publish_*: array -> message")
    return out
