"""Inputs predicted by the pre-trained TST-MM (`transfer.predict_inputs`): a model given colour
alone reads depth predicted by the pre-training's own depth decoder, which stays frozen through
transfer, is saved and rebuilt with the model, exports to ONNX with parity, and is refused where
no decoder of that modality exists or its loss cannot map back to an input."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tst_ros.config import PretrainConfig, TransferConfig
from tst_ros.models.cross_modal import load_predictor
from tst_ros.models.losses import patchify
from tst_ros.perception.heads import load_model
from tst_ros.perception.transfer import transfer
from tst_ros.train.checkpoint import CHECKPOINT_FILE, read_checkpoint
from tst_ros.train.pretrain import pretrain

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _pretrain(store, out, method="tst-mm", modalities=("rgb", "depth")):
    cfg = PretrainConfig(method=method, preset="tiny", modalities=list(modalities), steps=2, batch=4, image_size=32,
                         patch=8, workers=0, warmup_steps=1, checkpoint_every=0, val_batches=1, tensorboard=False,
                         decoder_dim=32, decoder_depth=1)
    pretrain(cfg, str(store), out)
    return out


@pytest.fixture(scope="module")
def run(building_sets, tmp_path_factory):
    """A two-step TST-MM pre-training on RGB-D (32 px, patch 8)."""
    return _pretrain(building_sets / "store", tmp_path_factory.mktemp("pred") / "run")


def _transfer(sets, source, out, **kw):
    cfg = TransferConfig(**{"steps": 3, "batch": 2, "seed": 0, "predict_inputs": ["depth"], **kw})
    return transfer(str(source), str(sets / "labeled"), str(out), cfg, image_size=32, patch=8,
                    input_modalities=["rgb"], show_bar=False)


def test_depth_comes_from_the_pretrained_decoder_given_every_colour_token(run):
    predictor = load_predictor(str(run), ["rgb"], ["depth"])
    rgb = torch.randn(2, 3, 32, 32)
    out = predictor({"rgb": rgb})
    assert set(out) == {"rgb", "depth"} and out["depth"].shape == (2, 1, 32, 32) and out["rgb"] is rgb
    tensors, _ = read_checkpoint(run / CHECKPOINT_FILE)
    saved = {k[len("model/decoders.depth."):]: v for k, v in tensors.items() if k.startswith("model/decoders.depth.")}
    state = predictor.decoders["depth"].state_dict()
    assert saved and all(torch.equal(saved[k], state[k]) for k in saved)
    # the same as the decoder's prediction of masked depth tokens when all colour tokens are visible
    enc = predictor.encoder
    encoded = enc.encode(enc.tokenize("rgb", rgb))
    slots = torch.full((2, enc.num_tokens("depth")), -1)
    expected = predictor.decoders["depth"](encoded, torch.ones(encoded.shape[:2], dtype=torch.bool), slots)
    torch.testing.assert_close(patchify(out["depth"], 8), expected)


def test_the_predictor_stays_frozen_through_transfer_and_is_saved_with_the_model(building_sets, run, tmp_path):
    before = load_predictor(str(run), ["rgb"], ["depth"]).state_dict()
    _transfer(building_sets, run, tmp_path / "m")
    meta = json.loads((tmp_path / "m" / "model.json").read_text())
    assert meta["input_modalities"] == ["rgb"]
    assert meta["predicted_inputs"]["predicted"] == ["depth"] and meta["transfer"]["predict_inputs"] == ["depth"]
    model, _ = load_model(tmp_path / "m")
    after = model.predictor.state_dict()
    assert set(before) == set(after) and all(torch.equal(before[k], after[k]) for k in before)
    pretrained = {k[len("encoder."):]: v for k, v in before.items() if k.startswith("encoder.")}
    trained = {k for k, v in model.encoder.state_dict().items() if not torch.equal(v, pretrained[k])}
    assert trained, "the model's own encoder fine-tunes while the predictor's copy stays as pre-trained"
    model.train()
    assert not model.predictor.training and model.training


def test_a_model_with_predicted_depth_exports_with_parity(building_sets, run, tmp_path):
    from tst_ros.perception.export import export_model

    _transfer(building_sets, run, tmp_path / "m")
    frame = (np.random.default_rng(0).integers(0, 255, (24, 40, 3), np.uint8), None)
    manifest = export_model(tmp_path / "m", tmp_path / "onnx", frames=[frame])
    assert manifest["inputs"] == ["rgb"] and manifest["parity"]


def test_it_is_refused_without_a_decoder_that_maps_back_to_an_input(building_sets, run, tmp_path):
    mae = _pretrain(building_sets / "store", tmp_path / "mae", method="tst-mae", modalities=("rgb",))
    with pytest.raises(ValueError, match="cannot predict 'depth'"):
        _transfer(building_sets, mae, tmp_path / "a")
    with pytest.raises(ValueError, match="pre-training run directory"):
        _transfer(building_sets, "scratch", tmp_path / "b")
    with pytest.raises(ValueError, match="both given and predicted"):
        load_predictor(str(run), ["rgb", "depth"], ["depth"])
    with pytest.raises(ValueError, match="does not map back"):
        load_predictor(str(run), ["depth"], ["rgb"])
