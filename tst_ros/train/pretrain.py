"""TST-MM / TST-MAE pre-training runs (and the `scratch` baseline's encoder file).

A run directory holds: config.yaml (resolved config + provenance), checkpoint.safetensors
(weights + optimizer + RNG + step, for exact resume), encoder.safetensors (the artifact
other stages load with `tst_ros.models.load_encoder`), log.jsonl, tb/ (TensorBoard) and
grids/ (visible input / prediction / target pictures on held-out frames).

log.jsonl has one line per step (training loss as `loss`) and one per checkpoint with the
held-out reconstruction loss: `val_loss` on the store's validation split, or
`train_eval_loss` (with a notice at start) when the store has none, so a loss on training
frames is never reported as a validation loss. Checkpoint and encoder metadata carry the
same keys and `eval_split`.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from tst_ros import config as config_mod
from tst_ros import modalities as registry
from tst_ros.config import Config, PretrainConfig
from tst_ros.models import ENCODER_FILE, build_encoder, save_encoder
from tst_ros.models.vit import random_init_preset
from tst_ros.models.multimae import TSTMM
from tst_ros.train import engine
from tst_ros.train.checkpoint import CHECKPOINT_FILE, load_checkpoint, save_checkpoint
from tst_ros.train.data import open_dataset, prepare_batch

METHODS = ("tst-mm", "tst-mae", "scratch")


def method_modalities(cfg: PretrainConfig) -> list[str]:
    if cfg.method == "tst-mm":
        return list(cfg.modalities)
    if cfg.method in ("tst-mae", "scratch"):
        return [registry.primary_image().name]
    raise ValueError(f"unknown pre-training method {cfg.method!r}; choose one of {METHODS}")


def build_model(cfg: PretrainConfig) -> TSTMM:
    torch.manual_seed(cfg.seed)
    preset = random_init_preset(cfg.preset) if cfg.method == "scratch" else cfg.preset
    encoder = build_encoder(preset, method_modalities(cfg), cfg.image_size, cfg.patch)
    target_only = tuple(n for n in cfg.target_only if n in method_modalities(cfg))
    return TSTMM(encoder, cfg.visible_fraction, cfg.dirichlet_alpha, cfg.decoder_dim, cfg.decoder_depth, target_only,
                 cfg.colour_only_share)


def collate(items: list[dict]) -> dict:
    return torch.utils.data.default_collate(items)


def make_loader(dataset, cfg: PretrainConfig, dist: engine.Distributed, start: int, total: int, workers: int,
                pin_memory: bool = False):
    sampler = engine.MicroBatchSampler(len(dataset), cfg.seed, cfg.batch, dist.world, dist.rank, cfg.accum,
                                       start, total)
    extra = {"prefetch_factor": 4, "persistent_workers": False} if workers > 0 else {}
    return torch.utils.data.DataLoader(dataset, batch_sampler=sampler, num_workers=workers, collate_fn=collate,
                                       pin_memory=pin_memory, **extra)


@torch.no_grad()
def evaluate(model: TSTMM, dataset, batch: int, max_batches: int, device: str, seed: int = 12345,
             prefix: str = "val") -> dict:
    """Held-out reconstruction loss with fixed masks (same frames, same masks every call), keyed
    `{prefix}_loss`, `{prefix}_loss_<modality>`."""
    was_training = model.training
    model.eval()
    n = min(len(dataset), batch * max_batches)
    totals: dict[str, float] = {}
    weights: dict[str, float] = {}
    for start in range(0, n, batch):
        idx = list(range(start, min(n, start + batch)))
        data = prepare_batch(collate([dataset[i] for i in idx]), device)
        _, stats = model(data, engine.mask_seeds(seed, 0, np.asarray(idx)))
        for k, v in stats.items():
            totals[k] = totals.get(k, 0.0) + v * len(idx)
            weights[k] = weights.get(k, 0.0) + len(idx)
    model.train(was_training)
    return {f"{prefix}_{k.replace('/', '_')}": totals[k] / weights[k] for k in totals}


def save_grid(model: TSTMM, dataset, out: Path, step: int, device: str) -> Path | None:
    if len(dataset) == 0:
        return None
    idx = list(range(min(4, len(dataset))))
    data = prepare_batch(collate([dataset[i] for i in idx]), device)
    model.eval()
    pictures = model.reconstruct(data, engine.mask_seeds(12345, 0, np.asarray(idx)))
    model.train()
    pictures = {k: {kk: vv.cpu() for kk, vv in v.items()} for k, v in pictures.items()}
    return engine.save_reconstruction_grid(pictures, out / "grids" / f"step_{step:06d}.png")


@dataclass
class Session:
    """What one `pretrain` call trains and where it reports, as set up by `_setup`."""
    cfg: PretrainConfig
    out: Path
    device: str
    dist: engine.Distributed
    model: TSTMM
    net: torch.nn.Module                # the model, or its DDP wrapper
    optimizer: torch.optim.Optimizer
    peak_lr: float
    start: int                          # first step of this call (the checkpoint's step when resuming)
    loader: torch.utils.data.DataLoader
    eval_dataset: torch.utils.data.Dataset
    eval_split: str                     # "val", or "train" when the data has no validation split
    reporter: engine.Reporter
    full_config: Config | None

    @property
    def eval_prefix(self) -> str:
        return "val" if self.eval_split == "val" else "train_eval"


def pretrain(cfg: PretrainConfig, data: str, out: str | Path, resume: bool = False, progress_jsonl: bool = False,
             full_config: Config | None = None, dataset=None, val_dataset=None, stop_at: int | None = None) -> dict:
    """Run (or continue) pre-training; returns a summary with the per-step losses of this call.

    `stop_at` ends this call after that step as a stop signal would (checkpoint, then return),
    keeping the schedule of the full `cfg.steps` run.
    `dataset` / `val_dataset` may be given directly (any Dataset with the item contract);
    otherwise they are opened from `data`. Runs under torchrun join its process group.
    """
    from tst_ros.util import resolve_device

    out = Path(out)
    device = resolve_device(cfg.device)
    if device.startswith("cuda"):
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist = engine.Distributed.from_env(device)
    if dist.main:
        config_mod.save_resolved(full_config or Config(pretrain=cfg), out)
    model = build_model(cfg).to(device)
    if cfg.method == "scratch":
        return _finish_scratch(cfg, model, out, dist, progress_jsonl)
    session = _setup(cfg, data, out, device, dist, model, resume=resume, progress_jsonl=progress_jsonl,
                     full_config=full_config, dataset=dataset, val_dataset=val_dataset)
    return _train(session, stop_at)


def init_encoder(encoder, source: str) -> dict:
    """Copy the weights of the encoder file `source` into `encoder` (continued pre-training):
    every tensor of the same name and shape; input adapters of modalities `source` lacks keep
    their random initialisation. A source of another size or patch is refused."""
    from tst_ros.models.io import encoder_path, read_encoder

    file = encoder_path(source)
    theirs, meta = read_encoder(file)
    own = encoder.state_dict()
    mismatched = [k for k in own if k in theirs and theirs[k].shape != own[k].shape]
    shared = [k for k in own if k in theirs and k not in mismatched]
    if mismatched or not any(k.startswith("blocks.") for k in shared):
        raise ValueError(f"--init {source}: encoder {meta.get('preset')!r} (patch {meta.get('patch')}, "
                         f"{meta.get('image_size')} px) does not fit this run's encoder "
                         f"{encoder.describe().get('preset')!r}: mismatched {mismatched[:4]}")
    encoder.load_state_dict({k: theirs[k] for k in shared}, strict=False)
    fresh = sorted({k.split(".")[1] for k in own if k not in theirs and k.startswith("adapters.")})
    logging.getLogger("tst_ros.pretrain").info(
        f"initialised {len(shared)} of {len(own)} encoder tensors from {file}"
        + (f"; new modalities start random: {fresh}" if fresh else ""))
    return {"source": str(file), "tensors": len(shared), "new_modalities": fresh}


def _teach_missing(data: str, names: list[str], device: str, dist: engine.Distributed) -> None:
    """Teacher modalities among `names` computed for the samples not taught yet (the teach
    stage runs before pre-training; rank 0 teaches, the others wait for it)."""
    from tst_ros.data.teach import teach

    teachers = [n for n in names if registry.get(n).teacher]
    if teachers and Path(data).is_dir():
        if dist.main:
            teach(data, teachers, device=device, progress=False)
        dist.barrier()


def _eval_dataset(cfg: PretrainConfig, data: str, names: list[str], val_dataset) -> tuple[object, str]:
    """The held-out set and its split: the store's validation split, else its training samples."""
    if val_dataset is not None:
        return val_dataset, "val"
    val_dataset = open_dataset(data, "val", names, cfg.image_size, False)
    if len(val_dataset) > 0:
        return val_dataset, "val"
    return open_dataset(data, "train", names, cfg.image_size, False), "train"


