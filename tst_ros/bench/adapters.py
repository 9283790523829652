"""Modality adapters benchmark: the PSST + TP-MoME ablation on RGB-D and RGB-thermal
segmentation in the test building, from a frozen RGB base, with `tst_ros.bench.specialization`'s
data, held-out frames and seeds; plus the adapter bank's swap latency and building recognition
(`tst_ros.bench.bank`).

The base is TST-MAE (RGB only) pre-trained on the test building's unlabeled store, on preset
`tiny-imagenet` (colour through the frozen ImageNet stem; `spec.COLOUR_STEM_PRESET`) unless `preset`
names another. The second modality (depth or thermal, which the base never saw) gets an input adapter
(initialised from the RGB patch projection, or fresh when colour has a stem) and a LoRA learned without
labels on the same store by `tst_ros.train.psst` (the same PSST step budget in every row that runs it). Stage 2
(`transfer --finetune tp-mome`: task prompts, modality experts, decoder; base and LoRA frozen)
is then trained with the segmentation loss on the other buildings' labels, RGB + the modality
in, with transfer's default heads (input stem included, as `tst-ros transfer` trains them). Rows:

- `stage 2 only`: the modality's input adapter as initialised, no LoRA training;
- `+mae`: PSST's MAE phase only;
- `+mae+dino`: MAE, then MAE + DINO self-distillation with uniform patch weights on every frame;
- `full (error-weighted)`: MAE, then MAE + DINO with error-weighted patches on the complex subset;
- `full fine-tuning`: no PSST, the whole model (encoder, new input, heads) fine-tuned: the baseline.

Stage 2 and full fine-tuning get the same transfer steps. Each model is also evaluated with
the second modality held constant (every held-out image replaced by the set's median value,
`constant_copy`): `modality_worth` = seg mIoU with it minus without it, the most any way of
reading that modality can add. The storage account (per task and
modality) comes from the seed-0 RGB-D `full` adapter with a segmentation and a detection stage 2.
"""
from __future__ import annotations

import logging
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from tst_ros import modalities as registry
from tst_ros.bench import specialization as spec
from tst_ros.config import TransferConfig

MODALITIES = (registry.DEPTH_IMAGE, "thermal")
PSST_STEPS = {"quick": 4, "full": 120}
# Transfer steps per row: stage 2 runs the whole encoder every step (prompts sit in every block),
# so the adapter benchmark uses its own step count, the same for every row.
TRANSFER_STEPS = {"quick": 6, "full": 150}
# Transfer lr of every row (stage 2 and fine-tuning alike): stage 2's default. At 150 steps on home:3, 3e-3 scored
# +6.9 / +11.5 seg (stage 2, depth / thermal) and +7.0 / +13.4 (full fine-tuning) over 1e-3, and 5e-3 +1.2 / +1.7
# and +0.3 / +0.7 over 3e-3
TRANSFER_LR = TransferConfig.stage2_lr
LORA = {"rank": 8, "alpha": 16.0}          # reference: rank 32 at ViT-B width (768); ours is 192 wide
FULL_FINETUNING = "full fine-tuning"
PARTIAL_FINETUNING = "partial fine-tuning"
ROWS = {"stage 2 only": {"warmup_share": 0.0, "error_alpha": 0.0, "complex_fraction": 1.0, "steps": 0},
        "+mae": {"warmup_share": 1.0, "error_alpha": 0.0, "complex_fraction": 1.0},
        "+mae+dino": {"warmup_share": 0.5, "error_alpha": 0.0, "complex_fraction": 1.0},
        "full (error-weighted)": {"warmup_share": 0.5, "error_alpha": 1.0, "complex_fraction": 0.5},
        FULL_FINETUNING: {"finetune": "full"}, PARTIAL_FINETUNING: {"finetune": "partial"}}
SEG_METRICS = ("seg_miou", "things_miou", "stuff_miou", "modality_worth")


