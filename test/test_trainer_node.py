"""`trainer` node over real DDS: waits for samples, trains in a child process, reports status,
publishes loadable model updates, pauses and stops with a valid checkpoint; model versions keep
increasing across a restart of the node, so a running segmentation node hot-loads the next model."""
import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time

import pytest
import rclpy
from rclpy.executors import MultiThreadedExecutor
from rclpy.parameter import Parameter
from std_srvs.srv import Trigger

from tst_ros.models import load_encoder
from tst_ros.msg import ModelUpdate, RecorderStatus, TrainingStatus
from tst_ros.ros.qos import qos_latched, qos_profile
from tst_ros.train.checkpoint import CHECKPOINT_FILE, read_checkpoint
from tst_ros.util import sha256_file

from polling import Spinning, spinning, stop_processes, wait_for

COMMAND = (f"{sys.executable} -m tst_ros.cli pretrain --data synthetic:32 --out {{run_dir}} --steps 2000 --batch 4 "
           "--image-size 32 --patch 8 --preset tiny --workers 0 --progress-jsonl --set pretrain.checkpoint_every=4 "
           "--set pretrain.tensorboard=false --set pretrain.val_batches=1 --set pretrain.warmup_steps=2 "
           "--set pretrain.decoder_dim=64 --set pretrain.decoder_depth=1")


def call(client, timeout=10.0):
    assert client.wait_for_service(timeout_sec=timeout), client.srv_name
    future = client.call_async(Trigger.Request())
    wait_for(future.done, timeout, client.srv_name)
    return future.result()


@pytest.fixture
def graph(tmp_path, monkeypatch):
    from tst_ros.ros.nodes.trainer import TrainerNode

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    rclpy.init()
    trainer = TrainerNode(parameter_overrides=[
        Parameter("command", value=COMMAND), Parameter("run_dir", value=str(tmp_path / "run")),
        Parameter("min_samples", value=5), Parameter("status_rate_hz", value=4.0),
        Parameter("stop_timeout_s", value=60.0)])
    peer = rclpy.create_node("trainer_test_peer")
    executor = MultiThreadedExecutor(num_threads=3)
    executor.add_node(trainer)
    executor.add_node(peer)
    thread = threading.Thread(target=executor.spin, daemon=True)
    thread.start()
    try:
        yield trainer, peer, tmp_path / "run"
    finally:
        trainer.destroy_node()
        executor.shutdown()
        peer.destroy_node()
        rclpy.try_shutdown()
        thread.join(5)


def test_trainer_node_waits_trains_reports_publishes_models_pauses_and_stops(graph):
    trainer, peer, run = graph
    statuses, models = [], []
    peer.create_subscription(TrainingStatus, "/tst/trainer/status", statuses.append, qos_profile("reliable", 50))
    recorder = peer.create_publisher(RecorderStatus, "/tst/recorder/status", qos_profile("reliable", 10))

    # not enough samples: the node waits (and keeps reporting)
    wait_for(lambda: len(statuses) >= 2, 10, "status while waiting")
    for _ in range(3):
        recorder.publish(RecorderStatus(samples_written=2, dataset_path="unused", recording=True))
        time.sleep(0.2)
    assert statuses[-1].stage == "waiting" and trainer.child is None

    # enough samples: it starts the child and status shows training progress at >= 1 Hz
    t0 = time.monotonic()
    recorder.publish(RecorderStatus(samples_written=10, dataset_path="unused", recording=True))
    wait_for(lambda: statuses and statuses[-1].stage == "pretrain" and statuses[-1].step >= 2, 60, "training steps")
    seen = len(statuses)
    time.sleep(2.5)
    recent = statuses[seen:]
    assert len(recent) >= 2, "status must keep arriving at >= 1 Hz while training"
    assert recent[-1].total_steps == 2000 and recent[-1].loss > 0 and recent[-1].samples_per_second > 0

    # a milestone model: transient-local, so a late subscriber still gets it; checksum matches
    wait_for(lambda: trainer.version >= 1, 60, "first model update")
    peer.create_subscription(ModelUpdate, "/tst/model", models.append, qos_latched())
    wait_for(lambda: models, 10, "ModelUpdate for a late subscriber")
    assert "encoder" in list(models[-1].tasks) and len(models[-1].checksum) == 64

    # pause freezes progress; pausing again resumes
    pause = peer.create_client(Trigger, "/trainer/pause")
    assert call(pause).message == "paused"
    time.sleep(0.6)
    frozen = trainer.child.snapshot()["step"]
    time.sleep(1.5)
    assert trainer.child.snapshot()["step"] == frozen and statuses[-1].message == "paused"
    assert call(pause).message == "resumed"
    wait_for(lambda: trainer.child.snapshot()["step"] > frozen, 30, "progress after resuming")

    # stop: the child saves a checkpoint and exits; the node reports it
    response = call(peer.create_client(Trigger, "/trainer/stop"))
    assert response.success
    wait_for(lambda: statuses and statuses[-1].stage == "stopped", 60, "stopped status")
    assert trainer.child.returncode() == 0
    tensors, meta = read_checkpoint(run / CHECKPOINT_FILE)
    assert 0 < meta["step"] < 2000 and any(k.startswith("model/") for k in tensors)
    # the final model update points at the file as it now is on disk, and it loads
    wait_for(lambda: models and models[-1].version == trainer.version, 10, "the final ModelUpdate")
    update = models[-1]
    assert update.checksum == sha256_file(update.path)
    encoder, enc_meta = load_encoder(update.path)
    assert enc_meta["step"] == meta["step"] and list(update.modalities) == encoder.modalities
    assert time.monotonic() - t0 < 120