def _setup(cfg: PretrainConfig, data: str, out: Path, device: str, dist: engine.Distributed, model: TSTMM, *,
           resume: bool, progress_jsonl: bool, full_config: Config | None, dataset, val_dataset) -> Session:
    """Data, optimizer (restored from the checkpoint when resuming), loader and reporter."""
    names = method_modalities(cfg)
    if dataset is None:
        _teach_missing(data, names, device, dist)
    dataset = dataset if dataset is not None else open_dataset(data, "train", names, cfg.image_size, cfg.augment)
    eval_dataset, eval_split = _eval_dataset(cfg, data, names, val_dataset)
    peak = engine.peak_lr(cfg.lr, cfg.base_lr, cfg.batch)
    optimizer = engine.make_optimizer(model, peak, cfg.weight_decay, _train_stem_backbone(model.encoder, cfg))
    start = 0
    ckpt = out / CHECKPOINT_FILE
    if resume and ckpt.exists():
        start = int(load_checkpoint(ckpt, model, optimizer)["step"])
    elif cfg.init:
        init_encoder(model.encoder, cfg.init)
    if cfg.compile and device.startswith("cuda"):
        for block in model.encoder.blocks:
            block.compile(dynamic=True)
    net = model
    if dist.world > 1:
        device_ids = [dist.local_rank] if device != "cpu" else None
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=device_ids)
    workers = cfg.workers if dist.world == 1 else min(cfg.workers, 1)
    loader = make_loader(dataset, cfg, dist, start, cfg.steps, workers, pin_memory=device.startswith("cuda"))
    reporter = engine.Reporter(out, "pretrain", cfg.steps, start, dist.main, progress_jsonl, cfg.tensorboard)
    reporter.message(f"pre-training {cfg.method} ({cfg.preset}, {names}) on {len(dataset)} samples, "
                     f"steps {start}->{cfg.steps}, batch {cfg.batch}, lr {peak:.2e}", start)
    if eval_split == "train":
        reporter.message(f"notice: {data} has no validation split ({len(dataset)} samples, at most one split "
                         f"block); the held-out loss is computed on training samples and reported as "
                         f"train_eval_loss, not val_loss", start)
    return Session(cfg, out, device, dist, model, net, optimizer, peak, start, loader, eval_dataset, eval_split,
                   reporter, full_config)


