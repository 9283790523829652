"""TST-MM continued from the generalist (preset `tiny-imagenet`): the frozen ImageNet backbone
makes the colour tokens. Masked pre-training blanks masked patches before the backbone, so no
visible token sees masked content; pre-training never moves the backbone or its batch-norm
statistics; the heads get the backbone's map beside the transformer's (its finer stages folded
in where asked, the tokens unchanged; preset `tiny-imagenet-tokens` gives them the transformer's
only; `tiny-imagenet-rgbd` reads depth through a second backbone, masked the same way,
`tiny-imagenet-rgbd-slopes` with depth's slopes as two of its colours), and a model built on it
transfers (the backbone fine-tuned, its statistics fixed), reloads and exports to ONNX with parity."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tst_ros.config import TransferConfig
from tst_ros.models import build_encoder, save_encoder
from tst_ros.models.multimae import build_tstmm
from tst_ros.sim import labeled_set

pytestmark = pytest.mark.usefixtures("one_torch_thread")
SIZE = 64


def _masked_pair(channels: int, visible_patches: list[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """An image, another with the same visible 16-px patches and new content elsewhere, and the (1, N) mask."""
    grid = SIZE // 16
    visible = torch.zeros(1, grid * grid, dtype=torch.bool)
    visible[0, visible_patches] = True
    x = torch.randn(1, channels, SIZE, SIZE)
    pixel_visible = visible.reshape(1, 1, grid, grid).repeat_interleave(16, 2).repeat_interleave(16, 3)
    return x, torch.where(pixel_visible, x, torch.randn_like(x)), visible


def test_masked_patch_content_does_not_reach_the_stems_features():
    enc = build_encoder("tiny-imagenet", ["rgb", "depth"], SIZE, 16).eval()
    x, other, visible = _masked_pair(3, [0, 5, 10])
    with torch.no_grad():
        a, b = enc.stem.features(x, visible), enc.stem.features(other, visible)
        full_a, full_b = enc.stem.features(x), enc.stem.features(other)
    assert torch.equal(a, b)
    assert not torch.allclose(full_a, full_b)       # without the mask the content would leak


def test_pretraining_steps_leave_the_imagenet_backbone_and_its_statistics_untouched():
    torch.manual_seed(0)
    enc = build_encoder("tiny-imagenet", ["rgb", "depth"], SIZE, 16)
    before = {k: v.clone() for k, v in enc.stem.backbone.state_dict().items()}
    proj_before = enc.stem.proj.weight.detach().clone()
    model = build_tstmm(enc, ["rgb", "depth"], SIZE, 16, visible_fraction=0.4).train()
    assert not enc.stem.backbone.training
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    for step in range(2):
        batch = {"rgb": torch.randn(4, 3, SIZE, SIZE), "depth": torch.randn(4, 1, SIZE, SIZE)}
        loss, _ = model(batch, seeds=[step * 4 + i for i in range(4)])
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = enc.stem.backbone.state_dict()
    assert all(torch.equal(after[k], v) for k, v in before.items())        # weights and BN running stats
    assert not torch.equal(enc.stem.proj.weight, proj_before)


def test_the_heads_get_the_transformer_and_backbone_maps_and_colour_may_be_absent():
    enc = build_encoder("tiny-imagenet", ["rgb", "depth"], SIZE, 16).eval()
    assert enc.feature_dim == enc.embed_dim + enc.stem.feature_channels
    with torch.no_grad():
        both = enc({"rgb": torch.randn(2, 3, SIZE, SIZE), "depth": torch.randn(2, 1, SIZE, SIZE)})
        depth_only = enc({"depth": torch.randn(2, 1, SIZE, SIZE)})
    assert both.shape == depth_only.shape == (2, enc.feature_dim, SIZE // 16, SIZE // 16)
    assert torch.count_nonzero(depth_only[:, enc.embed_dim:]) == 0
    with pytest.raises(ValueError, match="per 16 pixels"):
        build_encoder("tiny-imagenet", ["rgb"], SIZE, 8)


def test_the_tokens_preset_gives_the_heads_the_transformers_map_only():
    from tst_ros.perception.transfer import _with_detail

    torch.manual_seed(0)
    full = build_encoder("tiny-imagenet", ["rgb", "depth"], SIZE, 16).eval()
    tokens_only = build_encoder("tiny-imagenet-tokens", ["rgb", "depth"], SIZE, 16).eval()
    tokens_only.load_state_dict(full.state_dict())                      # same weights, same checkpoint format
    inputs = {"rgb": torch.randn(2, 3, SIZE, SIZE), "depth": torch.randn(2, 1, SIZE, SIZE)}
    with torch.no_grad():
        assert torch.equal(tokens_only(inputs), full(inputs)[:, :full.embed_dim])
    assert tokens_only.feature_dim == tokens_only.embed_dim
    assert _with_detail(tokens_only, {}, [8]) == (tokens_only, {})     # no backbone map, so no detail either
    with pytest.raises(ValueError, match="feeds the heads"):
        tokens_only.set_detail([8])


def test_the_rgbd_presets_read_depth_through_its_own_imagenet_backbone_without_masked_content(tmp_path):
    from tst_ros.models.io import load_encoder

    enc = build_encoder("tiny-imagenet-rgbd", ["rgb", "depth"], SIZE, 16).eval()
    depth_stem = enc.adapters["depth"]
    assert depth_stem.backbone is not enc.stem.backbone
    for (name, a), b in zip(depth_stem.backbone.state_dict().items(), enc.stem.backbone.state_dict().values()):
        assert torch.equal(a, b), name                                   # both start from the ImageNet weights
    grid = SIZE // 16
    depth, other, visible = _masked_pair(1, [1, 6, 11])
    with torch.no_grad():
        assert torch.equal(enc.tokenize("depth", depth, visible), enc.tokenize("depth", other, visible))
        assert not torch.allclose(enc.tokenize("depth", depth), enc.tokenize("depth", other))
        inputs = {"rgb": torch.randn(2, 3, SIZE, SIZE), "depth": torch.randn(2, 1, SIZE, SIZE)}
        out = enc(inputs)
        assert out.shape == (2, enc.embed_dim + enc.stem.feature_channels, grid, grid)
        reloaded, meta = load_encoder(save_encoder(enc, tmp_path / "rgbd.safetensors"))
        assert meta["preset"] == "tiny-imagenet-rgbd"
        assert torch.equal(reloaded(inputs), out)
    both_maps = build_encoder("tiny-imagenet-rgbd-maps", ["rgb", "depth"], SIZE, 16).eval()
    colour_end = both_maps.embed_dim + both_maps.stem.feature_channels
    assert both_maps.feature_dim == colour_end + depth_stem.feature_channels
    with torch.no_grad():
        depth_only = both_maps({"depth": inputs["depth"]})
    assert torch.count_nonzero(depth_only[:, both_maps.embed_dim:colour_end]) == 0      # no colour: zeros
    assert torch.equal(depth_only[:, colour_end:], both_maps.adapters["depth"].features(inputs["depth"]))


def test_depth_slopes_read_a_surfaces_tilt_whatever_its_distance_and_keep_masked_content_out():
    from tst_ros.models.generalist import depth_slopes

    rows = torch.arange(SIZE, dtype=torch.float32).view(1, 1, SIZE, 1).expand(1, 1, SIZE, SIZE)
    near_floor = 1.0 + 0.01 * (SIZE - rows)          # depth grows towards the top of the image
    normalised = lambda metres: (metres - 2.5) / 1.5                     # noqa: E731 (the registry's depth)
    wall = depth_slopes(normalised(torch.full((1, 1, SIZE, SIZE), 3.0)), 1.5, 2.5)
    assert wall.shape == (1, 2, SIZE, SIZE) and torch.count_nonzero(wall) == 0
    near = depth_slopes(normalised(near_floor), 1.5, 2.5)[..., 1:-1, :]
    far = depth_slopes(normalised(2.0 * near_floor), 1.5, 2.5)[..., 1:-1, :]
    assert torch.count_nonzero(near[:, 0]) == 0 and bool((near[:, 1] < -0.1).all())
    assert torch.allclose(near, far, atol=1e-5)        # relative: the same tilt at twice the distance
    enc = build_encoder("tiny-imagenet-rgbd-slopes", ["rgb", "depth"], SIZE, 16).eval()
    assert enc.adapters["depth"].slopes == (1.5, 2.5) and enc.stem.slopes is None
    depth, other, visible = _masked_pair(1, [2, 7, 8])
    with torch.no_grad():
        assert torch.equal(enc.tokenize("depth", depth, visible), enc.tokenize("depth", other, visible))
        plain = build_encoder("tiny-imagenet-rgbd-maps", ["rgb", "depth"], SIZE, 16).eval()
        assert not torch.allclose(enc.adapters["depth"].features(depth), plain.adapters["depth"].features(depth))


@pytest.mark.parametrize("preset", ["tiny-imagenet", "tiny-imagenet-rgbd-maps"])
def test_a_model_on_the_stem_encoder_transfers_reloads_and_exports_with_parity(tmp_path, preset):
    from tst_ros.perception.export import export_model
    from tst_ros.perception.heads import load_model
    from tst_ros.perception.transfer import transfer

    labeled = tmp_path / "labeled"
    labeled_set.write(labeled, 6, seed=1000, width=96, height=72, progress=False)
    enc = build_encoder(preset, ["rgb", "depth"], SIZE, 16)
    encoder_file = save_encoder(enc, tmp_path / "enc.safetensors")
    transfer(str(encoder_file), str(labeled), str(tmp_path / "m"),
             TransferConfig(steps=2, batch=4, seed=0, detail_strides=[8]), input_modalities=["rgb", "depth"],
             show_bar=False)
    model, meta = load_model(tmp_path / "m")
    assert meta["encoder"]["preset"] == preset
    assert meta["encoder"]["detail_strides"] == [8]
    assert model.encoder.feature_dim == enc.feature_dim + 40 * 4       # the stride-8 stage, folded
    # the default transfer fine-tunes the backbone too, at its layer's lr, with its statistics fixed
    reference, tuned = enc.stem.backbone.state_dict(), model.encoder.stem.backbone.state_dict()
    buffers = {n for n, _ in enc.stem.backbone.named_buffers()} & set(reference)   # batch-norm statistics
    assert buffers and all(torch.equal(tuned[k], reference[k]) for k in buffers)
    assert any(not torch.equal(tuned[k], v) for k, v in reference.items() if k not in buffers)
    rng = np.random.default_rng(0)
    frame = (rng.integers(0, 255, (48, 64, 3), np.uint8), rng.uniform(0.5, 4.0, (48, 64)).astype(np.float32))
    manifest = export_model(tmp_path / "m", tmp_path / "onnx", frames=[frame])
    assert Path(manifest["path"]).is_file()


def test_detail_strides_fold_the_finer_stage_losslessly_into_the_heads_map_and_leave_the_tokens_alone():
    from tst_ros.models.tpmome import encoder_from_description

    enc = build_encoder("tiny-imagenet", ["rgb"], SIZE, 16).eval()
    x = torch.randn(2, 3, SIZE, SIZE)
    stage8 = []
    index8, channels8 = enc.stem.backbone.stage_ends[8]
    enc.stem.backbone.blocks[index8].register_forward_hook(lambda m, i, out: stage8.append(out))
    with torch.no_grad():
        tokens, plain = enc.stem(x), enc({"rgb": x})
        enc.set_detail([8])
        tokens_detail, detailed = enc.stem(x), enc({"rgb": x})
    assert enc.feature_dim == plain.shape[1] + channels8 * 4 == detailed.shape[1]
    assert torch.equal(detailed[:, :plain.shape[1]], plain)
    assert torch.equal(tokens_detail, tokens)                          # pre-training sees no change
    assert torch.equal(torch.nn.functional.pixel_shuffle(detailed[:, plain.shape[1]:], 2), stage8[-1])
    rebuilt = encoder_from_description(enc.describe())
    assert rebuilt.feature_dim == enc.feature_dim
    assert "detail_strides" not in build_encoder("tiny-imagenet", ["rgb"], SIZE, 16).describe()
    with pytest.raises(ValueError, match="no detail stage"):
        enc.set_detail([32])
    with pytest.raises(ValueError, match="colour stem"):
        build_encoder("tiny", ["rgb"], SIZE, 16).set_detail([8])


def test_scratch_on_a_stem_preset_is_the_random_plain_encoder_of_its_size():
    from tst_ros.config import PretrainConfig
    from tst_ros.perception.transfer import resolve_encoder
    from tst_ros.train.pretrain import build_model

    enc, meta = resolve_encoder("scratch", preset="tiny-imagenet", image_size=SIZE)
    assert meta["preset"] == "tiny" and enc.stem is None
    model = build_model(PretrainConfig(preset="tiny-imagenet", method="scratch", image_size=SIZE))
    assert model.encoder.preset == "tiny"


def test_stem_lr_scale_trains_the_backbone_at_its_share_of_the_lr_and_keeps_its_statistics():
    from tst_ros.config import PretrainConfig
    from tst_ros.train import engine
    from tst_ros.train.pretrain import _train_stem_backbone, build_model

    cfg = PretrainConfig(preset="tiny-imagenet", modalities=["rgb", "depth"], image_size=SIZE, stem_lr_scale=0.1)
    model = build_model(cfg).train()
    backbone = model.encoder.stem.backbone
    weights = {k: v.clone() for k, v in backbone.named_parameters()}
    stats = {k: v.clone() for k, v in backbone.named_buffers()}
    scales = _train_stem_backbone(model.encoder, cfg)
    optimizer = engine.make_optimizer(model, 1e-3, 0.05, scales)
    engine.set_lr(optimizer, 1e-3)
    backbone_ids = {id(p) for p in backbone.parameters()}
    for group in optimizer.param_groups:
        members = {id(p) in backbone_ids for p in group["params"]}
        assert len(members) <= 1                                      # no group mixes backbone and the rest
        if members:
            assert group["lr"] == pytest.approx(1e-4 if members == {True} else 1e-3)
    loss, _ = model({"rgb": torch.randn(4, 3, SIZE, SIZE), "depth": torch.randn(4, 1, SIZE, SIZE)}, seeds=range(4))
    loss.backward()
    optimizer.step()
    assert any(not torch.equal(p, weights[k]) for k, p in backbone.named_parameters())
    assert all(torch.equal(b, stats[k]) for k, b in backbone.named_buffers())   # batch norms stay in inference mode
    with pytest.raises(ValueError, match="colour stem"):
        _train_stem_backbone(build_model(PretrainConfig(preset="tiny", modalities=["rgb"], image_size=SIZE)).encoder,
                             PretrainConfig(preset="tiny", stem_lr_scale=0.1))
