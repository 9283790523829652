"""`trainer` node: runs pre-training (or the whole pipeline) as a child process and reports it.

Waits until `/tst/recorder/status` reports at least `min_samples` samples, then starts the
`command` parameter in a separate process (the node keeps answering while it trains).
The child speaks the progress protocol on stdout (`--progress-jsonl`): progress lines
become `TrainingStatus` on `/tst/trainer/status` (published at `status_rate_hz`, >= 1 Hz),
`{"event": "model"}` lines become `ModelUpdate` on `/tst/model` (transient-local, sha256
checksum of the file, or of manifest.json for a directory). Versions keep increasing across
restarts of the node (`ModelVersions`, kept in `{run_dir}/model_version.json`): perception
nodes ignore an update whose version is not above the one they serve.

Services (std_srvs/Trigger): `~/start` (start now, without waiting for samples), `~/stop`
(SIGINT to the child: it saves a final checkpoint and exits), `~/pause` (SIGSTOP / SIGCONT
toggle). Destroying the node stops the child the same way and waits for its checkpoint.
`~/model_file` (tst_ros/srv/ModelFile) serves the files of the models it published, in chunks,
to nodes on other machines (`tst_ros.model_transfer.ModelFileServer`); each ModelUpdate names
it in `source`.

`command` placeholders: {python} (this interpreter), {dataset} (the `dataset` parameter,
else the recorder's dataset path), {run_dir}.
"""
from __future__ import annotations

import array
import collections
import json
import os
import queue
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from rclpy.node import Node
from std_srvs.srv import Trigger

from tst_ros.model_transfer import ModelFileServer
from tst_ros.ros.nodes import run_node
from tst_ros.msg import ModelUpdate, RecorderStatus, TrainingStatus
from tst_ros.srv import ModelFile
from tst_ros.ros import conversions as conv
from tst_ros.ros.node_diagnostics import trainer_diagnostics
from tst_ros.ros.qos import qos_latched, qos_profile
from tst_ros.ros.timing import steady_timer
from tst_ros.util import atomic_write_json, sha256_file

DEFAULT_COMMAND = "{python} -m tst_ros.cli pretrain --data {dataset} --out {run_dir} --progress-jsonl --resume"
VERSION_FILE = "model_version.json"
UINT32_MAX = 2**32 - 1


def artifact_checksum(path: str | os.PathLike) -> str:
    """sha256 of a model file, or of a model directory's manifest.json."""
    path = Path(path)
    return sha256_file(path / "manifest.json" if path.is_dir() else path)


class ModelVersions:
    """Version numbers of published models, increasing across restarts (ROS-free).

    The last version is written atomically to `path` before it is published. No file: a fresh
    run, counting from 1. An unreadable file: counting resumes from the current Unix time in
    seconds, above any version reached before unless models came faster than one a second
    (and within ModelUpdate's uint32 until 2106)."""

    def __init__(self, path: str | os.PathLike, now=time.time):
        self.path = Path(path)
        self.read_error = ""
        self.last = self._read_last(now)

    def _read_last(self, now) -> int:
        try:
            version = json.loads(self.path.read_text())["version"]
            if not isinstance(version, int) or not 0 <= version <= UINT32_MAX:
                raise ValueError(f"not a uint32 version: {version!r}")
            return version
        except FileNotFoundError:
            return 0
        except (OSError, ValueError, KeyError, TypeError) as e:
            self.read_error = f"{type(e).__name__}: {e}"
            return int(now())

    def next(self) -> int:
        """Reserve and persist the next version (OSError when it cannot be persisted)."""
        version = self.last + 1
        if version > UINT32_MAX:
            raise OverflowError(f"model version {version} does not fit ModelUpdate.version (uint32)")
        atomic_write_json(self.path, {"version": version})
        self.last = version
        return version