def _log(msg: str) -> None:
    logging.getLogger("tst_ros.bench.adapters").info(msg)


def modality_adapter(base: str, store: Path, out: Path, modality: str, row: dict, steps: int, seed: int,
                     batch: int) -> str:
    """A PSST adapter of `modality` on `base` trained as `row` says -> its file."""
    from tst_ros.config import AdaptConfig
    from tst_ros.train.psst import adapt_modality

    steps = row.get("steps", steps)
    warmup = int(round(steps * row["warmup_share"]))
    cfg = AdaptConfig(**LORA, batch=batch, seed=seed, device="cpu", checkpoint_every=0, warmup_steps=warmup,
                      joint_steps=steps - warmup, error_alpha=row["error_alpha"],
                      complex_fraction=row["complex_fraction"])
    return adapt_modality(cfg, str(store), base, modality, out / "adapter.safetensors", progress=False)["adapter"]


def _transfer_row(encoder: str, adapter: str, modality: str, paths: dict, model_dir: Path, budget: dict,
                  steps: int, seed: int, finetune: str, tasks=("segmentation",)) -> dict:
    from tst_ros.perception.transfer import transfer

    cfg = TransferConfig(steps=steps, batch=budget["transfer_batch"], finetune=finetune, seed=seed, lr=TRANSFER_LR,
                         stage2_lr=TRANSFER_LR,
                         labeled_images=budget["labeled_images"], tasks=list(tasks),
                         adapters=[adapter] if finetune == "tp-mome" else [])
    return transfer(encoder, str(paths["other"]), str(model_dir), cfg,
                    input_modalities=[registry.PRIMARY_IMAGE, modality], show_bar=False)


def merged_encoder_file(base: str, adapter: str, out: Path) -> str:
    """The base with `adapter` (its modality input) applied and merged: what full fine-tuning starts from."""
    from tst_ros.models.io import save_encoder
    from tst_ros.models.lora import merge_lora
    from tst_ros.train.stage2 import apply_adapters

    encoder, _ = apply_adapters([adapter], base)
    return str(save_encoder(merge_lora(encoder), out / "encoder.safetensors", method="tst-mae+input"))


def run_modality(seed: int, modality: str, base: str, paths: dict, tmp: Path, budget: dict, steps: dict,
                 names: list[str] | None = None) -> dict:
    from tst_ros.perception.transfer import evaluate

    names = list(names or ROWS)
    rows, adapters = {}, {}
    if any("finetune" in ROWS[n] for n in names) and "stage 2 only" not in names:
        # full fine-tuning starts from the untrained input adapter (no PSST steps: cheap)
        work = tmp / f"{modality}-untrained-{seed}"
        adapters["stage 2 only"] = modality_adapter(base, paths["store"], work, modality, ROWS["stage 2 only"],
                                                    steps["psst"], seed, budget["pretrain_batch"])
    for name in names:
        row = ROWS[name]
        work = tmp / f"{modality}-{name}-{seed}".replace(" ", "_").replace("+", "p")
        _log(f"seed {seed}, {modality}: {name}")
        if "finetune" in row:
            encoder = merged_encoder_file(base, adapters["stage 2 only"], work)
            summary = _transfer_row(encoder, "", modality, paths, work / "model", budget, steps["transfer"], seed,
                                    row["finetune"])
            fraction = summary["trainable_fraction"]
        else:
            adapters[name] = modality_adapter(base, paths["store"], work, modality, row, steps["psst"], seed,
                                              budget["pretrain_batch"])
            summary = _transfer_row(base, adapters[name], modality, paths, work / "model", budget,
                                    steps["transfer"], seed, "tp-mome")
            fraction = summary["account"]["trainable_fraction"]
        metrics = spec.row_metrics(evaluate(str(work / "model"), str(paths["held_out"])))
        constant = 100 * evaluate(str(work / "model"), str(paths[f"held_out_{modality}_constant"]))["miou"]
        rows[name] = {**metrics, "modality_worth": metrics["seg_miou"] - constant,
                      "transfer_seconds": summary["seconds"], "trainable_fraction": fraction}
    rows["_adapters"] = adapters
    return rows


