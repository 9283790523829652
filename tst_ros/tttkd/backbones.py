"""3D backbones for TTT-KD behind one interface, plus the two-projector model.

Interface (`PointBackbone`):
  - `prepare(xyz (N, 3) float, rgb (N, 3) uint8 | None) -> PointBatch`: input features and all
    neighbourhood structure (voxel hashing) computed once per cloud, without gradients, so that
    k adaptation steps on the same cloud reuse it;
  - `forward(batch) -> (N, out_dim)` per-point features.

Backbones (plain PyTorch, CPU and GPU):
  - "pointnet": PointNet++-style set abstraction with voxel-hashed neighbourhoods at several
    scales (max-pooled group features + point offsets to the group centroid, residual MLPs) and
    a global context; linear in N, no kNN.
  - "voxel": a sparse 3D convolutional U-Net on hashed voxels (27-neighbour gather + matmul at
    three resolutions), point features decoded from their voxel plus the point's own input.

`TTTKDModel` = backbone + label projector + 2D-feature projector.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

_KEY_BITS = 21
_KEY_OFFSET = 1 << (_KEY_BITS - 1)


def voxel_keys(coords: torch.Tensor) -> torch.Tensor:
    """(N, 3) int64 voxel coordinates -> (N,) int64 unique keys (|coord| < 2^20)."""
    c = coords + _KEY_OFFSET
    return (c[:, 0] << (2 * _KEY_BITS)) | (c[:, 1] << _KEY_BITS) | c[:, 2]


def group_by_voxel(xyz: torch.Tensor, size: float) -> tuple[torch.Tensor, int, torch.Tensor]:
    """-> (inverse (N,) group index per point, number of groups, integer voxel coords per group)."""
    coords = torch.floor(xyz / size).long()
    keys, inverse = torch.unique(voxel_keys(coords), return_inverse=True)
    group_coords = torch.zeros(len(keys), 3, dtype=torch.long, device=xyz.device)
    group_coords[inverse] = coords
    return inverse, len(keys), group_coords


def scatter_mean(src: torch.Tensor, index: torch.Tensor, n: int) -> torch.Tensor:
    out = torch.zeros(n, src.shape[1], dtype=src.dtype, device=src.device).index_add_(0, index, src)
    count = torch.zeros(n, dtype=src.dtype, device=src.device).index_add_(0, index,
                                                                           torch.ones_like(index, dtype=src.dtype))
    return out / count.clamp_min(1)[:, None]


def scatter_max(src: torch.Tensor, index: torch.Tensor, n: int) -> torch.Tensor:
    out = torch.zeros(n, src.shape[1], dtype=src.dtype, device=src.device)
    return out.scatter_reduce(0, index[:, None].expand_as(src), src, reduce="amax", include_self=False)


@dataclass
class PointBatch:
    """One cloud ready for a backbone: inputs and precomputed neighbourhoods (no gradients)."""
    xyz: torch.Tensor                   # (N, 3) metres, the frame the backbone reasons in
    features: torch.Tensor              # (N, in_channels)
    groups: list = field(default_factory=list)   # backbone-specific structure

    @property
    def n(self) -> int:
        return int(self.xyz.shape[0])

    def to(self, device) -> "PointBatch":
        move = lambda v: v.to(device) if torch.is_tensor(v) else v  # noqa: E731
        groups = [tuple(move(v) for v in g) if isinstance(g, tuple) else move(g) for g in self.groups]
        return PointBatch(self.xyz.to(device), self.features.to(device), groups)


def input_features(xyz: torch.Tensor, rgb: np.ndarray | torch.Tensor | None) -> torch.Tensor:
    """Per-point inputs: x, y centred on the cloud, z as given (height in a gravity-aligned frame), rgb in [-1, 1]."""
    centred = xyz.clone()
    if len(xyz):
        centred[:, :2] -= xyz[:, :2].mean(0)
    if rgb is None:
        colour = torch.zeros_like(xyz)
    else:
        colour = torch.as_tensor(np.asarray(rgb), dtype=torch.float32, device=xyz.device) / 127.5 - 1
    return torch.cat([centred, colour], dim=1)


def _mlp(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(c_in, c_out), nn.LayerNorm(c_out), nn.GELU(), nn.Linear(c_out, c_out))


class PointBackbone(nn.Module):
    """Backbone interface (see module docstring)."""
    in_channels = 6
    out_dim: int

    def prepare(self, xyz, rgb=None) -> PointBatch:
        raise NotImplementedError

    def config(self) -> dict:
        raise NotImplementedError


class SetAbstractionBlock(nn.Module):
    """Group points by voxel, max-pool their features, give each point its group's context."""

    def __init__(self, channels: int):
        super().__init__()
        self.local = nn.Linear(channels + 3, channels)
        self.mix = _mlp(2 * channels, channels)
        self.norm = nn.LayerNorm(channels)

    def forward(self, h: torch.Tensor, inverse: torch.Tensor, n_groups: int, rel: torch.Tensor) -> torch.Tensor:
        local = F.gelu(self.local(torch.cat([h, rel], dim=1)))
        pooled = scatter_max(local, inverse, n_groups)
        return self.norm(h + self.mix(torch.cat([h, pooled[inverse]], dim=1)))


