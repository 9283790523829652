"""End to end: `tst-ros specialize --micro` on a live graph.

First run is interrupted with SIGINT while the trainer's child is working: everything stops
within 10 s, no process is left behind, and the store and checkpoint stay valid. The second
run resumes (no re-recording, pre-training continues from its checkpoint), every output topic
carries valid messages, the perception nodes hot-load the trainer's model, and the report
files exist, its table with the oracle, the gap closed, things, stuff and per-class IoU.
"""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

TST_ROS = [sys.executable, "-m", "tst_ros.cli"]


def _start(run_dir: Path, log: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(TST_ROS + ["specialize", "--micro", "--data-dir", str(run_dir), "--timeout", "280",
                                         "--set", "specialize.oracle=true"],
                            stdout=log.open("ab"), stderr=subprocess.STDOUT, env=env, start_new_session=True)


def _descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def _wait_for(predicate, timeout: float, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if proc.poll() is not None:
            pytest.fail(f"specialize exited early ({proc.returncode}):\n{log.read_text()[-4000:]}")
        time.sleep(0.2)
    proc.kill()
    pytest.fail(f"condition not reached in {timeout} s:\n{log.read_text()[-4000:]}")


def test_specialize_micro_interrupt_resume_and_report(tmp_path):
    run_dir = tmp_path / "run"
    log = tmp_path / "specialize.log"

    # --- first run: interrupt while the trainer's child process is pre-training
    proc = _start(run_dir, log)
    pretrain_dir = run_dir / "pretrain"
    _wait_for(lambda: (pretrain_dir / "log.jsonl").is_file() and (pretrain_dir / "log.jsonl").stat().st_size > 0,
              180, proc, log)
    family = _descendants(proc.pid)
    assert family, "the trainer runs its work in a child process"
    t0 = time.monotonic()
    proc.send_signal(signal.SIGINT)
    try:
        rc = proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail(f"SIGINT did not stop specialize within 10 s:\n{log.read_text()[-3000:]}")
    stop_s = time.monotonic() - t0
    assert rc == 130, log.read_text()[-3000:]
    time.sleep(0.5)
    orphans = [p for p in family if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert not orphans, f"left behind: {[p.cmdline() for p in orphans]}"
    print(f"stopped {stop_s:.1f} s after SIGINT")

    from tst_ros.data.store import Store
    from tst_ros.train.checkpoint import read_checkpoint

    store = Store(run_dir / "dataset")
    recorded = len(store)
    assert recorded >= 24
    for i in (0, recorded - 1):
        assert store.read(i, verify=True)["rgb"].shape[-1] == 3
    store.close()
    tensors, meta = read_checkpoint(pretrain_dir / "checkpoint.safetensors")
    assert tensors and meta, "the interrupted pre-training left a loadable checkpoint"

    # --- second run: resumes and completes
    proc = _start(run_dir, log)
    rc = proc.wait(timeout=290)
    text = log.read_text()
    assert rc == 0, text[-4000:]
    assert len(Store(run_dir / "dataset")) == recorded, "a resumed run does not record the same frames again"
    log_steps = [json.loads(line)["step"] for line in (pretrain_dir / "log.jsonl").read_text().splitlines()
                 if line.strip().startswith("{")]
    assert log_steps and min(log_steps) >= 1 and max(log_steps) == 6

    deploy = json.loads((run_dir / "deploy.json").read_text())
    assert deploy["hot_loaded"], deploy
    for topic in ("mask", "overlay", "detections", "points_labeled"):
        assert deploy["outputs"].get(topic, {}).get("count", 0) > 0, (topic, deploy)
    assert deploy["label_versions"]["segmentation"] == deploy["model_version"]

    metrics = json.loads((run_dir / "metrics.json").read_text())
    segdet = metrics["segdet"]
    for method in ("tst-mm", "scratch", "oracle"):
        assert 0.0 <= segdet[method]["miou"] <= 1.0
        assert 0.0 <= segdet[method]["things_miou"] <= 1.0 and 0.0 <= segdet[method]["stuff_miou"] <= 1.0
    assert segdet["scratch"]["gap_closed"] == 0.0
    assert segdet["oracle"]["gap_closed"] in (1.0, None)    # None only if oracle and scratch tie exactly
    report = run_dir / "report"
    assert (report / "index.html").is_file()
    html = (report / "index.html").read_text()
    assert "scratch" in html and "specialised" in html
    for part in ("oracle", "gap closed", "things %", "stuff %", "Per-class IoU", "rgb + depth"):
        assert part in html, part
    for png in ("training_curves.png", "segdet_vs_scratch.png", "tttkd.png", "sample_overlay.png"):
        assert (report / png).stat().st_size > 1000, png
