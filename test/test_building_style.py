"""Building-style augmentation: a labeled image restyled by a building frame takes that frame's
mean colour and low-frequency amplitudes while keeping its own edges, restyling by itself changes nothing,
only the drawn share of a batch is touched and never its labels or depth, and transfer trains
with it from the building's store and refuses it without one."""
from __future__ import annotations

import json

import numpy as np
import pytest

from tst_ros.config import TransferConfig
from tst_ros.perception.augment import Augmentation, restyle, restyle_batch, style_amplitudes
from tst_ros.perception.labeled_data import TransferData, load_labeled
from tst_ros.perception.self_training import building_items
from tst_ros.perception.transfer import new_model, resolve_encoder, transfer

pytestmark = pytest.mark.usefixtures("one_torch_thread")

MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)


def _normalised(intensity: np.ndarray) -> np.ndarray:
    return ((intensity - MEAN[:, None, None]) / STD[:, None, None]).astype(np.float32)


def _intensity(image: np.ndarray) -> np.ndarray:
    return image * STD[:, None, None] + MEAN[:, None, None]


def _checkerboard(size: int = 32, tint=(0.3, 0.4, 0.5)) -> np.ndarray:
    """Fine 4-px squares (high frequencies only) of contrast 0.1 on a tint."""
    squares = ((np.arange(size)[:, None] // 4 + np.arange(size)[None, :] // 4) % 2).astype(np.float32)
    return np.stack([t + 0.1 * (squares - 0.5) for t in tint])


def test_restyling_by_its_own_amplitudes_changes_nothing():
    image = _normalised(np.random.default_rng(0).random((3, 32, 32)))
    same = restyle(image, MEAN, STD, style_amplitudes(image[None], MEAN, STD)[0])
    assert np.abs(same - image).max() < 1e-4


def test_a_restyled_image_takes_the_frames_mean_colour_and_low_frequencies_and_keeps_its_edges():
    labeled = _normalised(_checkerboard())
    ramp = np.linspace(0.5, 0.9, 32, dtype=np.float32)[None, :]          # a slow left-to-right shading
    frame = _normalised(np.stack([ramp * g for g in (1.0, 0.8, 0.6)]).repeat(32, axis=1))
    wanted = style_amplitudes(frame[None], MEAN, STD)[0]
    restyled = restyle(labeled, MEAN, STD, wanted)
    out = _intensity(restyled)
    assert np.allclose(out.mean(axis=(1, 2)), _intensity(frame).mean(axis=(1, 2)), atol=0.02)
    assert np.allclose(style_amplitudes(restyled[None], MEAN, STD)[0], wanted, rtol=0.05, atol=0.5)
    edges = lambda x: x - np.roll(x, 1, axis=-1)                           # noqa: E731
    source = _intensity(labeled)
    kept = np.corrcoef(edges(out).ravel(), edges(source).ravel())[0, 1]
    assert kept > 0.9 and out.min() >= 0 and out.max() <= 1


def test_restyle_batch_touches_only_the_drawn_share():
    rng = np.random.default_rng(1)
    images = _normalised(rng.random((200, 3, 16, 16)))
    sources = style_amplitudes(_normalised(rng.random((3, 3, 16, 16)) * 0.2 + 0.7), MEAN, STD)
    out = restyle_batch(images, MEAN, STD, sources, 0.5, np.random.default_rng(2))
    changed = ~np.isclose(out, images, atol=1e-3).all(axis=(1, 2, 3))
    unchanged = (out == images).all(axis=(1, 2, 3))
    assert (changed ^ unchanged).all() and 0.35 < changed.mean() < 0.65
    assert (restyle_batch(images, MEAN, STD, sources, 0.0, rng) == images).all()
    with pytest.raises(ValueError, match="style"):
        Augmentation(style=1.5)


@pytest.fixture
def sets(building_sets):
    return building_sets


def test_styled_batches_change_colour_only_and_need_the_buildings_frames(sets):
    items, classes, categories = load_labeled(sets / "labeled")
    encoder, enc_meta = resolve_encoder("scratch", image_size=32, patch=8, scratch_modalities=("rgb", "depth"))
    _, meta = new_model(encoder, enc_meta, classes, categories)
    data = TransferData(items, meta["input_modalities"], meta["preprocessing"], meta["thing_class_ids"])
    idx, flips = np.array([0, 1, 2, 3]), np.array([False, True, False, True])
    style = Augmentation(style=1.0)
    with pytest.raises(ValueError, match="building's frames"):
        data.batch(idx, flips, np.random.default_rng(0), style)
    data.take_style_from(building_items(sets / "store", ["rgb"]))
    assert data.style_amplitudes.shape[:2] == (5, 3)
    plain, styled = data.batch(idx, flips), data.batch(idx, flips, np.random.default_rng(0), style)
    assert not np.array_equal(styled["inputs"]["rgb"], plain["inputs"]["rgb"])
    assert np.array_equal(styled["inputs"]["depth"], plain["inputs"]["depth"])
    assert all(np.array_equal(styled[k], plain[k]) for k in ("semantic", "heatmap", "box", "box_weight"))


def test_transfer_trains_with_building_style_from_the_store_and_refuses_it_without_one(sets, tmp_path):
    cfg = TransferConfig(steps=3, batch=2, seed=0, building_style=0.5)
    with pytest.raises(ValueError, match="building_style needs the building's store"):
        transfer("scratch", str(sets / "labeled"), str(tmp_path / "none"), cfg, image_size=32, patch=8,
                 show_bar=False)
    frozen = TransferConfig(steps=3, batch=2, finetune="frozen", building_style=0.5)
    with pytest.raises(ValueError, match="trained encoder"):
        transfer("scratch", str(sets / "labeled"), str(tmp_path / "frozen"), frozen, image_size=32, patch=8,
                 show_bar=False, building_store=str(sets / "store"))
    transfer("scratch", str(sets / "labeled"), str(tmp_path / "m"), cfg, image_size=32, patch=8, show_bar=False,
             building_store=str(sets / "store"))
    meta = json.loads((tmp_path / "m" / "model.json").read_text())
    assert meta["transfer"]["building_style"] == 0.5
    assert all(np.isfinite(h["loss"]) for h in meta["history"])
