"""Encoder files: safetensors weights whose metadata describes how to rebuild the encoder.

A run directory holds `encoder.safetensors`; `load_encoder` accepts the directory or the
file. Nothing is ever unpickled.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save as st_save

from tst_ros.util import atomic_write_bytes, weights_file

ENCODER_FILE = "encoder.safetensors"
FORMAT = "tst_ros.encoder/1"


def encoder_path(path: str | os.PathLike) -> Path:
    """A run directory or an encoder file -> the encoder file (FileNotFoundError if missing)."""
    return weights_file(path, ENCODER_FILE, "encoder weights")


def save_encoder(encoder: torch.nn.Module, path: str | os.PathLike, **extra) -> Path:
    """Write the encoder's weights + description atomically; `extra` (JSON-able) joins the metadata."""
    meta = {**encoder.describe(), **extra, "format": FORMAT}
    tensors = {k: v.detach().cpu().contiguous() for k, v in encoder.state_dict().items()}
    return atomic_write_bytes(path, st_save(tensors, metadata={"tst_ros": json.dumps(meta)}))


def read_metadata(path: str | os.PathLike) -> dict:
    with safe_open(str(encoder_path(path)), framework="pt") as f:
        raw = (f.metadata() or {}).get("tst_ros")
    if raw is None:
        raise ValueError(f"{path} is not a tst_ros encoder file (no 'tst_ros' metadata)")
    return json.loads(raw)


def read_encoder(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict]:
    """A run directory or encoder file -> (its tensors on the CPU, its metadata)."""
    file = encoder_path(path)
    meta = read_metadata(file)
    with safe_open(str(file), framework="pt", device="cpu") as f:
        return {key: f.get_tensor(key) for key in f.keys()}, meta


def load_encoder(path: str | os.PathLike, device: str = "cpu"):
    """-> (encoder in eval mode on `device`, metadata dict)."""
    from tst_ros.models.vit import build_encoder

    file = encoder_path(path)
    state, meta = read_encoder(file)
    encoder = build_encoder(meta["preset"], meta["modalities"], meta["image_size"], meta["patch"])
    missing, unexpected = encoder.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"{file}: weights do not match the described encoder "
                         f"(missing {missing[:5]}, unexpected {unexpected[:5]})")
    return encoder.to(device).eval(), meta
