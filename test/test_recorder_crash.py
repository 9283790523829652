"""Crash safety: SIGKILL a process recording into the store at random moments, repeatedly.

After every kill each sample the process had reported as written is readable and intact
(CRC-checked), and the store reopens and accepts new samples.
"""
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

from tst_ros.data.store import Store

ROOT = Path(__file__).resolve().parents[1]


def _run_and_kill(dataset: Path, start: int, delay: float) -> list[int]:
    proc = subprocess.Popen([sys.executable, str(ROOT / "test" / "store_crash_peer.py"), str(dataset), str(start)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    reported: list[int] = []
    opened = threading.Event()

    def read_stdout():
        for line in proc.stdout:
            if line.startswith("open"):
                opened.set()
            elif line.startswith("written"):
                reported.append(int(line.split()[1]))

    reader = threading.Thread(target=read_stdout, daemon=True)
    reader.start()
    assert opened.wait(180), proc.stderr.read() if proc.poll() is not None else "peer did not open the store"
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    reader.join(timeout=5)
    return reported


def test_sigkill_at_random_moments_never_loses_a_reported_sample(tmp_path):
    dataset = tmp_path / "store"
    rng = random.Random(1234)
    all_reported: list[int] = []
    for round_ in range(4):
        before = len(Store(dataset)) if (dataset / "meta.json").exists() else 0
        reported = _run_and_kill(dataset, start=before, delay=rng.uniform(0.05, 0.8))
        all_reported += reported
        store = Store(dataset)
        assert len(store) >= before + len(reported)
        for seq in all_reported:
            arrays = store.read(seq, verify=True)
            assert arrays["rgb"].shape == (48, 48, 3) and arrays["normals"].dtype == np.int8
        # the store reopens for appending after the crash and takes new samples
        with Store(dataset, "a") as writer:
            n = len(writer)
            seq = writer.append({"rgb": np.full((48, 48, 3), round_, np.uint8)},
                                stamp_ns=2_000_000_000_000_000_000 + round_, present={"rgb": True})
            assert seq == n
        store = Store(dataset)
        assert store.read(seq, verify=True)["rgb"][0, 0, 0] == round_
    assert len(all_reported) >= 5, all_reported
    assert len(set(all_reported)) == len(all_reported)
    stamps = [e["stamp_ns"] for e in Store(dataset).entries]
    assert len(stamps) == len(set(stamps))
