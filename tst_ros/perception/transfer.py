"""Transfer: fine-tune segmentation + detection heads on a COCO-style labeled set from other
buildings, on top of a pre-trained (or scratch) encoder; and evaluation on held-out frames.

Encoder modes: `frozen` (features computed once per image and flip, only heads train),
`partial` (the upper half of encoder.blocks and the final norm train), `full` (everything),
with layer-wise learning-rate decay over encoder.blocks for the trainable encoder layers;
`tp-mome`: stage 2 of modality adapters (`tst_ros.train.stage2`): the base and its modality
LoRAs frozen, task prompts, modality experts and heads trained. `tasks` chooses the losses.
Labeled data: `tst_ros.perception.labeled_data`; evaluation: `tst_ros.perception.evaluation`.
Inputs are RGB plus depth when the encoder accepts depth (unless `input_modalities`, or else
`transfer.inputs`, says otherwise). The result is MODEL_DIR/model.safetensors + model.json (+ config.yaml).
"""
from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from tst_ros import modalities as registry
from tst_ros.perception.augment import Augmentation
from tst_ros.perception.building_mm import building_masked_modeling
from tst_ros.perception.evaluation import evaluate  # noqa: F401  (also used through this module)
from tst_ros.perception.interpolation import encoder_anchor, interpolate_encoder
from tst_ros.perception.labeled_data import (TransferData, depth_metres, extra_images, load_labeled,  # noqa: F401
                                             read_categories)
from tst_ros.perception.self_training import TransferBatches, building_frames, pseudo_frames
from tst_ros.util import emit_progress, resolve_device

STAGE2 = "tp-mome"              # task prompts + modality experts on frozen modality adapters
FINETUNE_MODES = ("frozen", "partial", "full", STAGE2)
TASKS = ("segmentation", "detection")


# ----------------------------------------------------------------------------- model

GENERALIST = "generalist"       # encoder source naming the ImageNet baseline


def resolve_encoder(source: str, preset: str = "tiny", image_size: int = 128, patch: int = 16,
                    scratch_modalities: tuple[str, ...] = (registry.PRIMARY_IMAGE,)):
    """`scratch` -> random encoder; `generalist` -> the ImageNet EfficientNet-Lite0
    (tst_ros.models.generalist); otherwise a run directory / encoder file -> (encoder, meta)."""
    from tst_ros.models import build_encoder, load_encoder
    from tst_ros.models.vit import random_init_preset

    if source == "scratch":
        enc = build_encoder(random_init_preset(preset), list(scratch_modalities), image_size, patch)
        return enc, {**enc.describe(), "method": "scratch", "source": "scratch"}
    if source == GENERALIST:
        from tst_ros.models.generalist import EfficientNetLite0Encoder

        enc = EfficientNetLite0Encoder(image_size, pretrained=True)
        return enc, {**enc.describe(), "method": GENERALIST, "source": enc.describe()["backbone"]}
    enc, meta = load_encoder(source)
    return enc, {**enc.describe(), "method": meta.get("method", "unknown"), "source": str(Path(source).resolve()),
                 "pretrain_steps": meta.get("steps", meta.get("step"))}


def default_inputs(encoder) -> list[str]:
    """The camera images of a frame that the encoder accepts (colour, then depth)."""
    return [m for m in (registry.PRIMARY_IMAGE, registry.DEPTH_IMAGE) if m in encoder.modalities]


def new_model(encoder, encoder_meta: dict, classes: list[str], categories: dict[int, str],
              input_modalities: list[str] | None = None, pyramid_dim: int = 64, input_stem: bool | None = None,
              predictor=None):
    from tst_ros.config import TransferConfig
    from tst_ros.perception.heads import DET_STRIDE, PerceptionModel, preprocessing_meta

    input_stem = TransferConfig.input_stem if input_stem is None else bool(input_stem)
    inputs = list(input_modalities or default_inputs(encoder))
    thing_ids = [cid for cid in categories if 0 <= cid < len(classes)]
    if len(thing_ids) != len(categories):
        raise ValueError(f"category ids {sorted(categories)} must index the {len(classes)} semantic classes")
    model = PerceptionModel(encoder, len(classes), len(thing_ids), inputs, pyramid_dim, input_stem, predictor)
    meta = {"format": "tst_ros.perception/1", "classes": classes, "thing_class_ids": thing_ids,
            "input_modalities": inputs, "image_size": model.image_size,
            "preprocessing": preprocessing_meta(inputs, model.image_size), "tasks": ["segmentation", "detection"],
            "det_stride": DET_STRIDE, "pyramid_dim": pyramid_dim, "input_stem": input_stem, "encoder": encoder_meta}
    if predictor is not None:
        meta["predicted_inputs"] = predictor.describe()
    return model, meta


