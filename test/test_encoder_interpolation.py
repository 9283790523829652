"""Serving the encoder part way back toward its pre-trained weights (`transfer.encoder_interpolation`,
WiSE-FT): the blend is exact, touches the encoder's pre-trained weights only, happens after training
(the heads are those of the plain run) and is refused outside [0, 1]."""
from __future__ import annotations

import pytest
import torch

from tst_ros.config import TransferConfig
from tst_ros.models.io import save_encoder
from tst_ros.perception.heads import load_model
from tst_ros.perception.interpolation import encoder_anchor, interpolate_encoder
from tst_ros.perception.transfer import resolve_encoder, transfer

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def pretrained_file(tmp_path_factory):
    torch.manual_seed(5)
    encoder, _ = resolve_encoder("scratch", image_size=32, patch=8, scratch_modalities=("rgb", "depth"))
    return save_encoder(encoder, tmp_path_factory.mktemp("pretrained") / "encoder.safetensors")


def _transferred(source, labeled, out, share: float):
    cfg = TransferConfig(steps=3, batch=2, seed=0, flip_average=False, encoder_interpolation=share)
    transfer(str(source), str(labeled), str(out), cfg, image_size=32, patch=8, show_bar=False)
    return load_model(out)[0]


def _split(model) -> tuple[dict, dict]:
    state = {k: v.clone() for k, v in model.state_dict().items()}
    return ({k[len("encoder."):]: v for k, v in state.items() if k.startswith("encoder.")},
            {k: v for k, v in state.items() if not k.startswith("encoder.")})


def test_the_served_encoder_is_the_blend_of_pretrained_and_finetuned_and_the_heads_are_the_plain_runs(
        pretrained_file, four_labeled_images, tmp_path):
    anchor = encoder_anchor(resolve_encoder(str(pretrained_file))[0])
    tuned_encoder, tuned_heads = _split(_transferred(pretrained_file, four_labeled_images, tmp_path / "a", 1.0))
    half_encoder, half_heads = _split(_transferred(pretrained_file, four_labeled_images, tmp_path / "b", 0.5))
    back_encoder, _ = _split(_transferred(pretrained_file, four_labeled_images, tmp_path / "c", 0.0))
    assert set(anchor) <= set(tuned_encoder)
    assert any(not torch.equal(anchor[k], tuned_encoder[k]) for k in anchor)      # fine-tuning moved it
    for key, start in anchor.items():
        torch.testing.assert_close(half_encoder[key], (start + tuned_encoder[key]) / 2, rtol=0, atol=1e-6)
        torch.testing.assert_close(back_encoder[key], start, rtol=0, atol=1e-6)
    assert all(torch.equal(tuned_heads[k], half_heads[k]) for k in tuned_heads)


def test_weights_the_anchor_lacks_keep_their_values_and_a_share_outside_0_1_is_refused(pretrained_file):
    model = torch.nn.Module()
    model.encoder = resolve_encoder(str(pretrained_file))[0]
    before = encoder_anchor(model.encoder)
    kept = next(iter(before))
    anchor = {k: torch.zeros_like(v) for k, v in before.items() if k != kept}
    assert interpolate_encoder(model, anchor, 0.25) == len(anchor)
    after = encoder_anchor(model.encoder)
    assert torch.equal(after[kept], before[kept])
    assert all(torch.allclose(after[k], 0.25 * before[k]) for k in anchor)
    for share in (-0.1, 1.5):
        with pytest.raises(ValueError, match="interpolation share"):
            interpolate_encoder(model, anchor, share)


def test_transfer_refuses_an_interpolation_outside_0_1(four_labeled_images, tmp_path):
    with pytest.raises(ValueError, match="transfer.encoder_interpolation"):
        transfer("scratch", str(four_labeled_images), str(tmp_path / "m"),
                 TransferConfig(steps=2, batch=2, encoder_interpolation=1.2), image_size=32, patch=8, show_bar=False)