def constant_copy(held_out: Path, modality: str, out: Path) -> Path:
    """A copy of the held-out set whose `modality` images all hold the set's median stored value
    (over valid pixels; pixels holding the registry's invalid value stay invalid): the modality
    carries no information."""
    import cv2

    from tst_ros.sim.labeled_set import png_bytes
    from tst_ros.util import atomic_write_bytes

    shutil.copytree(held_out, out)
    files = sorted((out / modality).glob("*.png"))
    if not files:
        raise ValueError(f"{held_out} holds no {modality} images to replace")
    invalid = registry.get(modality).invalid_value
    images = [cv2.imread(str(f), cv2.IMREAD_UNCHANGED) for f in files]
    valid = [np.ones(im.shape, bool) if invalid is None else im != invalid for im in images]
    median = np.median(np.concatenate([im[v] for im, v in zip(images, valid)]))
    for f, im, v in zip(files, images, valid):
        atomic_write_bytes(f, png_bytes(np.where(v, median, im).astype(im.dtype)))
    return out


def storage_account(base: str, adapter: str, paths: dict, tmp: Path, budget: dict, steps: int) -> dict:
    """Segmentation and detection stage 2 on one modality adapter: per-task and per-modality account."""
    out = {}
    for task in ("segmentation", "detection"):
        summary = _transfer_row(base, adapter, registry.DEPTH_IMAGE, paths, tmp / f"account-{task}", budget, steps, 0,
                                "tp-mome", tasks=(task,))
        out[task] = summary["account"]
    return out


def summarise(per_seed: list[dict], seeds: list[int]) -> dict:
    out = {}
    for name in (n for n in ROWS if n in per_seed[0]):
        row = {}
        for metric in SEG_METRICS:
            values = [round(r[name][metric], 2) for r in per_seed]
            row[metric] = {"mean": round(float(np.mean(values)), 2), "std": round(float(np.std(values)), 2),
                           "seeds": dict(zip(map(str, seeds), values))}
        row["trainable_fraction"] = per_seed[0][name]["trainable_fraction"]
        out[name] = row
    return out


def targets(rows: dict) -> dict:
    if not all(n in rows for n in ("full (error-weighted)", "stage 2 only", FULL_FINETUNING)):
        return {}
    full, s2, ft = (rows[n]["seg_miou"]["mean"] for n in ("full (error-weighted)", "stage 2 only", FULL_FINETUNING))
    return {"full_minus_stage2_only": round(full - s2, 2), "full >= stage 2 only + 2": full >= s2 + 2,
            "full_minus_full_finetuning": round(full - ft, 2), "full >= full fine-tuning - 1": full >= ft - 1,
            "full trains <= 10 %": rows["full (error-weighted)"]["trainable_fraction"] <= 0.10}


def _share_targets(seg_account: dict) -> dict:
    """Stage 2's trained share against 10 %: of the served model, and without a frozen pre-trained
    stem, which enlarges the model without being a part any stage could train."""
    if not seg_account:
        return {}
    return {"stage 2 trains <= 10 %": seg_account["trainable_fraction"] <= 0.10,
            "stage 2 trains <= 10 % without the frozen stem": seg_account["trainable_fraction_without_stem"] <= 0.10}


def table_markdown(by_modality: dict) -> str:
    lines = ["| row | " + " | ".join(f"RGB-{m} seg mIoU (its worth)" for m in by_modality) + " | trained share |",
             "|---|" + "---|" * (len(by_modality) + 1)]
    for name in (n for n in ROWS if n in next(iter(by_modality.values()))):
        cells = [f"{r[name]['seg_miou']['mean']:.1f} ± {r[name]['seg_miou']['std']:.1f} "
                 f"({r[name]['modality_worth']['mean']:+.1f})" for r in by_modality.values()]
        share = next(iter(by_modality.values()))[name]["trainable_fraction"]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {100 * share:.1f} % |")
    return "\n".join(lines)


