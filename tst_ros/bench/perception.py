"""Perception serving benchmark: end-to-end latency and memory of the segmentation and
detection nodes against bare ONNX Runtime inference of the same model, in the same run.

- Model: the deployment shape of the loop's defaults (its pre-training preset, 128 px, RGB-D
  inputs, `tst-ros transfer`'s heads, flip averaging as `transfer.flip_average` says), exported
  to ONNX (weights do not change the cost).
- Bare: `session.run` of the outputs the node requests, on the graph pruned to them as the
  node loads it (segmentation: `seg_labels`;
  detection: `det_peaks`, `det_box`) on a preprocessed frame in this process, from a thread
  placed on the same core as the node's worker (`tst_ros.perception.threads`), p50/p99,
  measured per task right before that task's stream, twice: paced at the stream's 30 Hz
  (the reference of the ratios: the node, too, runs one inference per 33 ms and idles in
  between, which costs ORT ~1 ms to wake its threads) and back to back (`*_b2b_*`, with
  its ratios reported alongside).
- End to end: simulator frames (256x192 RGB + depth) published at 30 Hz from this process;
  the node runs in its own process; latency = arrival time of the mask (detections) in this
  process minus the publish time carried in the header stamp. Ratios = e2e / bare. The same
  after deserializing the output into its Python message is reported as `*.decoded_*`
  (a Python consumer's own cost, 0.7-0.9 ms for ten Detection2D).
- Memory: resident set size of both node processes streamed at 30 Hz for the soak period
  (10 min; --quick: 30 s), growth relative to the size after warm-up.
"""
from __future__ import annotations

import os
import random
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from tst_ros import modalities as registry

TARGET_P50_RATIO = 1.25
TARGET_P99_RATIO = 2.0
TARGET_RSS_GROWTH = 0.05
RATE_HZ = 30.0
DETECTIONS_PER_FRAME = 10
KINDS = ("segmentation", "detection")
OUTPUT_KEY = {"segmentation": "mask", "detection": "detections"}   # result key prefix per node


def _percentiles(values_ms: list[float]) -> tuple[float, float]:
    arr = np.asarray(values_ms, np.float64)
    return float(np.percentile(arr, 50)), float(np.percentile(arr, 99))


def _latency_figures(key: str, latencies_ms: list[float], bare: dict, bare_key: str | None = None) -> dict:
    """p50/p99 of `latencies_ms` and their ratios to the paced and back-to-back bare figures."""
    bare_key = bare_key or key
    p50, p99 = _percentiles(latencies_ms)
    return {f"{key}.p50_ms": round(p50, 2), f"{key}.p99_ms": round(p99, 2),
            f"{key}.p50_ratio": round(p50 / bare[f"{bare_key}.bare_p50_ms"], 3),
            f"{key}.p99_ratio": round(p99 / bare[f"{bare_key}.bare_p99_ms"], 3),
            f"{key}.p50_ratio_to_b2b": round(p50 / bare[f"{bare_key}.bare_b2b_p50_ms"], 3),
            f"{key}.p99_ratio_to_b2b": round(p99 / bare[f"{bare_key}.bare_b2b_p99_ms"], 3)}


def bare_inference_ms(onnx_path: Path, frame: tuple[np.ndarray, np.ndarray], runs: int, task: str,
                      rate_hz: float | None = None) -> list[float]:
    """session.run times of `task`'s outputs; back to back, or one run every 1/rate_hz s
    (idle between runs as in the node fed at that rate: ORT's pool threads go to sleep).
    Runs in its own thread, placed on the CPUs the session leaves for its caller, as the
    node's worker is (pinning never touches this process's main thread, which spawns nodes)."""
    from tst_ros.perception.runtime import TASK_OUTPUTS, Predictor
    from tst_ros.perception.threads import place_calling_thread

    outputs = TASK_OUTPUTS[task]
    pred = Predictor.from_onnx(onnx_path, ["CPUExecutionProvider"], outputs=outputs)    # as the node loads it
    rgb, depth_mm = frame
    inputs = pred.preprocess(rgb, registry.physical(registry.DEPTH_IMAGE, depth_mm, invalid=0.0))
    period = 1.0 / rate_hz if rate_hz else 0.0
    times: list[float] = []

    def measure() -> None:
        place_calling_thread(pred.caller_cpus)
        for _ in range(10):
            pred.infer(inputs, outputs)
        for _ in range(runs):
            t = time.perf_counter()
            pred.infer(inputs, outputs)
            times.append((time.perf_counter() - t) * 1e3)
            time.sleep(max(0.0, period - (time.perf_counter() - t)))

    thread = threading.Thread(target=measure, name="bare-inference")
    thread.start()
    thread.join()
    if len(times) != runs:
        raise RuntimeError("bare inference failed (see the traceback above)")
    return times


