"""Stage 2 of modality adapters (TP-MoME, `transfer --finetune tp-mome`): stacked modality LoRAs
sum exactly, the base and every LoRA stay bit-identical while the task parts train, switching
segmentation <-> detection retrains only the task parts, and the result loads, exports and is
accounted for."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tst_ros.config import AdaptConfig, TransferConfig
from tst_ros.models import build_encoder, save_encoder
from tst_ros.models.lora import merge_lora
from tst_ros.models.tpmome import STAGE2_PREFIXES, PromptedEncoder
from tst_ros.perception.heads import load_model
from tst_ros.perception.transfer import transfer
from tst_ros.sim import labeled_set
from tst_ros.train.psst import adapt_modality
from tst_ros.train.stage2 import TASK_PARTS_FILE, apply_adapters, format_account

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _digest(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("stage2")
    torch.manual_seed(0)
    base = save_encoder(build_encoder("tiny", ["rgb"], image_size=32, patch=8), tmp / "base.safetensors",
                        method="tst-mae")
    cfg = AdaptConfig(rank=4, alpha=8.0, warmup_steps=2, joint_steps=2, batch=4, checkpoint_every=0, device="cpu",
                      dino_dim=32)
    adapter = adapt_modality(cfg, "synthetic:12", str(base), "depth", tmp / "depth.safetensors",
                             progress=False)["adapter"]
    labeled_set.write(tmp / "train", 6, seed=1000, width=96, height=72, progress=False)
    return tmp, base, adapter


def _stage2(setup, tasks, out, steps=4):
    tmp, base, adapter = setup
    cfg = TransferConfig(steps=steps, batch=2, stage2_lr=3e-3, finetune="tp-mome", tasks=tasks, adapters=[adapter],
                         prompts=4, mome_layers=[-1], expert_hidden=16, seed=0, device="cpu")
    return transfer(str(base), str(tmp / "train"), str(out), cfg, input_modalities=["rgb", "depth"], show_bar=False)


def test_stacked_lora_adapters_add_up_to_the_sum_of_each(setup, tmp_path):
    _, base, adapter = setup
    cfg = AdaptConfig(rank=2, alpha=6.0, warmup_steps=2, joint_steps=0, batch=4, checkpoint_every=0, device="cpu",
                      dino_dim=32, seed=3)
    other = adapt_modality(cfg, "synthetic:12", str(base), "depth", tmp_path / "d2.safetensors",
                           progress=False)["adapter"]
    plain = merge_lora(apply_adapters([], base)[0]).state_dict()
    one = merge_lora(apply_adapters([adapter], base)[0]).state_dict()
    two = merge_lora(apply_adapters([other], base)[0]).state_dict()
    both = merge_lora(apply_adapters([adapter, other], base)[0]).state_dict()
    for key in (k for k in plain if k.startswith("blocks.") and k.endswith("attn.q.weight")):
        expected = one[key] + two[key] - plain[key]
        assert torch.allclose(both[key], expected, atol=1e-6), key


def test_stage2_trains_only_the_task_parts_and_leaves_base_and_lora_bit_identical(setup, tmp_path):
    tmp, base, adapter = setup
    files = {p: _digest(p) for p in (base, adapter)}
    reference = {f"encoder.{k}": v for k, v in apply_adapters([adapter], base)[0].state_dict().items()}
    summary = _stage2(setup, ["segmentation"], tmp_path / "seg")
    weights = load_file(str(tmp_path / "seg" / "model.safetensors"))
    assert all(torch.equal(weights[k], v) for k, v in reference.items())           # base, LoRA, depth input
    stage2 = [k for k in weights if k.startswith("encoder.") and k[8:].startswith(STAGE2_PREFIXES)]
    fresh = PromptedEncoder("tiny", ["rgb", "depth"], 32, 8, prompts=4, mome_layers=(3,), expert_hidden=16)
    assert stage2 and any(not torch.equal(weights[k], fresh.state_dict()[k[8:]]) for k in stage2 if "experts" in k)
    assert {p: _digest(p) for p in files} == files                                   # files untouched
    account = summary["account"]
    assert account["tasks"]["segmentation"]["trainable"] == account["trainable_parameters"] > 0
    assert account["modalities"]["depth"]["bytes"] == Path(adapter).stat().st_size
    assert 0 < account["lora_fraction"] < 0.1 and 0 < account["trainable_fraction"] < 1
    assert account["pretrained_stem_parameters"] == 0                                # no stem: one share
    assert account["trainable_fraction_without_stem"] == account["trainable_fraction"]
    assert account["base_parameters"] == account["encoder_parameters"] - account["modalities"]["depth"]["parameters"]
    printed = format_account(account)
    assert "modality adapter depth" in printed and "task segmentation" in printed
    parts = load_file(str(tmp_path / "seg" / TASK_PARTS_FILE))
    assert parts and not any(k.startswith("det_head.") for k in parts) and any(k.startswith("seg_head.") for k in parts)


def test_switching_segmentation_to_detection_retrains_only_the_task_parts(setup, tmp_path):
    _stage2(setup, ["segmentation"], tmp_path / "seg")
    _stage2(setup, ["detection"], tmp_path / "det")
    seg = load_file(str(tmp_path / "seg" / "model.safetensors"))
    det = load_file(str(tmp_path / "det" / "model.safetensors"))
    det_parts = set(load_file(str(tmp_path / "det" / TASK_PARTS_FILE)))
    differing = {k for k in seg if not torch.equal(seg[k], det[k])}
    assert differing and differing <= det_parts | set(load_file(str(tmp_path / "seg" / TASK_PARTS_FILE)))
    assert json.loads((tmp_path / "det" / "model.json").read_text())["tasks"] == ["detection"]


def test_a_stage2_model_reloads_and_exports_to_onnx_with_parity(setup, tmp_path):
    from tst_ros.perception.export import export_model

    _stage2(setup, ["segmentation", "detection"], tmp_path / "m", steps=2)
    model, meta = load_model(tmp_path / "m")
    assert isinstance(model.encoder, PromptedEncoder) and meta["encoder"]["lora"]["rank"] == 4
    manifest = export_model(tmp_path / "m", tmp_path / "m.onnx")
    assert all(d <= 1e-4 for d in manifest["parity"]["max_abs_diff"].values())


def test_modality_dropout_is_random_in_training_and_absent_in_evaluation():
    torch.manual_seed(0)
    enc = PromptedEncoder("tiny", ["rgb", "depth"], 32, 8, prompts=2, mome_layers=(1,), modality_drop=1.0)
    with torch.no_grad():
        enc.missing.normal_()
    x = {"rgb": torch.randn(4, 3, 32, 32), "depth": torch.randn(4, 1, 32, 32)}
    enc.eval()
    assert torch.equal(enc(x), enc(x))
    enc.train()
    torch.manual_seed(1)
    assert not torch.allclose(enc(x), enc.eval()(x))


def test_the_stage2_layout_leaves_the_global_generator_where_it_was():
    from tst_ros.models.tpmome import prompted_encoder

    def stream_after(layers, width):
        torch.manual_seed(0)
        prompted_encoder(build_encoder("tiny", ["rgb", "depth"], 32, 8), 2, layers, width, 0.3)
        return torch.rand(8)   # what the task heads would be initialised from next

    first = stream_after((3,), 32)
    assert torch.equal(first, stream_after((0, 1, 2, 3), 6))
    torch.manual_seed(0)
    build_encoder("tiny", ["rgb", "depth"], 32, 8)
    assert torch.equal(first, torch.rand(8))


def test_rgb_thermal_stage2_trains_and_evaluates_on_a_labeled_set_with_thermal(setup, tmp_path):
    from tst_ros.perception.transfer import evaluate

    tmp, base, _ = setup
    labeled_set.write(tmp_path / "thermal", 4, seed=1000, width=96, height=72, progress=False, thermal=True)
    cfg = AdaptConfig(rank=2, alpha=4.0, warmup_steps=0, joint_steps=0, batch=4, checkpoint_every=0, device="cpu")
    adapter = adapt_modality(cfg, "synthetic:12", str(base), "thermal", tmp_path / "t.safetensors",
                             progress=False)["adapter"]
    tcfg = TransferConfig(steps=2, batch=2, finetune="tp-mome", tasks=["segmentation"], adapters=[adapter],
                          prompts=2, mome_layers=[-1], expert_hidden=8, device="cpu")
    transfer(str(base), str(tmp_path / "thermal"), str(tmp_path / "m"), tcfg, input_modalities=["rgb", "thermal"],
             show_bar=False)
    result = evaluate(str(tmp_path / "m"), str(tmp_path / "thermal"))
    assert result["images"] == 4 and 0 <= result["miou"] <= 1
    with pytest.raises(ValueError, match="thermal"):
        transfer(str(base), str(tmp / "train"), str(tmp_path / "n"), tcfg, input_modalities=["rgb", "thermal"],
                 show_bar=False)


def test_transfer_cli_lr_sets_the_stage2_rate_under_tp_mome_not_the_fine_tuning_rate(setup, tmp_path):
    import yaml

    from tst_ros.cli import main as cli_main

    tmp, base, adapter = setup
    assert cli_main(["transfer", "--encoder", str(base), "--labeled", str(tmp / "train"), "--out", str(tmp_path / "m"),
                     "--finetune", "tp-mome", "--adapter", str(adapter), "--inputs", "rgb,depth",
                     "--tasks", "segmentation", "--steps", "1", "--batch", "2", "--lr", "5e-3"]) == 0
    resolved = yaml.safe_load((tmp_path / "m" / "config.yaml").read_text())["config"]["transfer"]
    assert resolved["stage2_lr"] == pytest.approx(5e-3)
    assert resolved["lr"] == pytest.approx(TransferConfig().lr)
