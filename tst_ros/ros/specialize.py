"""`tst-ros specialize`: the whole loop in one process, then the report.

Starts the graph from the shared description, follows it through the supervisor (record ->
pre-train/transfer/export in the trainer's child process -> ModelUpdate -> hot reload ->
deployment period), shows progress with one bar per stage, then writes `deploy.json` and the
HTML report. SIGINT/SIGTERM stop every node (the trainer checkpoints its child) within
seconds; running again resumes (the store keeps its samples, the pipeline its stages).
"""
from __future__ import annotations

import json
import logging
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np

from tst_ros.graph.description import NodeSpec
from tst_ros.ros.graph_runner import OUTPUTS, Graph, Observed
from tst_ros.util import atomic_write_json

log = logging.getLogger("tst_ros.specialize")

# Which node produces each observed output (a graph without that node expects none of them).
OUTPUT_PRODUCERS = {"mask": "segmentation", "overlay": "segmentation", "detections": "detection",
                    "points_labeled": "ttt_kd"}
# After `deploy_seconds`, deployment goes on until every expected output was seen at least
# once, for at most this long; a busy machine can delay the first labelled cloud by seconds.
MISSING_OUTPUT_GRACE_S = 120.0


class StageBars:
    """One tqdm bar per stage of the loop, replaced when the stage changes."""

    def __init__(self):
        from tqdm import tqdm
        self._tqdm = tqdm
        self.bar = None
        self.stage = None

    def show(self, stage: str, done: float, total: float, postfix: str = "") -> None:
        if stage != self.stage:
            if self.bar is not None:
                self.bar.close()
            self.bar = self._tqdm(total=max(total, 1), desc=f"[{stage}]", file=sys.stderr, dynamic_ncols=True,
                                  bar_format="{desc} {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} "
                                             "[{elapsed}<{remaining}] {postfix}")
            self.stage = stage
        if total and self.bar.total != total:
            self.bar.total = total
        self.bar.n = min(done, self.bar.total)
        self.bar.set_postfix_str(postfix, refresh=False)
        self.bar.refresh()

    def close(self):
        if self.bar is not None:
            self.bar.close()


