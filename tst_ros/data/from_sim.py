"""Simulator frames -> dataset store through the recording pipeline (no ROS needed).

The frames go through exactly the sync/derive/store code the recorder node uses; only
the decoder differs (arrays instead of messages). Ground truth (semantic, instance) is
stored as side channels, which only offline simulator tools do.
"""
from __future__ import annotations

from pathlib import Path

from tqdm import tqdm

from tst_ros.config import RecordConfig, SimConfig
from tst_ros.data.decoders import ArrayDecoder
from tst_ros.data.pipeline import RecordingPipeline, open_store


def push_frame(pipeline: RecordingPipeline, frame, intrinsics, ground_truth: bool = True) -> int:
    """Push one simulator `Frame` as the sensor streams would deliver it; returns samples written."""
    t = int(frame.stamp_ns)
    pipeline.push("camera_info", t, intrinsics)
    for stamp, sample in zip(frame.imu_stamps_ns, frame.imu):
        pipeline.push("imu", int(stamp), sample)
    pipeline.push("odom", t, frame.T_odom_base)
    pipeline.push("depth", t, frame.depth_mm)
    if frame.thermal_ck is not None:
        pipeline.push("thermal", t, frame.thermal_ck)
    if frame.cloud_xyz is not None:
        pipeline.push("cloud", t, (frame.cloud_xyz, frame.cloud_rgb))
    gt = {k: frame.gt.get(k) for k in ("semantic", "instance")} if ground_truth else None
    return pipeline.push("rgb", t, {"rgb": frame.rgb, "gt": gt})


def build_dataset(sim_cfg: SimConfig | None, record_cfg: RecordConfig | None, frames: int, out: str | Path,
                  *, start: int = 0, ground_truth: bool = True, progress: bool = False) -> dict:
    """Write `frames` simulator frames into the store at `out`; returns the store's info()."""
    from tst_ros.sim import Simulator

    sim_cfg = sim_cfg or SimConfig()
    record_cfg = record_cfg or RecordConfig()
    if frames <= 0:
        raise ValueError(f"frames must be > 0, got {frames}")
    sim = Simulator(sim_cfg)
    source = {"kind": "sim", "seed": sim_cfg.seed, "style": sim_cfg.style, "frames": [start, start + frames]}
    store = open_store(out, record_cfg, source)
    pipeline = RecordingPipeline(store, record_cfg, ArrayDecoder(), T_base_camera=sim.T_base_camera,
                                 commit_every=32, expected=("depth", "thermal", "imu", "odom", "cloud"))
    try:
        for frame in tqdm(sim.frames(frames, start=start), total=frames, disable=not progress,
                          desc="sim -> store", unit="frame"):
            push_frame(pipeline, frame, sim.intrinsics, ground_truth)
            if pipeline.full:
                break
        pipeline.flush()
        info = store.info()
        info["counts"] = pipeline.all_counts()
    finally:
        store.close()
    return info