def test_model_versions_are_persisted_and_continue_after_a_restart(tmp_path):
    from tst_ros.ros.nodes.trainer import ModelVersions

    path = tmp_path / "run" / "model_version.json"
    first = ModelVersions(path)
    assert first.last == 0 and not path.exists()
    assert [first.next(), first.next()] == [1, 2]
    restarted = ModelVersions(path)
    assert (restarted.last, restarted.read_error) == (2, "")
    assert restarted.next() == 3 and json.loads(path.read_text()) == {"version": 3}

    # an unreadable record: counting resumes from the clock (seconds), still above the last version
    path.write_text('{"version": 3')
    recovered = ModelVersions(path, now=lambda: 1_750_000_000.7)
    assert recovered.read_error and recovered.next() == 1_750_000_001
    assert ModelVersions(path).next() == 1_750_000_002


EMIT_MODEL_EVENT = ('import json, sys; '
                    'print(json.dumps({"event": "model", "path": sys.argv[1], "tasks": ["segmentation"]}))')


def export_deploy_dir(tmp_path, name: str, classes: list[str]):
    """An exported model directory (model.onnx + manifest.json) as the pipeline deploys it."""
    import numpy as np

    from tst_ros.perception.export import export_model
    from fixture_models import make_model_dir

    model_dir = make_model_dir(tmp_path / f"{name}_model", classes, [2], image_size=32)
    rng = np.random.default_rng(0)
    frames = [(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8), None)]
    export_model(model_dir, tmp_path / name, frames=frames)
    return tmp_path / name


@pytest.fixture
def segmentation_node(tmp_path):
    """The segmentation node in its own process, with no model until /tst/model brings one."""
    log = tmp_path / "segmentation.log"
    cmd = [sys.executable, "-m", "tst_ros.ros.nodes.segmentation", "--ros-args",
           "-p", "providers:=['CPUExecutionProvider']", "-p", "threads:=1"]
    process = subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT, env=dict(os.environ))
    yield process, log
    stop_processes([process], signal.SIGTERM, timeout=10)


@pytest.fixture
def spinning_executor():
    with spinning(2) as executor:
        yield executor


def model_publishing_trainer(run_dir, model_dir, context=None):
    """A trainer whose child process announces `model_dir` once and exits."""
    from tst_ros.ros.nodes.trainer import TrainerNode

    command = f"{{python}} -c {shlex.quote(EMIT_MODEL_EVENT)} {shlex.quote(str(model_dir))}"
    return TrainerNode(parameter_overrides=[
        Parameter("command", value=command), Parameter("run_dir", value=str(run_dir)),
        Parameter("min_samples", value=0), Parameter("status_rate_hz", value=4.0)], context=context)


def wait_until_serving(served: dict, process, log, version: int, classes: list[str]) -> None:
    """Until the node's VisionInfo shows `version` and its LabelInfo `classes` (bounded; fails with
    the node's log)."""
    try:
        wait_for(lambda: (served["versions"][-1:] == [version] and served["classes"][-1:] == [classes])
                 or process.poll() is not None, 120,
                 f"the segmentation node to serve v{version}")
        assert process.poll() is None, "the segmentation node exited"
    except AssertionError as e:
        raise AssertionError(f"{e}; versions and label maps seen: {served}; node log:\n{log.read_text()}") from None


def test_a_restarted_trainer_continues_the_versions_and_segmentation_hot_loads_its_model(
        tmp_path, monkeypatch, segmentation_node, spinning_executor):
    from vision_msgs.msg import LabelInfo, VisionInfo

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    process, log = segmentation_node
    models = [(export_deploy_dir(tmp_path, "deploy_a", ["wall", "floor", "chair"]), ["wall", "floor", "chair"]),
              (export_deploy_dir(tmp_path, "deploy_b", ["floor", "wall", "table"]), ["floor", "wall", "table"])]
    served: dict[str, list] = {"versions": [], "classes": []}
    peer = rclpy.create_node("trainer_restart_peer")
    peer.create_subscription(VisionInfo, "/tst/segmentation/vision_info",
                             lambda m: served["versions"].append(m.database_version), qos_latched())
    peer.create_subscription(LabelInfo, "/tst/segmentation/label_info",   # the model's classes, then unlabeled
                             lambda m: served["classes"].append([c.class_name for c in m.class_map][:-1]),
                             qos_latched())
    spinning_executor.add_node(peer)

    # each trainer is a fresh node on the same run_dir, in its own context (a new participant, as
    # a restarted process would be): the second one is a restart of the first. Its executor stops
    # before the node is destroyed; destroying a node that a spinning executor still waits on
    # kills that executor's thread.
    for expected_version, (deploy, classes) in enumerate(models, start=1):
        spun = Spinning(lambda ctx, deploy=deploy: model_publishing_trainer(tmp_path / "run", deploy, ctx))
        try:
            wait_until_serving(served, process, log, expected_version, classes)
            assert spun.node.version == expected_version
        finally:
            spun.close()
    assert served["versions"] == [1, 2]


def test_the_training_child_waits_for_cores_passively_unless_the_user_says_otherwise(monkeypatch):
    from tst_ros.ros.nodes.trainer import TrainingProcess

    report = "import json, os; print(json.dumps({'stage': 'env', 'omp': os.environ.get('OMP_WAIT_POLICY')}))"
    for given, expected in ((None, "PASSIVE"), ("ACTIVE", "ACTIVE")):
        if given is None:
            monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
        else:
            monkeypatch.setenv("OMP_WAIT_POLICY", given)
        child = TrainingProcess([sys.executable, "-c", report])
        wait_for(lambda: "omp" in child.snapshot(), 120, "the child's report")
        assert child.snapshot()["omp"] == expected
        wait_for(lambda: child.returncode() == 0, 120, "the child to exit")
