"""Transfer on a COCO-style labeled set from other buildings, encoder fine-tuning modes with
layer-wise lr decay, depth input from an RGB-D encoder, model directory contents, and
`tst-ros eval` JSON on held-out test-building frames."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from tst_ros.cli import main as cli_main
from tst_ros.config import TransferConfig
from tst_ros.models import build_encoder, save_encoder
from tst_ros.perception.heads import load_model
from tst_ros.perception.transfer import base_lr, load_labeled, new_model, param_groups, read_categories, transfer
from tst_ros.sim import CLASSES, THING_CLASSES, labeled_set


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("labeled")
    labeled_set.write(tmp / "train", 6, seed=1000, width=96, height=72, progress=False)
    labeled_set.write(tmp / "eval", 3, styles=["home"], seed=0, start_frame=500, width=96, height=72, progress=False)
    return tmp / "train", tmp / "eval"


def test_transfer_fits_heads_and_writes_a_complete_model_dir(sets, tmp_path):
    train, _ = sets
    cfg = TransferConfig(steps=12, batch=4, lr=3e-3, finetune="frozen", seed=0)
    summary = transfer("scratch", str(train), str(tmp_path / "m"), cfg, image_size=32, patch=8, show_bar=False)
    history = json.loads((tmp_path / "m" / "model.json").read_text())["history"]
    assert history[-1]["loss"] < history[0]["loss"]          # the heads learn on the labeled set
    meta = json.loads((tmp_path / "m" / "model.json").read_text())
    assert meta["classes"] == CLASSES and meta["thing_class_ids"] == THING_CLASSES
    assert meta["input_modalities"] == ["rgb"] and meta["preprocessing"]["size"] == [32, 32]
    assert meta["encoder"]["method"] == "scratch" and meta["transfer"]["finetune"] == "frozen"
    weights = load_file(str(tmp_path / "m" / "model.safetensors"))
    assert any(k.startswith("encoder.blocks.") for k in weights) and any(k.startswith("det_head.") for k in weights)
    model, _ = load_model(tmp_path / "m")
    assert summary["steps"] == 12 and not model.training


def test_frozen_encoder_does_not_change_and_full_finetuning_does(sets, tmp_path):
    train, _ = sets
    enc = build_encoder("tiny", ["rgb"], 32, 8)
    save_encoder(enc, tmp_path / "enc.safetensors", method="tst-mae", step=1)
    before = {k: v.clone() for k, v in enc.state_dict().items()}
    for mode in ("frozen", "full"):
        cfg = TransferConfig(steps=2, batch=2, finetune=mode, seed=0)
        transfer(str(tmp_path / "enc.safetensors"), str(train), str(tmp_path / mode), cfg, show_bar=False)
        after = load_file(str(tmp_path / mode / "model.safetensors"))
        changed = any(not torch.equal(after[f"encoder.{k}"], v) for k, v in before.items())
        assert changed == (mode == "full"), mode


def test_layer_wise_lr_decay_over_encoder_blocks():
    enc = build_encoder("tiny", ["rgb"], 32, 8)
    model, _ = new_model(enc, enc.describe(), CLASSES, {c: CLASSES[c] for c in THING_CLASSES})
    depth = len(enc.blocks)
    groups = {g["name"]: g for g in param_groups(model, "full", 1e-3, 0.5)}
    assert groups["heads"]["lr"] == pytest.approx(1e-3)
    for lid in range(depth + 2):
        assert groups[f"encoder.layer{lid}"]["lr"] == pytest.approx(1e-3 * 0.5 ** (depth + 1 - lid))
    partial = {g["name"] for g in param_groups(model, "partial", 1e-3, 0.5)}
    assert partial == {"heads"} | {f"encoder.layer{lid}" for lid in range(depth // 2 + 1, depth + 2)}
    assert not any(p.requires_grad for p in model.encoder.blocks[0].parameters())
    assert {g["name"] for g in param_groups(model, "frozen", 1e-3, 0.5)} == {"heads"}
    assert not any(p.requires_grad for p in model.encoder.parameters())
    with pytest.raises(ValueError, match="finetune"):
        param_groups(model, "sometimes", 1e-3, 0.5)


def test_stage2_trains_at_its_own_learning_rate_and_fine_tuning_at_lr():
    assert base_lr(TransferConfig(finetune="tp-mome", lr=1e-3, stage2_lr=3e-3)) == 3e-3
    for mode in ("full", "partial", "frozen"):
        assert base_lr(TransferConfig(finetune=mode, lr=1e-3, stage2_lr=3e-3)) == 1e-3


def test_rgbd_encoder_gets_depth_input(sets, tmp_path):
    train, _ = sets
    enc = build_encoder("tiny", ["rgb", "depth", "normals"], 32, 8)
    save_encoder(enc, tmp_path / "mm.safetensors", method="tst-mm", step=1)
    transfer(str(tmp_path / "mm.safetensors"), str(train), str(tmp_path / "m"), TransferConfig(steps=2, batch=2),
             show_bar=False)
    meta = json.loads((tmp_path / "m" / "model.json").read_text())
    assert meta["input_modalities"] == ["rgb", "depth"]
    assert meta["encoder"]["method"] == "tst-mm" and meta["preprocessing"]["modalities"]["depth"]["invalid_value"] == 0


def test_transfer_and_eval_cli_report_miou_table_and_coco_map(sets, tmp_path, capsys):
    train, held_out = sets
    assert cli_main(["transfer", "--encoder", "scratch", "--labeled", str(train), "--out", str(tmp_path / "m"),
                     "--steps", "3", "--batch", "2", "--image-size", "32", "--patch", "8", "--finetune", "partial",
                     "--layer-decay", "0.75"]) == 0
    assert (tmp_path / "m" / "config.yaml").is_file()
    capsys.readouterr()
    assert cli_main(["eval", "--model", str(tmp_path / "m"), "--labeled", str(held_out), "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["images"] == 3
    assert 0.0 <= result["miou"] <= 1.0 and 0.0 <= result["map"] <= result["map50"] <= 1.0
    assert [r["name"] for r in result["per_class_iou"]] == CLASSES
    assert set(result["per_class_ap"]) <= {CLASSES[c] for c in THING_CLASSES}
    assert "mIoU" in result["iou_table"]


def test_categories_come_from_the_labeled_set(sets):
    train, _ = sets
    cats = read_categories(train)
    assert list(cats) == THING_CLASSES and cats[THING_CLASSES[0]] == CLASSES[THING_CLASSES[0]]


def test_class_weights_favour_rare_classes_and_keep_the_loss_scale(sets):
    from tst_ros.perception.heads import preprocessing_meta
    from tst_ros.perception.labeled_data import TransferData

    items, classes, _ = load_labeled(sets[0])
    data = TransferData(items, ["rgb"], preprocessing_meta(["rgb"], 32), THING_CLASSES)
    counts = np.bincount(data.semantic[data.semantic != 255].ravel(), minlength=len(classes))
    share = counts / counts.sum()
    assert np.array_equal(data.class_weights(len(classes), 0.0), np.ones(len(classes), np.float32))
    weights = data.class_weights(len(classes), 0.5, max_ratio=50.0)
    present = np.flatnonzero(counts)
    assert float((weights * share).sum()) == pytest.approx(1.0, rel=1e-5)     # pixel-weighted mean 1
    rarest, commonest = present[share[present].argmin()], present[share[present].argmax()]
    assert weights[rarest] > weights[commonest]
    assert weights.max() / weights[present].min() <= 50.0 + 1e-3
    assert np.all(weights[counts == 0] == weights.max())


def test_input_stem_model_reloads_and_matches_its_saved_outputs(sets, tmp_path):
    train, _ = sets
    cfg = TransferConfig(steps=3, batch=2, seed=0, input_stem=True, class_balance=0.5)
    transfer("scratch", str(train), str(tmp_path / "m"), cfg, image_size=32, patch=8, show_bar=False)
    meta = json.loads((tmp_path / "m" / "model.json").read_text())
    assert meta["input_stem"] is True and meta["transfer"]["class_balance"] == 0.5
    weights = load_file(str(tmp_path / "m" / "model.safetensors"))
    assert any(k.startswith("input_stem.") for k in weights)
    model, _ = load_model(tmp_path / "m")
    x = torch.rand(1, 3, 32, 32)
    seg, heat, box = model(x)
    assert seg.shape == (1, len(CLASSES), 32, 32) and heat.shape[-1] == 8
    detail_off = model.pyramid(model.encoder({"rgb": x}))                    # the stem contributes
    assert not torch.allclose(detail_off, model.pyramid(model.encoder({"rgb": x}), model.input_stem([x])))
