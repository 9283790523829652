"""PSST (progressive self-supervised tuning): a modality adapter learned without labels on a
frozen encoder, stored as one small safetensors file.

The base encoder (a TST run or any encoder file) stays frozen. LoRA (`tst_ros.models.lora`) is
injected into its blocks and trained, with the target modality's input adapter and modality
embedding (new, when the base has never seen the modality: initialised from the primary image's
patch projection averaged over its channels, or freshly when colour enters through a pre-trained
stem), on unlabeled frames of the modality:

1. **MAE warm-up** (`warmup_steps`): mask `mask_ratio` of the modality's patches, encode the
   visible ones, reconstruct the masked ones with a one-block decoder (MSE on the normalised
   modality); e_i = the reconstruction error of masked patch i.
2. **Joint training** (`joint_steps`) on the structurally complex samples: the
   `complex_fraction` of the training frames with the highest variance of their per-patch MAE
   error. Loss = `mae_weight` * L_MAE + L_DINO, where L_DINO is the DINO self-distillation of an
   EMA teacher (same frozen base, EMA of the LoRA/adapter/head weights; centred, sharpened
   outputs): image level (mean-pooled tokens of two flips of a frame, cross-view) plus patch
   level (the student sees the MAE-masked frame with a mask token, the teacher the whole
   frame), each masked patch weighted by w_i = softmax over the frame of `error_alpha` * e_i, so
   the patches that deviate most from the base's priors count most.

The adapter file (`ADAPTER_FORMAT`) holds the LoRA tensors (`lora/...`), the modality's input
adapter and embedding (`input/...`) and, in its metadata, the base's sha256, the modality,
rank, alpha, targets, steps and the loss history. `apply_adapter` puts it on a base encoder.
Training is resumable (checkpoint every `checkpoint_every` steps); a checkpoint or adapter of
another base is refused.
"""
from __future__ import annotations

import copy
import json
import logging
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tst_ros import modalities as registry
from tst_ros.models.lora import inject_lora, lora_state_dict
from tst_ros.models.losses import patchify
from tst_ros.models.vit import Block, build_encoder, sincos_2d

ADAPTER_FORMAT = "tst_ros.modality_adapter/1"
CHECKPOINT = "psst_checkpoint.safetensors"


def _log(msg: str) -> None:
    logging.getLogger("tst_ros.adapt").info(msg)


def adapted_encoder(base_file: Path, modality: str, rank: int, alpha: float, targets: tuple[str, ...]):
    """The base encoder rebuilt to take `modality` (new input adapter when the base lacks it),
    frozen, with LoRA injected; -> (encoder, trainable input parameter names)."""
    from tst_ros.models.io import read_encoder

    state, meta = read_encoder(base_file)
    names = list(dict.fromkeys(meta["modalities"] + [modality]))
    encoder = build_encoder(meta["preset"], names, meta["image_size"], meta["patch"])
    if modality not in meta["modalities"]:
        state.update(_new_input_adapter(encoder, state, modality))
    encoder.load_state_dict(state)
    encoder.requires_grad_(False)
    inject_lora(encoder, rank, alpha, targets)
    inputs = [f"adapters.{modality}.", f"modality_embed.{modality}"]
    for name, p in encoder.named_parameters():
        if any(name.startswith(i) for i in inputs) and ".backbone." not in name:   # an ImageNet stem stays frozen
            p.requires_grad_(True)
    return encoder, inputs


def _new_input_adapter(encoder, base_state: dict, modality: str) -> dict[str, torch.Tensor]:
    """Initial input adapter and embedding of a modality the base never saw: the primary image's
    patch projection averaged over its channels, or, when colour enters through a pre-trained
    stem (no patch projection to borrow), the fresh projection `encoder` was built with."""
    prefix = f"adapters.{modality}."
    fresh = {k: v.detach().clone() for k, v in encoder.state_dict().items() if k.startswith(prefix)}
    fresh[f"modality_embed.{modality}"] = encoder.modality_embed[modality].detach().clone()
    rgb_weight = base_state.get(f"adapters.{registry.PRIMARY_IMAGE}.proj.weight")
    if rgb_weight is not None and rgb_weight.dim() == 4:
        channels = registry.get(modality).channels
        fresh[prefix + "proj.weight"] = rgb_weight.mean(dim=1, keepdim=True).repeat(1, channels, 1, 1)
        fresh[prefix + "proj.bias"] = base_state[f"adapters.{registry.PRIMARY_IMAGE}.proj.bias"].clone()
    return fresh


