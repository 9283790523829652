"""Transfer augmentation: zoom crops move inputs, labels and boxes together, colour jitter keeps
intensities in range, input dropout blanks depth of whole samples only, augmented batches carry
targets rebuilt from the moved boxes, and a transfer with augmentation trains and reloads."""
from __future__ import annotations

import json

import numpy as np
import pytest

from tst_ros.config import TransferConfig
from tst_ros.perception.augment import Augmentation, drop_inputs, jitter_batch, jitter_colour, zoom_crop, zoom_sample
from tst_ros.perception.labeled_data import TransferData, load_labeled
from tst_ros.perception.transfer import new_model, resolve_encoder, transfer
from tst_ros.sim import labeled_set

MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)


def _sample(size: int = 32):
    semantic = np.zeros((size, size), np.int64)
    semantic[4:12, 4:12] = 3                                     # object in the top-left quadrant
    semantic[24:30, 24:30] = 5                                   # object in the bottom-right corner
    colour = np.zeros((3, size, size), np.float32)
    colour[:, 4:12, 4:12] = 1.0
    depth = np.full((1, size, size), 0.5, np.float32)
    boxes = np.array([[4, 4, 12, 12], [24, 24, 30, 30]], np.float32)
    return {"rgb": colour, "depth": depth}, semantic, boxes, np.array([0, 1])


def test_zoom_at_scale_one_changes_nothing():
    inputs, semantic, boxes, labels = _sample()
    out, sem, b, lab = zoom_crop(inputs, semantic, boxes, labels, 1.0, (0.3, 0.7))
    assert all(np.array_equal(out[n], inputs[n]) for n in inputs)
    assert np.array_equal(sem, semantic) and np.array_equal(b, boxes) and np.array_equal(lab, labels)


def test_zoom_moves_labels_and_boxes_with_the_image_and_drops_boxes_left_outside():
    inputs, semantic, boxes, labels = _sample()
    out, sem, b, lab = zoom_crop(inputs, semantic, boxes, labels, 2.0, (0.0, 0.0))   # the top-left quadrant, x2
    assert np.array_equal(b, [[8, 8, 24, 24]]) and np.array_equal(lab, [0])
    assert (sem[8:24, 8:24] == 3).all() and (sem != 5).all()
    assert np.allclose(out["rgb"][:, 10:22, 10:22], 1.0) and np.allclose(out["depth"], 0.5)
    assert out["rgb"].shape == inputs["rgb"].shape and sem.dtype == semantic.dtype


def test_colour_jitter_keeps_intensities_in_range_and_is_the_identity_at_unit_gain():
    rng = np.random.default_rng(0)
    image = ((rng.random((3, 8, 8)).astype(np.float32) - MEAN[:, None, None]) / STD[:, None, None])
    assert np.allclose(jitter_colour(image, MEAN, STD, np.ones(3, np.float32), 0.0), image, atol=1e-5)
    bright = jitter_colour(image, MEAN, STD, np.full(3, 1.5, np.float32), 0.3)
    intensity = bright * STD[:, None, None] + MEAN[:, None, None]
    assert intensity.min() >= -1e-5 and intensity.max() <= 1 + 1e-5 and intensity.mean() > 0.5


def test_input_dropout_blanks_whole_samples_of_depth_and_never_colour():
    rng = np.random.default_rng(0)
    inputs = {"rgb": rng.normal(size=(400, 3, 4, 4)).astype(np.float32),
              "depth": rng.normal(size=(400, 1, 4, 4)).astype(np.float32)}
    out = drop_inputs(inputs, 0.3, np.random.default_rng(1))
    assert out["rgb"] is inputs["rgb"] and out["depth"].dtype == np.float32
    blank = (out["depth"] == 0).all(axis=(1, 2, 3))
    kept = (out["depth"] == inputs["depth"]).all(axis=(1, 2, 3))
    assert (blank ^ kept).all()                                             # a sample keeps all of it or none
    assert 0.2 < blank.mean() < 0.4
    assert drop_inputs(inputs, 0.0, rng) is inputs                          # off: untouched
    assert drop_inputs({"rgb": inputs["rgb"]}, 0.5, rng)["rgb"] is inputs["rgb"]   # colour alone: nothing to drop


