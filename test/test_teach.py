"""The teach stage: teacher modalities computed once per sample, resumable after a kill,
refused when they belong to other data, served by the loader and listed by `dataset info`."""
import json
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from polling import wait_for
from tst_ros import modalities
from tst_ros.config import RecordConfig, SimConfig
from tst_ros.data.from_sim import build_dataset
from tst_ros.data.loader import StoreDataset
from tst_ros.data.store import Store
from tst_ros.data.teach import STATE_FILE, teach, teacher_dir
from tst_ros.modalities import Modality
from tst_ros.teachers import TeacherUnavailable, load_teacher

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "tst_ros.cli"]


def _store(path: Path, frames: int, start: int = 0) -> Path:
    build_dataset(SimConfig(), RecordConfig(dataset=str(path), image_size=64), frames, path, start=start)
    return path


def _taught_seqs(dataset: Path, name: str) -> list[int]:
    return [e["source_seq"] for e in Store(teacher_dir(dataset, name), "r").entries]


def test_killed_teach_resumes_and_every_sample_is_taught_exactly_once(tmp_path, one_torch_thread):
    dataset = _store(tmp_path / "ds", 48)
    cmd = CLI + ["dataset", "teach", str(dataset), "--teachers", "hed", "--no-progress", "--device", "cpu"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    index = teacher_dir(dataset, "hed") / "index.jsonl"
    try:
        wait_for(lambda: index.exists() and index.read_text().count("\n") >= 8, 300, "a first committed batch")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    partial = _taught_seqs(dataset, "hed")
    assert 8 <= len(partial) < 48, "the kill should land between the first and the last batch"
    done = subprocess.run(cmd + ["--json"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)["teachers"][0]
    assert report["already"] == len(partial) and report["taught"] == 48 - len(partial)
    assert _taught_seqs(dataset, "hed") == list(range(48))

    info = subprocess.run(CLI + ["dataset", "info", str(dataset), "--json"], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert json.loads(info.stdout)["teachers"] == {"hed": 48}


def test_hed_edges_peak_on_an_intensity_step():
    rgb = np.full((1, 64, 64, 3), 40, np.uint8)
    rgb[:, :, 32:] = 220
    edges = load_teacher(modalities.get("hed"))(rgb)
    assert edges.shape == (1, 64, 64) and edges.dtype == np.uint8
    profile = edges[0, 16:48].mean(axis=0)
    assert abs(int(np.argmax(profile)) - 31.5) <= 2
    assert profile[30:34].mean() > 3 * profile[:20].mean()


def test_incremental_teach_keeps_the_fitted_pca_and_earlier_outputs(tmp_path, one_torch_thread):
    dataset = _store(tmp_path / "ds", 24)
    teach(dataset, ["imagenet"], device="cpu", progress=False)
    sub = teacher_dir(dataset, "imagenet")
    state = (sub / STATE_FILE).read_bytes()
    first = np.array(Store(sub, "r").read(5)["imagenet"])
    feats = np.stack([np.asarray(Store(sub, "r").read(i)["imagenet"], np.float32) for i in range(24)])
    assert feats.shape == (24, 16, 16, 16)
    assert np.allclose(feats.reshape(-1, 16).std(axis=0), 1.0, atol=0.05), "whitened on the fitting frames"

    _store(dataset, 8, start=24)                     # the robot recorded more
    report = teach(dataset, ["imagenet"], device="cpu", progress=False)["teachers"][0]
    assert (report["already"], report["taught"]) == (24, 8)
    assert (sub / STATE_FILE).read_bytes() == state
    assert np.array_equal(np.array(Store(sub, "r").read(5)["imagenet"]), first)
    assert _taught_seqs(dataset, "imagenet") == list(range(32))


def test_loader_serves_taught_samples_and_marks_untaught_ones_absent(tmp_path):
    dataset = _store(tmp_path / "ds", 20)
    with pytest.raises(FileNotFoundError, match="dataset teach"):
        StoreDataset(dataset, split="all", modalities=["rgb", "coco_objects"], size=64)
    teach(dataset, ["coco_objects", "imagenet"], device="cpu", progress=False)
    _store(dataset, 4, start=20)
    ds = StoreDataset(dataset, split="all", modalities=["rgb", "coco_objects", "imagenet"], size=64, augment=True,
                      seed=3)
    item = ds[3]
    assert item["coco_objects"].shape == (4, 64, 64) and item["coco_objects"].dtype == torch.uint8
    assert item["imagenet"].shape == (16, 64, 64) and item["imagenet"].dtype == torch.float32
    assert bool(item["present"]["imagenet"]) and bool(item["present"]["coco_objects"])
    late = ds[22]
    assert not bool(late["present"]["imagenet"]) and not bool(late["present"]["coco_objects"])
    assert float(late["imagenet"].abs().sum()) == 0.0


def test_outputs_of_other_data_are_refused_until_redo(tmp_path):
    dataset = _store(tmp_path / "ds", 12)
    teach(dataset, ["coco_objects"], device="cpu", progress=False)
    other = _store(tmp_path / "other", 12, start=300)
    sub = teacher_dir(dataset, "coco_objects")
    teacher_dir(other, "coco_objects").parent.mkdir()
    sub.rename(teacher_dir(other, "coco_objects"))
    with pytest.raises(ValueError, match="CRC mismatch"):
        teach(other, ["coco_objects"], device="cpu", progress=False)
    report = teach(other, ["coco_objects"], device="cpu", progress=False, redo=True)["teachers"][0]
    assert report["taught"] == 12


def test_a_teacher_that_cannot_load_is_named_in_the_error(tmp_path):
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not an onnx file")
    for spec, name in ((f"onnx:{broken}", "corrupt_onnx"), ("tst_ros.teachers.no_such_module:Teacher", "gone")):
        modality = Modality(name, "feature_map", 8, "float16", "test teacher", derived_from=("rgb",), teacher=spec)
        with pytest.raises(TeacherUnavailable, match=rf"teacher '{name}' \("):
            load_teacher(modality)


def test_teach_cli_rejects_a_sensor_modality_with_a_clear_error(tmp_path):
    dataset = _store(tmp_path / "ds", 4)
    out = subprocess.run(CLI + ["dataset", "teach", str(dataset), "--teachers", "depth"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert "not teacher modalities" in out.stderr