def layer_id(name: str, depth: int) -> int:
    """Encoder parameter name -> layer index for layer-wise lr decay (0 = input adapters, depth+1 = top)."""
    if name.startswith("blocks."):
        return int(name.split(".")[1]) + 1
    if name.startswith("norm."):
        return depth + 1
    return 0


def base_lr(cfg) -> float:
    """The learning rate a TransferConfig trains at: stage 2 (tp-mome) has its own."""
    return cfg.stage2_lr if cfg.finetune == STAGE2 else cfg.lr


def param_groups(model, mode: str, lr: float, layer_decay: float, weight_decay: float = 0.05) -> list[dict]:
    """Heads at `lr`; trainable encoder layers at lr * decay^(depth + 1 - layer)."""
    if mode not in FINETUNE_MODES:
        raise ValueError(f"finetune must be one of {FINETUNE_MODES}, got {mode!r}")
    enc = model.encoder
    if mode == STAGE2:
        from tst_ros.models.tpmome import STAGE2_PREFIXES

        for name, p in enc.named_parameters():
            p.requires_grad_(name.startswith(STAGE2_PREFIXES))
        return [{"params": model.head_parameters(), "lr": lr, "lr_scale": 1.0, "weight_decay": weight_decay,
                 "name": "heads"},
                {"params": [p for p in enc.parameters() if p.requires_grad], "lr": lr, "lr_scale": 1.0,
                 "weight_decay": weight_decay, "name": "encoder.stage2"}]
    depth = len(enc.blocks)
    first_trainable = {"frozen": depth + 2, "partial": depth // 2 + 1, "full": 0}[mode]
    groups: dict[int, list] = {}
    for name, p in enc.named_parameters():
        lid = layer_id(name, depth)
        p.requires_grad_(lid >= first_trainable)
        if p.requires_grad:
            groups.setdefault(lid, []).append(p)
    out = [{"params": model.head_parameters(), "lr": lr, "lr_scale": 1.0, "weight_decay": weight_decay,
            "name": "heads"}]
    for lid, params in sorted(groups.items()):
        scale = layer_decay ** (depth + 1 - lid)
        out.append({"params": params, "lr": lr * scale, "lr_scale": scale, "weight_decay": weight_decay,
                    "name": f"encoder.layer{lid}"})
    return out


# ----------------------------------------------------------------------------- training

def transfer(encoder_source: str, labeled_dir: str, out_dir: str, cfg=None, preset: str = "tiny",
             image_size: int = 128, patch: int = 16, input_modalities: list[str] | None = None,
             progress_stream=None, show_bar: bool = True, building_store: str | None = None) -> dict:
    """Fine-tune heads (and per `cfg.finetune` the encoder); write MODEL_DIR; return a summary.
    With `cfg.self_training` the last steps also learn from `building_store`'s frames,
    pseudo-labeled (`tst_ros.perception.self_training`); with `cfg.building_style` labeled
    samples take those frames' low-frequency amplitudes (`tst_ros.perception.augment`); with
    `cfg.building_mm` every step also does masked modeling on them (`tst_ros.perception.building_mm`); with
    `cfg.building_norm_stats` the batch norms' statistics are re-estimated on them at the end
    (`tst_ros.perception.norm_stats`); with `cfg.heads_first` only the heads train at first (LP-FT)."""
    import torch
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
    from tqdm import tqdm

    from tst_ros.config import TransferConfig
    from tst_ros.perception.heads import save_model

    cfg = cfg or TransferConfig()
    tasks = _check_settings(cfg, building_store)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    t0 = time.perf_counter()
    items, classes, categories = load_labeled(labeled_dir)
    if cfg.labeled_images and len(items) > cfg.labeled_images:
        items = items[:cfg.labeled_images]
    encoder, enc_meta = _encoder_for(encoder_source, cfg, preset, image_size, patch)
    anchor = encoder_anchor(encoder) if cfg.encoder_interpolation < 1 else None   # the pre-trained weights
    encoder, enc_meta = _with_detail(encoder, enc_meta, cfg.detail_strides)
    inputs = list(input_modalities or cfg.inputs or default_inputs(encoder))
    model, meta = new_model(encoder, enc_meta, classes, categories, inputs, input_stem=cfg.input_stem,
                            predictor=_predictor(encoder_source, cfg, inputs))
    meta["tasks"] = tasks
    device = torch.device(resolve_device(cfg.device))
    model.to(device)
    data = TransferData(items, meta["input_modalities"], meta["preprocessing"], meta["thing_class_ids"])
    groups = param_groups(model, cfg.finetune, base_lr(cfg), cfg.layer_decay)
    building_mm = building_masked_modeling(model, encoder_source, building_store, cfg, device)
    if building_mm is not None:
        groups.append(building_mm.param_group(base_lr(cfg), groups[0]["weight_decay"]))
    opt = torch.optim.AdamW(groups, betas=(0.9, 0.999))
    trained = sum(p.numel() for g in groups for p in g["params"])
    frozen = cfg.finetune == "frozen"
    # frozen: cached features, no augmentation
    augmentation = None if frozen else Augmentation(cfg.zoom, cfg.colour_jitter, cfg.input_drop, cfg.building_style,
                                                    cfg.paste)
    cache = _frozen_features(model, data, device) if frozen else None
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema), use_buffers=True) if cfg.ema else None
    seg_weights = torch.from_numpy(data.class_weights(len(classes), cfg.class_balance)).to(device)
    if cfg.building_style > 0:
        data.take_style_from(building_frames(cfg, building_store))
    batches = TransferBatches(data, pseudo_frames(cfg, building_store, meta), cfg, rng, augmentation)
    history = []
    bar = tqdm(range(cfg.steps), desc=f"transfer ({enc_meta['method']}, {cfg.finetune})", disable=not show_bar,
               file=sys.stderr)
    run = _Training(model, opt, groups, batches, tasks, seg_weights, cache, building_mm, device)
    for step in bar:
        losses, rows = run.step(step, cfg)
        if ema is not None:
            ema.update_parameters(model)
        _record_step(history, bar, progress_stream, step, cfg.steps, rows, t0, losses)
    if ema is not None:                  # the average of the weights along the last steps is served
        model.load_state_dict(ema.module.state_dict())
    model.eval()
    model.to("cpu")                      # saved and exported from the CPU
    meta["transfer"] = {**asdict(cfg), "device": str(device), "labeled_set": str(Path(labeled_dir).resolve()),
                        "labeled_images": len(items), "train_seconds": round(time.perf_counter() - t0, 2),
                        "final_loss": history[-1] if history else None}
    meta["history"] = history
    if batches.pseudo is not None:
        meta["transfer"]["building_frames"] = {"store": str(Path(building_store).resolve()), **batches.describe()}
    _specialise_serving(model, meta, cfg, building_store, anchor)
    if cfg.finetune == STAGE2:
        from tst_ros.train.stage2 import parameter_account

        meta["account"] = parameter_account(model, meta, out_dir)
    save_model(model, meta, out_dir)
    emit_progress(progress_stream, event="model", path=str(Path(out_dir).resolve()), tasks=meta["tasks"],
                  modalities=meta["input_modalities"], metrics={"final_loss": history[-1]["loss"] if history else 0.0})
    return {"model_dir": str(out_dir), "method": enc_meta["method"], "finetune": cfg.finetune, "steps": cfg.steps,
            "batch": cfg.batch, "images": len(items), "seconds": meta["transfer"]["train_seconds"],
            "final_loss": history[-1] if history else None, "account": meta.get("account"),
            "trainable_fraction": round(trained / sum(p.numel() for p in model.parameters()), 5)}


