"""A short real TST-MM pre-training on simulator data (written through the recording
pipeline into a store and read back with StoreDataset) lowers the held-out reconstruction
error, and the per-patch linear probe scores encoders correctly.

Whether 100 CPU steps also beat random initialisation on the semantic probe is not asserted:
over seeds 0-3 of this exact setup the trained-minus-random probe mIoU was +0.070, +0.085,
-0.017, +0.027 (all inputs) and +0.014, -0.018, -0.012, +0.010 (RGB only), and another
machine measured -0.083. That comparison is a benchmark claim (`tst-ros bench
specialization`, several seeds), not a test invariant. The held-out reconstruction error,
in contrast, fell to 0.50-0.53 of its initial value on all four seeds; the test asks < 0.8."""
import numpy as np
import pytest
import torch

from tst_ros.config import PretrainConfig, RecordConfig, SimConfig
from tst_ros.data.from_sim import build_dataset
from tst_ros.models import load_encoder
from tst_ros.train.data import open_dataset
from tst_ros.train.pretrain import build_model, evaluate, pretrain
from tst_ros.train.probe import fit_linear, patch_labels, probe, resolve_encoder
from tst_ros.train.probe import miou as probe_miou

SIZE, PATCH, STEPS = 64, 16, 100
MODS = ["rgb", "depth", "normals", "edges"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    path = tmp_path_factory.mktemp("sim") / "store"
    build_dataset(SimConfig(width=128, height=96, realtime=False),
                  RecordConfig(image_size=SIZE, val_fraction=0.25, split_block_samples=8), 100, path)
    return str(path)


def test_patch_labels_take_the_majority_of_labeled_pixels():
    sem = torch.full((1, 4, 4), 255)
    sem[0, :2, :2] = torch.tensor([[3, 3], [1, 255]])
    sem[0, 2:, 2:] = 7
    labels = patch_labels(sem, 2)
    assert labels.tolist() == [[[3, 255], [255, 7]]]


def test_short_pretraining_on_sim_data_lowers_heldout_reconstruction_error(store, tmp_path):
    # 64 px with 16 px patches gives 16 tokens per modality, so a larger visible share than
    # MultiMAE's 1/6 of 588 tokens; 128-d decoders keep the run short on a CPU
    cfg = PretrainConfig(preset="tiny", method="tst-mm", modalities=MODS, steps=STEPS, batch=16, image_size=SIZE,
                         patch=PATCH, workers=0, warmup_steps=5, lr=2e-3, checkpoint_every=0, val_batches=2,
                         tensorboard=False, visible_fraction=0.4, decoder_dim=128)
    names = cfg.modalities
    val = open_dataset(store, "val", names, SIZE)
    assert len(val) >= 16 and len(open_dataset(store, "train", names, SIZE)) >= 60
    before = evaluate(build_model(cfg), val, 16, 2, "cpu")["val_loss"]
    summary = pretrain(cfg, store, tmp_path / "run")
    assert summary["val_loss"] < 0.8 * before, (before, summary["val_loss"])
    assert np.mean(summary["losses"][-10:]) < np.mean(summary["losses"][:10])
    assert (tmp_path / "run" / "grids" / f"step_{STEPS:06d}.png").stat().st_size > 1000

    trained, meta = load_encoder(tmp_path / "run")
    scratch, _ = resolve_encoder("scratch", "tiny", SIZE, PATCH, seed=cfg.seed, inputs=MODS)  # = its initialisation
    assert meta["method"] == "tst-mm" and meta["step"] == STEPS
    got_trained = probe(trained, store, inputs=MODS)
    got_scratch = probe(scratch, store, inputs=MODS)
    assert got_trained["val_patches"] == got_scratch["val_patches"] > 0
    for got in (got_trained, got_scratch):
        assert 0.0 <= got["miou"] <= 1.0 and 0.0 <= got["patch_accuracy"] <= 1.0


def test_linear_probe_recovers_a_linearly_encoded_class_and_not_noise():
    gen = torch.Generator().manual_seed(0)
    y = torch.randint(0, 5, (600,), generator=gen)
    signal = torch.nn.functional.one_hot(y, 5).float() * 3 + 0.3 * torch.randn(600, 5, generator=gen)
    noise = torch.randn(600, 5, generator=gen)
    train, val = slice(0, 400), slice(400, 600)
    scores = {}
    for name, x in (("signal", signal), ("noise", noise)):
        head = fit_linear(x[train], y[train], 5)
        with torch.no_grad():
            scores[name] = probe_miou(head(x[val]).argmax(1), y[val], 5)
    assert scores["signal"] > 0.95 and scores["noise"] < 0.3, scores
