"""Training machinery shared by the stages: process group, optimizer and schedule,
deterministic data order, stop signals, logging (tqdm, TensorBoard, JSON lines, the
`--progress-jsonl` protocol) and reconstruction pictures.

Data order and mask seeds are pure functions of (seed, step, position in the global
batch), so a resumed run sees exactly the samples and masks of an uninterrupted one, and
a run split over processes sees the samples and masks of a single-process run.
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from tst_ros.util import emit_progress


# ---------------------------------------------------------------- processes

@dataclass
class Distributed:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    initialised: bool = False

    @property
    def main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls, device: str = "cpu") -> "Distributed":
        """Join the torchrun process group when WORLD_SIZE > 1 (gloo on CPU, nccl on CUDA)."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        import torch.distributed as dist
        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
        return cls(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")), True)

    def mean(self, values: list[float]) -> list[float]:
        if self.world == 1:
            return values
        import torch.distributed as dist
        t = torch.tensor(values, dtype=torch.float64)
        dist.all_reduce(t)
        return (t / self.world).tolist()

    def mean_of(self, values: dict[str, float], keys: list[str]) -> dict[str, float]:
        """Mean over processes of each key's value, over the processes that have it (the key
        list is the same everywhere, so ranks that lack a modality in their batch still agree)."""
        present = [1.0 if k in values and math.isfinite(values[k]) else 0.0 for k in keys]
        sums = [values[k] if p else 0.0 for k, p in zip(keys, present)]
        if self.world > 1:
            import torch.distributed as dist
            t = torch.tensor(sums + present, dtype=torch.float64)
            dist.all_reduce(t)
            sums, present = t[:len(keys)].tolist(), t[len(keys):].tolist()
        return {k: v / c for k, v, c in zip(keys, sums, present) if c > 0}

    def any(self, flag: bool) -> bool:
        if self.world == 1:
            return flag
        import torch.distributed as dist
        t = torch.tensor([1.0 if flag else 0.0])
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item() > 0)

    def barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as dist
            dist.barrier()

    def close(self) -> None:
        if self.initialised:
            import torch.distributed as dist
            dist.destroy_process_group()


# ---------------------------------------------------------------- optimisation

def peak_lr(lr: float, base_lr: float, batch: int) -> float:
    """Explicit lr if set, else the MAE scaling rule base_lr * batch / 256."""
    return lr if lr > 0 else base_lr * batch / 256


def lr_at(step: int, total: int, warmup: int, peak: float, floor: float = 0.0) -> float:
    """Linear warm-up over `warmup` steps, then cosine decay to `floor` at `total`."""
    if warmup > 0 and step < warmup:
        return peak * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return floor + (peak - floor) * 0.5 * (1 + math.cos(math.pi * progress))


NO_DECAY_NAMES = ("modality_embed", "mask_token", "pos")


def param_groups(model: nn.Module, weight_decay: float, lr_scales: dict[str, float] | None = None) -> list[dict]:
    """Weight decay on matrices only (not on biases, norms, embeddings, mask tokens); parameters
    whose names start with a `lr_scales` prefix get their own groups at that share of the lr."""
    groups: dict[tuple[float, bool], list] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        skip = p.ndim <= 1 or any(part in name.split(".") for part in NO_DECAY_NAMES)
        scale = next((v for prefix, v in (lr_scales or {}).items() if name.startswith(prefix)), 1.0)
        groups.setdefault((scale, skip), []).append(p)
    for key in ((1.0, False), (1.0, True)):       # the two plain groups always exist, in this order
        groups.setdefault(key, [])
    order = [(1.0, False), (1.0, True)] + sorted(k for k in groups if k[0] != 1.0)
    return [{"params": groups[k], "weight_decay": 0.0 if k[1] else weight_decay, "lr_scale": k[0]} for k in order]


def make_optimizer(model: nn.Module, lr: float, weight_decay: float,
                   lr_scales: dict[str, float] | None = None) -> torch.optim.AdamW:
    return torch.optim.AdamW(param_groups(model, weight_decay, lr_scales), lr=lr, betas=(0.9, 0.95))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)


# ---------------------------------------------------------------- data order

def epoch_permutation(n: int, seed: int, epoch: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch]).permutation(n)