class TrainingProcess:
    """The child process and what its progress lines said (ROS-free, thread-safe)."""

    def __init__(self, argv: list[str], log_path: Path | None = None):
        self.argv = argv
        self.lock = threading.Lock()
        self.progress: dict = {}
        self.models: queue.Queue = queue.Queue()
        self.stderr_tail: collections.deque = collections.deque(maxlen=20)
        self.paused = False
        self.stop_requested = False
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        # the child shares the cores with the graph's nodes: OpenMP threads that spin while they
        # wait for a descheduled partner made pre-training 5x slower beside one busy core
        # (2.2x faster with passive waits, at 1.3x slower when the machine is otherwise idle)
        env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        log = open(log_path, "ab") if log_path else subprocess.DEVNULL
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                                     start_new_session=True)
        self._log = log
        threading.Thread(target=self._read_stdout, daemon=True).start()
        threading.Thread(target=self._read_stderr, daemon=True).start()

    def _read_stdout(self) -> None:
        for raw in self.proc.stdout:
            try:
                obj = json.loads(raw)
            except ValueError:
                continue
            if not isinstance(obj, dict):
                continue
            if obj.get("event") == "model":
                self.models.put(obj)
            elif "stage" in obj:
                with self.lock:
                    self.progress.update(obj)

    def _read_stderr(self) -> None:
        for raw in self.proc.stderr:
            if self._log is not subprocess.DEVNULL:
                self._log.write(raw)
                self._log.flush()
            text = raw.decode(errors="replace").strip()
            if text:
                self.stderr_tail.append(text)

    def snapshot(self) -> dict:
        with self.lock:
            return dict(self.progress)

    def returncode(self) -> int | None:
        return self.proc.poll()

    def toggle_pause(self) -> bool:
        if self.returncode() is not None:
            raise RuntimeError("training is not running")
        os.kill(self.proc.pid, signal.SIGCONT if self.paused else signal.SIGSTOP)
        self.paused = not self.paused
        return self.paused

    def request_stop(self) -> None:
        """SIGINT (after SIGCONT when paused): the trainer saves a checkpoint and exits."""
        self.stop_requested = True
        if self.returncode() is None:
            if self.paused:
                os.kill(self.proc.pid, signal.SIGCONT)
                self.paused = False
            os.kill(self.proc.pid, signal.SIGINT)

    def stop(self, timeout: float) -> int | None:
        self.request_stop()
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(5)

    def close(self) -> None:
        if self._log is not subprocess.DEVNULL:
            self._log.close()


