"""Training engine: reproducibility, exact resume, DDP equivalence, checkpoints, schedule."""
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tst_ros.config import PretrainConfig
from tst_ros.models import load_encoder
from tst_ros.train import engine
from tst_ros.train.checkpoint import CHECKPOINT_FILE, read_checkpoint, read_model_part, save_checkpoint
from tst_ros.train.data import SyntheticDataset
from tst_ros.train.pretrain import pretrain

REPO = Path(__file__).resolve().parents[1]
MODS = ["rgb", "depth", "normals", "edges"]

pytestmark = pytest.mark.usefixtures("one_torch_thread")



def small_cfg(**kw) -> PretrainConfig:
    base = dict(preset="tiny", method="tst-mm", modalities=MODS, steps=6, batch=8, image_size=32, patch=8,
                workers=0, warmup_steps=2, lr=1e-3, checkpoint_every=0, val_batches=1, tensorboard=False, seed=3,
                decoder_dim=64, decoder_depth=1)
    base.update(kw)
    return PretrainConfig(**base)


def datasets():
    return SyntheticDataset(24, 32, MODS, seed=0), SyntheticDataset(8, 32, MODS, seed=99)


def test_same_seed_gives_the_same_first_steps(tmp_path):
    train, val = datasets()
    a = pretrain(small_cfg(steps=3), "", tmp_path / "a", dataset=train, val_dataset=val)
    b = pretrain(small_cfg(steps=3), "", tmp_path / "b", dataset=train, val_dataset=val)
    c = pretrain(small_cfg(steps=3, seed=4), "", tmp_path / "c", dataset=train, val_dataset=val)
    assert a["losses"] == b["losses"] and len(a["losses"]) == 3
    assert a["losses"] != c["losses"]


def test_a_run_writes_its_files_with_the_mode_a_plainly_created_file_gets(tmp_path):
    """Nodes running as another user read what the trainer wrote: no 0600 checkpoints."""
    train, val = datasets()
    pretrain(small_cfg(steps=2), "", tmp_path / "run", dataset=train, val_dataset=val)
    plain = tmp_path / "plain"
    plain.write_bytes(b"x")
    written = {p.name: p.stat().st_mode & 0o777 for p in (tmp_path / "run").iterdir() if p.is_file()}
    assert {"encoder.safetensors", CHECKPOINT_FILE} <= set(written)
    assert set(written.values()) == {plain.stat().st_mode & 0o777}, written


def test_resume_continues_the_loss_curve_of_an_uninterrupted_run(tmp_path):
    train, val = datasets()
    full = pretrain(small_cfg(), "", tmp_path / "full", dataset=train, val_dataset=val)
    first = pretrain(small_cfg(), "", tmp_path / "split", dataset=train, val_dataset=val, stop_at=3)
    assert first["stopped"] and first["step"] == 3
    tensors, meta = read_checkpoint(tmp_path / "split" / CHECKPOINT_FILE)
    assert (meta["step"] == 3 and any(k.startswith("optim/") for k in tensors)
            and meta["config"]["pretrain"]["seed"] == 3)
    second = pretrain(small_cfg(), "", tmp_path / "split", resume=True, dataset=train, val_dataset=val)
    assert second["start_step"] == 3
    np.testing.assert_allclose(first["losses"] + second["losses"], full["losses"], rtol=1e-4, atol=1e-5)
    a, _ = load_encoder(tmp_path / "full")
    b, _ = load_encoder(tmp_path / "split")
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        torch.testing.assert_close(va, vb, rtol=1e-4, atol=1e-5, msg=ka)