@dataclass
class _Training:
    """What every transfer step reads and updates: the model, its optimiser, the batches and the losses' settings."""
    model: object
    opt: object
    groups: list
    batches: TransferBatches
    tasks: list
    seg_weights: object
    cache: tuple | None                  # frozen encoder: features of every labeled image and its mirror
    building_mm: object | None
    device: object

    def __post_init__(self) -> None:
        self.model.train()
        if self.cache is not None:          # a frozen encoder keeps its batch-norm statistics
            self.model.encoder.eval()

    def step(self, step: int, cfg) -> tuple[dict, int]:
        """One optimiser step at `step`'s learning rate: ({loss name: tensor}, labeled rows)."""
        import torch

        from tst_ros.train.engine import autocast, lr_at

        probing = step < round(cfg.heads_first * cfg.steps)   # heads first, on the encoder as pre-trained (LP-FT)
        scheduled = base_lr(cfg) * lr_at(step, cfg.steps, max(1, cfg.steps // 10), 1.0)
        for g in self.opt.param_groups:
            held = probing and g["name"].startswith("encoder")
            g["lr"] = 0.0 if held else scheduled * g["lr_scale"]
        b, idx, flips = self.batches.draw(step, self.model, self.device)
        with autocast(self.device):
            if self.cache is not None:
                feats = _on_device(np.where(flips[:, None, None, None], self.cache[1][idx], self.cache[0][idx]),
                                   self.device)
            else:
                with torch.set_grad_enabled(not probing):
                    feats = self.model.features({n: _on_device(v, self.device) for n, v in b["inputs"].items()})
        loss, loss_seg, loss_hm, loss_box = _task_losses(self.model, feats, b, self.device, self.tasks,
                                                         self.seg_weights, len(idx))
        loss_mm = self.building_mm.loss(step) if self.building_mm is not None else None
        if loss_mm is not None:
            loss = loss + cfg.building_mm * loss_mm
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for g in self.groups for p in g["params"]], 5.0)
        self.opt.step()
        losses = {"loss": loss, "seg": loss_seg, "heatmap": loss_hm, "box": loss_box,
                  **({"building_mm": loss_mm} if loss_mm is not None else {})}
        return losses, len(idx)