class TrainerNode(Node):
    def __init__(self, parameter_overrides=None, name: str = "trainer", **kwargs):
        super().__init__(name, parameter_overrides=parameter_overrides or [], **kwargs)
        self.command = self.declare_parameter("command", DEFAULT_COMMAND).value
        self.dataset = self.declare_parameter("dataset", "").value
        self.run_dir = Path(self.declare_parameter("run_dir", "runs/pretrain").value)
        self.min_samples = int(self.declare_parameter("min_samples", 200).value)
        self.autostart = bool(self.declare_parameter("autostart", True).value)
        rate = float(self.declare_parameter("status_rate_hz", 2.0).value)
        self.stop_timeout = float(self.declare_parameter("stop_timeout_s", 120.0).value)
        recorder_topic = self.declare_parameter("recorder_status_topic", "tst/recorder/status").value
        status_topic = self.declare_parameter("status_topic", "tst/trainer/status").value
        model_topic = self.declare_parameter("model_topic", "tst/model").value
        if rate < 1.0:
            raise ValueError(f"status_rate_hz must be >= 1, got {rate}")

        self.samples = 0
        self.recorder_dataset = ""
        self.child: TrainingProcess | None = None
        self.stage, self.message = "waiting", f"waiting for {self.min_samples} recorded samples"
        self.final_progress: dict = {}
        self.versions = ModelVersions(self.run_dir / VERSION_FILE)
        if self.versions.read_error:
            self.get_logger().warning(f"{self.versions.path} unreadable ({self.versions.read_error}); "
                                      f"model versions continue from {self.versions.last}")
        self.status_pub = self.create_publisher(TrainingStatus, status_topic, qos_profile("reliable", 10))
        self.model_pub = self.create_publisher(ModelUpdate, model_topic, qos_latched())
        self.create_subscription(RecorderStatus, recorder_topic, self._on_recorder, qos_profile("reliable", 10))
        self.create_service(Trigger, "~/start", self._srv_start)
        self.create_service(Trigger, "~/stop", self._srv_stop)
        self.create_service(Trigger, "~/pause", self._srv_pause)
        self.file_server = ModelFileServer()
        self.model_file_service = self.create_service(ModelFile, "~/model_file", self._srv_model_file)
        self.diagnostics = trainer_diagnostics(self)
        steady_timer(self, 1.0 / rate, self._tick)  # follows the child on wall time, also while /clock stops

    @property
    def version(self) -> int:
        """The last published model version (also by an earlier run of the node on this run_dir)."""
        return self.versions.last

    # -- inputs
    def _on_recorder(self, msg: RecorderStatus) -> None:
        self.samples = int(msg.samples_written)
        if msg.dataset_path:
            self.recorder_dataset = msg.dataset_path

    def running(self) -> bool:
        return self.child is not None and self.child.returncode() is None

    def argv(self) -> list[str]:
        dataset = self.dataset or self.recorder_dataset
        if "{dataset}" in self.command and not dataset:
            raise ValueError("no dataset: set the `dataset` parameter or wait for the recorder's status")
        text = (self.command.replace("{python}", shlex.quote(sys.executable))
                .replace("{dataset}", shlex.quote(dataset)).replace("{run_dir}", shlex.quote(str(self.run_dir))))
        return shlex.split(text)

    def start_training(self) -> str:
        if self.running():
            raise RuntimeError("training is already running")
        argv = self.argv()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.child = TrainingProcess(argv, self.run_dir / "trainer.log")
        self.final_progress = {}
        self.stage, self.message = "pretrain", "starting: " + " ".join(argv[:6])
        self.get_logger().info(f"started training (pid {self.child.proc.pid}): {' '.join(argv)}")
        return f"started pid {self.child.proc.pid}"

    # -- services
    def _srv_start(self, request, response):
        try:
            response.message = self.start_training()
            response.success = True
        except (RuntimeError, ValueError, OSError) as e:
            response.success, response.message = False, str(e)
        return response

    def _srv_stop(self, request, response):
        self.autostart = False
        if not self.running():
            response.success, response.message = False, "training is not running"
            return response
        self.child.request_stop()
        self.message = "stopping: saving a final checkpoint"
        response.success, response.message = True, self.message
        return response

    def _srv_pause(self, request, response):
        if not self.running():
            response.success, response.message = False, "training is not running"
            return response
        paused = self.child.toggle_pause()
        self.message = "paused" if paused else "resumed"
        response.success, response.message = True, self.message
        return response

    def _srv_model_file(self, request, response):
        chunk = self.file_server.read(request.version, request.checksum, request.file, request.offset,
                                      request.max_bytes)
        response.ok, response.message, response.file = chunk.ok, chunk.message, chunk.file
        response.total_size, response.sha256 = chunk.total_size, chunk.sha256
        response.data = array.array("B", chunk.data)
        return response

    # -- periodic work
    def _tick(self) -> None:
        if self.child is None and self.autostart and self.samples >= self.min_samples:
            try:
                self.start_training()
            except (RuntimeError, ValueError, OSError) as e:
                self.stage, self.message = "error", str(e)
                self.autostart = False
        elif self.child is None and self.stage == "waiting":
            self.message = f"waiting for samples: {self.samples}/{self.min_samples}"
        if self.child is not None:
            self._publish_models()
            self._follow_child()
        self._publish_status()

    def _follow_child(self) -> None:
        child = self.child
        progress = child.snapshot()
        if progress:
            self.final_progress = progress
        code = child.returncode()
        if code is None:
            self.stage = progress.get("stage", self.stage) if not child.paused else self.stage
            if child.paused:
                self.message = "paused"
            elif progress.get("message"):
                self.message = progress["message"]
            return
        if self.stage in ("done", "stopped", "error"):
            return
        self._publish_models()
        if child.stop_requested:
            self.stage, self.message = "stopped", f"stopped (exit code {code}); checkpoint saved in {self.run_dir}"
        elif code == 0:
            self.stage, self.message = "done", "training finished"
        else:
            tail = " | ".join(list(child.stderr_tail)[-3:])
            self.stage, self.message = "error", f"training exited with code {code}: {tail}"
            self.get_logger().error(self.message)
        child.close()

    def _publish_models(self) -> None:
        while True:
            try:
                event = self.child.models.get_nowait()
            except queue.Empty:
                return
            self.publish_model(event)

    def publish_model(self, event: dict) -> None:
        path = event.get("path", "")
        if Path(path).is_dir() and not (Path(path) / "manifest.json").is_file():
            # e.g. a transferred model directory inside the pipeline: deployed once exported
            self.get_logger().info(f"model at {path} is not exported yet (no manifest.json); not published")
            return
        try:
            checksum = artifact_checksum(path)
        except OSError as e:
            self.get_logger().warning(f"model event for {path!r} ignored: {e}")
            return
        try:
            version = self.versions.next()
        except (OSError, OverflowError) as e:
            self.get_logger().error(f"model {path} not published: cannot record its version: {e}")
            return
        self.file_server.publish(version, path, checksum)
        metrics = {k: float(v) for k, v in (event.get("metrics") or {}).items() if isinstance(v, (int, float))}
        msg = ModelUpdate(header=conv.make_header(self.get_clock().now().nanoseconds, ""), version=version,
                          path=str(path), checksum=checksum, source=self.model_file_service.service_name,
                          tasks=[str(t) for t in event.get("tasks", [])],
                          modalities=[str(m) for m in event.get("modalities", [])],
                          metric_names=list(metrics), metric_values=list(metrics.values()))
        self.model_pub.publish(msg)
        self.get_logger().info(f"model v{version}: {path}")

    def _publish_status(self) -> None:
        p = self.final_progress
        msg = TrainingStatus(header=conv.make_header(self.get_clock().now().nanoseconds, ""), stage=self.stage,
                             step=int(p.get("step", 0)), total_steps=int(p.get("total", 0)),
                             loss=float(p.get("loss", 0.0)), samples_per_second=float(p.get("samples_per_s", 0.0)),
                             eta_seconds=float(p.get("eta_s", 0.0)), message=str(self.message)[:500])
        self.status_pub.publish(msg)

    # -- shutdown
    def shutdown_training(self) -> int | None:
        """Stop the child gracefully (it saves a final checkpoint); returns its exit code."""
        if not self.running():
            return None
        self.get_logger().info("stopping training: waiting for the final checkpoint")
        code = self.child.stop(self.stop_timeout)
        self.child.close()
        return code

    def destroy_node(self):
        self.shutdown_training()
        return super().destroy_node()


def main(argv: list[str] | None = None) -> int:
    return run_node(TrainerNode, argv)


if __name__ == "__main__":
    sys.exit(main())
