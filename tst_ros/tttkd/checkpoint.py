"""TTT-KD checkpoints (safetensors + JSON metadata) and the fixed teacher-feature reducer.

The reducer maps teacher features (C channels, e.g. 512 for HED block4) to the model's
`feature_dim` with a PCA fitted on the source buildings' projected features (centred, so that
cosine similarity separates classes instead of being high for any two non-negative vectors).
It is part of the checkpoint and never changes at test time.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save as st_save

from tst_ros.tttkd.backbones import TTTKDModel
from tst_ros.util import atomic_write_bytes, weights_file

FORMAT = "tst_ros.tttkd/1"
CHECKPOINT_FILE = "tttkd.safetensors"


class FeatureReducer:
    """Fixed linear map of teacher features: (f - mean) @ basis, basis (C, d) orthonormal columns."""

    def __init__(self, mean: torch.Tensor, basis: torch.Tensor):
        self.mean, self.basis = mean.float(), basis.float()

    @property
    def in_dim(self) -> int:
        return int(self.basis.shape[0])

    @property
    def out_dim(self) -> int:
        return int(self.basis.shape[1])

    @classmethod
    def fit(cls, features: torch.Tensor, dim: int, max_rows: int = 200_000, seed: int = 0) -> "FeatureReducer":
        """PCA of (N, C) teacher features; dim >= C keeps all channels (centring only)."""
        if features.ndim != 2 or len(features) < 2:
            raise ValueError(f"need an (N >= 2, C) feature matrix to fit the reducer, got {tuple(features.shape)}")
        g = torch.Generator().manual_seed(seed)
        if len(features) > max_rows:
            features = features[torch.randperm(len(features), generator=g)[:max_rows]]
        features = features.float()
        mean = features.mean(0)
        dim = min(dim, features.shape[1])
        _, _, v = torch.linalg.svd(features - mean, full_matrices=False)
        return cls(mean, v[:dim].T.contiguous())

    @classmethod
    def identity(cls, channels: int) -> "FeatureReducer":
        """Keeps the teacher's features as they are (class probabilities distilled into the labels)."""
        return cls(torch.zeros(channels), torch.eye(channels))

    def __call__(self, features: torch.Tensor) -> torch.Tensor:
        if features.shape[-1] != self.in_dim:
            raise ValueError(f"teacher gives {features.shape[-1]} channels but the checkpoint's reducer expects "
                             f"{self.in_dim}; use the teacher the model was trained with")
        return (features.float() - self.mean) @ self.basis


def checkpoint_path(path: str | os.PathLike) -> Path:
    return weights_file(path, CHECKPOINT_FILE, "TTT-KD checkpoint")


def save_checkpoint(path: str | os.PathLike, model: TTTKDModel, reducer: FeatureReducer, **meta) -> Path:
    """Write model + reducer + metadata atomically (`meta` must be JSON-able: teacher, classes, ...)."""
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tensors["reducer.mean"] = reducer.mean.contiguous()
    tensors["reducer.basis"] = reducer.basis.contiguous()
    doc = {"format": FORMAT, "model": model.config(), **meta}
    return atomic_write_bytes(path, st_save(tensors, metadata={"tst_ros": json.dumps(doc)}))


def load_checkpoint(path: str | os.PathLike, device: str = "cpu") -> tuple[TTTKDModel, FeatureReducer, dict]:
    """-> (model in eval mode, reducer, metadata)."""
    file = checkpoint_path(path)
    with safe_open(str(file), framework="pt", device="cpu") as f:
        raw = (f.metadata() or {}).get("tst_ros")
        if raw is None:
            raise ValueError(f"{file} is not a TTT-KD checkpoint (no 'tst_ros' metadata)")
        meta = json.loads(raw)
        if meta.get("format") != FORMAT:
            raise ValueError(f"{file} has format {meta.get('format')!r}, expected {FORMAT!r}")
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    model = TTTKDModel.from_config(meta["model"])
    model.load_state_dict({k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")})
    reducer = FeatureReducer(tensors["reducer.mean"], tensors["reducer.basis"])
    return model.to(device).eval(), reducer, meta
