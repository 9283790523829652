"""TST-MM masking, budgets and losses: invariants of the masked-modeling model."""
import itertools

import numpy as np
import pytest
import torch

from tst_ros.models import build_tstmm
from tst_ros.models.multimae import build_mask, gather_tokens, split_budget

NAMES = ["rgb", "depth", "normals", "edges", "imu"]

pytestmark = pytest.mark.usefixtures("one_torch_thread")



@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_tstmm("tiny", NAMES, image_size=32, patch=8, visible_fraction=1 / 4)


def make_batch(b=4, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"rgb": torch.randn(b, 3, size, size, generator=g), "depth": torch.randn(b, 1, size, size, generator=g),
            "normals": torch.randn(b, 3, size, size, generator=g),
            "edges": (torch.rand(b, 1, size, size, generator=g) > 0.8).float(),
            "imu": torch.randn(b, 16, 6, generator=g)}


def test_budgets_sum_exactly_and_respect_limits_for_every_subset_of_present_modalities(model):
    n = np.array(model.n_tokens)
    b = 12
    for k in range(1, len(NAMES) + 1):
        for subset in itertools.combinations(range(len(NAMES)), k):
            present = torch.zeros(b, len(NAMES), dtype=torch.bool)
            present[:, list(subset)] = True
            budgets = model.make_mask(present, range(100 * k, 100 * k + b)).budgets.numpy()
            lo, hi = np.where(present, model.lo, 0), np.where(present, model.hi, 0)
            want = np.clip(np.rint(model.visible_fraction * (present.numpy() * n).sum(1)), lo.sum(1), hi.sum(1))
            assert (budgets.sum(1) == want).all(), (subset, budgets)
            assert (budgets >= lo).all() and (budgets <= hi).all(), (subset, budgets)
            assert (budgets[:, [i for i in range(len(NAMES)) if i not in subset]] == 0).all()
    # the Dirichlet split really varies across samples
    present = torch.ones(b, len(NAMES), dtype=torch.bool)
    assert len({tuple(r) for r in model.make_mask(present, range(b)).budgets.tolist()}) > b // 2


def test_split_budget_is_exact_under_random_limits_including_clamped_budgets():
    rng = np.random.default_rng(0)
    for _ in range(200):
        m = int(rng.integers(1, 7))
        weights = rng.dirichlet(np.ones(m), size=8) * (rng.random((8, m)) > 0.3)
        hi = rng.integers(0, 40, (8, m))
        lo = np.minimum(rng.integers(0, 6, (8, m)), hi)
        budget = rng.integers(0, 120, 8)
        counts = split_budget(weights, budget, lo, hi)
        present = weights > 0
        lo_p, hi_p = np.where(present, lo, 0), np.where(present, hi, 0)
        assert (counts.sum(1) == np.clip(budget, lo_p.sum(1), hi_p.sum(1))).all()
        assert (counts >= lo_p).all() and (counts <= hi_p).all()


def test_mask_visible_counts_match_budgets_and_unshuffling_restores_token_order(model):
    present = torch.ones(6, len(NAMES), dtype=torch.bool)
    present[1, 0] = False
    mask = model.make_mask(present, range(6))
    start = 0
    for m, count in enumerate(model.n_tokens):
        assert torch.equal(mask.visible[:, start:start + count].sum(1), mask.budgets[:, m])
        start += count
    tokens = torch.arange(sum(model.n_tokens)).float()[None, :, None].expand(6, -1, 2)
    shuffled = gather_tokens(tokens, mask.ids_shuffle)
    assert torch.equal(gather_tokens(shuffled, mask.ids_restore), tokens)
    n_vis = mask.visible.sum(1)
    for i in range(6):   # visible tokens come first and are exactly the visible set
        kept = set(mask.ids_shuffle[i, :n_vis[i]].tolist())
        assert kept == set(torch.nonzero(mask.visible[i]).flatten().tolist())
        assert mask.key_mask[i].sum() == n_vis[i]


def test_build_mask_is_a_permutation_for_random_noise():
    noise = torch.rand(3, 10)
    mask = build_mask(noise, torch.tensor([[2, 1], [0, 3], [4, 0]]), [6, 4])
    assert torch.equal(mask.ids_shuffle.sort(1).values, torch.arange(10).expand(3, -1))
    assert torch.equal(torch.gather(mask.ids_shuffle, 1, mask.ids_restore), torch.arange(10).expand(3, -1))


def test_loss_counts_masked_tokens_only(model):
    out = model.run(make_batch(), range(4))
    base, _ = model.losses(out)
    for name in NAMES:
        visible = ~out["masked"][name]
        changed = dict(out, pred=dict(out["pred"]))
        changed["pred"][name] = torch.where(visible[..., None], out["pred"][name] + 100.0, out["pred"][name])
        assert torch.allclose(model.losses(changed)[0], base), name
        changed["pred"][name] = torch.where(visible[..., None], out["pred"][name], out["pred"][name] + 1.0)
        assert not torch.allclose(model.losses(changed)[0], base), name


