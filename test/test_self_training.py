"""Self-training on the building's frames: class-balanced pseudo-labels keep each class's most
confident pixels, the store's frames come with every input the model takes, transfer mixes
them into its last steps with detection learning on labeled rows only, the pipeline reruns
transfer when the store changes (with self-training or building style), settings it cannot
honour are refused, and repeat-factor sampling weighs images of rare classes up."""
from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from tst_ros import config
from tst_ros.config import TransferConfig
from tst_ros.perception.labeled_data import TransferData, load_labeled
from tst_ros.perception.self_training import IGNORE, PseudoLabeledFrames, building_items, class_balanced_labels
from tst_ros.perception.transfer import _task_losses, new_model, resolve_encoder, transfer

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _probabilities(predicted: list[tuple[int, float]], classes: int = 3) -> np.ndarray:
    """(1, classes, 1, len(predicted)) probabilities: pixel i is class k with confidence c."""
    probs = np.zeros((1, classes, 1, len(predicted)), np.float32)
    for i, (k, c) in enumerate(predicted):
        probs[0, :, 0, i] = (1 - c) / (classes - 1)
        probs[0, k, 0, i] = c
    return probs


def test_class_balanced_labels_keep_each_classes_most_confident_share_above_the_floor():
    probs = _probabilities([(0, .9), (0, .8), (0, .7), (0, .6), (1, .95), (1, .55), (2, .45), (2, .42)])
    labels = class_balanced_labels(probs, keep=0.5, min_confidence=0.5)[0, 0]
    assert labels.tolist() == [0, 0, IGNORE, IGNORE, 1, IGNORE, IGNORE, IGNORE]
    everything = class_balanced_labels(probs, keep=1.0, min_confidence=0.0)[0, 0]
    assert everything.tolist() == [0, 0, 0, 0, 1, 1, 2, 2]


@pytest.fixture
def sets(building_sets):
    return building_sets


def test_the_stores_frames_come_with_colour_and_depth_and_no_labels(sets):
    items = building_items(sets / "store", ["rgb", "depth"])
    assert len(items) == 5
    first = items[0]
    assert first["rgb"].shape == (32, 32, 3) and first["rgb"].dtype == np.uint8
    assert first["depth_mm"].shape == (32, 32) and first["depth_mm"].dtype == np.uint16 and first["depth_mm"].any()
    assert (first["semantic"] == IGNORE).all() and first["boxes"].shape == (0, 4)
    assert len(building_items(sets / "store", ["rgb"])) == 5
    with pytest.raises(ValueError, match="thermal"):
        building_items(sets / "store", ["rgb", "thermal"])


def test_refreshed_pseudo_labels_are_class_ids_or_ignored_and_the_model_keeps_training(sets):
    items, classes, categories = load_labeled(sets / "labeled")
    encoder, enc_meta = resolve_encoder("scratch", image_size=32, patch=8)
    model, meta = new_model(encoder, enc_meta, classes, categories)
    frames = PseudoLabeledFrames(building_items(sets / "store", meta["input_modalities"]), meta["input_modalities"],
                                 meta["preprocessing"], meta["thing_class_ids"], keep=0.5, min_confidence=0.0)
    model.train()
    frames.refresh(model, torch.device("cpu"))
    assert model.training
    labels = frames.data.semantic
    assert labels.shape == (5, 32, 32)
    assert set(np.unique(labels)) <= set(range(len(classes))) | {IGNORE}
    assert 0.3 < frames.labelled_share < 0.8           # about half of each predicted class is kept
    with pytest.raises(ValueError, match="share kept"):
        PseudoLabeledFrames(items, meta["input_modalities"], meta["preprocessing"], meta["thing_class_ids"], keep=0)


def test_detection_learns_on_the_labeled_rows_only(sets):
    items, classes, categories = load_labeled(sets / "labeled")
    encoder, enc_meta = resolve_encoder("scratch", image_size=32, patch=8)
    model, meta = new_model(encoder, enc_meta, classes, categories)
    data = TransferData(items, meta["input_modalities"], meta["preprocessing"], meta["thing_class_ids"])
    batch = data.batch(np.arange(4), np.zeros(4, bool))
    with torch.no_grad():
        feats = model.encoder({n: torch.from_numpy(v) for n, v in batch["inputs"].items()})
        before = _task_losses(model, feats, batch, "cpu", det_rows=2)
        batch["heatmap"][2:] = 1.0                      # the other rows' detection targets changed
        batch["box_weight"][2:] = 1.0
        after = _task_losses(model, feats, batch, "cpu", det_rows=2)
        every_row = _task_losses(model, feats, batch, "cpu")
    assert float(after[2]) == float(before[2]) and float(after[3]) == float(before[3])
    assert float(every_row[2]) != float(before[2])


