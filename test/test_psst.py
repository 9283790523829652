"""PSST (`tst-ros adapt-modality`): a resumable modality adapter on a frozen base, tied to the
base's checksum, applicable to that base only."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tst_ros.config import AdaptConfig
from tst_ros.models import build_encoder, save_encoder
from tst_ros.models.lora import lora_modules
from tst_ros.models.vit import PRESETS
from tst_ros.train.psst import adapt_modality, apply_adapter

ROOT = Path(__file__).resolve().parents[1]
DATA = "synthetic:12"

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _cfg(**kw) -> AdaptConfig:
    return AdaptConfig(**{"rank": 4, "alpha": 8.0, "warmup_steps": 3, "joint_steps": 3, "batch": 4,
                          "checkpoint_every": 0, "device": "cpu", "dino_dim": 32, **kw})


@pytest.fixture()
def base(tmp_path) -> Path:
    torch.manual_seed(0)
    return save_encoder(build_encoder("tiny", ["rgb"], image_size=32, patch=8),
                        tmp_path / "base" / "encoder.safetensors")


def test_adapter_learns_a_new_modality_on_the_frozen_base_and_applies_to_it(base, tmp_path):
    out = tmp_path / "depth.safetensors"
    summary = adapt_modality(_cfg(), DATA, str(base), "depth", out, progress=False)
    assert summary["adapter"] == str(out) and summary["bytes"] == out.stat().st_size
    encoder, meta = apply_adapter(out, base.parent)
    assert meta["modality"] == "depth" and meta["rank"] == 4 and len(meta["base_sha256"]) == 64
    assert [h["phase"] for h in meta["history"]] == ["mae"] * 3 + ["joint"] * 3
    assert all(k in meta["history"][-1] for k in ("mae", "dino_image", "dino_patch"))
    assert lora_modules(encoder) and any(m.up.detach().abs().sum().item() > 0 for m in lora_modules(encoder).values())
    feats = encoder({"depth": torch.randn(1, 1, 32, 32)})
    assert feats.shape == (1, encoder.embed_dim, 4, 4) and torch.isfinite(feats).all()
    # the adapter is a small part of the adapted encoder
    assert summary["parameters"] < sum(p.numel() for p in encoder.parameters()) / 4


def test_a_stopped_run_resumes_to_the_same_end(base, tmp_path):
    out = tmp_path / "depth.safetensors"
    first = adapt_modality(_cfg(), DATA, str(base), "depth", out, progress=False, stop_at=4)
    assert first["adapter"] is None and first["step"] == 4 and not out.exists()
    done = adapt_modality(_cfg(), DATA, str(base), "depth", out, progress=False)
    assert done["step"] == 6
    _, meta = apply_adapter(out, base)
    assert [h["step"] for h in meta["history"]] == list(range(1, 7))


def test_another_base_is_refused_for_resuming_and_applying(base, tmp_path):
    out = tmp_path / "depth.safetensors"
    adapt_modality(_cfg(), DATA, str(base), "depth", out, progress=False, stop_at=2)
    torch.manual_seed(1)
    other = save_encoder(build_encoder("tiny", ["rgb"], image_size=32, patch=8), tmp_path / "other.safetensors")
    with pytest.raises(ValueError, match="another base"):
        adapt_modality(_cfg(), DATA, str(other), "depth", out, progress=False)
    adapt_modality(_cfg(), DATA, str(base), "depth", out, progress=False)
    with pytest.raises(ValueError, match="sha256"):
        apply_adapter(out, other)


def test_adapt_modality_command_prints_the_parameter_and_storage_account(base, tmp_path):
    out = tmp_path / "a.safetensors"
    cmd = [sys.executable, "-m", "tst_ros.cli", "adapt-modality", "--modality", "depth", "--base", str(base),
           "--data", DATA, "--out", str(out), "--warmup-steps", "2", "--joint-steps", "2", "--batch", "4",
           "--rank", "2", "--device", "cpu", "--json", "--set", "adapt.dino_dim=16"]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["parameters"] > 0 and summary["bytes"] == out.stat().st_size


@pytest.mark.parametrize("preset", ["tiny-imagenet", "tiny-imagenet-rgbd-maps"])
def test_a_base_with_an_imagenet_colour_stem_gets_a_fresh_depth_input_and_keeps_its_backbone(tmp_path, preset):
    torch.manual_seed(0)
    stem_base = save_encoder(build_encoder(preset, ["rgb"], image_size=64, patch=16),
                             tmp_path / "stem" / "encoder.safetensors")
    out = tmp_path / "depth.safetensors"
    adapt_modality(_cfg(warmup_steps=2, joint_steps=1), "synthetic:8", str(stem_base), "depth", out, progress=False)
    encoder, meta = apply_adapter(out, stem_base)
    assert meta["modality"] == "depth"
    imagenet = {k.split(".backbone.")[1]: v for k, v in build_encoder(preset, ["rgb"], image_size=64, patch=16)
                .state_dict().items() if ".backbone." in k}
    backbones = {k: v for k, v in encoder.state_dict().items() if ".backbone." in k}
    # every ImageNet backbone (colour's, and depth's where the preset reads depth through one) stays as it was
    stems = len(PRESETS[preset].get("stem_modalities", ("rgb",)))
    assert len(backbones) == len(imagenet) * stems
    assert all(torch.equal(v, imagenet[k.split(".backbone.")[1]]) for k, v in backbones.items())
    feats = encoder({"rgb": torch.randn(1, 3, 64, 64), "depth": torch.randn(1, 1, 64, 64)})
    assert feats.shape[-2:] == (4, 4) and torch.isfinite(feats).all()