class DinoHead(nn.Module):
    def __init__(self, dim: int, out: int, hidden: int = 256):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(F.normalize(x, dim=-1))


class PSSTModel(nn.Module):
    """Student (LoRA encoder + MAE decoder + DINO head), EMA teacher, DINO centres."""

    def __init__(self, encoder, modality: str, cfg):
        super().__init__()
        d, p = encoder.embed_dim, encoder.patch_size
        self.encoder, self.modality, self.cfg = encoder, modality, cfg
        self.channels = registry.get(modality).channels
        self.mask_token = nn.Parameter(torch.zeros(1, 1, d))
        self.decoder = Block(d, encoder.heads)
        self.to_patch = nn.Linear(d, self.channels * p * p)
        self.head = DinoHead(d, cfg.dino_dim)
        self.register_buffer("pos", sincos_2d(d, encoder.grid, encoder.grid)[None], persistent=False)
        self.teacher = copy.deepcopy(nn.ModuleDict({"encoder": encoder, "head": self.head})).requires_grad_(False)
        self.register_buffer("center_image", torch.zeros(cfg.dino_dim))
        self.register_buffer("center_patch", torch.zeros(cfg.dino_dim))
        nn.init.normal_(self.mask_token, std=0.02)

    def mae(self, x: torch.Tensor, keep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (loss over masked patches, per-patch error (B, N), 0 on visible patches)."""
        tokens = self.encoder.tokenize(self.modality, x)
        b, n, d = tokens.shape
        visible = torch.gather(tokens, 1, keep[..., None].expand(-1, -1, d))
        encoded = self.encoder.encode(visible)
        full = self.mask_token.expand(b, n, d).clone()
        full.scatter_(1, keep[..., None].expand(-1, -1, d), encoded)
        pred = self.to_patch(self.decoder(full + self.pos))
        err = (pred - patchify(x, self.encoder.patch_size)).pow(2).mean(dim=-1)
        masked = torch.ones(b, n, dtype=torch.bool, device=x.device).scatter_(1, keep, False)
        loss = (err * masked).sum() / masked.sum().clamp_min(1)
        return loss, (err * masked).detach()

    def student_tokens(self, x: torch.Tensor, masked: torch.Tensor | None = None) -> torch.Tensor:
        tokens = self.encoder.tokenize(self.modality, x)
        if masked is not None:
            tokens = torch.where(masked[..., None], self.mask_token + self.pos, tokens)
        return self.encoder.encode(tokens)

    @torch.no_grad()
    def teacher_tokens(self, x: torch.Tensor) -> torch.Tensor:
        enc = self.teacher["encoder"]
        return enc.encode(enc.tokenize(self.modality, x))

    @torch.no_grad()
    def update_teacher(self, momentum: float) -> None:
        student = dict(self.encoder.named_parameters()) | {f"head.{k}": v for k, v in self.head.named_parameters()}
        for name, t in self.teacher.named_parameters():
            key = name.removeprefix("encoder.")
            s = student.get(key) if name.startswith("encoder.") else student.get(name)
            if s is not None and s.requires_grad:
                t.mul_(momentum).add_(s.detach(), alpha=1 - momentum)


def _dino_ce(teacher_logits: torch.Tensor, student_logits: torch.Tensor, center: torch.Tensor, cfg) -> torch.Tensor:
    target = F.softmax((teacher_logits - center) / cfg.teacher_temp, dim=-1)
    return -(target * F.log_softmax(student_logits / cfg.student_temp, dim=-1)).sum(dim=-1)


def random_keep(b: int, n: int, ratio: float, gen: torch.Generator, device) -> torch.Tensor:
    keep = max(1, int(round(n * (1 - ratio))))
    return torch.rand(b, n, generator=gen).argsort(dim=1)[:, :keep].to(device)


def joint_loss(model: PSSTModel, x: torch.Tensor, keep: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """λ·L_MAE + image-level + error-weighted patch-level DINO loss for one batch."""
    cfg = model.cfg
    mae_loss, err = model.mae(x, keep)
    masked = err > 0
    flipped = x.flip(-1)
    t_a, t_b = model.teacher_tokens(x), model.teacher_tokens(flipped)
    s_masked = model.student_tokens(x, masked)
    s_b = model.student_tokens(flipped)
    head_t = model.teacher["head"]
    g_t_a, g_t_b = head_t(t_a.mean(1)), head_t(t_b.mean(1))
    image = 0.5 * (_dino_ce(g_t_b, model.head(s_masked.mean(1)), model.center_image, cfg).mean()
                   + _dino_ce(g_t_a, model.head(s_b.mean(1)), model.center_image, cfg).mean())
    p_t = head_t(t_a)
    ce = _dino_ce(p_t, model.head(s_masked), model.center_patch, cfg)                  # (B, N)
    weights = torch.softmax((cfg.error_alpha * err).masked_fill(~masked, float("-inf")), dim=1)
    patch = (weights * ce).sum(dim=1).mean()
    with torch.no_grad():
        m = cfg.center_momentum
        model.center_image.mul_(m).add_(torch.cat([g_t_a, g_t_b]).mean(0), alpha=1 - m)
        model.center_patch.mul_(m).add_(p_t[masked].mean(0), alpha=1 - m)
    loss = cfg.mae_weight * mae_loss + image + patch
    return loss, {"mae": mae_loss.item(), "dino_image": image.item(), "dino_patch": patch.item()}


@torch.no_grad()
def complex_subset(model: PSSTModel, dataset, batch: int, fraction: float, gen: torch.Generator) -> list[int]:
    """Indices of the `fraction` of samples with the highest variance of their MAE error."""
    variances = []
    for start in range(0, len(dataset), batch):
        x = _stack([dataset[i] for i in range(start, min(len(dataset), start + batch))], model.modality)
        keep = random_keep(len(x), model.encoder.grid ** 2, model.cfg.mask_ratio, gen, x.device)
        _, err = model.mae(x, keep)
        masked = err > 0
        mean = (err.sum(1) / masked.sum(1)).unsqueeze(1)
        variances += (((err - mean) ** 2 * masked).sum(1) / masked.sum(1)).tolist()
    count = max(1, int(round(len(variances) * fraction)))
    return sorted(np.argsort(variances)[::-1][:count].tolist())


def _stack(items: list[dict], modality: str) -> torch.Tensor:
    """Loader items -> the normalised batch of one modality (`train.data.prepare_batch`)."""
    from tst_ros.train.data import prepare_batch
    return prepare_batch({modality: torch.stack([it[modality] for it in items])})[modality].float()


def adapter_tensors(model: PSSTModel) -> dict[str, torch.Tensor]:
    enc, m = model.encoder, model.modality
    out = {f"lora/{k}": v for k, v in lora_state_dict(enc).items()}
    out.update({f"input/adapters.{m}.{k}": v.detach().cpu().contiguous()
                for k, v in enc.adapters[m].state_dict().items()})
    out[f"input/modality_embed.{m}"] = enc.modality_embed[m].detach().cpu().contiguous()
    return out


def apply_adapter(adapter_file: str | Path, base: str | Path):
    """A base encoder (run dir or file) with the adapter's modality input and LoRA applied;
    -> (encoder in eval mode, adapter metadata). A base of another checksum is refused."""
    from tst_ros.train.stage2 import apply_adapters

    encoder, metas = apply_adapters([adapter_file], base)
    return encoder, metas[0]


def check_base(base_file: Path, expected_sha256: str, what) -> None:
    from tst_ros.util import sha256_file

    actual = sha256_file(base_file)
    if actual != expected_sha256:
        raise ValueError(f"{what} was made for the base encoder with sha256 {expected_sha256[:12]}…, "
                         f"{base_file} has {actual[:12]}…; use the base it was trained on")


def _checkpoint_path(out: Path) -> Path:
    return out.with_name(out.stem + "." + CHECKPOINT)


def _batches(dataset, indices: list[int], batch: int, gen: torch.Generator, modality: str, device: str):
    while True:
        order = torch.randperm(len(indices), generator=gen).tolist()
        for start in range(0, len(order) - batch + 1 if len(order) >= batch else 1, batch):
            chosen = [indices[i] for i in order[start:start + batch]]
            yield _stack([dataset[i] for i in chosen], modality).to(device)


def _resume(model, optimizer, ckpt: Path, sha: str) -> dict:
    from tst_ros.train.checkpoint import load_checkpoint, read_checkpoint

    _, meta = read_checkpoint(ckpt)
    if meta.get("base_sha256") != sha:
        raise ValueError(f"{ckpt} was trained on another base encoder (sha256 {str(meta.get('base_sha256'))[:12]}…); "
                         f"delete it or use --no-resume")
    return load_checkpoint(ckpt, model, optimizer)


def adapt_modality(cfg, data: str, base: str, modality: str, out: str | Path, resume: bool = True,
                   progress: bool = True, stop_at: int | None = None) -> dict:
    """Run (or continue) PSST; writes the adapter file `out` when both phases are done."""
    from safetensors.torch import save as st_save
    from tqdm import tqdm

    from tst_ros.models.io import encoder_path
    from tst_ros.train import engine
    from tst_ros.train.checkpoint import save_checkpoint
    from tst_ros.train.data import open_dataset
    from tst_ros.util import atomic_write_bytes, resolve_device, sha256_file

    out, device = Path(out), resolve_device(cfg.device)
    out.parent.mkdir(parents=True, exist_ok=True)
    base_file = encoder_path(base)
    sha = sha256_file(base_file)
    torch.manual_seed(cfg.seed)
    encoder, _ = adapted_encoder(base_file, modality, cfg.rank, cfg.alpha, tuple(cfg.targets))
    model = PSSTModel(encoder, modality, cfg).to(device)
    dataset = open_dataset(data, "train", [modality], encoder.image_size, augment=True)
    if len(dataset) == 0:
        raise ValueError(f"{data} has no training samples of {modality!r}")
    optimizer = engine.make_optimizer(model, cfg.lr, 0.05)
    ckpt, state = _checkpoint_path(out), {"step": 0, "history": [], "subset": None}
    if resume and ckpt.exists():
        state = _resume(model, optimizer, ckpt, sha)
    total = cfg.warmup_steps + cfg.joint_steps
    gen = torch.Generator().manual_seed(cfg.seed * 7919 + state["step"])
    stream = None
    with tqdm(total=total, initial=state["step"], desc=f"psst {modality}", disable=not progress) as bar:
        for step in range(state["step"], min(total, stop_at or total)):
            joint = step >= cfg.warmup_steps
            if joint and state["subset"] is None:
                state["subset"] = complex_subset(model, dataset, cfg.batch, cfg.complex_fraction, gen)
                model.teacher["encoder"].load_state_dict(model.encoder.state_dict())   # the teacher starts
                model.teacher["head"].load_state_dict(model.head.state_dict())         # as the student
                stream = None
            if stream is None:
                stream = _batches(dataset, state["subset"] if joint else list(range(len(dataset))),
                                  cfg.batch, gen, modality, device)
            x = next(stream)
            keep = random_keep(len(x), encoder.grid ** 2, cfg.mask_ratio, gen, device)
            engine.set_lr(optimizer, engine.lr_at(step, total, max(1, total // 10), cfg.lr))
            if joint:
                loss, parts = joint_loss(model, x, keep)
            else:
                loss, _ = model.mae(x, keep)
                parts = {"mae": loss.item()}
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if joint:
                model.update_teacher(cfg.teacher_momentum)
            state["history"].append({"step": step + 1, "phase": "joint" if joint else "mae", **parts})
            state["step"] = step + 1
            bar.set_postfix(loss=f"{loss.item():.3f}")
            bar.update(1)
            if cfg.checkpoint_every and state["step"] % cfg.checkpoint_every == 0:
                save_checkpoint(ckpt, model, optimizer, {**state, "base_sha256": sha, "modality": modality})
    if state["step"] < total:
        save_checkpoint(ckpt, model, optimizer, {**state, "base_sha256": sha, "modality": modality})
        return {"step": state["step"], "checkpoint": str(ckpt), "adapter": None}
    tensors = adapter_tensors(model)
    meta = {"format": ADAPTER_FORMAT, "modality": modality, "base": str(base_file), "base_sha256": sha,
            "rank": cfg.rank, "alpha": cfg.alpha, "targets": list(cfg.targets),
            "steps": {"mae_warmup": cfg.warmup_steps, "joint": cfg.joint_steps},
            "complex_subset": len(state["subset"] or []), "samples": len(dataset),
            "parameters": int(sum(t.numel() for t in tensors.values())), "history": state["history"]}
    atomic_write_bytes(out, st_save(tensors, metadata={"tst_ros": json.dumps(meta)}))
    _log(f"{modality} adapter: {meta['parameters']} parameters, {out.stat().st_size} bytes -> {out}")
    return {"step": state["step"], "checkpoint": str(ckpt), "adapter": str(out), "parameters": meta["parameters"],
            "bytes": out.stat().st_size, "final": state["history"][-1] if state["history"] else None}