def step_indices(n: int, seed: int, step: int, batch: int) -> np.ndarray:
    """Dataset indices of the global batch of `step` (epochs of seeded permutations, concatenated)."""
    pos = np.arange(step * batch, (step + 1) * batch)
    epochs, offsets = pos // n, pos % n
    out = np.empty(batch, np.int64)
    for e in np.unique(epochs):
        sel = epochs == e
        out[sel] = epoch_permutation(n, seed, int(e))[offsets[sel]]
    return out


def mask_seeds(seed: int, step: int, positions: np.ndarray) -> list[int]:
    """One mask seed per sample from (run seed, step, position in the global batch)."""
    return [int(np.random.SeedSequence([seed, step, int(p)]).generate_state(1)[0]) for p in positions]


def micro_positions(batch: int, world: int, accum: int, rank: int, micro: int) -> np.ndarray:
    """Positions in the global batch handled by `rank` in accumulation step `micro`."""
    if batch % (world * accum):
        raise ValueError(f"global batch {batch} is not divisible by processes ({world}) x accumulation ({accum})")
    size = batch // (world * accum)
    chunk = micro * world + rank
    return np.arange(chunk * size, (chunk + 1) * size)


class MicroBatchSampler(torch.utils.data.Sampler):
    """Yields this process's micro-batches (lists of dataset indices) from `start_step` on."""

    def __init__(self, n: int, seed: int, batch: int, world: int, rank: int, accum: int, start_step: int,
                 total_steps: int):
        if n <= 0:
            raise ValueError("the training dataset is empty")
        self.n, self.seed, self.batch, self.world, self.rank, self.accum = n, seed, batch, world, rank, accum
        self.start, self.total = start_step, total_steps

    def __len__(self) -> int:
        return max(0, self.total - self.start) * self.accum

    def __iter__(self):
        for step in range(self.start, self.total):
            indices = step_indices(self.n, self.seed, step, self.batch)
            for micro in range(self.accum):
                yield indices[micro_positions(self.batch, self.world, self.accum, self.rank, micro)].tolist()


def autocast(device, bf16: bool = True):
    """bf16 autocast on CUDA when asked; nothing on the CPU (CPU figures are float32)."""
    if str(device).startswith("cuda") and bf16:
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


# ---------------------------------------------------------------- stopping

class StepAbandoned(Exception):
    """A stop signal arrived inside `StopSignal.abandonable()`: the step in progress is dropped."""


class StopSignal:
    """SIGINT/SIGTERM set a flag the loop checks after each step (then it saves and exits).
    Inside `abandonable()` the signal instead raises StepAbandoned at once, so a slow step on a
    busy machine does not outlast the caller's grace period (the last finished step is saved)."""

    def __init__(self):
        self.requested = False
        self.signum: int | None = None
        self._previous = {}
        self._abandonable = False

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:              # not the main thread
                pass
        return self

    def _handle(self, signum, frame):
        self.requested = True
        self.signum = signum
        if self._abandonable:
            self._abandonable = False
            raise StepAbandoned(signal.Signals(signum).name)

    @contextlib.contextmanager
    def abandonable(self, enabled: bool = True):
        """Work that may be dropped when a stop signal arrives (no side effect is left half done:
        only forward/backward, never the optimizer step)."""
        if self.requested and enabled:
            raise StepAbandoned("stop requested")
        self._abandonable = enabled
        try:
            yield
        finally:
            self._abandonable = False

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        return False


# ---------------------------------------------------------------- reporting

