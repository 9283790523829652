"""Training checkpoints: one safetensors file, replaced atomically.

The file holds the model weights (`model/<key>`), the optimizer state flattened to tensors
(`optim/<param index>/<state key>`), the torch RNG state (`rng/torch`), and in its metadata
(JSON) the step, the optimizer's param groups, the resolved config and anything else the
trainer needs to continue exactly where it stopped. Nothing is ever unpickled.
"""
from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as st_save

from tst_ros.util import atomic_write_bytes

CHECKPOINT_FILE = "checkpoint.safetensors"
FORMAT = "tst_ros.checkpoint/1"


def flatten_optimizer(state_dict: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """torch optimizer state_dict -> (tensors, JSON-able rest)."""
    tensors, scalars = {}, {}
    for index, entry in state_dict["state"].items():
        for key, value in entry.items():
            if torch.is_tensor(value):
                tensors[f"optim/{index}/{key}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{index}/{key}"] = value
    return tensors, {"param_groups": state_dict["param_groups"], "scalars": scalars}


def unflatten_optimizer(tensors: dict[str, torch.Tensor], rest: dict) -> dict:
    state: dict[int, dict] = {}
    for name, value in tensors.items():
        _, index, key = name.split("/", 2)
        state.setdefault(int(index), {})[key] = value
    for name, value in rest.get("scalars", {}).items():
        index, key = name.split("/", 1)
        state.setdefault(int(index), {})[key] = value
    return {"state": state, "param_groups": rest["param_groups"]}


def save_checkpoint(path: str | os.PathLike, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None,
                    meta: dict) -> Path:
    """Atomically write model + optimizer + RNG + `meta` (JSON-able: step, config, ...)."""
    tensors = {f"model/{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    optim_meta = None
    if optimizer is not None:
        optim_tensors, optim_meta = flatten_optimizer(optimizer.state_dict())
        tensors.update(optim_tensors)
    tensors["rng/torch"] = torch.get_rng_state()
    doc = {**meta, "format": FORMAT, "optimizer": optim_meta}
    return atomic_write_bytes(path, st_save(tensors, metadata={"tst_ros": json.dumps(doc)}))


@contextlib.contextmanager
def _open_checkpoint(path: str | os.PathLike):
    """-> (safetensors handle, metadata) of a tst_ros checkpoint, with clear errors for a missing, corrupt
    or foreign file; tensors are read lazily from the handle."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        handle = safe_open(str(path), framework="pt", device="cpu")
    except SafetensorError as e:        # a truncated or garbled header
        raise ValueError(f"{path} is not a readable checkpoint: {e}") from None
    with handle as f:
        raw = (f.metadata() or {}).get("tst_ros")
        if raw is None:
            raise ValueError(f"{path} is not a tst_ros checkpoint (no 'tst_ros' metadata)")
        meta = json.loads(raw)
        if meta.get("format") != FORMAT:
            raise ValueError(f"{path}: unsupported checkpoint format {meta.get('format')!r}, expected {FORMAT}")
        yield f, meta


def read_checkpoint(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict]:
    """-> (all tensors, metadata). ValueError when the file is not a tst_ros checkpoint."""
    with _open_checkpoint(path) as (f, meta):
        return {k: f.get_tensor(k) for k in f.keys()}, meta


def read_model_part(path: str | os.PathLike, part: str) -> dict[str, torch.Tensor]:
    """The weights of one submodule of a checkpoint's model (e.g. "decoders"), keyed as in that
    submodule's state dict; only those tensors are read."""
    prefix = f"model/{part}."
    with _open_checkpoint(path) as (f, _):
        tensors = {k[len(prefix):]: f.get_tensor(k) for k in f.keys() if k.startswith(prefix)}
    if not tensors:
        raise ValueError(f"{path} holds no weights of the model's {part!r}")
    return tensors


def load_checkpoint(path: str | os.PathLike, model: torch.nn.Module,
                    optimizer: torch.optim.Optimizer | None = None, restore_rng: bool = True) -> dict:
    """Restore model (+ optimizer, + torch RNG) in place; returns the metadata."""
    tensors, meta = read_checkpoint(path)
    model_state = {k[len("model/"):]: v for k, v in tensors.items() if k.startswith("model/")}
    model.load_state_dict(model_state)
    if optimizer is not None and meta.get("optimizer") is not None:
        optim_tensors = {k: v for k, v in tensors.items() if k.startswith("optim/")}
        optimizer.load_state_dict(unflatten_optimizer(optim_tensors, meta["optimizer"]))
    if restore_rng and "rng/torch" in tensors:
        torch.set_rng_state(tensors["rng/torch"])
    return meta