def run(quick: bool = False, seeds: list[int] | None = None, modalities: tuple[str, ...] = MODALITIES,
        preset: str | None = None, building: str = spec.TEST_BUILDING, rows: list[str] | None = None) -> dict:
    import torch

    key = "quick" if quick else "full"
    budget = spec.BUDGETS[key]
    steps = {"psst": PSST_STEPS[key], "transfer": TRANSFER_STEPS[key]}
    preset = preset or spec.COLOUR_STEM_PRESET
    seeds = list(seeds if seeds is not None else budget["seeds"])
    unknown = sorted(set(rows or ()) - set(ROWS))
    if unknown:
        raise SystemExit(f"bench adapters has no rows {unknown}; rows: {', '.join(ROWS)}")
    torch.set_num_threads(spec.TORCH_THREADS)
    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="tst-bench-adapters-") as tmp:
        tmp = Path(tmp)
        paths = spec.build_data(tmp, budget, thermal="thermal" in modalities, building=building)
        for m in modalities:
            paths[f"held_out_{m}_constant"] = constant_copy(paths["held_out"], m, tmp / f"held_out_{m}_constant")
        per_modality: dict[str, list] = {m: [] for m in modalities}
        account = None
        for seed in seeds:
            _log(f"seed {seed}: RGB base (TST-MAE, {preset})")
            base = spec.pretrain_encoder("tst-mae", paths["store"], tmp / f"base-{seed}", budget, seed, preset=preset)
            for m in modalities:
                per_modality[m].append(run_modality(seed, m, base, paths, tmp, budget, steps, rows))
            if account is None and registry.DEPTH_IMAGE in modalities and "full (error-weighted)" in per_modality[
                    registry.DEPTH_IMAGE][-1]["_adapters"]:
                adapter = per_modality[registry.DEPTH_IMAGE][-1]["_adapters"]["full (error-weighted)"]
                account = storage_account(base, adapter, paths, tmp, budget, steps["transfer"])
    by_modality = {m: summarise(per_seed, seeds) for m, per_seed in per_modality.items()}
    seg_account = (account or {}).get("segmentation", {})
    result = {"test_building": building, "seeds": seeds, "task": "segmentation (RGB + modality)",
              "base": f"TST-MAE (RGB, preset {preset}) pre-trained on the test building, frozen",
              "psst_steps": steps["psst"],
              "transfer_steps": steps["transfer"], "transfer_lr": TRANSFER_LR, "lora": LORA,
              "budget": {k: v for k, v in budget.items() if k not in ("seeds", "transfer_steps")},
              "methods": by_modality, "targets": {m: targets(r) for m, r in by_modality.items()},
              "lora_params_fraction": seg_account.get("lora_fraction"),
              "stage2_trainable_fraction": seg_account.get("trainable_fraction"),
              "stage2_trainable_fraction_without_stem": seg_account.get("trainable_fraction_without_stem"),
              "share_targets": _share_targets(seg_account), "storage_account": account,
              "table_markdown": table_markdown(by_modality)}
    if rows is None:   # a subset of rows is a probe of the ablation, not the whole benchmark
        result.update(_bank_figures(quick))
    result["total_seconds"] = round(time.perf_counter() - t_all, 1)
    return result


def _bank_figures(quick: bool) -> dict:
    """Swap latency and recognition accuracy of the adapter bank (`tst_ros.bench.bank`)."""
    from tst_ros.bench import bank

    figures = bank.run(quick)
    return {"swap_ms": figures["swap_ms"], "recognition_accuracy": figures["recognition_accuracy"],
            "bank": figures}
