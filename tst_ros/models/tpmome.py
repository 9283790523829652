"""Stage 2 of modality adapters: task prompts and a mixture of modality experts (TP-MoME) on a
frozen encoder that carries frozen modality LoRAs (`tst_ros.train.psst`).

`PromptedEncoder` is the ViT encoder (`tst_ros.models.vit.Encoder`, same tensor names, so a
base encoder file loads into it) plus the three parts stage 2 trains with the task loss:

- **Task prompts** (deep prompts): `prompts` learnable tokens per block, prepended to the
  token sequence before every block and dropped after it, so each block gets its own.
- **Mixture of modality experts** after the blocks in `mome_layers`: one general expert and one
  expert per input modality (bottleneck MLPs whose output layer starts at zero, so the
  encoder starts exactly as the base), mixed per token by a softmax gate, added residually.
  While training, each sample drops one of its input modalities with probability
  `modality_drop` (the modality's patches are replaced by the learned `missing` token and that
  modality's expert is gated off for the sample), so the experts of the modalities still present
  learn to stand in for the missing one: complementary, not redundant, features.
- The task decoder is the perception model's heads (`tst_ros.perception.heads`).

At evaluation nothing is dropped and the graph has static shapes (ONNX-exportable).
`STAGE2_PREFIXES` names the tensors stage 2 trains; everything else stays frozen.
"""
from __future__ import annotations

import torch
from torch import nn

from tst_ros.models.vit import SPATIAL_KINDS, Encoder
from tst_ros import modalities as registry

STAGE2_PREFIXES = ("prompts", "mome.", "missing")