def realistic_score_threshold(onnx_path: Path, frames: list, per_frame: int = DETECTIONS_PER_FRAME) -> float:
    """The untrained benchmark model scores no box above the node's default threshold, which
    would leave decoding, NMS and message building out of the measurement; this threshold
    makes it emit about `per_frame` detections per frame, as a trained model would in a room."""
    from tst_ros.perception.runtime import Predictor

    pred = Predictor.from_onnx(onnx_path, ["CPUExecutionProvider"])
    kth = []
    for rgb, depth_mm in frames:
        depth_m = registry.physical(registry.DEPTH_IMAGE, depth_mm, invalid=0.0)
        peaks = pred.infer(pred.preprocess(rgb, depth_m), ("det_peaks",))["det_peaks"]
        kth.append(np.sort(peaks.ravel())[-per_frame])
    return float(np.median(kth))


def _simulator_frames(count: int, out: dict) -> list[tuple[np.ndarray, np.ndarray]]:
    """(RGB, depth mm) frames of the default simulator, the stimulus of every measurement."""
    from tst_ros.config import SimConfig
    from tst_ros.sim import Simulator

    sim_cfg = SimConfig()
    frames = [(f.rgb, f.depth_mm) for f in Simulator(sim_cfg).frames(count)]
    out["frame_size"] = f"{sim_cfg.width}x{sim_cfg.height}"
    return frames


def _benchmark_model(tmp: Path, frames: list, out: dict) -> Path:
    """The deployment-shaped untrained model, exported to ONNX under `tmp`."""
    from tst_ros.bench.models import untrained_model_dir
    from tst_ros.config import PretrainConfig, TransferConfig
    from tst_ros.perception.export import export_model

    preset, flip = PretrainConfig().preset, TransferConfig().flip_average
    model_dir = untrained_model_dir(tmp / "model", image_size=128, inputs=("rgb", "depth"), preset=preset, seed=0,
                                    flip_average=flip)
    sample = [(rgb, registry.physical(registry.DEPTH_IMAGE, d, invalid=0.0)) for rgb, d in frames[:1]]
    onnx_path = Path(export_model(model_dir, tmp / "model.onnx", frames=sample)["path"])
    out["model"] = (f"{preset} preset, 128 px, inputs rgb+depth, {'flip-averaged' if flip else 'single pass'}, "
                    "ONNX Runtime CPU")
    return onnx_path


def _measure_bare(onnx_path: Path, frame: tuple[np.ndarray, np.ndarray], kind: str, runs: int, out: dict) -> None:
    """Bare inference p50/p99 of `kind`'s outputs, paced at RATE_HZ and back to back."""
    key = OUTPUT_KEY[kind]
    bare = bare_inference_ms(onnx_path, frame, runs, kind, rate_hz=RATE_HZ)
    out[f"{key}.bare_p50_ms"], out[f"{key}.bare_p99_ms"] = (round(v, 2) for v in _percentiles(bare))
    b2b = bare_inference_ms(onnx_path, frame, runs, kind)
    out[f"{key}.bare_b2b_p50_ms"], out[f"{key}.bare_b2b_p99_ms"] = (round(v, 2) for v in _percentiles(b2b))