def _train_stem_backbone(encoder, cfg: PretrainConfig) -> dict[str, float]:
    """With `stem_lr_scale` > 0, unfreeze a colour stem's ImageNet backbone so it specialises
    with the transformer: -> {its parameter prefix: lr share} for the optimizer."""
    if cfg.stem_lr_scale <= 0:
        return {}
    stem = encoder.stem
    if stem is None:
        raise ValueError(f"stem_lr_scale {cfg.stem_lr_scale} needs a preset with a colour stem "
                         f"(tiny-imagenet), not {cfg.preset!r}")
    stem.backbone.requires_grad_(True)
    name = next(n for n, m in encoder.named_modules() if m is stem.backbone)
    return {f"encoder.{name}.": cfg.stem_lr_scale}


def _train(s: Session, stop_at: int | None) -> dict:
    """Steps `s.start` -> `cfg.steps` (or until a stop signal / `stop_at`), checkpointing on the way."""
    cfg = s.cfg
    losses: list[float] = []
    stopped = signalled = False
    last_stats: dict[str, float] = {}
    stall = 0.0
    done = s.start
    t_loop = time.perf_counter()
    with engine.StopSignal() as stop:
        batches = iter(s.loader)
        s.model.train()
        for step in range(s.start, cfg.steps):
            step_stats, waited = _step(s, step, batches, stop)
            stall += waited
            if step_stats is None:
                stopped = signalled = True
                break
            losses.append(step_stats["loss"])
            last_stats = step_stats
            s.reporter.step(step + 1, step_stats, cfg.batch)
            done = step + 1
            signalled = s.dist.any(stop.requested)
            if signalled or (stop_at is not None and done >= stop_at):
                stopped = True
                break
            if cfg.checkpoint_every > 0 and done % cfg.checkpoint_every == 0 and done < cfg.steps:
                _save(s, done, last_stats)
    elapsed = time.perf_counter() - t_loop
    # a stop signal must end the run within the caller's grace period: checkpoint only
    summary = _save(s, done, last_stats, evaluate_held_out=not signalled)
    if signalled:
        s.reporter.message(f"stopped by signal at step {done}; checkpoint saved (held-out evaluation skipped)",
                           done)
    s.reporter.close()
    s.dist.close()
    return {**summary, "losses": losses, "stopped": stopped, "start_step": s.start,
            "loader_stall_share": stall / max(elapsed, 1e-9), "elapsed_s": elapsed}


