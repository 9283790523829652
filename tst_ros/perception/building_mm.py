"""Masked modeling on the building's frames while transfer fine-tunes the encoder
(`transfer.building_mm`).

Transfer learns its classes from other buildings' labels, and fine-tuning moves the encoder
away from what pre-training taught it about this building. With a weight > 0, every transfer
step also adds that weight times the pre-training loss on a batch of the building's recorded
frames (the store's training split: the frames pre-training saw, never held-out ones), so the
encoder keeps predicting the building's modalities from partial views while it learns the
classes. The pre-training's decoders continue from its checkpoint and train along; its masking
recipe is read from the run's resolved config. Only an encoder pre-trained here by masked
modeling (a run directory with its checkpoint) has them: the ImageNet generalist and scratch do not.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

MASKED_METHODS = ("tst-mm", "tst-mae")


def pretraining_run(encoder_source: str, option: str = "transfer.building_mm") -> tuple[Path, object]:
    """The run directory of an encoder file or run directory and its pre-training config;
    ValueError, naming the `option` that needs them, when the source is not a masked-modeling run
    with its checkpoint."""
    from tst_ros import config as config_mod
    from tst_ros.models.io import encoder_path
    from tst_ros.train.checkpoint import CHECKPOINT_FILE

    try:
        run_dir = encoder_path(encoder_source).parent
    except FileNotFoundError as err:
        raise ValueError(f"{option} uses the pre-training's decoders, so the encoder must come from a "
                         f"pre-training run directory, not {encoder_source!r}") from err
    missing = [n for n in (CHECKPOINT_FILE, config_mod.RESOLVED_FILE) if not (run_dir / n).is_file()]
    if missing:
        raise ValueError(f"{option} needs the pre-training run's {' and '.join(missing)} beside "
                         f"its encoder in {run_dir}")
    cfg = config_mod.load(run_dir / config_mod.RESOLVED_FILE).pretrain
    if cfg.method not in MASKED_METHODS:
        raise ValueError(f"{option} needs an encoder pre-trained by masked modeling "
                         f"{MASKED_METHODS}, {run_dir} was made by {cfg.method!r}")
    return run_dir, cfg


class BuildingMaskedModeling:
    """The pre-training model around transfer's encoder and the building's frames, in memory."""

    def __init__(self, encoder, encoder_source: str, store: str, batch: int, seed: int, device):
        from tst_ros.models.multimae import TSTMM
        from tst_ros.train.checkpoint import CHECKPOINT_FILE, read_model_part
        from tst_ros.train.data import open_dataset

        run_dir, cfg = pretraining_run(encoder_source)
        target_only = tuple(n for n in cfg.target_only if n in encoder.modalities)
        self.model = TSTMM(encoder, cfg.visible_fraction, cfg.dirichlet_alpha, cfg.decoder_dim,
                           cfg.decoder_depth, target_only, cfg.colour_only_share)
        self.model.decoders.load_state_dict(read_model_part(run_dir / CHECKPOINT_FILE, "decoders"))
        self.model.decoders.to(device)
        dataset = open_dataset(store, "train", list(encoder.modalities), encoder.image_size, False)
        if len(dataset) == 0:
            raise ValueError(f"{store} holds no training frame for transfer.building_mm")
        self.frames = [dataset[i] for i in range(len(dataset))]
        self.batch, self.seed, self.device = min(batch, len(self.frames)), seed, device
        self.rng = np.random.default_rng(seed + 7919)

    def param_group(self, lr: float, weight_decay: float) -> dict:
        return {"params": list(self.model.decoders.parameters()), "lr": lr, "lr_scale": 1.0,
                "weight_decay": weight_decay, "name": "building_mm.decoders"}

    def loss(self, step: int):
        """The masked-modeling loss of one batch of the building's frames (masks fixed by seed and step)."""
        from tst_ros.train.data import prepare_batch
        from tst_ros.train.engine import autocast, mask_seeds
        from tst_ros.train.pretrain import collate

        idx = self.rng.choice(len(self.frames), self.batch, replace=False)
        batch = prepare_batch(collate([self.frames[i] for i in idx]), self.device)
        with autocast(self.device):
            loss, _ = self.model(batch, mask_seeds(self.seed, step, idx))
        return loss


def building_masked_modeling(model, encoder_source: str, store: str | None, cfg, device):
    """`BuildingMaskedModeling` for `cfg.building_mm` > 0 (None when off), after checking that
    the transfer can carry it."""
    if cfg.building_mm <= 0:
        return None
    if not store:
        raise ValueError("transfer.building_mm needs the building's store (--building-data)")
    if cfg.finetune not in ("partial", "full"):
        raise ValueError(f"transfer.building_mm trains the encoder, so finetune must be partial or full, "
                         f"not {cfg.finetune!r}")
    return BuildingMaskedModeling(model.encoder, encoder_source, store, cfg.batch, cfg.seed, device)
