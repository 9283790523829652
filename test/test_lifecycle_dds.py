"""Managed (lifecycle) segmentation and recorder over real DDS, driven through the standard
lifecycle services from this process.

The segmentation node runs as `tst-ros node segmentation --managed`, the recorder as
`python -m tst_ros.ros.nodes.recorder --managed` (what `ros2 run tst_ros recorder --managed`
runs); a sim node in this process feeds both. configure -> activate: masks arrive and the
recorder writes samples; deactivate: inputs still arrive (counted as `inactive` drops in
/diagnostics) but no mask and no stored sample has a stamp after the transition; cleanup: both
are unconfigured again and the store is closed with what was recorded.
"""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")
pytest.importorskip("lifecycle_msgs")
pytest.importorskip("diagnostic_msgs")

from fixture_models import make_model_dir  # noqa: E402
from polling import stop_processes, wait_for  # noqa: E402
from tst_ros.perception.export import export_model  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT_S = 180.0            # generous: node processes start on a shared 2-core machine
NODES = ("/segmentation", "/recorder")


def tiny_model(tmp: Path) -> Path:
    model_dir = make_model_dir(tmp / "model", ["wall", "floor", "chair"], [2], image_size=32, constant_class=1)
    frames = [(np.zeros((48, 64, 3), np.uint8), np.ones((48, 64), np.float32))]
    return Path(export_model(model_dir, tmp / "model.onnx", frames=frames)["path"])


class Driver:
    """This process's side: a sim node, lifecycle clients, mask / diagnostics subscribers."""

    def __init__(self):
        from diagnostic_msgs.msg import DiagnosticArray
        from lifecycle_msgs.srv import ChangeState, GetState
        from rclpy.executors import MultiThreadedExecutor
        from rclpy.parameter import Parameter
        from sensor_msgs.msg import Image

        from tst_ros.ros.nodes.sim import SimNode

        rclpy.init()        # the default context: SimNode takes no other
        self.node = rclpy.create_node("lifecycle_driver")
        self.sim = SimNode([Parameter("width", value=64), Parameter("height", value=48),
                            Parameter("camera_rate_hz", value=5.0), Parameter("imu_rate_hz", value=50.0),
                            Parameter("cloud_rate_hz", value=1.0)])
        self.lock = threading.Lock()
        self.mask_stamps: list[int] = []
        self.diagnostics: dict[str, dict[str, str]] = {}
        self.node.create_subscription(Image, "/tst/segmentation/mask", self._on_mask, 50)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 50)
        self.change = {n: self.node.create_client(ChangeState, f"{n}/change_state") for n in NODES}
        self.get_state = {n: self.node.create_client(GetState, f"{n}/get_state") for n in NODES}
        self.executor = MultiThreadedExecutor(num_threads=3)
        self.executor.add_node(self.node)
        self.executor.add_node(self.sim)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()

    def _on_mask(self, msg) -> None:
        with self.lock:
            self.mask_stamps.append(msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec)

    def _on_diagnostics(self, msg) -> None:
        with self.lock:
            for s in msg.status:
                self.diagnostics[s.name] = {kv.key: kv.value for kv in s.values}

    def value(self, node: str, key: str, default="0") -> str:
        with self.lock:
            return self.diagnostics.get(node, {}).get(key, default)

    def masks(self) -> list[int]:
        with self.lock:
            return list(self.mask_stamps)

    def _call(self, client, request):
        future = client.call_async(request)
        wait_for(future.done, 60.0, f"a response from {client.srv_name}")
        return future.result()

    def transition(self, node: str, transition_id: int) -> None:
        from lifecycle_msgs.srv import ChangeState

        request = ChangeState.Request()
        request.transition.id = transition_id
        assert self._call(self.change[node], request).success, (node, transition_id)

    def state(self, node: str) -> str:
        """The node's lifecycle state. GetState is idempotent, so a request sent before the
        service had matched this client (and so never answered) is sent again."""
        from lifecycle_msgs.srv import GetState

        for _ in range(3):
            future = self.get_state[node].call_async(GetState.Request())
            try:
                wait_for(future.done, 20.0, f"a response from {node}/get_state")
            except AssertionError:
                self.get_state[node].remove_pending_request(future)
                continue
            return future.result().current_state.label
        raise AssertionError(f"{node}/get_state answered none of 3 requests")

    def services_ready(self, node: str) -> bool:
        return self.change[node].service_is_ready() and self.get_state[node].service_is_ready()

    def close(self) -> None:
        self.executor.shutdown()
        self.sim.destroy_node()
        self.node.destroy_node()
        rclpy.try_shutdown()