@pytest.mark.parametrize("fusion_voxel", [0.0, 0.05])
def test_transfer_self_trains_over_its_last_steps_and_records_the_refreshes(sets, tmp_path, fusion_voxel):
    cfg = TransferConfig(steps=4, batch=4, seed=0, self_training=0.5, pseudo_refresh=1, pseudo_fusion=fusion_voxel)
    transfer("scratch", str(sets / "labeled"), str(tmp_path / "m"), cfg, image_size=32, patch=8, show_bar=False,
             building_store=str(sets / "store"))
    meta = json.loads((tmp_path / "m" / "model.json").read_text())
    frames = meta["transfer"]["building_frames"]
    assert frames["frames"] == 5 and frames["from_step"] == 3
    assert [r["step"] for r in frames["refreshes"]] == [3, 4]
    assert all(0 <= r["labelled_share"] <= 1 for r in frames["refreshes"])   # an untrained model is rarely sure
    assert all(np.isfinite(h["loss"]) for h in meta["history"])


def test_self_training_refuses_a_frozen_encoder_and_a_missing_store(sets, tmp_path):
    labeled = str(sets / "labeled")
    with pytest.raises(ValueError, match="building's store"):
        transfer("scratch", labeled, str(tmp_path / "a"), TransferConfig(steps=2, self_training=0.5),
                 image_size=32, patch=8, show_bar=False)
    with pytest.raises(ValueError, match="trained encoder"):
        transfer("scratch", labeled, str(tmp_path / "b"), TransferConfig(steps=2, self_training=0.5, finetune="frozen"),
                 image_size=32, patch=8, show_bar=False, building_store=str(sets / "store"))


def test_the_pipelines_transfer_depends_on_the_store_only_when_it_reads_the_buildings_frames(sets, tmp_path):
    from tst_ros.graph.pipeline import Pipeline

    keys = {"pretrain": "p", "labeled_set": "l"}
    plain = Pipeline(config.load(None, []), tmp_path / "a", sets / "store").stage_inputs("transfer", keys)
    assert "dataset" not in plain["data"]
    for setting in ("transfer.self_training=0.5", "transfer.building_style=0.5"):
        reading = Pipeline(config.load(None, [setting]), tmp_path / setting,
                           sets / "store").stage_inputs("transfer", keys)
        assert "dataset" in reading["data"], setting


def test_repeat_factors_weigh_images_of_rare_classes_up_and_leave_common_ones_at_one():
    semantic = np.zeros((10, 4, 4), np.int64)          # class 0 in every image
    semantic[:, 0, 0] = IGNORE
    semantic[0, 1, 1] = 2                               # class 2 in one image of ten
    semantic[1:6, 2, 2] = 1                             # class 1 in half of them
    factors = TransferData.repeat_factors(SimpleNamespace(semantic=semantic), threshold=0.4)
    assert factors[0] == pytest.approx(np.sqrt(0.4 / 0.1))
    assert (factors[1:] == 1.0).all()                   # 0.5 and 1.0 of the images: above the threshold
    unlabelled = np.full((3, 4, 4), IGNORE, np.int64)
    assert (TransferData.repeat_factors(SimpleNamespace(semantic=unlabelled), threshold=0.4) == 1.0).all()


def test_transfer_with_repeat_factor_sampling_trains_and_refuses_a_negative_threshold(sets, tmp_path):
    labeled = str(sets / "labeled")
    transfer("scratch", labeled, str(tmp_path / "m"), TransferConfig(steps=2, batch=4, seed=0, repeat_factor=0.5),
             image_size=32, patch=8, show_bar=False)
    meta = json.loads((tmp_path / "m" / "model.json").read_text())
    assert meta["transfer"]["repeat_factor"] == 0.5 and np.isfinite(meta["history"][-1]["loss"])
    with pytest.raises(ValueError, match="repeat_factor"):
        transfer("scratch", labeled, str(tmp_path / "n"), TransferConfig(steps=2, repeat_factor=-1),
                 image_size=32, patch=8, show_bar=False)
