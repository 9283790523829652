"""TST-MM: cross-modal masked modeling around the encoder (MultiMAE / 4M style).

Owns the per-sample visible-token budgets (Dirichlet split across the modalities present
in a sample, clamped by the registry's min/max tokens, summing exactly to the budget), the
random masking with its shuffle / un-shuffle indices, the per-modality shallow decoders
(cross-attention into the encoded visible tokens + 2 blocks) and the per-modality losses
chosen by the registry's `loss` field (`tst_ros.models.losses`), evaluated on masked tokens only;
modalities named `target_only` are reconstructed but never visible (distillation targets).

Masking randomness comes from one integer seed per sample, so the masks of a sample do not
depend on how the global batch is split across processes or accumulation steps.
Nothing here names a specific modality.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from tst_ros import modalities as registry
from tst_ros.models.losses import LOSSES, masked_mean, patchify, prediction_to_input_space, unpatchify
from tst_ros.models.vit import SPATIAL_KINDS, Attention, Block, Encoder, Mlp, build_encoder, sincos_1d, sincos_2d

DECODER_DIM = 256
DECODER_HEADS = 8
DECODER_DEPTH = 2


# ---------------------------------------------------------------- token budgets and masks

def token_limits(names: list[str], n_tokens: list[int], target_only=()) -> tuple[np.ndarray, np.ndarray]:
    """Per-modality (lo, hi) visible-token limits from the registry; at least one token of
    every modality stays masked so that it always has a reconstruction target; `target_only`
    modalities are never visible."""
    if set(target_only) - set(names):
        raise ValueError(f"target-only modalities {sorted(set(target_only) - set(names))} are not among {names}")
    hi = np.array([0 if n in target_only else min(registry.get(n).max_tokens, t - 1)
                   for n, t in zip(names, n_tokens)], np.int64)
    hi = np.maximum(hi, 0)
    lo = np.minimum(np.array([registry.get(n).min_tokens for n in names], np.int64), hi)
    return lo, hi


def split_budget(weights: np.ndarray, budget: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Integer split of `budget` (B,) over modalities proportional to `weights` (B,M) (0 = absent),
    each count within [lo, hi] (B,M). Budgets outside [sum lo, sum hi] are clamped to that range.
    -> (B,M) int64 counts summing exactly to the (clamped) budget."""
    weights = np.asarray(weights, np.float64)
    present = weights > 0
    lo = np.where(present, lo, 0).astype(np.int64)
    hi = np.where(present, hi, 0).astype(np.int64)
    budget = np.clip(np.asarray(budget, np.int64), lo.sum(1), hi.sum(1))
    x = lo.astype(np.float64)
    for _ in range(weights.shape[1] + 1):              # water-filling: each pass saturates >= 1 modality
        remaining = budget - x.sum(1)
        free = present & (x < hi)
        w = np.where(free, weights, 0.0)
        total = w.sum(1, keepdims=True)
        share = np.divide(w, total, out=np.zeros_like(w), where=total > 0) * remaining[:, None]
        x = np.minimum(x + share, hi)
    counts = np.clip(np.floor(x + 1e-9), lo, hi).astype(np.int64)
    for _ in range(2):                                 # hand out / take back the rounding remainder
        rem = budget - counts.sum(1)
        frac = x - counts
        up = (rem[:, None] > 0) & (counts < hi)
        down = (rem[:, None] < 0) & (counts > lo)
        key = np.where(up, frac + 2, 0) + np.where(down, 2 - frac, 0)
        rank = np.argsort(np.argsort(-key, axis=1, kind="stable"), axis=1)
        change = (rank < np.abs(rem)[:, None]) & (up | down)
        counts = counts + np.where(change, np.sign(rem)[:, None], 0)
    return counts