class PointNetLite(PointBackbone):
    """PointNet++-style network with voxel-hashed groups at `scales` metres plus global context."""

    def __init__(self, width: int = 64, scales: tuple[float, ...] = (0.1, 0.25, 0.6, 1.5)):
        super().__init__()
        self.width, self.scales = width, tuple(scales)
        self.stem = _mlp(self.in_channels, width)
        self.blocks = nn.ModuleList(SetAbstractionBlock(width) for _ in self.scales)
        self.global_mix = _mlp(2 * width, width)
        self.out_dim = width

    def config(self) -> dict:
        return {"backbone": "pointnet", "width": self.width, "scales": list(self.scales)}

    @torch.no_grad()
    def prepare(self, xyz, rgb=None) -> PointBatch:
        xyz = torch.as_tensor(np.asarray(xyz, dtype=np.float32)) if not torch.is_tensor(xyz) else xyz.float()
        groups = []
        for s in self.scales:
            inverse, n_groups, _ = group_by_voxel(xyz, s)
            centroid = scatter_mean(xyz, inverse, n_groups)
            groups.append((inverse, n_groups, (xyz - centroid[inverse]) / s))
        return PointBatch(xyz, input_features(xyz, rgb), groups)

    def forward(self, batch: PointBatch) -> torch.Tensor:
        h = self.stem(batch.features)
        for block, (inverse, n_groups, rel) in zip(self.blocks, batch.groups):
            h = block(h, inverse, n_groups, rel)
        g = h.max(dim=0, keepdim=True).values.expand_as(h)
        return h + self.global_mix(torch.cat([h, g], dim=1))


_OFFSETS = torch.stack(torch.meshgrid(*(torch.arange(-1, 2),) * 3, indexing="ij"), dim=-1).reshape(-1, 3)


def neighbour_table(coords: torch.Tensor) -> torch.Tensor:
    """(M, 3) voxel coords -> (M, 27) index of each 3x3x3 neighbour, M where the neighbour is empty."""
    keys = voxel_keys(coords)
    order = torch.argsort(keys)
    sorted_keys = keys[order]
    query = voxel_keys((coords[:, None, :] + _OFFSETS.to(coords.device)[None]).reshape(-1, 3))
    pos = torch.searchsorted(sorted_keys, query).clamp_max(len(keys) - 1)
    found = sorted_keys[pos] == query
    idx = torch.where(found, order[pos], torch.full_like(pos, len(keys)))
    return idx.view(-1, 27)


