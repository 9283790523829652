"""`tst-ros bench sim`: frames per second of complete simulator frames (RGB, depth, IMU since
the previous frame, point cloud, all ground truth) in one process, at 256x192 and 640x480."""
from __future__ import annotations

import time

TARGET_FPS_256 = 30.0


def _fps(width: int, height: int, frames: int, warmup: int = 3) -> dict:
    from tst_ros.config import SimConfig
    from tst_ros.sim import Simulator

    t0 = time.perf_counter()
    sim = Simulator(SimConfig(width=width, height=height, cloud_rate_hz=10.0))  # a cloud in every frame
    build_s = time.perf_counter() - t0
    for f in sim.frames(warmup):
        pass
    t0, c0 = time.perf_counter(), time.process_time()
    points = 0
    for f in sim.frames(frames, start=warmup):
        points += len(f.cloud_xyz)
    dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"fps": round(frames / dt, 2), "ms_per_frame": round(1000 * dt / frames, 2), "frames": frames,
            "cpu_ms_per_frame": round(1000 * cpu / frames, 2),
            "build_s": round(build_s, 3), "triangles": sim.scene.n_triangles,
            "cloud_points_per_frame": points // frames}


def run(quick: bool = False) -> dict:
    import os

    load_before = os.getloadavg()[0]
    small = _fps(256, 192, 60 if quick else 300)
    large = _fps(640, 480, 15 if quick else 60)
    out = {f"256x192.{k}": v for k, v in small.items()}
    out.update({f"640x480.{k}": v for k, v in large.items()})
    out["256x192.target_fps"] = TARGET_FPS_256
    out["256x192.meets_target"] = small["fps"] >= TARGET_FPS_256
    out["loadavg_1min_before"] = round(load_before, 2)
    out["loadavg_1min_after"] = round(os.getloadavg()[0], 2)
    out["cpu_cores"] = os.cpu_count()
    out["note"] = ("complete frame = RGB + depth + IMU since previous frame + cloud (every frame) + all ground truth; "
                   "fps is wall clock in one process (raycasting uses all cores); cpu_ms_per_frame is this process's "
                   "CPU time, so a loaded machine shows fps well below 1000 / cpu_ms_per_frame")
    return out
