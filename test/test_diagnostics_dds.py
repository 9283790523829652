"""/diagnostics over real DDS: the sim, recorder, trainer and segmentation nodes run in their own
processes and each publishes a diagnostic_msgs/DiagnosticStatus named after the node, with its
rates, drops by reason and per-node values; with the sim feeding it, segmentation reports frames
flowing (input and output rates above zero)."""
from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")
pytest.importorskip("diagnostic_msgs")

from fixture_models import make_model_dir  # noqa: E402
from polling import stop_processes, wait_for  # noqa: E402
from tst_ros.perception.export import export_model  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CLASSES = ["wall", "floor", "chair", "table"]
TIMEOUT_S = 180.0            # generous: four Python processes start on a shared 2-core machine
EXPECTED_KEYS = {
    "/segmentation": {"input_rate_hz", "output_rate_hz", "model_version", "frames_processed",
                      "drops.frames_replaced", "drops.frames_without_model", "drops.bad_inputs"},
    "/recorder": {"input_rate_hz", "output_rate_hz", "store_samples", "messages_received", "dataset"},
    "/trainer": {"training_stage", "model_version", "step_rate_hz", "samples_seen"},
    "/sim": {"output_rate_hz", "frames_published", "drops.skipped_late", "render_ms_mean"},
}


def tiny_model(tmp: Path) -> Path:
    model_dir = make_model_dir(tmp / "model", CLASSES, [2, 3], image_size=32, constant_class=1, seed=1)
    frames = [(np.zeros((48, 64, 3), np.uint8), np.ones((48, 64), np.float32))]
    return Path(export_model(model_dir, tmp / "model.onnx", frames=frames)["path"])


def node_commands(tmp: Path, model: Path) -> dict[str, list[str]]:
    py = [sys.executable, "-m"]
    return {
        "sim": py + ["tst_ros.ros.nodes.sim", "--ros-args", "-p", "width:=64", "-p", "height:=48",
                     "-p", "camera_rate_hz:=4.0", "-p", "imu_rate_hz:=40.0", "-p", "cloud_rate_hz:=1.0"],
        "segmentation": py + ["tst_ros.ros.nodes.segmentation", "--ros-args", "-p", f"model_path:={model}",
                              "-p", "providers:=['CPUExecutionProvider']", "-p", "threads:=1"],
        "recorder": py + ["tst_ros.ros.nodes.recorder", "--ros-args", "-p", f"dataset:={tmp / 'store'}",
                          "-p", "image_size:=32"],
        "trainer": py + ["tst_ros.ros.nodes.trainer", "--ros-args", "-p", f"run_dir:={tmp / 'run'}",
                         "-p", "autostart:=false"],
    }


class DiagnosticsProbe:
    """Keeps the last DiagnosticStatus of every node name seen on /diagnostics."""

    def __init__(self):
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.executors import SingleThreadedExecutor

        self.ctx = rclpy.Context()
        rclpy.init(context=self.ctx)
        self.node = rclpy.create_node("diagnostics_probe", context=self.ctx)
        self.latest: dict = {}
        self.lock = threading.Lock()
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_array, 50)
        self.executor = SingleThreadedExecutor(context=self.ctx)
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()

    def _on_array(self, msg) -> None:
        with self.lock:
            for status in msg.status:
                self.latest[status.name] = status

    def get(self, name: str):
        with self.lock:
            return self.latest.get(name)

    def values(self, name: str) -> dict[str, str]:
        status = self.get(name)
        return {kv.key: kv.value for kv in status.values} if status is not None else {}

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.ctx)


@pytest.fixture(scope="module")
def graph(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("diagnostics")
    model = tiny_model(tmp)
    probe = DiagnosticsProbe()
    procs, logs = {}, {}
    try:
        for name, cmd in node_commands(tmp, model).items():
            logs[name] = tmp / f"{name}.log"
            procs[name] = subprocess.Popen(cmd, cwd=ROOT, stdout=logs[name].open("w"), stderr=subprocess.STDOUT,
                                           env=dict(os.environ))
        yield probe, procs, logs
    finally:
        stop_processes(procs.values())
        probe.close()


def _logs(logs: dict) -> str:
    return "\n".join(f"--- {name}\n{path.read_text()[-1500:]}" for name, path in logs.items())


def test_every_node_publishes_its_status_with_the_expected_keys(graph):
    probe, procs, logs = graph
    wait_for(lambda: all(probe.get(name) is not None for name in EXPECTED_KEYS) or
             any(p.poll() is not None for p in procs.values()), TIMEOUT_S, "a DiagnosticStatus from every node")
    assert all(p.poll() is None for p in procs.values()), _logs(logs)
    for name, keys in EXPECTED_KEYS.items():
        status = probe.get(name)
        assert status.hardware_id == "tst_ros"
        assert status.level[0] in (0, 1, 2) and status.message, (name, status)
        missing = keys - set(probe.values(name))
        assert not missing, (name, missing, probe.values(name))
    assert probe.values("/trainer")["training_stage"] == "waiting"
    assert probe.get("/trainer").level[0] == 0


def test_rates_follow_the_frames_flowing_through_segmentation(graph):
    probe, procs, logs = graph

    def flowing() -> bool:
        seg = probe.values("/segmentation")
        return bool(seg) and int(seg["frames_processed"]) > 0 and float(seg["output_rate_hz"]) > 0
    wait_for(lambda: flowing() or procs["segmentation"].poll() is not None, TIMEOUT_S,
             "segmentation diagnostics reporting processed frames")
    assert flowing(), _logs(logs)
    seg = probe.values("/segmentation")
    assert float(seg["input_rate_hz"]) > 0
    wait_for(lambda: "latency_ms_p50" in probe.values("/segmentation"), TIMEOUT_S, "segmentation latency")
    seg = probe.values("/segmentation")
    assert 0 < float(seg["latency_ms_p50"]) <= float(seg["latency_ms_max"])
    assert probe.get("/segmentation").message.startswith("serving model")
    wait_for(lambda: int(probe.values("/recorder").get("messages_received", 0)) > 0, TIMEOUT_S,
             "recorder diagnostics counting received messages")
    wait_for(lambda: float(probe.values("/sim").get("output_rate_hz", 0)) > 0, TIMEOUT_S,
             "sim diagnostics reporting its publishing rate")
