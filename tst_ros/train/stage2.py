"""Stage 2 of modality adapters (TP-MoME): the frozen base encoder with its frozen modality
LoRAs (`tst_ros.train.psst` adapter files), plus task prompts, modality experts
(`tst_ros.models.tpmome`) and the task decoder, trained with the task loss only by
`tst_ros.perception.transfer` (`finetune: tp-mome`).

- `apply_adapters(files, base)`: the base with every adapter's modality input and LoRA. Several
  LoRAs on one layer are stacked into one of the summed rank (down rows concatenated, each
  up scaled by its own alpha/rank), which computes exactly the sum of the separate adapters.
- `stage2_encoder(base, cfg)`: that encoder wrapped in a `PromptedEncoder`; only the prompts,
  experts and missing-modality token train.
- `task_parts` / `parameter_account`: what one task adds on top of the base and the modality
  adapters (prompts, experts, input stem and pyramid, that task's head), and the parameter / storage account
  per task and per modality that `tst-ros transfer` prints.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from tst_ros.models.lora import LoRALinear, inject_lora, lora_modules
from tst_ros.models.tpmome import STAGE2_PREFIXES, prompted_encoder

TASK_PARTS_FILE = "task_parts.safetensors"
TASK_HEADS = {"segmentation": ("seg_head.",), "detection": ("det_head.",)}


def read_adapter(adapter_file: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """A modality adapter file -> (tensors, metadata); anything else is refused."""
    from safetensors import safe_open

    from tst_ros.train.psst import ADAPTER_FORMAT

    with safe_open(str(adapter_file), framework="pt", device="cpu") as f:
        meta = json.loads((f.metadata() or {}).get("tst_ros", "{}"))
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    if meta.get("format") != ADAPTER_FORMAT:
        raise ValueError(f"{adapter_file} is not a tst_ros modality adapter ({ADAPTER_FORMAT})")
    return tensors, meta


def apply_adapters(adapter_files: list[str | Path], base: str | Path):
    """-> (base encoder with every adapter applied, frozen, eval mode; the adapters' metadata)."""
    from tst_ros.models.io import encoder_path, read_encoder
    from tst_ros.models.vit import build_encoder
    from tst_ros.train.psst import check_base

    base_file = encoder_path(base)
    adapters = [read_adapter(f) for f in adapter_files]
    for (_, meta), f in zip(adapters, adapter_files):
        check_base(base_file, meta["base_sha256"], f)
    targets = {tuple(m["targets"]) for _, m in adapters}
    if len(targets) > 1:
        raise ValueError(f"adapters with different LoRA targets cannot be stacked: {sorted(targets)}")
    state, base_meta = read_encoder(base_file)
    names = list(dict.fromkeys(base_meta["modalities"] + [m["modality"] for _, m in adapters]))
    encoder = build_encoder(base_meta["preset"], names, base_meta["image_size"], base_meta["patch"])
    for tensors, _ in adapters:
        state.update({k[6:]: v for k, v in tensors.items() if k.startswith("input/")})
    encoder.load_state_dict(state)
    encoder.requires_grad_(False)
    if adapters:
        _stack_lora(encoder, adapters, tuple(targets.pop()))
    return encoder.eval(), [m for _, m in adapters]


def _stack_lora(encoder, adapters: list[tuple[dict, dict]], targets: tuple[str, ...]) -> None:
    ranks = [int(m["rank"]) for _, m in adapters]
    total = sum(ranks)
    alpha = float(adapters[0][1]["alpha"]) if len(adapters) == 1 else float(total)   # scale 1 when stacked
    inject_lora(encoder, total, alpha, targets)
    with torch.no_grad():
        for name, layer in lora_modules(encoder).items():
            downs, ups = [], []
            for tensors, meta in adapters:
                scale = float(meta["alpha"]) / int(meta["rank"])
                downs.append(tensors[f"lora/{name}.down"])
                ups.append(tensors[f"lora/{name}.up"] * (scale / layer.scale))
            layer.down.copy_(torch.cat(downs, dim=0))
            layer.up.copy_(torch.cat(ups, dim=1))
    encoder.requires_grad_(False)


def lora_description(encoder) -> dict | None:
    layers = lora_modules(encoder)
    if not layers:
        return None
    first: LoRALinear = next(iter(layers.values()))
    targets = sorted({"mlp" if ".mlp." in n else "attention" for n in layers})
    return {"rank": first.rank, "alpha": first.alpha, "targets": targets}


def stage2_encoder(base: str, cfg):
    """The stage-2 encoder of `cfg` (a TransferConfig: adapters, prompts, mome_layers,
    expert_hidden, modality_drop) on base `base` -> (PromptedEncoder, description for model.json)."""
    from tst_ros.models.io import encoder_path
    from tst_ros.util import sha256_file

    encoder, metas = apply_adapters(list(cfg.adapters), base)
    depth = len(encoder.blocks)
    layers = tuple(sorted({int(i) % depth for i in cfg.mome_layers}))
    prompted = prompted_encoder(encoder, cfg.prompts, layers, cfg.expert_hidden, cfg.modality_drop)
    base_file = encoder_path(base)
    desc = {**prompted.describe(), "method": "tp-mome", "source": str(base_file.resolve()),
            "base_sha256": sha256_file(base_file), "lora": lora_description(encoder),
            "adapters": [{"file": str(Path(f).resolve()), "modality": m["modality"], "rank": m["rank"],
                          "parameters": m.get("parameters")} for f, m in zip(cfg.adapters, metas)]}
    return prompted, desc


def task_parts(model, task: str) -> dict[str, torch.Tensor]:
    """The tensors one task adds on top of the base and the modality adapters."""
    heads = TASK_HEADS[task]
    out = {}
    for name, t in model.state_dict().items():
        leaf = name[len("encoder."):] if name.startswith("encoder.") else None
        if ((leaf is not None and leaf.startswith(STAGE2_PREFIXES))
                or name.startswith(("pyramid.", "input_stem.") + heads)):
            out[name] = t.detach().cpu().contiguous()
    return out


def _count(tensors) -> int:
    return int(sum(t.numel() for t in tensors))


def parameter_account(model, meta: dict, out_dir: str | Path) -> dict:
    """Parameters and bytes: the frozen base, each modality adapter, each trained task's parts
    (written to MODEL_DIR/task_parts.safetensors)."""
    from safetensors.torch import save as st_save

    from tst_ros.util import atomic_write_bytes

    enc = meta["encoder"]
    encoder_total = _count(model.encoder.state_dict().values())
    lora = _count(t for n, t in model.encoder.state_dict().items() if n.endswith((".down", ".up")))
    stage2 = _count(t for n, t in model.encoder.state_dict().items() if n.startswith(STAGE2_PREFIXES))
    account = {"encoder_parameters": encoder_total - stage2, "lora_parameters": lora,
               "lora_fraction": round(lora / max(1, encoder_total - stage2 - lora), 5), "modalities": {}, "tasks": {}}
    for a in enc.get("adapters", []):
        size = Path(a["file"]).stat().st_size if Path(a["file"]).is_file() else None
        account["modalities"][a["modality"]] = {"parameters": a.get("parameters"), "bytes": size, "trainable": 0}
    account["base_parameters"] = account["encoder_parameters"] - sum(
        m["parameters"] or 0 for m in account["modalities"].values())
    parts_all = {}
    for task in meta["tasks"]:
        parts = task_parts(model, task)
        parts_all.update(parts)
        account["tasks"][task] = {"parameters": _count(parts.values()), "trainable": _count(parts.values()),
                                  "bytes": len(st_save(parts))}
    total = encoder_total - stage2 + _count(parts_all.values())
    account["total_parameters"] = total
    account["trainable_parameters"] = _count(parts_all.values())
    account["trainable_fraction"] = round(account["trainable_parameters"] / max(1, total), 5)
    # a frozen pre-trained colour stem enlarges the total; the share without it is reported beside
    stem = _count(t for n, t in model.encoder.state_dict().items() if ".backbone." in n)
    account["pretrained_stem_parameters"] = stem
    account["trainable_fraction_without_stem"] = round(account["trainable_parameters"] / max(1, total - stem), 5)
    atomic_write_bytes(Path(out_dir) / TASK_PARTS_FILE, st_save(parts_all, metadata={"tst_ros": json.dumps(
        {"format": "tst_ros.task_parts/1", "tasks": meta["tasks"], "base_sha256": enc.get("base_sha256")})}))
    return account


def format_account(account: dict) -> str:
    lines = [f"{'part':<28}{'parameters':>12}{'trainable':>12}{'bytes':>12}",
             f"{'base encoder (frozen)':<28}{account['base_parameters']:>12,}{0:>12}{'':>12}"]
    for name, m in account["modalities"].items():
        lines.append(f"{'modality adapter ' + name:<28}{m['parameters'] or 0:>12,}{0:>12}{m['bytes'] or 0:>12,}")
    for name, t in account["tasks"].items():
        lines.append(f"{'task ' + name:<28}{t['parameters']:>12,}{t['trainable']:>12,}{t['bytes']:>12,}")
    lines.append(f"trainable {account['trainable_parameters']:,} of {account['total_parameters']:,} "
                 f"({100 * account['trainable_fraction']:.1f} %); "
                 f"LoRA {100 * account['lora_fraction']:.2f} % of the encoder")
    if account.get("pretrained_stem_parameters"):
        lines.append(f"without the frozen pre-trained stem ({account['pretrained_stem_parameters']:,}): "
                     f"{100 * account['trainable_fraction_without_stem']:.1f} % trainable")
    return "\n".join(lines)
