"""Transfer's moving average of the weights (`transfer.ema`): what it serves is the average
(a vanishing decay serves the last weights, a real one other weights), settings are checked."""
from __future__ import annotations

import json

import pytest
import torch

from tst_ros.config import TransferConfig
from tst_ros.perception.heads import load_model
from tst_ros.perception.transfer import transfer

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _served_weights(labeled, out, ema: float) -> dict[str, torch.Tensor]:
    cfg = TransferConfig(steps=6, batch=2, seed=0, ema=ema, flip_average=False)
    transfer("scratch", str(labeled), str(out), cfg, image_size=32, patch=8, show_bar=False)
    assert json.loads((out / "model.json").read_text())["transfer"]["ema"] == ema
    return load_model(out)[0].state_dict()


def test_the_served_weights_are_the_moving_average_of_the_trained_ones(four_labeled_images, tmp_path):
    last = _served_weights(four_labeled_images, tmp_path / "plain", 0.0)
    vanishing = _served_weights(four_labeled_images, tmp_path / "vanishing", 1e-9)   # the average: the last weights
    averaged = _served_weights(four_labeled_images, tmp_path / "averaged", 0.9)
    for name, weight in last.items():
        torch.testing.assert_close(vanishing[name], weight, atol=1e-6, rtol=1e-6, msg=name)
    trained = [n for n in last if "seg_head" in n and last[n].is_floating_point()]
    assert trained and any(not torch.allclose(averaged[n], last[n]) for n in trained)


@pytest.mark.parametrize("ema", [-0.1, 1.0])
def test_a_decay_outside_zero_to_one_is_refused(four_labeled_images, tmp_path, ema):
    with pytest.raises(ValueError, match="transfer.ema"):
        transfer("scratch", str(four_labeled_images), str(tmp_path / "m"),
                 TransferConfig(steps=1, batch=2, ema=ema),
                 image_size=32, patch=8, show_bar=False)