class Reporter:
    """Progress bar (stderr), JSON-lines log, TensorBoard scalars and the progress protocol."""

    def __init__(self, out: Path | None, stage: str, total: int, start: int, enabled: bool,
                 progress_jsonl: bool, tensorboard: bool = True):
        self.stage, self.total, self.enabled, self.jsonl = stage, total, enabled, progress_jsonl
        self.t0, self.start = time.perf_counter(), start
        self.last_emit = 0.0
        self.bar = self.writer = self.log = None
        if not enabled:
            return
        from tqdm import tqdm
        self.bar = tqdm(total=total, initial=start, desc=stage, unit="step", file=sys.stderr, dynamic_ncols=True,
                        disable=None, mininterval=0.5)
        if out is not None:
            out.mkdir(parents=True, exist_ok=True)
            self.log = open(out / "log.jsonl", "a")
            if tensorboard:
                try:
                    from torch.utils.tensorboard import SummaryWriter
                    self.writer = SummaryWriter(str(out / "tb"))
                except ImportError:
                    self.writer = None

    def eta(self, step: int) -> tuple[float, float]:
        elapsed = time.perf_counter() - self.t0
        done = step - self.start
        if done <= 0:
            return 0.0, 0.0
        return elapsed / done * (self.total - step), done / max(elapsed, 1e-9)

    def step(self, step: int, scalars: dict[str, float], samples_per_step: int, message: str = "") -> None:
        if not self.enabled:
            return
        eta, steps_per_s = self.eta(step)
        record = {"step": step, **{k: round(v, 6) for k, v in scalars.items()},
                  "samples_per_s": round(steps_per_s * samples_per_step, 3), "eta_s": round(eta, 1),
                  "time": time.time()}
        if self.log:
            self.log.write(json.dumps(record) + "\n")
            self.log.flush()
        if self.writer:
            for k, v in scalars.items():
                self.writer.add_scalar(k, v, step)
            self.writer.add_scalar("samples_per_s", record["samples_per_s"], step)
        if self.bar is not None:
            self.bar.update(step - self.bar.n)
            self.bar.set_postfix(loss=f"{scalars.get('loss', float('nan')):.4f}")
        now = time.perf_counter()
        if self.jsonl and (now - self.last_emit >= 0.5 or step >= self.total or message):
            self.last_emit = now
            self.emit({"stage": self.stage, "step": step, "total": self.total, "loss": scalars.get("loss", 0.0),
                       "samples_per_s": record["samples_per_s"], "eta_s": record["eta_s"], "message": message})

    def emit(self, obj: dict) -> None:
        if self.enabled and self.jsonl:
            emit_progress(sys.stdout, **obj)

    def message(self, text: str, step: int) -> None:
        if not self.enabled:
            return
        if self.jsonl:
            eta, _ = self.eta(step)
            self.emit({"stage": self.stage, "step": step, "total": self.total, "loss": 0.0, "samples_per_s": 0.0,
                       "eta_s": eta, "message": text})
        else:
            logging.getLogger(f"tst_ros.{self.stage}").info(text)

    def model_event(self, path: Path, tasks: list[str], modalities: list[str], metrics: dict[str, float]) -> None:
        self.emit({"event": "model", "path": str(path), "tasks": tasks, "modalities": modalities,
                   "metrics": metrics})

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.writer is not None:
            self.writer.close()
        if self.log is not None:
            self.log.close()


def _tile(img: torch.Tensor, lo: float, hi: float) -> np.ndarray:
    """(C,H,W) normalised picture -> (H,W,3) float RGB in [0,1]; one channel through viridis."""
    from matplotlib import colormaps

    x = ((img.float() - lo) / max(hi - lo, 1e-6)).clamp(0, 1).numpy()
    if x.shape[0] == 3:
        return x.transpose(1, 2, 0)
    return colormaps["viridis"](x[0])[..., :3]


def save_reconstruction_grid(pictures: dict[str, dict[str, torch.Tensor]], path: Path, rows: int = 4,
                             gap: int = 2) -> Path:
    """PNG grid (matplotlib imsave): one row per held-out sample; per modality (in the order of
    `pictures`) three columns: visible input (masked patches blank), prediction (visible
    patches pasted back), target. Each modality is scaled by its target's range."""
    import io

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tst_ros.util import atomic_write_bytes

    names = list(pictures)
    first = pictures[names[0]]["target"]
    n, size = min(rows, first.shape[0]), first.shape[-1]
    cols = 3 * len(names)
    canvas = np.ones((n * (size + gap) - gap, cols * (size + gap) - gap, 3))
    for i in range(n):
        for j, name in enumerate(names):
            target = pictures[name]["target"][i]
            lo, hi = float(target.min()), float(target.max())
            for k, kind in enumerate(("visible", "prediction", "target")):
                y, x = i * (size + gap), (3 * j + k) * (size + gap)
                canvas[y:y + size, x:x + size] = _tile(pictures[name][kind][i], lo, hi)
    buf = io.BytesIO()
    plt.imsave(buf, canvas, format="png")
    return atomic_write_bytes(path, buf.getvalue())
