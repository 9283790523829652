"""Modality adapters (PSST) ablation: RGB-D segmentation in the test building from a frozen
RGB base encoder, `tst_ros.bench.specialization`'s data, transfer budget, held-out frames and
seeds.

The base is TST-MAE (RGB only) pre-trained on the test building's unlabeled store. Depth
reaches it through a new input adapter (initialised from the RGB patch projection) and a
depth LoRA learned without labels by `tst_ros.train.psst` on the same store; the adapter is
merged into the encoder (`merge_lora`) and the segmentation/detection heads are trained on
the other buildings' labels with the encoder frozen, RGB + depth in. Rows (the same PSST step
budget where PSST runs):

- `no modality tuning`: the depth input adapter as initialised, no LoRA;
- `+mae`: the MAE phase only;
- `+mae+dino`: MAE then MAE + DINO, uniform patch weights, on every frame;
- `full (error-weighted)`: MAE then MAE + DINO with error-weighted patches on the complex subset;
- `full fine-tuning`: no PSST, the whole encoder fine-tuned with the heads (the baseline).

The merged LoRA applies to the RGB tokens as well; per-modality routing (and the task prompts
and modality experts of stage 2) are not part of this benchmark.
"""
from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from tst_ros import modalities as registry
from tst_ros.bench import specialization as spec

PSST_STEPS = {"quick": 4, "full": 120}
ROWS = {"no modality tuning": None,
        "+mae": {"warmup_share": 1.0, "error_alpha": 0.0, "complex_fraction": 1.0},
        "+mae+dino": {"warmup_share": 0.5, "error_alpha": 0.0, "complex_fraction": 1.0},
        "full (error-weighted)": {"warmup_share": 0.5, "error_alpha": 1.0, "complex_fraction": 0.5},
        "full fine-tuning": None}


def _log(msg: str) -> None:
    logging.getLogger("tst_ros.bench.adapters").info(msg)


def adapted_encoder_file(base: str, store: Path, out: Path, row: dict | None, steps: int, seed: int,
                         batch: int) -> str:
    """The base with the depth adapter of `row` (None: untrained) merged, saved as an encoder file."""
    from tst_ros.config import AdaptConfig
    from tst_ros.models.io import encoder_path, save_encoder
    from tst_ros.models.lora import merge_lora
    from tst_ros.train.psst import adapt_modality, adapted_encoder, apply_adapter

    cfg = AdaptConfig(rank=8, alpha=16.0, batch=batch, seed=seed, device="cpu", checkpoint_every=0)
    if row is None:
        encoder, _ = adapted_encoder(encoder_path(base), registry.DEPTH_IMAGE, cfg.rank, cfg.alpha, tuple(cfg.targets))
    else:
        warmup = int(round(steps * row["warmup_share"]))
        cfg = replace(cfg, warmup_steps=warmup, joint_steps=steps - warmup, error_alpha=row["error_alpha"],
                      complex_fraction=row["complex_fraction"])
        adapter = adapt_modality(cfg, str(store), base, registry.DEPTH_IMAGE, out / "adapter.safetensors",
                                 progress=False)
        encoder, _ = apply_adapter(adapter["adapter"], base)
    return str(save_encoder(merge_lora(encoder), out / "encoder.safetensors"))


def run_seed(seed: int, paths: dict, tmp: Path, budget: dict, steps: int) -> dict[str, dict]:
    from tst_ros.config import TransferConfig
    from tst_ros.perception.transfer import evaluate, transfer

    _log(f"seed {seed}: RGB base (TST-MAE)")
    base = spec.pretrain_encoder("tst-mae", paths["store"], tmp / f"base-{seed}", budget, seed)
    rows = {}
    for name, row in ROWS.items():
        _log(f"seed {seed}: {name}")
        encoder = adapted_encoder_file(base, paths["store"], tmp / f"adapter-{name}-{seed}".replace(" ", "_"), row,
                                       steps, seed, budget["pretrain_batch"])
        finetune = "full" if name == "full fine-tuning" else budget["finetune"]
        cfg = TransferConfig(steps=budget["transfer_steps"], batch=budget["transfer_batch"], finetune=finetune,
                             seed=seed, labeled_images=budget["labeled_images"])
        model_dir = tmp / f"model-{name}-{seed}".replace(" ", "_")
        summary = transfer(encoder, str(paths["other"]), str(model_dir), cfg, input_modalities=[registry.PRIMARY_IMAGE, registry.DEPTH_IMAGE],
                           show_bar=False)
        rows[name] = {**spec.row_metrics(evaluate(str(model_dir), str(paths["held_out"]))),
                      "transfer_seconds": summary["seconds"]}
    return rows


def run(quick: bool = False) -> dict:
    import torch

    budget = spec.BUDGETS["quick" if quick else "full"]
    steps = PSST_STEPS["quick" if quick else "full"]
    seeds = list(budget["seeds"])
    torch.set_num_threads(spec.TORCH_THREADS)
    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="tst-bench-adapters-") as tmp:
        tmp = Path(tmp)
        paths = spec.build_data(tmp, budget)
        per_seed = [run_seed(seed, paths, tmp, budget, steps) for seed in seeds]
    summary = spec.summarise(per_seed, seeds)
    return {"test_building": "seed 0, style home", "seeds": seeds, "task": "RGB-D segmentation and detection",
            "base": "TST-MAE (RGB) pre-trained on the test building, frozen", "psst_steps": steps,
            "budget": {k: v for k, v in budget.items() if k != "seeds"}, "methods": summary,
            "table_markdown": spec.table_markdown(summary), "total_seconds": round(time.perf_counter() - t_all, 1)}
