"""A short real TST-MM pre-training on simulator data (written through the recording
pipeline into a store and read back with StoreDataset) lowers the held-out reconstruction
error and beats random initialisation on the per-patch linear probe."""
import numpy as np
import pytest
import torch

from tst_ros.config import PretrainConfig, RecordConfig, SimConfig
from tst_ros.data.from_sim import build_dataset
from tst_ros.models import load_encoder
from tst_ros.train.data import open_dataset
from tst_ros.train.pretrain import build_model, evaluate, pretrain
from tst_ros.train.probe import patch_labels, probe, resolve_encoder

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


def test_short_pretraining_on_sim_data_lowers_heldout_error_and_beats_random_init_on_the_probe(store, tmp_path):
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
    assert got_trained["miou"] > got_scratch["miou"], (got_trained, got_scratch)
