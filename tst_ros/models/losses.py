"""Reconstruction targets and losses of TST-MM: patchify / unpatchify, the per-modality losses
that a registry entry names in its `loss` field (`LOSSES`), each evaluated per token on valid
values only, and the map from a prediction back to the modality's normalised input space."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def patchify(x: torch.Tensor, patch: int) -> torch.Tensor:
    """(B,C,H,W) -> (B, (H/p)*(W/p), p*p*C), row-major patches, channel-last inside a patch."""
    b, c, h, w = x.shape
    x = x.reshape(b, c, h // patch, patch, w // patch, patch)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(b, (h // patch) * (w // patch), patch * patch * c)


def unpatchify(x: torch.Tensor, patch: int, channels: int, grid: int | None = None) -> torch.Tensor:
    """The inverse of `patchify` for a square grid of patches (`grid` per side: given when tracing for export)."""
    b, n, _ = x.shape
    g = int(grid) if grid is not None else int(round(n ** 0.5))
    x = x.reshape(b, g, g, patch, patch, channels)
    return x.permute(0, 5, 1, 3, 2, 4).reshape(b, channels, g * patch, g * patch)


def masked_mean(values: torch.Tensor, valid: torch.Tensor, dim: int) -> torch.Tensor:
    """Mean over `dim` of the entries where `valid`; what invalid entries hold (even inf/NaN) never leaks."""
    total = torch.where(valid, values, torch.zeros((), dtype=values.dtype, device=values.device)).sum(dim)
    return total / valid.to(values.dtype).sum(dim).clamp_min(1.0)


def loss_patch_norm_mse(pred, target, valid):
    mean = masked_mean(target, valid, -1)[..., None]
    var = masked_mean((target - mean) ** 2, valid, -1)[..., None]
    target = (target - mean) / (var + 1e-6).sqrt()
    return masked_mean((pred - target) ** 2, valid, -1)


def standardize_per_sample(target, valid):
    """Per-sample standardisation over the valid entries of (B,N,P)."""
    flat_t, flat_v = target.flatten(1), valid.flatten(1)
    mean = masked_mean(flat_t, flat_v, 1)[:, None, None]
    var = masked_mean((target - mean).flatten(1) ** 2, flat_v, 1)[:, None, None]
    return (target - mean) / (var + 1e-6).sqrt(), mean, var


def loss_standardized_l1(pred, target, valid):
    target, _, _ = standardize_per_sample(target, valid)
    return masked_mean((pred - target).abs(), valid, -1)


def loss_l1(pred, target, valid):
    return masked_mean((pred - target).abs(), valid, -1)


def loss_bce(pred, target, valid):
    return masked_mean(F.binary_cross_entropy_with_logits(pred, target.clamp(0, 1), reduction="none"), valid, -1)


def loss_mse(pred, target, valid):
    return masked_mean((pred - target) ** 2, valid, -1)


LOSSES = {"patch_norm_mse": loss_patch_norm_mse, "standardized_l1": loss_standardized_l1, "l1": loss_l1,
          "bce": loss_bce, "mse": loss_mse}


def prediction_to_input_space(loss: str, pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor):
    """Map a decoder output (B,N,P) back to the normalised input space, for pictures."""
    if loss == "patch_norm_mse":
        mean = masked_mean(target, valid, -1)[..., None]
        std = (masked_mean((target - mean) ** 2, valid, -1)[..., None] + 1e-6).sqrt()
        return pred * std + mean
    if loss == "standardized_l1":
        _, mean, var = standardize_per_sample(target, valid)
        return pred * (var + 1e-6).sqrt() + mean
    if loss == "bce":
        return pred.sigmoid()
    return pred