def _record_step(history: list, bar, progress_stream, step: int, total: int, rows: int, t0: float,
                 losses: dict) -> None:
    """Every 10th step and the last: the losses into the history, the progress bar and stream."""
    if step % 10 and step != total - 1:
        return
    rec = {"step": step + 1, **{k: v.detach().item() for k, v in losses.items()}}
    history.append(rec)
    bar.set_postfix(loss=f"{rec['loss']:.3f}")
    elapsed = time.perf_counter() - t0
    emit_progress(progress_stream, stage="transfer", step=step + 1, total=total, loss=rec["loss"],
                  samples_per_s=(step + 1) * rows / max(elapsed, 1e-9), eta_s=elapsed / (step + 1) * (total - step - 1),
                  message=" ".join(f"{k} {v:.3f}" for k, v in rec.items() if k not in ("step", "loss")))


def _specialise_serving(model, meta: dict, cfg, building_store: str | None, anchor: dict | None) -> None:
    """What transfer settles after training: the encoder's interpolation toward `anchor`, its pre-trained
    weights (`tst_ros.perception.interpolation`), the building's batch-norm statistics, flip and zoom averaging."""
    if anchor is not None:
        interpolate_encoder(model, anchor, cfg.encoder_interpolation)
    meta["flip_average"] = bool(cfg.flip_average)
    meta["zoom_average"] = float(cfg.zoom_average)
    if cfg.building_norm_stats:
        from tst_ros.perception.norm_stats import adapt_to_building

        meta["transfer"]["building_statistics"] = adapt_to_building(model, meta, building_store)


def _encoder_for(source: str, cfg, preset: str, image_size: int, patch: int):
    """The encoder to transfer: stage 2 on frozen adapters, or `resolve_encoder`'s."""
    if cfg.finetune == STAGE2:
        from tst_ros.train.stage2 import stage2_encoder

        return stage2_encoder(source, cfg)
    return resolve_encoder(source, preset, image_size, patch)


def _predictor(source: str, cfg, given: list[str]):
    """The frozen pre-trained TST-MM predicting `cfg.predict_inputs` from the given inputs (None: none asked)."""
    if not cfg.predict_inputs:
        return None
    if cfg.finetune == STAGE2:
        raise ValueError("transfer.predict_inputs does not combine with finetune tp-mome")
    from tst_ros.models.cross_modal import load_predictor

    return load_predictor(source, given, list(cfg.predict_inputs))