def test_loss_excludes_invalid_depth_pixels(model):
    batch = make_batch()
    batch["depth"][:, :, :8, :] = 0.0          # normalised invalid depth
    out = model.run(batch, range(4))
    base, _ = model.losses(out)
    changed = dict(out, pred=dict(out["pred"]))
    invalid = ~out["valid"]["depth"]
    assert invalid.any()
    changed["pred"]["depth"] = torch.where(invalid, out["pred"]["depth"] + 50.0, out["pred"]["depth"])
    assert torch.allclose(model.losses(changed)[0], base)


def test_nan_or_missing_modality_never_poisons_the_loss(model):
    batch = make_batch()
    batch["depth"][0, 0, 3, 3] = float("nan")
    batch["imu"][2, 5, 1] = float("inf")
    batch["present"] = {"normals": torch.tensor([True, False, True, False])}
    del batch["edges"]                          # absent in the whole batch
    model.zero_grad()
    out = model.run(batch, range(4))
    loss, stats = model.losses(out)
    assert torch.isfinite(loss)
    assert not out["masked"]["depth"][0].any() and not out["masked"]["imu"][2].any()
    assert not out["masked"]["normals"][1].any() and "loss/edges" not in stats
    assert ((out["mask"].budgets[0, NAMES.index("depth")] == 0)
            and (out["mask"].budgets[:, NAMES.index("edges")] == 0).all())
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    # what a rejected modality holds does not matter
    batch2 = {k: (v.clone() if torch.is_tensor(v) else v) for k, v in batch.items()}
    batch2["depth"][0] = float("nan")
    batch2["depth"][0, 0, 0, 0] = 1e30
    assert torch.allclose(model(batch2, range(4))[0], loss.detach(), atol=1e-6)


def test_batch_without_any_valid_modality_is_rejected_with_a_message(model):
    batch = make_batch(b=2)
    batch["present"] = {n: torch.tensor([False, False]) for n in NAMES}
    with pytest.raises(ValueError, match="no sample"):
        model(batch, range(2))


def test_target_only_modalities_are_never_visible_but_always_reconstructed():
    from tst_ros.models.multimae import TSTMM
    from tst_ros.models.vit import build_encoder

    torch.manual_seed(0)
    model = TSTMM(build_encoder("tiny", NAMES, 32, 8), visible_fraction=1 / 4, target_only=("normals", "edges"))
    plain = build_tstmm("tiny", NAMES, image_size=32, patch=8, visible_fraction=1 / 4)
    out, ref = model.run(make_batch(), range(4)), plain.run(make_batch(), range(4))
    budgets = out["mask"].budgets
    for i, name in enumerate(model.names):
        if name in ("normals", "edges"):
            assert int(budgets[:, i].sum()) == 0 and bool(out["masked"][name].all()), name
    # the visible budget counts only the modalities that may be visible
    assert (budgets.sum(1) < ref["mask"].budgets.sum(1)).all()
    loss, stats = model.losses(out)
    assert torch.isfinite(loss) and {"normals", "edges"} <= {k.split("/")[-1] for k in stats}
    with pytest.raises(ValueError, match="not among"):
        TSTMM(build_encoder("tiny", ["rgb"], 32, 8), target_only=("depth",))


def test_colour_only_samples_show_the_primary_image_alone_and_a_zero_share_keeps_the_masks():
    from tst_ros.models.multimae import TSTMM
    from tst_ros.models.vit import build_encoder

    encoder = build_encoder("tiny", NAMES, 32, 8)
    plain = TSTMM(encoder, visible_fraction=1 / 4)
    present = torch.ones(64, len(NAMES), dtype=torch.bool)
    seeds = list(range(64))
    assert torch.equal(TSTMM(encoder, 1 / 4, colour_only_share=0.0).make_mask(present, seeds).budgets,
                       plain.make_mask(present, seeds).budgets)
    budgets = TSTMM(encoder, 1 / 4, colour_only_share=0.5).make_mask(present, seeds).budgets
    rgb = NAMES.index("rgb")
    alone = budgets.sum(1) == budgets[:, rgb]
    assert 10 <= int(alone.sum()) <= 54                         # about half of 64 samples
    assert (budgets[alone, rgb] == plain.hi[rgb]).all()         # all colour tokens but one
    everything = TSTMM(encoder, 1 / 4, colour_only_share=1.0)
    out = everything.run(make_batch(), range(4))
    assert (out["mask"].budgets.sum(1) == out["mask"].budgets[:, rgb]).all()
    loss, stats = everything.losses(out)                        # the rest is reconstructed from colour
    assert torch.isfinite(loss) and {"depth", "normals", "edges", "imu"} <= {k.split("/")[-1] for k in stats}
    with pytest.raises(ValueError, match="colour_only_share"):
        TSTMM(encoder, 1 / 4, colour_only_share=1.5)
