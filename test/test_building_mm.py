"""Masked modeling on the building's frames during transfer: the pre-training's decoders
continue from its checkpoint and train along with the encoder, the loss is recorded in the
history, the heads still learn, and it is refused without the store, without a masked-modeling
run, or with an encoder that does not train."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tst_ros.config import PretrainConfig, TransferConfig
from tst_ros.graph.pipeline import reads_building
from tst_ros.perception.building_mm import BuildingMaskedModeling
from tst_ros.perception.transfer import resolve_encoder, transfer
from tst_ros.train.checkpoint import CHECKPOINT_FILE, read_checkpoint
from tst_ros.train.pretrain import pretrain

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def run(building_sets, tmp_path_factory):
    """A two-step TST-MM pre-training on the building's store (32 px, patch 8)."""
    out = tmp_path_factory.mktemp("bmm") / "run"
    cfg = PretrainConfig(preset="tiny", modalities=["rgb", "depth"], steps=2, batch=4, image_size=32, patch=8,
                         workers=0, warmup_steps=1, checkpoint_every=0, val_batches=1, tensorboard=False,
                         decoder_dim=32, decoder_depth=1)
    pretrain(cfg, str(building_sets / "store"), out)
    return out


def _transfer(sets, source, out, **kw):
    cfg = TransferConfig(**{"steps": 4, "batch": 2, "seed": 0, "building_mm": 1.0, **kw})
    return transfer(str(source), str(sets / "labeled"), str(out), cfg, image_size=32, patch=8, show_bar=False,
                    building_store=str(sets / "store"))


def test_the_decoders_continue_from_the_checkpoint_and_train_along(building_sets, run):
    encoder, _ = resolve_encoder(str(run))
    mm = BuildingMaskedModeling(encoder, str(run), str(building_sets / "store"), 4, 0, torch.device("cpu"))
    tensors, _ = read_checkpoint(run / CHECKPOINT_FILE)
    saved = {k[len("model/decoders."):]: v for k, v in tensors.items() if k.startswith("model/decoders.")}
    state = mm.model.decoders.state_dict()
    assert saved and set(saved) == set(state) and all(torch.equal(saved[k], state[k]) for k in saved)
    loss = mm.loss(0)
    loss.backward()
    assert loss.item() > 0 and np.isfinite(loss.item())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in mm.model.decoders.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in encoder.blocks.parameters())


def test_transfer_records_the_building_loss_and_still_trains_the_heads(building_sets, run, tmp_path):
    _transfer(building_sets, run, tmp_path / "m")
    meta = json.loads((tmp_path / "m" / "model.json").read_text())
    assert meta["transfer"]["building_mm"] == 1.0
    losses = [h["building_mm"] for h in meta["history"]]
    assert losses and all(np.isfinite(v) and v > 0 for v in losses)
    assert all(h["loss"] > h["building_mm"] for h in meta["history"])     # the task losses are still in it
    assert reads_building(TransferConfig(building_mm=0.5)) and not reads_building(TransferConfig())


def test_it_is_refused_without_store_masked_modeling_run_or_trained_encoder(building_sets, run, tmp_path):
    with pytest.raises(ValueError, match="building's store"):
        transfer(str(run), str(building_sets / "labeled"), str(tmp_path / "a"),
                 TransferConfig(steps=2, batch=2, building_mm=1.0), image_size=32, patch=8, show_bar=False)
    with pytest.raises(ValueError, match="pre-training run directory"):
        _transfer(building_sets, "scratch", tmp_path / "b")
    with pytest.raises(ValueError, match="finetune must be partial or full"):
        _transfer(building_sets, run, tmp_path / "c", finetune="frozen")
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "encoder.safetensors").write_bytes((run / "encoder.safetensors").read_bytes())
    with pytest.raises(ValueError, match="checkpoint.safetensors"):
        _transfer(building_sets, bare, tmp_path / "d")
