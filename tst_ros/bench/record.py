"""`tst-ros bench record`: recorder frame loss / CPU / memory, ingest speed, loader speed.

(a) live: the simulator's exported bag (640x480 rgb8 + 16UC1 depth at 30 Hz, IMU 200 Hz,
    clouds 10 Hz, camera_info, odometry) is replayed by the `replay` node process for 60 s
    (quick: 10 s) into the `recorder` node in another process (reliable QoS). The bag holds
    15 rendered frames looped with continuous stamps (`--restamp-loops`), because rendering
    640x480 takes far longer than 33 ms on small CPUs; the recorder sees a real 30 Hz
    stream. Reports synchronised-frame loss (target <= 1 %), recorder CPU use (% of one
    core) and peak RSS.
(b) ingest: frames/s of `ingest` on an exported MCAP bag, and the ratio to merely reading
    the same bag's messages with rosbags, measured in the same run.
(c) loader: StoreDataset samples/s at 224x224 (rgb, depth, normals, edges, augmentations,
    2 workers, batch 32), target >= 500; and the same loop with the training step's
    `prepare_batch` (normalisation to float32) run on the CPU in the main process, the cost
    a CPU-only trainer pays on top (on a GPU it runs on the device).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PY = sys.executable


# ---------------------------------------------------------------------------- (a) live
DISTINCT_FRAMES = 15


def _export_source_bag(tmp: Path, frames: int):
    from tst_ros.config import SimConfig
    from tst_ros.sim import Simulator
    from tst_ros.sim.export import export_bag

    sim = Simulator(SimConfig(width=640, height=480, camera_rate_hz=30.0, imu_rate_hz=200.0, cloud_rate_hz=10.0))
    bag = tmp / f"source_{frames}"
    export_bag(sim, bag, frames)
    return sim, bag


def _peak_rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def bench_live(seconds: float, tmp: Path) -> dict:
    import re

    import psutil

    from tst_ros.data.store import Store

    _, bag = _export_source_bag(tmp, DISTINCT_FRAMES)
    dataset = tmp / "live"
    env = dict(os.environ)
    env.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    env.setdefault("ROS_DOMAIN_ID", str(101 + os.getpid() % 100))
    rec = subprocess.Popen([PY, "-m", "tst_ros.ros.nodes.recorder", "--ros-args", "-p", f"dataset:={dataset}",
                            "-p", "image_size:=224"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True)
    result: dict = {}
    try:
        proc = psutil.Process(rec.pid)
        time.sleep(2.0)
        cpu0, t0 = proc.cpu_times(), time.monotonic()
        pub = subprocess.run([PY, "-m", "tst_ros.cli", "replay", str(bag), "--loop", "--restamp-loops",
                              "--loop-gap", "0.005", "--duration", str(seconds), "--wait-for-subscribers", "20"],
                             env=env, capture_output=True, text=True, timeout=seconds + 120)
        log = pub.stdout + pub.stderr
        found = re.search(r"per topic: (\{.*\})", log)
        if not found:
            raise RuntimeError(f"replay publisher failed: {log[-2000:]}")
        per_topic = json.loads(found.group(1))
        time.sleep(2.0)   # let the recorder drain its queue
        cpu1, t1 = proc.cpu_times(), time.monotonic()
        cpu = (cpu1.user + cpu1.system - cpu0.user - cpu0.system) / (t1 - t0)
        published = per_topic["/camera/color/image_raw"]
        result.update({"live.published_frames": published,
                       "live.publish_rate_hz": round(published / seconds, 2),
                       "live.published_imu_per_s": round(per_topic["/imu/data"] / seconds, 1),
                       "live.published_clouds_per_s": round(per_topic["/points"] / seconds, 1),
                       "live.recorder_cpu_percent_of_one_core": round(100 * cpu, 1),
                       "live.recorder_peak_rss_mb": round(_peak_rss_mb(rec.pid), 1)})
    finally:
        rec.send_signal(signal.SIGINT)
        try:
            rec_log = rec.communicate(timeout=60)[0]
        except subprocess.TimeoutExpired:
            rec.kill()
            rec_log = ""
    counts = re.search(r"counts: (\{.*\})", rec_log)
    result["live.recorder_counts"] = json.loads(counts.group(1)) if counts else rec_log[-500:]
    store = Store(dataset)
    written = len(store)
    published = result.get("live.published_frames", 0)
    loss = max(0.0, 1 - written / published) if published else 1.0
    # the bag's 15 frames carry a cloud every 3rd frame: loops keep that 10 Hz cadence
    result.update({"live.samples_written": written, "live.frame_loss": round(loss, 4),
                   "live.target_max_loss": 0.01, "live.meets_target": loss <= 0.01,
                   "live.samples_with_depth": store.info()["present_counts"].get("depth", 0)})
    return result


# ---------------------------------------------------------------------------- (b) ingest
def bench_ingest(frames: int, tmp: Path) -> dict:
    from tst_ros.config import RecordConfig, SimConfig
    from tst_ros.data.bagio import read_messages
    from tst_ros.data.ingest import ingest
    from tst_ros.ros.nodes.recorder import RosDecoder
    from tst_ros.sim import Simulator
    from tst_ros.sim.export import export_bag

    sim = Simulator(SimConfig(width=640, height=480, camera_rate_hz=30, cloud_rate_hz=10))
    bag = tmp / "bag"
    export_bag(sim, bag, frames)
    for _ in read_messages(bag):   # warm the page cache for both passes alike
        pass
    t = time.perf_counter()
    n_msgs = sum(1 for m in read_messages(bag) if m.data)
    read_s = time.perf_counter() - t
    report = ingest(bag, tmp / "ingested", RecordConfig(image_size=224), RosDecoder(),
                    T_base_camera=sim.T_base_camera, progress=False)
    read_fps = frames / read_s
    return {"ingest.frames": report["samples"], "ingest.messages": n_msgs,
            "ingest.frames_per_s": report["frames_per_s"], "ingest.read_only_frames_per_s": round(read_fps, 1),
            "ingest.ratio_to_read_only": round(report["frames_per_s"] / read_fps, 3),
            "ingest.errors": report["error"] or ""}


# ---------------------------------------------------------------------------- (c) loader
def bench_loader(frames: int, batches: int, tmp: Path) -> dict:
    from tst_ros.config import RecordConfig, SimConfig
    from tst_ros.data.from_sim import build_dataset
    from tst_ros.data.loader import StoreDataset, make_loader

    out = tmp / "loader_store"
    build_dataset(SimConfig(width=320, height=240), RecordConfig(image_size=224, val_fraction=0.0), frames, out)
    ds = StoreDataset(out, split="all", modalities=["rgb", "depth", "normals", "edges"], size=224, augment=True)
    from tst_ros.train.data import prepare_batch

    loader = make_loader(ds, batch=32, workers=2)
    it = iter(loader)

    def rate(n_batches: int, consume) -> float:
        nonlocal it
        seen, t0 = 0, time.perf_counter()
        for _ in range(n_batches):
            try:
                b = next(it)
            except StopIteration:
                it = iter(loader)
                b = next(it)
            consume(b)
            seen += b["rgb"].shape[0]
        return seen / (time.perf_counter() - t0)

    rate(2, lambda b: None)                               # warm up the workers
    loader_only = rate(batches, lambda b: None)
    with_prepare = rate(batches, prepare_batch)
    return {"loader.samples_per_s": round(loader_only, 1), "loader.target_samples_per_s": 500,
            "loader.meets_target": loader_only >= 500,
            "loader.samples_per_s_with_cpu_prepare_batch": round(with_prepare, 1),
            "loader.workers": 2, "loader.batch": 32, "loader.size": 224}


def run(quick: bool = False) -> dict:
    with tempfile.TemporaryDirectory(prefix="tst_bench_record_") as d:
        tmp = Path(d)
        out = {"config.live_seconds": 10 if quick else 60}
        out.update(bench_live(10.0 if quick else 60.0, tmp))
        out.update(bench_ingest(30 if quick else 150, tmp))
        out.update(bench_loader(48 if quick else 200, 20 if quick else 80, tmp))
    return out


if __name__ == "__main__":
    print(json.dumps(run(quick="--quick" in sys.argv)))