def _step(s: Session, step: int, batches, stop: engine.StopSignal) -> tuple[dict[str, float] | None, float]:
    """One optimizer step over `accum` micro-batches: (its stats, seconds spent waiting for data).
    Stats are None when a stop signal arrived mid-step; the incomplete step is dropped."""
    cfg, dist = s.cfg, s.dist
    engine.set_lr(s.optimizer, engine.lr_at(step, cfg.steps, cfg.warmup_steps, s.peak_lr))
    stats: dict[str, float] = {}
    stall = 0.0
    try:
        # one process: a signal drops the unfinished step (ranks of a group finish it together)
        with stop.abandonable(enabled=dist.world == 1):
            for micro in range(cfg.accum):
                t_wait = time.perf_counter()
                try:
                    batch = prepare_batch(next(batches), s.device)
                except RuntimeError:
                    if stop.requested:      # a terminal Ctrl+C also ends the loader's workers
                        raise engine.StepAbandoned("data loader stopped") from None
                    raise
                stall += time.perf_counter() - t_wait
                positions = engine.micro_positions(cfg.batch, dist.world, cfg.accum, dist.rank, micro)
                seeds = engine.mask_seeds(cfg.seed, step, positions)
                sync = s.net.no_sync() if (dist.world > 1 and micro < cfg.accum - 1) else contextlib.nullcontext()
                with sync, engine.autocast(s.device, cfg.bf16):
                    loss, micro_stats = s.net(batch, seeds)
                    (loss / cfg.accum).backward()
                for k, v in micro_stats.items():
                    stats[k] = stats.get(k, 0.0) + v / cfg.accum
    except engine.StepAbandoned:
        s.optimizer.zero_grad(set_to_none=True)
        return None, stall
    if cfg.clip_grad > 0:
        stats["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(s.model.parameters(), cfg.clip_grad))
    s.optimizer.step()
    s.optimizer.zero_grad(set_to_none=True)
    stats = dist.mean_of(stats, ["loss", "grad_norm"] + [f"loss/{n}" for n in s.model.names])
    stats["lr"] = s.optimizer.param_groups[0]["lr"]
    return stats, stall


def _save(s: Session, step: int, last_stats: dict[str, float], evaluate_held_out: bool = True) -> dict:
    """Checkpoint + encoder file + held-out loss + picture (main process), then a model event;
    without `evaluate_held_out` only the checkpoint and the encoder file."""
    out, cfg = s.out, s.cfg
    summary = {"step": step, "checkpoint": str(out / CHECKPOINT_FILE), "encoder": str(out / ENCODER_FILE),
               "eval_split": s.eval_split}
    if s.dist.main:
        metrics = evaluate(s.model, s.eval_dataset, cfg.batch, cfg.val_batches, s.device, prefix=s.eval_prefix) \
            if evaluate_held_out else {}
        meta = {"step": step, "method": cfg.method,
                "config": config_mod.to_dict(s.full_config or Config(pretrain=cfg)),
                "train_loss": last_stats.get("loss"), "metrics": metrics, "eval_split": s.eval_split,
                "world": s.dist.world}
        save_checkpoint(out / CHECKPOINT_FILE, s.model, s.optimizer, meta)
        save_encoder(s.model.encoder, out / ENCODER_FILE, method=cfg.method, step=step, metrics=metrics,
                     eval_split=s.eval_split)
        if evaluate_held_out:
            save_grid(s.model, s.eval_dataset, out, step, s.device)
            _log_eval(out, step, s.eval_split, metrics)
        s.reporter.model_event(out / ENCODER_FILE, ["encoder"], list(s.model.encoder.modalities),
                               {**metrics, "step": step, **({"train_loss": last_stats["loss"]} if last_stats else {})})
        summary.update(metrics)
    s.dist.barrier()
    return summary


def _log_eval(out: Path, step: int, split: str, metrics: dict[str, float]) -> None:
    """One log.jsonl line per held-out evaluation (training-step lines carry "loss" instead)."""
    record = {"step": step, "eval_split": split, **{k: round(v, 6) for k, v in metrics.items()}, "time": time.time()}
    with open(out / "log.jsonl", "a") as f:
        f.write(json.dumps(record) + "\n")


def _finish_scratch(cfg, model, out: Path, dist, progress_jsonl: bool) -> dict:
    """The `scratch` baseline: a randomly initialised encoder, written like a trained one."""
    if dist.main:
        save_encoder(model.encoder, out / ENCODER_FILE, method="scratch", step=0, metrics={})
        reporter = engine.Reporter(out, "pretrain", 0, 0, True, progress_jsonl, tensorboard=False)
        reporter.model_event(out / ENCODER_FILE, ["encoder"], list(model.encoder.modalities), {"step": 0})
        reporter.close()
    dist.close()
    return {"step": 0, "encoder": str(out / ENCODER_FILE), "losses": [], "stopped": False, "start_step": 0}