def draw_budgets(present: np.ndarray, n_tokens: list[int], lo: np.ndarray, hi: np.ndarray,
                 visible_fraction: float, alpha: float, rngs: list[np.random.Generator],
                 only: np.ndarray | None = None) -> np.ndarray:
    """Per-sample Dirichlet(alpha) split of round(visible_fraction * tokens of the present
    modalities that may be visible, hi > 0) across those modalities; a sample whose `only`
    row (B,M) bool is set shows those modalities alone, up to their `hi`.
    present (B,M) bool -> (B,M) int64."""
    present = np.asarray(present, bool) & (np.asarray(hi) > 0)
    shown = present
    if only is not None:
        restricted = present & np.asarray(only, bool)
        shown = np.where(restricted.any(1, keepdims=True), restricted, present)
    n = np.asarray(n_tokens, np.int64)
    weights = np.zeros(present.shape)
    for i, rng in enumerate(rngs):
        k = int(shown[i].sum())
        if k:
            weights[i, shown[i]] = np.maximum(rng.dirichlet(np.full(k, alpha)), 1e-12)
    budget = np.rint(visible_fraction * (present * n).sum(1)).astype(np.int64)
    return split_budget(weights, budget, np.broadcast_to(lo, present.shape), np.broadcast_to(hi, present.shape))


@dataclass
class Mask:
    """Visible-token selection for a batch of concatenated modality tokens (B, N)."""
    visible: torch.Tensor       # (B,N) bool
    ids_shuffle: torch.Tensor   # (B,N) visible tokens first (random order), then masked ones
    ids_restore: torch.Tensor   # (B,N) inverse permutation of ids_shuffle
    ids_keep: torch.Tensor      # (B,K) first K of ids_shuffle, K = max visible count in the batch
    key_mask: torch.Tensor      # (B,K) bool, True where ids_keep is a real visible token
    budgets: torch.Tensor       # (B,M) visible tokens per modality


def build_mask(noise: torch.Tensor, budgets: torch.Tensor, n_tokens: list[int]) -> Mask:
    """noise (B,N) in [0,1): per modality, the budget tokens with the lowest noise are visible."""
    b, n = noise.shape
    if sum(n_tokens) != n:
        raise ValueError(f"noise has {n} tokens, modalities have {sum(n_tokens)}")
    visible_parts, start = [], 0
    for m, count in enumerate(n_tokens):
        segment = noise[:, start:start + count]
        rank = segment.argsort(dim=1).argsort(dim=1)
        visible_parts.append(rank < budgets[:, m:m + 1])
        start += count
    visible = torch.cat(visible_parts, dim=1)
    ids_shuffle = ((~visible).to(noise.dtype) * 2 + noise).argsort(dim=1)
    ids_restore = ids_shuffle.argsort(dim=1)
    n_visible = visible.sum(1)
    k = max(int(n_visible.max()), 1)
    key_mask = torch.arange(k, device=noise.device)[None] < n_visible[:, None]
    key_mask[:, 0] = True                              # a sample with nothing visible still attends somewhere
    return Mask(visible, ids_shuffle, ids_restore, ids_shuffle[:, :k], key_mask, budgets)


