"""Training data sources: the dataset store (through `tst_ros.data.loader.StoreDataset`) and a
small procedural dataset (`synthetic:N`) with the same item contract, for smoke tests.

Item contract (see `tst_ros.data.loader`): image kinds (C,S,S) in their storage dtype, imu
(window, C) normalised float32, "present": {name: bool tensor}, optional "semantic" (S,S)
uint8 with 255 = unlabeled. `prepare_batch` turns a collated batch into network input on
the training device.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from tst_ros import modalities as registry
from tst_ros.data.loader import GROUND_TRUTH, StoreDataset

SYNTHETIC_PREFIX = "synthetic:"
SYNTHETIC_CLASSES = 6


def open_dataset(spec: str, split: str, modalities: list[str], size: int, augment: bool = False):
    """`spec` is a dataset store directory or `synthetic:N` (N procedural samples)."""
    if spec.startswith(SYNTHETIC_PREFIX):
        n = int(spec[len(SYNTHETIC_PREFIX):] or 64)
        n_val = max(4, n // 8)
        if split == "val":
            return SyntheticDataset(n_val, size, modalities, seed=10_000)
        return SyntheticDataset(n, size, modalities, seed=0)
    if not Path(spec).exists():
        raise FileNotFoundError(f"dataset {spec!r} does not exist (a store directory or 'synthetic:N')")
    return StoreDataset(spec, split=split, modalities=list(modalities), size=size, augment=augment)


class SyntheticDataset(torch.utils.data.Dataset):
    """Rectangles of a few classes on a background; each class has its own colour, texture
    and depth, so modalities are correlated as in real scenes. Deterministic per index."""

    def __init__(self, n: int, size: int, modalities: list[str], seed: int = 0):
        self.n, self.size, self.modalities, self.seed = n, size, list(modalities), seed
        palette_rng = np.random.default_rng(1234)
        self.palette = palette_rng.integers(30, 226, (SYNTHETIC_CLASSES, 3))
        self.class_depth = palette_rng.uniform(0.8, 4.5, SYNTHETIC_CLASSES)

    def __len__(self) -> int:
        return self.n

    def scene(self, index: int) -> dict[str, np.ndarray]:
        rng = np.random.default_rng([self.seed, index])
        s = self.size
        sem = np.zeros((s, s), np.uint8)
        depth = np.full((s, s), self.class_depth[0] + rng.uniform(-0.3, 0.3))
        yy, xx = np.mgrid[0:s, 0:s]
        depth = depth + 0.01 * (yy - s / 2)
        for _ in range(rng.integers(2, 5)):
            c = int(rng.integers(1, SYNTHETIC_CLASSES))
            x0, y0 = rng.integers(0, s - s // 4, 2)
            w, h = rng.integers(s // 6, s // 2, 2)
            box = (yy >= y0) & (yy < y0 + h) & (xx >= x0) & (xx < x0 + w)
            sem[box] = c
            depth[box] = self.class_depth[c] + 0.002 * (xx[box] - x0)
        rgb = self.palette[sem].astype(np.float64)
        rgb += 20 * np.sin(xx * (0.3 + 0.1 * sem))[..., None] + rng.normal(0, 6, (s, s, 3))
        rgb = np.clip(rgb, 0, 255).astype(np.uint8)
        depth_mm = (depth * 1000).astype(np.uint16)
        depth_mm[rng.random((s, s)) < 0.02] = 0
        gy, gx = np.gradient(depth)
        normals = np.stack([-gx * 20, -gy * 20, -np.ones_like(depth)], -1)
        normals /= np.linalg.norm(normals, axis=-1, keepdims=True)
        edges = np.zeros((s, s), np.uint8)
        edges[:, 1:] |= (sem[:, 1:] != sem[:, :-1]).astype(np.uint8) * 255
        edges[1:, :] |= (sem[1:, :] != sem[:-1, :]).astype(np.uint8) * 255
        imu = rng.normal(0, 0.5, (registry.get("imu").window or 16, 6)).astype(np.float32)
        imu[:, 2] += 9.81
        return {"rgb": rgb, "depth": depth_mm, "normals": np.round(normals * 127).astype(np.int8),
                "edges": edges, "imu": imu, "semantic": sem}

    def __getitem__(self, index: int) -> dict:
        raw = self.scene(index)
        item: dict = {"present": {}}
        for name in self.modalities:
            x = torch.from_numpy(raw[name])
            if registry.get(name).kind == "imu":
                item[name] = registry.get(name).normalise_tensor(x, channel_dim=-1)
            else:
                item[name] = (x[..., None] if x.ndim == 2 else x).permute(2, 0, 1).contiguous()
            item["present"][name] = torch.tensor(True)
        item["semantic"] = torch.from_numpy(raw["semantic"])
        return item


def prepare_batch(batch: dict, device: str | torch.device = "cpu") -> dict:
    """Collated batch -> network input on `device`: image modalities that arrive in an integer
    storage dtype are normalised there with the registry (float tensors are taken as already
    normalised), "semantic" becomes int64, "present" flags travel along."""
    out: dict = {}
    for key, value in batch.items():
        if isinstance(value, dict):
            out[key] = prepare_batch(value, device)
        elif not torch.is_tensor(value):
            out[key] = value
        else:
            if value.dtype == torch.uint16 and torch.device(device).type != "cpu":
                value = value.to(torch.int32)     # uint16 is a storage-only dtype on accelerators
            value = value.to(device, non_blocking=True)
            if key in GROUND_TRUTH:
                value = value.long()
            elif key in registry.REGISTRY and not value.is_floating_point() and value.dtype != torch.bool:
                value = registry.get(key).normalise_tensor(value)
            out[key] = value
    return out