class Expert(nn.Sequential):
    def __init__(self, dim: int, hidden: int):
        super().__init__(nn.LayerNorm(dim, eps=1e-6), nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
        nn.init.zeros_(self[-1].weight)
        nn.init.zeros_(self[-1].bias)


class ModalityExperts(nn.Module):
    """x (B, N, D) -> x + sum_e gate_e(x) * expert_e(x); experts: general + one per modality."""

    def __init__(self, dim: int, modalities: list[str], hidden: int):
        super().__init__()
        self.names = ["general"] + list(modalities)
        self.experts = nn.ModuleList([Expert(dim, hidden) for _ in self.names])
        self.gate = nn.Linear(dim, len(self.names))
        nn.init.zeros_(self.gate.weight)
        nn.init.zeros_(self.gate.bias)

    def forward(self, x: torch.Tensor, expert_off: torch.Tensor | None = None) -> torch.Tensor:
        """expert_off (B, E) bool: experts gated off per sample (their modality is missing)."""
        logits = self.gate(x)                                               # (B, N, E)
        if expert_off is not None:
            logits = logits.masked_fill(expert_off[:, None, :], float("-inf"))
        weights = logits.softmax(dim=-1)
        out = torch.stack([e(x) for e in self.experts], dim=-1)            # (B, N, D, E)
        return x + (out * weights[:, :, None, :]).sum(dim=-1)


class PromptedEncoder(Encoder):
    def __init__(self, preset_name: str, modality_names: list[str], image_size: int, patch: int,
                 prompts: int = 8, mome_layers: tuple[int, ...] = (), expert_hidden: int = 64,
                 modality_drop: float = 0.3, expert_modalities: list[str] | None = None):
        super().__init__(preset_name, modality_names, image_size, patch)
        bad = [i for i in mome_layers if not 0 <= i < self.depth]
        if bad:
            raise ValueError(f"mome_layers {bad} are not block indices of a {self.depth}-block encoder")
        self.num_prompts = int(prompts)
        self.mome_layers = tuple(int(i) for i in mome_layers)
        self.modality_drop = float(modality_drop)
        self.expert_hidden = int(expert_hidden)
        self.expert_modalities = list(expert_modalities or self.spatial_modalities())
        self.prompts = nn.Parameter(torch.randn(self.depth, self.num_prompts, self.embed_dim) * 0.02)
        self.missing = nn.Parameter(torch.zeros(1, 1, self.embed_dim))
        self.mome = nn.ModuleDict({str(i): ModalityExperts(self.embed_dim, self.expert_modalities, expert_hidden)
                                   for i in self.mome_layers})

    def stage2_config(self) -> dict:
        return {"prompts": self.num_prompts, "mome_layers": list(self.mome_layers),
                "expert_hidden": self.expert_hidden,
                "modality_drop": self.modality_drop, "expert_modalities": self.expert_modalities}

    def _dropped(self, names: list[str], batch: int, device) -> torch.Tensor | None:
        """(B, len(names)) bool: the input modality each sample loses (training only)."""
        if not self.training or self.modality_drop <= 0 or len(names) < 2:
            return None
        which = torch.randint(len(names), (batch,), device=device)
        drop = torch.rand(batch, device=device) < self.modality_drop
        return nn.functional.one_hot(which, len(names)).bool() & drop[:, None]

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        names, spatial = self.check_inputs(inputs)
        tokens, stem_maps = self.embed_inputs(names, inputs)
        b = tokens[0].shape[0]
        dropped = self._dropped(names, b, tokens[0].device)
        expert_off = None
        if dropped is not None:
            tokens = [torch.where(dropped[:, j, None, None], self.missing + self.modality_embed[n], t)
                      for j, (n, t) in enumerate(zip(names, tokens))]
            expert_off = torch.zeros(b, len(self.expert_modalities) + 1, dtype=torch.bool, device=dropped.device)
            for j, n in enumerate(names):
                if n in self.expert_modalities:
                    expert_off[:, 1 + self.expert_modalities.index(n)] = dropped[:, j]
        out = self.encode_prompted(torch.cat(tokens, dim=1), expert_off)
        return self.dense_map(out, names, tokens, spatial, stem_maps)

    def encode_prompted(self, x: torch.Tensor, expert_off: torch.Tensor | None = None) -> torch.Tensor:
        b, p = x.shape[0], self.num_prompts
        for i, block in enumerate(self.blocks):
            if p:
                x = block(torch.cat([self.prompts[i].expand(b, -1, -1), x], dim=1))[:, p:]
            else:
                x = block(x)
            if str(i) in self.mome:
                x = self.mome[str(i)](x, expert_off)
        return self.norm(x)

    def describe(self) -> dict:
        return {**super().describe(), "stage2": self.stage2_config()}


def prompted_encoder(encoder: Encoder, prompts: int, mome_layers: tuple[int, ...], expert_hidden: int,
                     modality_drop: float, expert_modalities: list[str] | None = None) -> PromptedEncoder:
    """A PromptedEncoder holding `encoder`'s modules (LoRA included, shared, not copied), frozen;
    only the new stage-2 parts train.

    It is built on a fork of torch's generator, so the stage-2 layout (experts, widths, layers)
    leaves the global stream, and with it the task heads' initialisation and the training draws
    that follow, unchanged: two layouts at one seed are a paired comparison."""
    with torch.random.fork_rng(devices=[]):
        out = PromptedEncoder(encoder.preset, encoder.modalities, encoder.image_size, encoder.patch_size, prompts,
                              mome_layers, expert_hidden, modality_drop,
                              [m for m in (expert_modalities or encoder.spatial_modalities())
                               if registry.get(m).kind in SPATIAL_KINDS])
    encoder.requires_grad_(False)
    out.adapters, out.modality_embed, out.blocks, out.norm = (encoder.adapters, encoder.modality_embed,
                                                              encoder.blocks, encoder.norm)
    return out


def encoder_from_description(desc: dict) -> Encoder:
    """The (untrained) encoder a model.json describes: plain, or prompted with the stage-2 parts,
    with LoRA injected where the description lists it; weights are loaded by the caller."""
    from tst_ros.models.lora import inject_lora
    from tst_ros.models.vit import build_encoder

    stage2 = desc.get("stage2")
    if stage2:
        encoder = PromptedEncoder(desc["preset"], desc["modalities"], desc["image_size"], desc["patch"],
                                  stage2["prompts"], tuple(stage2["mome_layers"]), stage2["expert_hidden"],
                                  stage2["modality_drop"], stage2["expert_modalities"])
    else:
        encoder = build_encoder(desc["preset"], desc["modalities"], desc["image_size"], desc["patch"])
    if desc.get("detail_strides"):
        encoder.set_detail(desc["detail_strides"])
    lora = desc.get("lora")
    if lora:
        inject_lora(encoder, lora["rank"], lora["alpha"], tuple(lora["targets"]))
    return encoder