def test_two_process_ddp_matches_single_process_on_the_same_global_batch(tmp_path):
    args = ["pretrain", "--data", "synthetic:24", "--steps", "3", "--batch", "8", "--image-size", "32",
            "--patch", "8", "--preset", "tiny", "--workers", "0", "--lr", "1e-3", "--seed", "5",
            "--set", "pretrain.tensorboard=false",
            "--set", "pretrain.warmup_steps=1", "--set", "pretrain.val_batches=1",
            "--set", "pretrain.checkpoint_every=0",
            "--set", "pretrain.decoder_dim=64", "--set", "pretrain.decoder_depth=1"]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    ddp = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone",
                          "-m", "tst_ros.cli", *args, "--out", str(tmp_path / "ddp")],
                         env=env, capture_output=True, text=True, timeout=120, cwd=REPO)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    cfg = small_cfg(steps=3, lr=1e-3, seed=5, warmup_steps=1)
    pretrain(cfg, "synthetic:24", tmp_path / "one")          # the same run in one process

    def losses(run):      # training-step lines; held-out evaluation lines carry eval_split instead
        records = [json.loads(line) for line in (tmp_path / run / "log.jsonl").read_text().splitlines()]
        return [r["loss"] for r in records if "loss" in r]

    assert len(losses("ddp")) == 3
    np.testing.assert_allclose(losses("ddp"), losses("one"), rtol=1e-4, atol=1e-5)
    a, _ = load_encoder(tmp_path / "ddp")
    b, _ = load_encoder(tmp_path / "one")
    for (ka, va), (_, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        torch.testing.assert_close(va, vb, rtol=1e-3, atol=1e-4, msg=ka)
    _, meta = read_checkpoint(tmp_path / "ddp" / CHECKPOINT_FILE)
    assert meta["world"] == 2


class _SignalsAtRead(torch.utils.data.Dataset):
    """Sends this process SIGINT when sample read number `at` starts (i.e. inside a step)."""

    def __init__(self, base, at: int):
        self.base, self.at, self.reads = base, at, 0

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        self.reads += 1
        if self.reads == self.at:
            os.kill(os.getpid(), signal.SIGINT)
        return self.base[i]


def test_a_signal_inside_a_step_drops_that_step_and_resume_matches_an_uninterrupted_run(tmp_path):
    train, val = datasets()
    full = pretrain(small_cfg(), "", tmp_path / "full", dataset=train, val_dataset=val)
    # 3 steps of 8 samples, then SIGINT while the 4th step reads its batch
    first = pretrain(small_cfg(), "", tmp_path / "split", dataset=_SignalsAtRead(train, 3 * 8 + 2), val_dataset=val)
    assert first["stopped"] and first["step"] == 3 and len(first["losses"]) == 3
    _, meta = read_checkpoint(tmp_path / "split" / CHECKPOINT_FILE)
    assert meta["step"] == 3 and meta["metrics"] == {}, "a signalled stop saves without the held-out evaluation"
    second = pretrain(small_cfg(), "", tmp_path / "split", resume=True, dataset=train, val_dataset=val)
    np.testing.assert_allclose(first["losses"] + second["losses"], full["losses"], rtol=1e-4, atol=1e-5)


def test_lr_schedule_warms_up_then_decays_and_follows_the_batch_scaling_rule():
    assert engine.peak_lr(0.0, 1.5e-4, 512) == pytest.approx(3e-4)
    assert engine.peak_lr(2e-3, 1.5e-4, 512) == 2e-3
    lrs = [engine.lr_at(s, 100, 10, 1.0) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:])) and lrs[-1] < 0.01


def test_micro_batches_partition_each_global_batch_for_any_world_and_accumulation():
    for world, accum in [(1, 1), (2, 1), (1, 4), (2, 2)]:
        seen = []
        for rank in range(world):
            seen.append(list(engine.MicroBatchSampler(10, 0, 8, world, rank, accum, 1, 3)))
        for step in range(2):
            got = sorted(i for rank in range(world) for mb in seen[rank][step * accum:(step + 1) * accum] for i in mb)
            assert got == sorted(engine.step_indices(10, 0, step + 1, 8).tolist())


def test_checkpoint_readers_refuse_truncated_files_and_missing_parts_with_the_path(tmp_path):
    model = torch.nn.Sequential(torch.nn.Linear(3, 2))
    path = save_checkpoint(tmp_path / CHECKPOINT_FILE, model, None, {"step": 1})
    part = read_model_part(path, "0")
    assert set(part) == {"weight", "bias"} and torch.equal(part["weight"], model[0].weight)
    with pytest.raises(ValueError, match="no weights of the model's 'decoders'"):
        read_model_part(path, "decoders")
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(path.read_bytes()[:40])
    for reader in (read_checkpoint, lambda p: read_model_part(p, "0")):
        with pytest.raises(ValueError, match="truncated.safetensors"):
            reader(truncated)