def _with_detail(encoder, enc_meta: dict, strides) -> tuple:
    """The ImageNet backbone's finer stages reach the heads too (`TransferConfig.detail_strides`);
    an encoder whose heads do not read that backbone's map (a plain ViT, preset `tiny-imagenet-tokens`)
    is returned as it is."""
    from tst_ros.models.generalist import EfficientNetLite0Encoder

    backbone_feeds_heads = isinstance(encoder, EfficientNetLite0Encoder) or getattr(encoder, "stem_map_to_heads", False)
    if not strides or not backbone_feeds_heads:
        return encoder, enc_meta
    encoder.set_detail(strides)
    return encoder, {**enc_meta, "detail_strides": encoder.describe()["detail_strides"]}


def _check_settings(cfg, building_store: str | None) -> list[str]:
    """Refuse settings that contradict each other or the arguments; -> the tasks to train."""
    if cfg.building_norm_stats and not building_store:
        raise ValueError("transfer.building_norm_stats needs the building's store (--building-data)")
    if not 0 <= cfg.encoder_interpolation <= 1:
        raise ValueError(f"transfer.encoder_interpolation is a share in [0, 1] (1: off), "
                         f"got {cfg.encoder_interpolation}")
    if not cfg.zoom_average >= 1:
        raise ValueError(f"transfer.zoom_average is a magnification >= 1 (1: off), got {cfg.zoom_average}")
    if not 0 <= cfg.ema < 1:
        raise ValueError(f"transfer.ema is a decay in [0, 1) (0: off), got {cfg.ema}")
    if cfg.heads_first and (cfg.finetune not in ("full", "partial") or not 0 < cfg.heads_first < 1):
        raise ValueError(f"transfer.heads_first is a share in [0, 1) of the steps and needs finetune full or "
                         f"partial, got {cfg.heads_first} with {cfg.finetune}")
    if cfg.repeat_factor < 0:
        raise ValueError(f"transfer.repeat_factor is an image-share threshold >= 0 (0: off), got {cfg.repeat_factor}")
    tasks = list(dict.fromkeys(cfg.tasks))
    if not tasks or set(tasks) - set(TASKS):
        raise ValueError(f"tasks must be a non-empty subset of {TASKS}, got {tasks}")
    return tasks


def _on_device(array: np.ndarray, device):
    import torch

    return torch.from_numpy(array).to(device, non_blocking=True)


def _task_losses(model, feats, batch: dict, device, tasks=TASKS, seg_weights=None, det_rows: int | None = None):
    """(total, segmentation, heatmap, box) losses of the heads on encoder features; the total
    sums the losses of `tasks`; the heads run under autocast (bf16 on CUDA), the losses in float32;
    `seg_weights` weighs the segmentation loss per class (None: plain cross-entropy); detection
    learns on the first `det_rows` rows only (None: all)."""
    import torch.nn.functional as F

    from tst_ros.perception.heads import box_loss, focal_heatmap_loss
    from tst_ros.train.engine import autocast

    inputs = [_on_device(batch["inputs"][n], device) for n in model.input_modalities] \
        if model.input_stem is not None else []
    with autocast(device):
        seg, heat, box = model.decode(feats, inputs)
    loss_seg = F.cross_entropy(seg.float(), _on_device(batch["semantic"], device), weight=seg_weights,
                               ignore_index=255)
    rows = slice(0, det_rows)
    loss_hm = focal_heatmap_loss(heat[rows].float(), _on_device(batch["heatmap"][rows], device))
    loss_box = box_loss(box[rows].float(), _on_device(batch["box"][rows], device),
                        _on_device(batch["box_weight"][rows], device))
    total = (loss_seg if "segmentation" in tasks else 0.0) + \
        ((loss_hm + 0.5 * loss_box) if "detection" in tasks else 0.0)
    return total, loss_seg, loss_hm, loss_box


def _frozen_features(model, data: TransferData, device, chunk: int = 32):
    """Encoder features of every image and of its mirror image (frozen encoder: computed once,
    kept in host memory)."""
    import torch

    plain, flipped = [], []
    model.encoder.eval()                 # a frozen encoder's normalisation statistics stay as they are
    with torch.no_grad():
        for start in range(0, len(data), chunk):
            sl = slice(start, start + chunk)
            x = {n: torch.from_numpy(v[sl]).to(device) for n, v in data.inputs.items()}
            plain.append(model.features(x).float().cpu().numpy())
            flipped.append(model.features({n: t.flip(-1) for n, t in x.items()}).float().cpu().numpy())
    return np.concatenate(plain), np.concatenate(flipped)