def _percentiles(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    a = np.asarray(values)
    return float(np.percentile(a, 50)), float(np.percentile(a, 99))


def deployment_summary(seen: Observed, seconds: float) -> dict:
    outputs = {}
    for key, count in seen.counts.items():
        p50, p99 = _percentiles(seen.latency_ms.get(key, []))
        outputs[key] = {"count": count, "rate_hz": seen.deploy_counts.get(key, 0) / seconds if seconds else 0.0,
                        "latency_ms_p50": p50, "latency_ms_p99": p99}
    model = seen.model
    return {"hot_loaded": seen.hot_loaded_at is not None, "model_version": int(model.version) if model else None,
            "model_path": model.path if model else None, "seconds": round(seconds, 1), "outputs": outputs,
            "label_versions": dict(seen.label_versions)}


def save_samples(seen: Observed, run_dir: Path) -> None:
    import cv2

    overlay = seen.samples.get("overlay")
    if overlay is None:
        return
    cv2.imwrite(str(run_dir / "deploy_overlay.png"), cv2.cvtColor(overlay, cv2.COLOR_RGB2BGR))
    boxes = overlay.copy()
    for cx, cy, w, h, cls, score in seen.samples.get("detections", []):
        p0, p1 = (int(cx - w / 2), int(cy - h / 2)), (int(cx + w / 2), int(cy + h / 2))
        cv2.rectangle(boxes, p0, p1, (255, 255, 0), 1)
        cv2.putText(boxes, f"{cls} {score:.2f}", (p0[0], max(8, p0[1] - 2)), cv2.FONT_HERSHEY_SIMPLEX, 0.3,
                    (255, 255, 0), 1)
    cv2.imwrite(str(run_dir / "deploy_detections.png"), cv2.cvtColor(boxes, cv2.COLOR_RGB2BGR))


class Specialize:
    def __init__(self, cfg, run_dir: Path, specs: list[NodeSpec], timeout_s: float = 0.0):
        self.cfg, self.run_dir, self.specs = cfg, run_dir, specs
        self.timeout_s = timeout_s
        self.stop_event = threading.Event()
        self.graph = Graph(specs)
        self.bars = StageBars()
        self.failed: str | None = None
        names = {spec.name for spec in specs}
        self.expected_outputs = sorted(k for k in OUTPUTS if OUTPUT_PRODUCERS.get(k) in names)

    def _on_signal(self, signum, frame):
        log.info(f"{signal.Signals(signum).name}: stopping the graph")
        self.stop_event.set()

    def run(self) -> int:
        old = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        t_start = time.monotonic()
        deploy_started = None
        reported = False
        interrupted = False
        try:
            self.graph.start()
            seen = self.graph.supervisor.seen
            while not self.stop_event.wait(0.5):
                if self.timeout_s and time.monotonic() - t_start > self.timeout_s:
                    self.failed = f"the loop did not finish within {self.timeout_s:.0f} s"
                    break
                if seen.trainer is not None and seen.trainer.stage == "error":
                    self.failed = f"the trainer failed: {seen.trainer.message}"
                    break
                if seen.hot_loaded_at is not None:
                    deploy_started = deploy_started or time.monotonic()
                    elapsed = time.monotonic() - deploy_started
                    outputs = ", ".join(f"{k} {v}" for k, v in sorted(seen.counts.items()))
                    self.bars.show("serve" if reported else "deploy", round(elapsed),
                                   elapsed if reported else self.cfg.specialize.deploy_seconds,
                                   f"model v{seen.model.version}; {outputs}")
                    if not reported and self._deployment_done(seen, elapsed):
                        self._write_report(elapsed)
                        reported = True
                        if not self.cfg.specialize.serve:
                            break
                        log.info("serving; Ctrl-C to stop")
                else:
                    self._show_progress(seen)
                self._pause_rig_while_training(seen)
            else:
                interrupted = True
        finally:
            self.bars.close()
            signal.signal(signal.SIGINT, old[signal.SIGINT])  # a second Ctrl-C during shutdown aborts
            self.graph.stop()
            for s, h in old.items():
                signal.signal(s, h)
        if reported:
            return 0
        if interrupted:
            self._save_deployment(time.monotonic() - deploy_started if deploy_started else 0.0)
            log.info(f"stopped; data and checkpoints are in {self.run_dir} (run again to resume)")
            return 130
        report = self._write_report(time.monotonic() - deploy_started if deploy_started else 0.0)
        log.error(f"{self.failed}; partial report: {report}")
        return 1

    def _deployment_done(self, seen: Observed, elapsed: float) -> bool:
        """The deployment period is over once it lasted `deploy_seconds` and every expected output
        arrived after the hot reload (or the grace period for missing outputs ran out)."""
        minimum = self.cfg.specialize.deploy_seconds
        if elapsed < minimum:
            return False
        with self.graph.supervisor.lock:
            missing = [k for k in self.expected_outputs if seen.deploy_counts.get(k, 0) == 0]
        if not missing:
            return True
        if elapsed < minimum + MISSING_OUTPUT_GRACE_S:
            return False
        log.warning(f"no {', '.join(missing)} received in {elapsed:.0f} s of deployment")
        return True

    def _save_deployment(self, seconds: float) -> None:
        seen = self.graph.supervisor.seen
        with self.graph.supervisor.lock:
            summary = deployment_summary(seen, seconds)
        atomic_write_json(self.run_dir / "deploy.json", summary)
        save_samples(seen, self.run_dir)

    def _write_report(self, seconds: float) -> Path:
        from tst_ros.graph.report import verdict, write_report

        self._save_deployment(seconds)
        report = write_report(self.run_dir)
        if not self.failed:
            metrics_path = self.run_dir / "metrics.json"
            metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
            log.info(verdict(metrics.get("segdet", {})))
            log.info(f"report: {report}")
        return report

    def _pause_rig_while_training(self, seen: Observed) -> None:
        """Between the end of recording and the model's arrival nothing consumes the sensor
        streams; pausing the simulated rig leaves both cores to the trainer's child."""
        sim = next((n for n in self.graph.nodes if hasattr(n, "set_paused")), None)
        if sim is None:
            return
        rec = seen.recorder
        recorded = rec is not None and int(rec.samples_written) >= self.cfg.specialize.record_frames
        sim.set_paused(recorded and seen.model is None)

    def _show_progress(self, seen: Observed) -> None:
        target = self.cfg.specialize.record_frames
        rec = seen.recorder
        written = int(rec.samples_written) if rec else 0
        if written < target and (seen.trainer is None or seen.trainer.stage in ("", "waiting")):
            rate = f"{rec.rate_hz:.1f} Hz" if rec else "waiting for the recorder"
            self.bars.show("record", written, target, rate)
            return
        t = seen.trainer
        if t is None:
            self.bars.show("train", 0, 1, "waiting for the trainer")
            return
        if seen.model is not None:
            self.bars.show("hot-reload", 0, 1,
                           f"model v{seen.model.version} published; waiting for the perception nodes")
            return
        postfix = f"loss {t.loss:.4f}" if t.loss else (t.message or "")
        self.bars.show(t.stage or "train", int(t.step), int(t.total_steps) or 1, postfix)
