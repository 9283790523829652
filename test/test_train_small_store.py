"""Small stores: a store longer than one split block has a validation split; a store without
one is trained on with a notice, and its held-out loss is labelled as a training-data loss
(train_eval_loss) in the summary, log.jsonl, checkpoint and encoder metadata and progress lines."""
import json

import pytest

from tst_ros.config import PretrainConfig, RecordConfig, SimConfig
from tst_ros.data.from_sim import build_dataset
from tst_ros.data.store import Store
from tst_ros.models.io import read_metadata
from tst_ros.train.checkpoint import CHECKPOINT_FILE, read_checkpoint
from tst_ros.train.pretrain import pretrain

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny_cfg() -> PretrainConfig:
    return PretrainConfig(preset="tiny", modalities=["rgb", "depth"], steps=2, batch=4, image_size=32, patch=8,
                          workers=0, warmup_steps=1, checkpoint_every=0, val_batches=1, tensorboard=False,
                          decoder_dim=32, decoder_depth=1)


def make_store(path, frames: int):
    build_dataset(SimConfig(width=96, height=72, realtime=False), RecordConfig(image_size=32), frames, path)
    return Store(path)


def test_a_30_sample_store_has_a_validation_split_and_reports_val_loss(tmp_path):
    store = make_store(tmp_path / "s30", 30)
    assert store.info()["splits"] == {"train": 20, "val": 10}     # default 20-sample blocks
    summary = pretrain(tiny_cfg(), str(tmp_path / "s30"), tmp_path / "run")
    assert summary["eval_split"] == "val" and "val_loss" in summary and "train_eval_loss" not in summary


def test_without_a_validation_split_the_loss_is_labelled_as_training_loss(tmp_path, capsys):
    store = make_store(tmp_path / "s15", 15)
    assert store.info()["splits"] == {"train": 15, "val": 0}
    run = tmp_path / "run"
    summary = pretrain(tiny_cfg(), str(tmp_path / "s15"), run, progress_jsonl=True)
    assert summary["eval_split"] == "train" and "train_eval_loss" in summary and "val_loss" not in summary

    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert any("no validation split" in line.get("message", "") for line in lines)
    model_event = [line for line in lines if line.get("event") == "model"][-1]
    assert "train_eval_loss" in model_event["metrics"] and "val_loss" not in model_event["metrics"]

    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    evals = [r for r in log if "eval_split" in r]
    assert evals and evals[-1]["eval_split"] == "train" and "train_eval_loss" in evals[-1]
    assert not any("val_loss" in r for r in log)

    _, meta = read_checkpoint(run / CHECKPOINT_FILE)
    assert meta["eval_split"] == "train" and set(meta["metrics"]) >= {"train_eval_loss"}
    encoder_meta = read_metadata(run)
    assert encoder_meta["eval_split"] == "train" and "train_eval_loss" in encoder_meta["metrics"]
