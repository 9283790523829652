"""The README's own-data path, end to end from the command line, on a building other than the
default test building: `tst-ros dataset from-sim` writes a store, then `tst-ros pipeline`
(nothing from `tst-ros specialize` needed) trains, exports and evaluates on it."""
import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
BUILDING = ["--set", "sim.style=office", "--set", "sim.seed=7", "--set", "sim.width=128", "--set", "sim.height=96"]


def tst_ros(*args: str, timeout: float) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "tst_ros.cli", *args], env=env, capture_output=True, text=True,
                          timeout=timeout, cwd=REPO)


def test_pipeline_on_a_store_of_another_building(tmp_path):
    data, run = tmp_path / "office", tmp_path / "run"
    made = tst_ros("dataset", "from-sim", "--out", str(data), "--frames", "24", "--image-size", "64", *BUILDING,
                   timeout=120)
    assert made.returncode == 0, made.stderr[-3000:]
    assert json.loads(made.stdout.splitlines()[-1])["source"]["style"] == "office"

    done = tst_ros("pipeline", "--run", str(run), "--data", str(data), "--micro", *BUILDING, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]

    metrics = json.loads((run / "metrics.json").read_text())
    for method in ("tst-mm", "scratch"):
        assert 0.0 <= metrics["segdet"][method]["miou"] <= 1.0, metrics["segdet"]
    assert set(metrics["tttkd"]["miou_by_k"]) == {"test building", "shifted"}
    manifest = json.loads((run / "deploy" / "manifest.json").read_text())
    assert manifest and (run / "deploy" / "tttkd.safetensors").is_file()
    resolved = yaml.safe_load((run / "config.yaml").read_text())["config"]
    assert resolved["sim"]["style"] == "office" and resolved["pretrain"]["steps"] == 6
    stages = json.loads((run / "pipeline.json").read_text())["last_run"]["stages"]
    assert set(stages.values()) == {"run (not run yet)"}
    assert '"event": "model"' in done.stderr