@pytest.fixture(scope="module")
def managed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("lifecycle")
    model = tiny_model(tmp)
    commands = {
        "segmentation": [sys.executable, "-m", "tst_ros.cli", "node", "segmentation", "--managed", "--ros-args",
                         "-p", f"model_path:={model}", "-p", "providers:=['CPUExecutionProvider']",
                         "-p", "threads:=1"],
        "recorder": [sys.executable, "-m", "tst_ros.ros.nodes.recorder", "--managed", "--ros-args",
                     "-p", f"dataset:={tmp / 'store'}", "-p", "image_size:=32", "-p", "status_period_s:=0.25"],
    }
    driver = Driver()
    procs, logs = {}, {}
    try:
        for name, cmd in commands.items():
            logs[name] = tmp / f"{name}.log"
            procs[name] = subprocess.Popen(cmd, cwd=ROOT, stdout=logs[name].open("w"), stderr=subprocess.STDOUT,
                                           env=dict(os.environ))
        yield driver, procs, logs, tmp / "store"
    finally:
        stop_processes(procs.values())
        driver.close()


def test_configure_activate_deactivate_cleanup_over_the_lifecycle_services(managed):
    from lifecycle_msgs.msg import Transition

    from tst_ros.data.store import Store

    driver, procs, logs, store_path = managed
    for name in NODES:
        alive = lambda: all(p.poll() is None for p in procs.values())  # noqa: E731
        # both services: each is a separate pair of DDS endpoints, matched on its own
        wait_for(lambda: driver.services_ready(name) or not alive(), TIMEOUT_S, f"{name} lifecycle services")
        assert alive(), "\n".join(p.read_text() for p in logs.values())
        assert driver.state(name) == "unconfigured"

    for name in NODES:
        driver.transition(name, Transition.TRANSITION_CONFIGURE)
        assert driver.state(name) == "inactive"
    # configured but inactive: frames reach segmentation and are dropped, nothing is served
    # (frames are counted as dropped while unconfigured too: count from the first diagnostics
    # that report the inactive state, not from an earlier, periodic one)
    wait_for(lambda: driver.value("/segmentation", "lifecycle_state", "") == "inactive", TIMEOUT_S,
             "diagnostics reporting the segmentation node inactive")
    dropped = int(driver.value("/segmentation", "drops.frames_inactive"))
    wait_for(lambda: int(driver.value("/segmentation", "drops.frames_inactive")) >= dropped + 3, TIMEOUT_S,
             "frames reaching the inactive segmentation node")
    assert driver.masks() == []

    for name in NODES:
        driver.transition(name, Transition.TRANSITION_ACTIVATE)
        assert driver.state(name) == "active"
    wait_for(lambda: len(driver.masks()) >= 3, TIMEOUT_S, "masks from the active segmentation node")
    wait_for(lambda: int(driver.value("/recorder", "store_samples")) >= 3, TIMEOUT_S,
             "samples written by the active recorder")

    for name in NODES:
        driver.transition(name, Transition.TRANSITION_DEACTIVATE)
        assert driver.state(name) == "inactive"
    deactivated_ns = time.time_ns()
    seg_dropped = int(driver.value("/segmentation", "drops.frames_inactive"))
    rec_dropped = int(driver.value("/recorder", "drops.inactive"))
    # inputs keep arriving (and are dropped) after the transition ...
    wait_for(lambda: int(driver.value("/segmentation", "drops.frames_inactive")) >= seg_dropped + 3, TIMEOUT_S,
             "frames reaching segmentation after deactivate")
    wait_for(lambda: int(driver.value("/recorder", "drops.inactive")) >= rec_dropped + 10, TIMEOUT_S,
             "messages reaching the recorder after deactivate")
    # ... but nothing stamped after it is served
    assert not [s for s in driver.masks() if s >= deactivated_ns]

    for name in NODES:
        driver.transition(name, Transition.TRANSITION_CLEANUP)
        assert driver.state(name) == "unconfigured"
    wait_for(lambda: all(driver.value(n, "lifecycle_state", "") == "unconfigured" for n in NODES), TIMEOUT_S,
             "diagnostics reporting both nodes unconfigured")
    store = Store(store_path)       # closed by cleanup: every committed sample is there
    assert len(store) >= 3
    assert max(e["stamp_ns"] for e in store.entries) < deactivated_ns
    assert all(p.poll() is None for p in procs.values())
