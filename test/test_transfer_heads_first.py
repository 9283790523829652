"""Transfer's heads-first start (`transfer.heads_first`, LP-FT): for that share of the steps the
heads learn on the encoder as pre-trained, which neither moves nor gets gradients; then both train.
Settings that contradict it are refused."""
from __future__ import annotations

import pytest
import torch

from tst_ros.config import TransferConfig
from tst_ros.perception import transfer as transfer_module

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _weights(model, encoder: bool) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if n.startswith("encoder.") == encoder}


def _changed(before: dict, after: dict) -> bool:
    return any(not torch.equal(before[n], after[n]) for n in before)


def test_the_encoder_is_held_and_gets_no_gradients_for_the_heads_first_share(four_labeled_images, tmp_path,
                                                                             monkeypatch):
    seen = []                           # per step: (encoder weights, head weights, encoder grads all None)
    start, step = transfer_module._Training.__post_init__, transfer_module._Training.step

    def recording_start(self):
        start(self)
        seen.append((_weights(self.model, True), _weights(self.model, False), True))

    def recording_step(self, i, cfg):
        out = step(self, i, cfg)
        no_grads = all(p.grad is None for p in self.model.encoder.parameters())
        seen.append((_weights(self.model, True), _weights(self.model, False), no_grads))
        return out

    monkeypatch.setattr(transfer_module._Training, "__post_init__", recording_start)
    monkeypatch.setattr(transfer_module._Training, "step", recording_step)
    cfg = TransferConfig(steps=6, batch=2, seed=0, heads_first=0.5, flip_average=False)
    transfer_module.transfer("scratch", str(four_labeled_images), str(tmp_path / "m"), cfg, image_size=32,
                             patch=8, show_bar=False)
    assert len(seen) == 7
    held, moving = seen[:4], seen[4:]               # before training + the 3 heads-first steps; the rest
    for encoder, _, no_grads in held:
        assert not _changed(held[0][0], encoder) and no_grads
    assert _changed(held[0][1], held[-1][1])         # the heads learn meanwhile
    assert all(_changed(a[0], b[0]) for a, b in zip(seen[3:-1], moving))   # then the encoder trains every step
    assert not any(no_grads for *_, no_grads in moving)


@pytest.mark.parametrize("settings", [{"heads_first": 1.0}, {"heads_first": -0.2},
                                      {"heads_first": 0.3, "finetune": "frozen"}])
def test_heads_first_outside_a_share_or_without_encoder_training_is_refused(four_labeled_images, tmp_path,
                                                                            settings):
    with pytest.raises(ValueError, match="transfer.heads_first"):
        transfer_module.transfer("scratch", str(four_labeled_images), str(tmp_path / "m"),
                                 TransferConfig(steps=2, batch=2, **settings), image_size=32, patch=8,
                                 show_bar=False)