def test_augmentation_settings_are_checked():
    assert not Augmentation().active and Augmentation(zoom=0.5).active
    with pytest.raises(ValueError, match="zoom"):
        Augmentation(zoom=-0.1)
    with pytest.raises(ValueError, match="colour"):
        Augmentation(colour=1.0)
    with pytest.raises(ValueError, match="input_drop"):
        Augmentation(input_drop=1.0)
    assert Augmentation(input_drop=0.3).active
    inputs, semantic, boxes, labels = _sample()
    out = zoom_sample(0.0, np.random.default_rng(1), inputs, semantic, boxes, labels)
    assert out[0] is inputs and out[2] is boxes                             # no zoom: untouched
    images = np.zeros((2, 3, 4, 4), np.float32)
    jittered = jitter_batch(images, MEAN, STD, 0.3, np.random.default_rng(2))
    assert not np.array_equal(jittered[0], jittered[1])                     # each image draws its own


@pytest.fixture(scope="module")
def labeled(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("aug")
    labeled_set.write(tmp / "train", 4, seed=1000, width=96, height=72, progress=False)
    return tmp / "train"


def test_augmented_batches_carry_detection_targets_of_their_own_boxes(labeled):
    items, classes, categories = load_labeled(labeled)
    encoder, enc_meta = resolve_encoder("scratch", image_size=32, patch=8)
    _, meta = new_model(encoder, enc_meta, classes, categories)
    data = TransferData(items, meta["input_modalities"], meta["preprocessing"], meta["thing_class_ids"])
    idx, flips = np.array([0, 1, 2, 3, 0, 1]), np.array([False, True] * 3)
    plain = data.batch(idx, flips)
    aug = data.batch(idx, flips, np.random.default_rng(0), Augmentation(zoom=1.0, colour=0.2))
    assert ({k: v.shape for k, v in aug.items() if k != "inputs"}
            == {k: v.shape for k, v in plain.items() if k != "inputs"})
    assert not np.array_equal(aug["inputs"]["rgb"], plain["inputs"]["rgb"])
    # a sample that draws no crop on the zoom path rebuilds exactly the cached (mirrored) targets
    assert np.random.default_rng(0).random() >= 0.5
    rebuilt = data._reshaped(1, True, np.random.default_rng(0), Augmentation(zoom=0.5))
    assert all(np.array_equal(rebuilt[k], t[1]) for k, t in zip(("heatmap", "box", "box_weight"), data.targets[True]))
    # colour jitter alone leaves the geometry and the targets as they were
    coloured = data.batch(idx, flips, np.random.default_rng(0), Augmentation(colour=0.1))
    assert all(np.array_equal(coloured[k], plain[k]) for k in ("semantic", "heatmap", "box", "box_weight"))
    with pytest.raises(ValueError, match="random generator"):
        data.batch(idx, flips, None, Augmentation(zoom=0.5))


def test_transfer_with_augmentation_trains_and_records_it(labeled, tmp_path):
    cfg = TransferConfig(steps=3, batch=2, seed=0, zoom=0.5, colour_jitter=0.2, input_drop=0.5, paste=0.5)
    transfer("scratch", str(labeled), str(tmp_path / "m"), cfg, image_size=32, patch=8, show_bar=False)
    meta = json.loads((tmp_path / "m" / "model.json").read_text())
    assert meta["transfer"]["zoom"] == 0.5 and meta["transfer"]["colour_jitter"] == 0.2
    assert meta["transfer"]["input_drop"] == 0.5 and meta["transfer"]["paste"] == 0.5
    assert all(np.isfinite(h["loss"]) for h in meta["history"])
