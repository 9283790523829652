"""Low-rank adapters (LoRA, Hu et al. 2021) on the encoder's linear layers.

`inject_lora(encoder, rank, alpha, targets, blocks)` wraps the chosen `nn.Linear` layers of the
transformer blocks in `LoRALinear`: the frozen base layer plus `scale * up(down(x))` with
`scale = alpha / rank`, `down` initialised like a linear layer and `up` at zero, so an injected
encoder starts exactly as the base. Targets: "attention" (q, kv and output projections) and
"mlp" (both MLP layers). `lora_state_dict` / `load_lora_state_dict` move only the adapter
tensors (what an adapter file stores); `merge_lora` folds every adapter into its base layer
(W + scale * up @ down), leaving plain `nn.Linear` layers, so merged models export to ONNX
unchanged and compute what the unmerged ones do.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

TARGETS = {"attention": ("attn.q", "attn.kv", "attn.proj"), "mlp": ("mlp.0", "mlp.2")}


class LoRALinear(nn.Module):
    def __init__(self, base: nn.Linear, rank: int, alpha: float):
        super().__init__()
        if rank < 1:
            raise ValueError(f"LoRA rank must be >= 1, got {rank}")
        self.base = base.requires_grad_(False)
        self.rank, self.alpha, self.scale = int(rank), float(alpha), float(alpha) / int(rank)
        self.down = nn.Parameter(torch.empty(rank, base.in_features))
        self.up = nn.Parameter(torch.zeros(base.out_features, rank))
        nn.init.kaiming_uniform_(self.down, a=math.sqrt(5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + F.linear(F.linear(x, self.down), self.up) * self.scale

    def merged(self) -> nn.Linear:
        out = nn.Linear(self.base.in_features, self.base.out_features, bias=self.base.bias is not None)
        with torch.no_grad():
            out.weight.copy_(self.base.weight + self.scale * self.up @ self.down)
            if self.base.bias is not None:
                out.bias.copy_(self.base.bias)
        return out.to(self.base.weight.device)


def _layer_names(targets: tuple[str, ...]) -> tuple[str, ...]:
    unknown = set(targets) - set(TARGETS)
    if unknown:
        raise ValueError(f"unknown LoRA targets {sorted(unknown)}; choose from {sorted(TARGETS)}")
    return tuple(name for t in targets for name in TARGETS[t])


def _set(module: nn.Module, dotted: str, value: nn.Module) -> None:
    parent, _, leaf = dotted.rpartition(".")
    setattr(module.get_submodule(parent) if parent else module, leaf, value)


def inject_lora(encoder: nn.Module, rank: int = 32, alpha: float = 32.0, targets: tuple[str, ...] = ("attention",),
                blocks: list[int] | None = None) -> list[str]:
    """Wrap the target layers of `encoder.blocks` (all, or the indices in `blocks`); returns
    the wrapped layers' names. Layers already wrapped are refused."""
    names = _layer_names(tuple(targets))
    chosen = range(len(encoder.blocks)) if blocks is None else blocks
    wrapped = []
    for i in chosen:
        block = encoder.blocks[i]
        for name in names:
            layer = block.get_submodule(name)
            if isinstance(layer, LoRALinear):
                raise ValueError(f"blocks.{i}.{name} already has a LoRA adapter")
            _set(block, name, LoRALinear(layer, rank, alpha))
            wrapped.append(f"blocks.{i}.{name}")
    return wrapped


def lora_modules(model: nn.Module) -> dict[str, LoRALinear]:
    return {n: m for n, m in model.named_modules() if isinstance(m, LoRALinear)}


def lora_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Only the adapter tensors ({layer}.down / {layer}.up), detached on the CPU."""
    out = {}
    for name, m in lora_modules(model).items():
        out[f"{name}.down"] = m.down.detach().cpu().contiguous()
        out[f"{name}.up"] = m.up.detach().cpu().contiguous()
    return out


def load_lora_state_dict(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Adapter tensors into an injected model; every adapter must be covered, shapes equal."""
    mods = lora_modules(model)
    expected = {f"{n}.{p}" for n in mods for p in ("down", "up")}
    if set(state) != expected:
        raise ValueError(f"LoRA state does not match the injected layers: missing {sorted(expected - set(state))[:4]}, "
                         f"unexpected {sorted(set(state) - expected)[:4]}")
    with torch.no_grad():
        for name, m in mods.items():
            for part in ("down", "up"):
                src, dst = state[f"{name}.{part}"], getattr(m, part)
                if src.shape != dst.shape:
                    raise ValueError(f"{name}.{part}: shape {tuple(src.shape)} != {tuple(dst.shape)}")
                dst.copy_(src)


def merge_lora(model: nn.Module) -> nn.Module:
    """Fold every adapter into its base layer in place; returns `model`."""
    for name, m in lora_modules(model).items():
        _set(model, name, m.merged())
    return model