def _measure_stream(probe, kind: str, latency_s: float, log_path: Path, out: dict) -> None:
    """End-to-end latency of the (already spawned) `kind` node, and its ratios to bare inference."""
    key = OUTPUT_KEY[kind]
    probe.wait_for_subscribers(1)
    probe.stream(2.0, RATE_HZ, record=False)                  # warm-up, discovery of depth
    before = (probe.received[kind], probe.detections[kind])
    sent = probe.stream(latency_s, RATE_HZ, record=True)
    if kind == "detection":
        out["detections.mean_boxes_per_output"] = round(
            (probe.detections[kind] - before[1]) / max(1, probe.received[kind] - before[0]), 2)
    lat, decoded = probe.take(kind)
    if not lat:
        raise RuntimeError(f"{kind} node produced no output:\n{log_path.read_text()}")
    out[f"{key}.frames_sent"] = sent
    out[f"{key}.outputs"] = len(lat)
    out.update(_latency_figures(key, lat, out))
    out.update(_latency_figures(f"{key}.decoded", decoded, out, bare_key=key))
    out[f"{key}.target_p50_ratio"], out[f"{key}.target_p99_ratio"] = TARGET_P50_RATIO, TARGET_P99_RATIO
    out[f"{key}.meets_target"] = bool(out[f"{key}.p50_ratio"] <= TARGET_P50_RATIO
                                      and out[f"{key}.p99_ratio"] <= TARGET_P99_RATIO)


def _measure_soak(probe, procs: dict, soak_s: float, out: dict) -> None:
    """Resident set size of both (already spawned) nodes streamed at RATE_HZ: after warm-up vs at the end."""
    import psutil

    probe.wait_for_subscribers(2)
    probe.stream(5.0, RATE_HZ, record=False)
    ps = {k: psutil.Process(p.pid) for k, p in procs.items()}
    start_rss = {k: p.memory_info().rss for k, p in ps.items()}
    peak = dict(start_rss)

    def sample(i: int) -> None:
        if i % 30 == 0:
            for k, p in ps.items():
                peak[k] = max(peak[k], p.memory_info().rss)

    received_before = dict(probe.received)
    probe.stream(soak_s, RATE_HZ, record=False, on_tick=sample)
    for k, p in ps.items():
        end_rss = p.memory_info().rss
        key = OUTPUT_KEY[k]
        growth = (end_rss - start_rss[k]) / start_rss[k]
        out[f"{key}.rss_start_mb"] = round(start_rss[k] / 2**20, 1)
        out[f"{key}.rss_end_mb"] = round(end_rss / 2**20, 1)
        out[f"{key}.rss_peak_mb"] = round(peak[k] / 2**20, 1)
        out[f"{key}.rss_growth"] = round(growth, 4)
        out[f"{key}.target_rss_growth"] = TARGET_RSS_GROWTH
        out[f"{key}.rss_meets_target"] = bool(growth <= TARGET_RSS_GROWTH)
        out[f"{key}.soak_outputs"] = probe.received[k] - received_before.get(k, 0)


def _stop_all(procs: dict) -> None:
    for p in procs.values():
        if p.poll() is None:
            p.terminate()
            try:
                p.wait(timeout=10)
            except Exception:
                p.kill()


def run(quick: bool = False) -> dict:
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    os.environ["ROS_DOMAIN_ID"] = str(random.Random(os.getpid() + time.time_ns()).randint(101, 200))
    from tst_ros.ros.bench.perception_probe import StreamProbe, spawn_node

    latency_s = 8.0 if quick else 30.0
    soak_s = 30.0 if quick else 600.0
    out: dict = {"rate_hz": RATE_HZ, "latency_seconds": latency_s, "soak_seconds": soak_s}
    frames = _simulator_frames(8 if quick else 30, out)
    with tempfile.TemporaryDirectory(prefix="tst-bench-perception-") as tmp:
        tmp = Path(tmp)
        onnx_path = _benchmark_model(tmp, frames, out)
        threshold = realistic_score_threshold(onnx_path, frames)
        node_args = {"segmentation": [], "detection": ["-p", f"score_threshold:={threshold:.6g}"]}
        out["detections.score_threshold"] = round(threshold, 6)
        probe = StreamProbe(frames, kinds=KINDS)
        procs = {}
        try:
            for kind in KINDS:
                _measure_bare(onnx_path, frames[0], kind, 60 if quick else 300, out)
                procs[kind] = spawn_node(kind, str(onnx_path), str(tmp / f"{kind}.log"), node_args[kind])
                _measure_stream(probe, kind, latency_s, tmp / f"{kind}.log", out)
                procs[kind].terminate()
                procs[kind].wait(timeout=10)
                time.sleep(0.5)
            for kind in KINDS:
                procs[kind] = spawn_node(kind, str(onnx_path), str(tmp / f"{kind}.soak.log"), node_args[kind])
            _measure_soak(probe, procs, soak_s, out)
        finally:
            _stop_all(procs)
            probe.close()
    return out