def gather_tokens(x: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """x (B,N,D), ids (B,K) -> (B,K,D)."""
    return torch.gather(x, 1, ids[..., None].expand(-1, -1, x.shape[-1]))


# ---------------------------------------------------------------- decoders

class Decoder(nn.Module):
    """Shallow decoder for one modality: its token queries (encoded visible tokens where
    visible, a learned mask token elsewhere, plus position) cross-attend to all encoded
    visible tokens, then pass 2 transformer blocks and a linear head."""

    def __init__(self, enc_dim: int, pos: torch.Tensor, out_per_token: int, dim: int = DECODER_DIM,
                 heads: int = DECODER_HEADS, depth: int = DECODER_DEPTH):
        super().__init__()
        self.proj_context = nn.Linear(enc_dim, dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.register_buffer("pos", pos[None], persistent=False)
        self.norm_query = nn.LayerNorm(dim, eps=1e-6)
        self.norm_context = nn.LayerNorm(dim, eps=1e-6)
        self.cross = Attention(dim, heads)
        self.norm_mlp = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim)
        self.blocks = nn.ModuleList([Block(dim, heads) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Linear(dim, out_per_token)
        nn.init.normal_(self.mask_token, std=0.02)

    def forward(self, encoded: torch.Tensor, key_mask: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
        """encoded (B,K,De), key_mask (B,K), slots (B,Nm): index into K of each of this
        modality's tokens when visible, -1 when masked -> (B,Nm,out_per_token)."""
        context = self.proj_context(encoded)
        b, nm = slots.shape
        gathered = gather_tokens(context, slots.clamp_min(0))
        queries = torch.where((slots >= 0)[..., None], gathered, self.mask_token.expand(b, nm, -1)) + self.pos
        queries = queries + self.cross(self.norm_query(queries), self.norm_context(context), key_mask)
        queries = queries + self.mlp(self.norm_mlp(queries))
        for block in self.blocks:
            queries = block(queries)
        return self.head(self.norm(queries))


# ---------------------------------------------------------------- the model

class TSTMM(nn.Module):
    """Encoder + masking + per-modality decoders + losses.

    forward(batch, seeds) -> (loss, stats) where batch holds for every model modality a
    float tensor (B,...) and optionally batch["present"][name] (B,) bool; seeds are one int
    per sample. A modality that is absent or holds a non-finite value in a sample is
    neither visible nor a target in that sample.
    """

    def __init__(self, encoder: Encoder, visible_fraction: float = 1 / 6, dirichlet_alpha: float = 1.0,
                 decoder_dim: int = DECODER_DIM, decoder_depth: int = DECODER_DEPTH,
                 target_only: tuple[str, ...] = (), colour_only_share: float = 0.0):
        super().__init__()
        if not 0 < visible_fraction < 1:
            raise ValueError(f"visible_fraction must be in (0, 1), got {visible_fraction}")
        if not 0 <= colour_only_share <= 1:
            raise ValueError(f"colour_only_share must be in [0, 1], got {colour_only_share}")
        # share of samples that show the primary image alone (all but one of its tokens), so the
        # other modalities are predicted from colour as the encoder sees it when served colour only
        self.colour_only_share = float(colour_only_share)
        self.encoder = encoder
        self.visible_fraction = float(visible_fraction)
        self.alpha = float(dirichlet_alpha)
        self.names = list(encoder.modalities)
        self.n_tokens = [encoder.num_tokens(n) for n in self.names]
        self.target_only = tuple(target_only)   # reconstructed, never shown to the encoder (distillation)
        self.lo, self.hi = token_limits(self.names, self.n_tokens, self.target_only)
        self.decoders = nn.ModuleDict()
        for name in self.names:
            mod = registry.get(name)
            if mod.loss not in LOSSES:
                raise ValueError(f"modality {name!r} has loss {mod.loss!r}; known losses: {sorted(LOSSES)}")
            heads = max(1, min(DECODER_HEADS, decoder_dim // 32))
            self.decoders[name] = Decoder(encoder.embed_dim, self._decoder_pos(name, decoder_dim),
                                          self._values_per_token(name), decoder_dim, heads, decoder_depth)

    def _decoder_pos(self, name: str, dim: int) -> torch.Tensor:
        if registry.get(name).kind in SPATIAL_KINDS:
            return sincos_2d(dim, self.encoder.grid, self.encoder.grid)
        return sincos_1d(dim, torch.arange(self.encoder.num_tokens(name)))

    def _values_per_token(self, name: str) -> int:
        mod, adapter = registry.get(name), self.encoder.adapters[name]
        if mod.kind in SPATIAL_KINDS:
            return self.encoder.patch_size ** 2 * mod.channels
        return adapter.chunk * adapter.channels

    # -- data preparation
    def to_tokens_target(self, name: str, x: torch.Tensor) -> torch.Tensor:
        if registry.get(name).kind in SPATIAL_KINDS:
            return patchify(x, self.encoder.patch_size)
        return x.reshape(x.shape[0], self.encoder.num_tokens(name), -1)

    def sanitize(self, batch: dict) -> tuple[dict, torch.Tensor, dict]:
        """-> (clean inputs, present (B,M) bool, per-value validity (B,N,P) per modality)."""
        inputs, present_cols, valid = {}, [], {}
        given_present = batch.get("present", {}) or {}
        ref = next((batch[n] for n in self.names if n in batch), None)
        if ref is None:
            raise ValueError(f"batch holds none of the model's modalities {self.names}; keys: {sorted(batch)}")
        b, device = ref.shape[0], ref.device
        for name in self.names:
            mod = registry.get(name)
            x = batch.get(name)
            if x is None:
                x = torch.zeros((b, *self._input_shape(name)), device=device)
                present_cols.append(torch.zeros(b, dtype=torch.bool, device=device))
            else:
                x = x.float()
                finite = torch.isfinite(x)
                flag = given_present.get(name)
                flag = torch.ones(b, dtype=torch.bool, device=device) if flag is None else flag.to(device).bool()
                present_cols.append(flag & finite.flatten(1).all(1))
                keep = finite & present_cols[-1].reshape(-1, *([1] * (x.ndim - 1)))
                x = torch.where(keep, x, torch.zeros((), device=device))
            inputs[name] = x
            v = torch.ones_like(x, dtype=torch.bool)
            if mod.invalid_value is not None and mod.kind in SPATIAL_KINDS:
                v = (x != 0).any(dim=1, keepdim=True).expand_as(x)
            valid[name] = self.to_tokens_target(name, v.float()) > 0.5
        return inputs, torch.stack(present_cols, dim=1), valid

    def _input_shape(self, name: str) -> tuple[int, ...]:
        mod = registry.get(name)
        if mod.kind in SPATIAL_KINDS:
            return (mod.channels, self.encoder.image_size, self.encoder.image_size)
        adapter = self.encoder.adapters[name]
        return (adapter.window, adapter.channels)

    def make_mask(self, present: torch.Tensor, seeds) -> Mask:
        seeds = [int(s) for s in (seeds.tolist() if torch.is_tensor(seeds) else seeds)]
        if len(seeds) != present.shape[0]:
            raise ValueError(f"need one mask seed per sample: {len(seeds)} seeds for {present.shape[0]} samples")
        rngs = [np.random.default_rng(s) for s in seeds]
        budgets = draw_budgets(present.cpu().numpy(), self.n_tokens, self.lo, self.hi,
                               self.visible_fraction, self.alpha, rngs, self._colour_only(rngs))
        noise = np.stack([rng.random(sum(self.n_tokens)) for rng in rngs])
        device = present.device
        return build_mask(torch.from_numpy(noise).float().to(device), torch.from_numpy(budgets).to(device),
                          self.n_tokens)

    def _colour_only(self, rngs: list[np.random.Generator]) -> np.ndarray | None:
        """(B,M) bool: the primary image column set in the samples drawn to show colour alone."""
        primary = registry.primary_image().name
        if self.colour_only_share == 0 or primary not in self.names or len(self.names) == 1:
            return None                      # no draw: masks stay those of a run without the option
        only = np.zeros((len(rngs), len(self.names)), bool)
        only[:, self.names.index(primary)] = [rng.random() < self.colour_only_share for rng in rngs]
        return only

    # -- forward
    def run(self, batch: dict, seeds) -> dict:
        inputs, present, valid = self.sanitize(batch)
        mask = self.make_mask(present, seeds)
        starts = np.cumsum([0] + self.n_tokens)
        tokens = torch.cat([self.encoder.tokenize(n, inputs[n], mask.visible[:, starts[i]:starts[i + 1]])
                            for i, n in enumerate(self.names)], dim=1)
        encoded = self.encoder.encode(gather_tokens(tokens, mask.ids_keep), mask.key_mask)
        out = {"inputs": inputs, "present": present, "valid": valid, "mask": mask, "pred": {}, "target": {},
               "masked": {}}
        start = 0
        for i, (name, count) in enumerate(zip(self.names, self.n_tokens)):
            seg = slice(start, start + count)
            vis = mask.visible[:, seg]
            slots = torch.where(vis, mask.ids_restore[:, seg], torch.full_like(mask.ids_restore[:, seg], -1))
            out["pred"][name] = self.decoders[name](encoded, mask.key_mask, slots).float()
            out["target"][name] = self.to_tokens_target(name, inputs[name])
            out["masked"][name] = ~vis & present[:, i:i + 1]
            start += count
        return out

    def losses(self, out: dict) -> tuple[torch.Tensor, dict[str, float]]:
        """Mean over modalities present in the batch of: mean over samples of the per-sample
        mean loss over that sample's masked (valid) tokens."""
        terms, stats, keep_graph = [], {}, []
        for i, name in enumerate(self.names):
            pred, target, valid = out["pred"][name], out["target"][name], out["valid"][name]
            per_token = LOSSES[registry.get(name).loss](pred, target, valid)
            token_ok = out["masked"][name] & valid.any(-1)
            per_sample = masked_mean(per_token, token_ok, 1)
            has = token_ok.any(1)
            keep_graph.append(pred.sum() * 0.0)
            if bool(has.any()):
                value = masked_mean(per_sample, has, 0)
                terms.append(value)
                stats[f"loss/{name}"] = float(value.detach())
        if not terms:
            raise ValueError("no sample in the batch has a present, finite modality to reconstruct")
        loss = torch.stack(terms).mean() + torch.stack(keep_graph).sum()
        stats["loss"] = float(loss.detach())
        return loss, stats

    def forward(self, batch: dict, seeds) -> tuple[torch.Tensor, dict[str, float]]:
        return self.losses(self.run(batch, seeds))

    @torch.no_grad()
    def reconstruct(self, batch: dict, seeds) -> dict[str, dict[str, torch.Tensor]]:
        """Pictures per spatial modality: {"visible", "prediction", "target"} (B,C,H,W) in the
        normalised input space; masked patches of "visible" are zero."""
        out = self.run(batch, seeds)
        pictures = {}
        p = self.encoder.patch_size
        for name in self.names:
            mod = registry.get(name)
            if mod.kind not in SPATIAL_KINDS:
                continue
            target, valid = out["target"][name], out["valid"][name]
            pred = prediction_to_input_space(mod.loss, out["pred"][name], target, valid)
            vis = (~out["masked"][name])[..., None].float() * out["present"][:, self.names.index(name), None, None]
            pictures[name] = {"visible": unpatchify(target * vis, p, mod.channels),
                              "prediction": unpatchify(torch.where(vis > 0, target, pred), p, mod.channels),
                              "target": unpatchify(target, p, mod.channels)}
        return pictures


def build_tstmm(encoder: Encoder | str = "tiny", modalities: list[str] | None = None, image_size: int = 128,
                patch: int = 16, visible_fraction: float = 1 / 6, dirichlet_alpha: float = 1.0,
                decoder_dim: int = DECODER_DIM, decoder_depth: int = DECODER_DEPTH) -> TSTMM:
    """TST-MM around an existing encoder or a new one built from a preset name."""
    if isinstance(encoder, str):
        if not modalities:
            raise ValueError("build_tstmm with a preset name needs the input modalities (registry names)")
        encoder = build_encoder(encoder, list(modalities), image_size, patch)
    return TSTMM(encoder, visible_fraction, dirichlet_alpha, decoder_dim, decoder_depth)
