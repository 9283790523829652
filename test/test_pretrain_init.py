"""`tst-ros pretrain --init`: continued pre-training starts from another run's encoder."""
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tst_ros.config import PretrainConfig
from tst_ros.models.io import save_encoder
from tst_ros.train.pretrain import build_model, init_encoder

ROOT = Path(__file__).resolve().parents[1]


def _cfg(**kw) -> PretrainConfig:
    return PretrainConfig(**{"preset": "tiny", "image_size": 64, "patch": 16, "device": "cpu", **kw})


def test_init_copies_shared_weights_and_leaves_new_modalities_random(tmp_path):
    source = build_model(_cfg(modalities=["rgb", "depth"], seed=1)).encoder
    file = save_encoder(source, tmp_path / "encoder.safetensors")
    target = build_model(_cfg(modalities=["rgb", "depth", "hed"], seed=2)).encoder
    before_hed = target.adapters["hed"].proj.weight.clone()
    report = init_encoder(target, str(tmp_path))
    assert report["new_modalities"] == ["hed"] and Path(report["source"]) == file
    theirs = source.state_dict()
    for key, value in target.state_dict().items():
        if key in theirs:
            assert torch.equal(value, theirs[key]), key
    assert torch.equal(target.adapters["hed"].proj.weight, before_hed)


def test_init_from_an_encoder_of_another_size_is_refused(tmp_path):
    save_encoder(build_model(_cfg(preset="s", modalities=["rgb"])).encoder, tmp_path / "encoder.safetensors")
    with pytest.raises(ValueError, match="does not fit"):
        init_encoder(build_model(_cfg(modalities=["rgb"])).encoder, str(tmp_path))


def test_pretrain_cli_continues_from_a_run(tmp_path):
    cli = [sys.executable, "-m", "tst_ros.cli", "pretrain", "--data", "synthetic:16", "--preset", "tiny",
           "--image-size", "64", "--steps", "2", "--batch", "4", "--workers", "0", "--device", "cpu",
           "--modalities", "rgb,depth"]
    first = subprocess.run(cli + ["--out", str(tmp_path / "a")], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    second = subprocess.run(cli + ["--out", str(tmp_path / "b"), "--init", str(tmp_path / "a")], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr
    assert "initialised" in second.stderr and str(tmp_path / "a") in second.stderr


def test_zero_steps_write_the_seeds_initial_encoder_unchanged(tmp_path):
    # the specialisation benchmark's "(no pre-training)" row transfers exactly this encoder
    from tst_ros.models.io import read_encoder
    from tst_ros.train.pretrain import pretrain

    cfg = _cfg(modalities=["rgb", "depth"], steps=0, seed=3, workers=0, tensorboard=False, checkpoint_every=0)
    written, _ = read_encoder(Path(pretrain(cfg, "synthetic:16", tmp_path / "run")["encoder"]))
    initial = build_model(cfg).encoder.state_dict()
    assert written.keys() == initial.keys()
    assert all(torch.equal(written[k], initial[k]) for k in initial)
