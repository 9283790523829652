"""Model delivery across machines over real DDS: a segmentation node that cannot read the path a
ModelUpdate names fetches the model from the trainer's `~/model_file` service, verifies it into
its model cache and hot-loads it."""
import json
import os
import shlex
import signal
import subprocess
import sys

import pytest
import rclpy
from rclpy.parameter import Parameter

from tst_ros.msg import ModelUpdate
from tst_ros.perception.export import MANIFEST
from tst_ros.ros.qos import qos_latched
from tst_ros.util import sha256_file

from polling import spinning, stop_processes, wait_for

CLASSES = ["wall", "floor", "chair"]
EXTRA_BYTES = 5 * (1 << 19)     # a listed file of 2.5 MiB: three default (1 MiB) chunks
EMIT_MODEL_EVENT = ('import json, sys; '
                    'print(json.dumps({"event": "model", "path": sys.argv[1], "tasks": ["segmentation"]}))')


def export_deploy_dir(out):
    """An exported model directory (model.onnx + manifest.json) as the pipeline deploys it."""
    import numpy as np

    from fixture_models import make_model_dir
    from tst_ros.perception.export import add_to_manifest, export_model

    model_dir = make_model_dir(out.parent / "model", CLASSES, [2], image_size=32)
    frames = [(np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8), None)]
    export_model(model_dir, out, frames=frames)
    (out / "extra.bin").write_bytes(os.urandom(EXTRA_BYTES))     # e.g. a TTT-KD checkpoint beside it
    add_to_manifest(out, "extra.bin")
    return out


@pytest.fixture
def robot(tmp_path):
    """The segmentation node in its own process, working directory and model cache."""
    home = tmp_path / "robot"
    home.mkdir()
    log = tmp_path / "segmentation.log"
    cmd = [sys.executable, "-m", "tst_ros.ros.nodes.segmentation", "--ros-args",
           "-p", "providers:=['CPUExecutionProvider']", "-p", "threads:=1",
           "-p", f"model_cache_dir:={home / 'cache'}"]
    process = subprocess.Popen(cmd, cwd=home, stdout=log.open("w"), stderr=subprocess.STDOUT,
                               env=dict(os.environ, OMP_NUM_THREADS="1"))
    yield process, home, log
    stop_processes([process], signal.SIGTERM, timeout=10)


@pytest.fixture
def executor():
    with spinning(3) as executor:
        yield executor


def test_a_node_that_cannot_read_the_model_path_fetches_verifies_and_hot_loads_it(
        tmp_path, monkeypatch, robot, executor):
    """How "another machine" is simulated: the trainer runs in the workstation's working
    directory and its training process reports the model as `deploy`, relative to it (as the
    trainer's default, relative `run_dir` makes it do); the ModelUpdate carries that path as
    reported. The segmentation node runs in another process whose working directory (the
    robot's) has no `deploy`, and it is told nothing about the workstation's directory, so the
    path it receives names nothing it can read - as on another machine. Only the graph connects
    them: the update's `source` service is its one way to the bytes. (Hiding an absolute path
    would need a mount namespace, which needs privileges CI machines may not grant.)"""
    from vision_msgs.msg import LabelInfo, VisionInfo

    from tst_ros.ros.nodes.trainer import TrainerNode

    process, robot_home, log = robot
    workstation = tmp_path / "workstation"
    deploy = export_deploy_dir(workstation / "deploy")
    assert not (robot_home / "deploy").exists()
    monkeypatch.chdir(workstation)
    served, updates = {"versions": [], "classes": []}, []
    peer = rclpy.create_node("model_delivery_peer")
    peer.create_subscription(VisionInfo, "/tst/segmentation/vision_info",
                             lambda m: served["versions"].append(m.database_version), qos_latched())
    peer.create_subscription(LabelInfo, "/tst/segmentation/label_info",
                             lambda m: served["classes"].append([c.class_name for c in m.class_map][:-1]),
                             qos_latched())
    peer.create_subscription(ModelUpdate, "/tst/model", updates.append, qos_latched())
    executor.add_node(peer)
    command = f"{{python}} -c {shlex.quote(EMIT_MODEL_EVENT)} deploy"
    trainer = TrainerNode(parameter_overrides=[
        Parameter("command", value=command), Parameter("run_dir", value="run"),
        Parameter("min_samples", value=0), Parameter("status_rate_hz", value=4.0)])
    executor.add_node(trainer)

    try:
        wait_for(lambda: (served["versions"][-1:] == [1] and served["classes"][-1:] == [CLASSES])
                 or process.poll() is not None, 180, "the segmentation node to serve the fetched model v1")
        assert process.poll() is None, "the segmentation node exited"
    except AssertionError as e:
        raise AssertionError(f"{e}; seen: {served}; node log:\n{log.read_text()}") from None
    update = updates[-1]
    assert (update.path, update.source) == ("deploy", "/trainer/model_file")

    # the node loaded the cache entry: every file byte-identical to the workstation's
    entry = robot_home / "cache" / update.checksum
    manifest = json.loads((entry / MANIFEST).read_text())
    assert sha256_file(entry / MANIFEST) == update.checksum == sha256_file(deploy / MANIFEST)
    for name, record in manifest["files"].items():
        assert sha256_file(entry / name) == record["sha256"] == sha256_file(deploy / name)
    assert set(manifest["files"]) == {"model.onnx", "extra.bin"}
    assert sorted(p.name for p in (robot_home / "cache").iterdir()) == [update.checksum]   # no partial left
    text = log.read_text()
    assert "fetching it from /trainer/model_file" in text and "fetched and verified" in text
    assert f"serving model v1 from {entry}" in text