class SparseConv3d(nn.Module):
    """3x3x3 convolution on occupied voxels: gather the 27 neighbours (zeros when empty), one matmul."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(27 * c_in, c_out) / np.sqrt(27 * c_in))
        self.bias = nn.Parameter(torch.zeros(c_out))

    def forward(self, x: torch.Tensor, neighbours: torch.Tensor) -> torch.Tensor:
        padded = torch.cat([x, x.new_zeros(1, x.shape[1])], dim=0)
        return padded[neighbours].reshape(len(x), -1) @ self.weight + self.bias


class SparseResBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv1, self.conv2 = SparseConv3d(c_in, c_out), SparseConv3d(c_out, c_out)
        self.norm1, self.norm2 = nn.LayerNorm(c_out), nn.LayerNorm(c_out)
        self.skip = nn.Linear(c_in, c_out) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor, neighbours: torch.Tensor) -> torch.Tensor:
        h = F.gelu(self.norm1(self.conv1(x, neighbours)))
        return F.gelu(self.skip(x) + self.norm2(self.conv2(h, neighbours)))


class VoxelUNetLite(PointBackbone):
    """Sparse-convolution U-Net on hashed voxels (levels at voxel, 2x voxel, 4x voxel)."""

    def __init__(self, width: int = 32, voxel: float = 0.05, levels: int = 3):
        super().__init__()
        self.width, self.voxel, self.levels = width, float(voxel), int(levels)
        chans = [width * (2 ** min(i, 2)) for i in range(self.levels)]
        self.point_in = _mlp(self.in_channels, width)
        self.enc = nn.ModuleList(SparseResBlock(width if i == 0 else chans[i - 1], chans[i])
                                 for i in range(self.levels))
        self.dec = nn.ModuleList(_mlp(chans[i] + chans[i + 1], chans[i]) for i in range(self.levels - 1))
        self.point_out = _mlp(chans[0] + width, width)
        self.out_dim = width

    def config(self) -> dict:
        return {"backbone": "voxel", "width": self.width, "voxel": self.voxel, "levels": self.levels}

    @torch.no_grad()
    def prepare(self, xyz, rgb=None) -> PointBatch:
        xyz = torch.as_tensor(np.asarray(xyz, dtype=np.float32)) if not torch.is_tensor(xyz) else xyz.float()
        inverse, n_vox, coords = group_by_voxel(xyz, self.voxel)
        groups = [(inverse, n_vox, neighbour_table(coords))]
        for _ in range(1, self.levels):
            parent_keys, parent = torch.unique(voxel_keys(torch.div(coords, 2, rounding_mode="floor")),
                                               return_inverse=True)
            parent_coords = torch.zeros(len(parent_keys), 3, dtype=torch.long)
            parent_coords[parent] = torch.div(coords, 2, rounding_mode="floor")
            groups.append((parent, len(parent_keys), neighbour_table(parent_coords)))
            coords = parent_coords
        return PointBatch(xyz, input_features(xyz, rgb), groups)

    def forward(self, batch: PointBatch) -> torch.Tensor:
        p = self.point_in(batch.features)
        inverse, n_vox, _ = batch.groups[0]
        x = scatter_max(p, inverse, n_vox)
        skips = []
        for i, block in enumerate(self.enc):
            if i > 0:
                parent, n_parent, _ = batch.groups[i]
                x = scatter_max(x, parent, n_parent)
            x = block(x, batch.groups[i][2])
            skips.append(x)
        for i in reversed(range(self.levels - 1)):
            parent = batch.groups[i + 1][0]
            x = self.dec[i](torch.cat([skips[i], x[parent]], dim=1))
        return self.point_out(torch.cat([x[inverse], p], dim=1))


BACKBONES = {"pointnet": PointNetLite, "voxel": VoxelUNetLite}


def build_backbone(name: str, **kwargs) -> PointBackbone:
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; choose one of {sorted(BACKBONES)}")
    return BACKBONES[name](**kwargs)


class TTTKDModel(nn.Module):
    """Backbone + label projector + 2D-feature projector (the projectors stay frozen at test time).

    With `distill_into_labels` (a teacher that gives class probabilities over the same classes)
    there is no feature projector: the label projector's logits are distilled (KL to the teacher's
    probabilities), so test-time adaptation moves the labels themselves towards the teacher."""

    def __init__(self, backbone: PointBackbone, num_classes: int, feature_dim: int, distill_into_labels: bool = False):
        super().__init__()
        self.backbone = backbone
        self.distill_into_labels = bool(distill_into_labels)
        if self.distill_into_labels and int(feature_dim) != int(num_classes):
            raise ValueError(f"distilling into the labels needs a teacher over the {num_classes} classes, "
                             f"it gives {feature_dim} channels")
        self.num_classes, self.feature_dim = int(num_classes), int(feature_dim)
        c = backbone.out_dim
        self.label_head = nn.Sequential(nn.Linear(c, c), nn.GELU(), nn.Linear(c, self.num_classes))
        self.feature_head = None if self.distill_into_labels else \
            nn.Sequential(nn.Linear(c, 2 * c), nn.GELU(), nn.Linear(2 * c, self.feature_dim))

    def config(self) -> dict:
        return {**self.backbone.config(), "num_classes": self.num_classes, "feature_dim": self.feature_dim,
                "distill_into_labels": self.distill_into_labels}

    @classmethod
    def from_config(cls, cfg: dict) -> "TTTKDModel":
        cfg = dict(cfg)
        name = cfg.pop("backbone")
        num_classes, feature_dim = cfg.pop("num_classes"), cfg.pop("feature_dim")
        into_labels = cfg.pop("distill_into_labels", False)
        if "scales" in cfg:
            cfg["scales"] = tuple(cfg["scales"])
        return cls(build_backbone(name, **cfg), num_classes, feature_dim, into_labels)

    def prepare(self, xyz, rgb=None) -> PointBatch:
        return self.backbone.prepare(xyz, rgb)

    def forward(self, batch: PointBatch) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.backbone(batch)
        logits = self.label_head(h)
        return logits, (logits if self.feature_head is None else self.feature_head(h))

    def projectors(self) -> list[nn.Module]:
        return [self.label_head] + ([] if self.feature_head is None else [self.feature_head])

    def distill(self, pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        """This model's distillation loss: KL to class probabilities or 1 - cos to features."""
        return distillation_loss(pred, target, valid, "kl" if self.distill_into_labels else "cosine")


def distillation_loss(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None,
                      kind: str = "cosine") -> torch.Tensor:
    """Mean over valid points (0 with no valid point, still differentiable) of 1 - cos(f3d, f2d)
    (`cosine`), or of KL(teacher probabilities || softmax(logits)) (`kl`)."""
    if valid is not None:
        pred, target = pred[valid], target[valid]
    if len(pred) == 0:
        return pred.sum() * 0.0
    if kind == "kl":
        return F.kl_div(F.log_softmax(pred, dim=1), target.clamp_min(0), reduction="sum") / len(pred)
    return (1 - F.cosine_similarity(pred, target, dim=1)).mean()
