"""Paper-table benchmark: on one test building and at the same budget, scratch vs TST-MAE vs
TST-MM (and an oracle), measured by segmentation mIoU (all, things, stuff) and detection mAP on
held-out frames of that building, over several seeds.

Protocol (same data, steps and seeds for every row):
  1. an unlabeled store of the TEST building (`--building`, default seed 0, style home): the first `record_frames`
     frames of its trajectory (`data.from_sim.build_dataset`);
  2. pre-training with the TST engine (`train.pretrain.pretrain`; `scratch` = random init), with the loop's
     recipe (the config defaults) on the tiny preset from random init, except rows that name another preset;
  3. transfer of segmentation + detection heads on a labeled set from OTHER buildings (seeds >= 1000,
     SOURCE_STYLES) with the same steps, batch, lr (the main job's `transfer.lr`) and fine-tuning mode;
  4. evaluation on `eval_images` consecutive held-out frames of the test building, from the stretch of the
     trajectory lap after the recorded frames (never seen in pre-training).
Rows and what each measures: `tst_ros.bench.spec_rows`.
Gap closed = (row - scratch) / (oracle - scratch) on seg mIoU means. A PNG shows sample predictions of the first
seed. `rows` runs some rows only (same data and seeds); with
`serving_variants` every model is also evaluated without and with flip averaging, each with its
own batch-norm statistics and with statistics from the building's store, and with its encoder's
weights moved back toward the pre-trained ones (WiSE-FT; rows "NAME [VARIANT]").
On a GPU (`--device cuda`, `--preset s|b`) pre-training and transfer run in bf16; runs of some seeds and rows each
(`--seeds`, `--rows`) merge into one table (`--merge`, `tst_ros.bench.seed_runs`).
"""
from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path

from tst_ros.bench.data import (EVAL_GAP, SOURCE_BUILDINGS, TEST_BUILDING, add_source_buildings,  # noqa: F401
                                 bench_data, build_data)
from tst_ros.bench.seed_runs import merge_runs, summarise, table_markdown  # noqa: F401  (also used through this module)
from tst_ros.bench.spec_rows import PRETRAININGS, ROW_TRANSFER, ROWS, SERVING_VARIANTS  # noqa: F401
from tst_ros.config import PretrainConfig, TransferConfig
from tst_ros.util import resolve_device

OUT_DIR = Path("bench")
DEFAULT_FINETUNE = TransferConfig.finetune      # the main job's transfer: one protocol for both
LOOP_IMAGE_SIZE = PretrainConfig.image_size     # and its resolution

BUDGETS = {
    "quick": {"record_frames": 24, "pretrain_steps": 6, "pretrain_batch": 8, "pretrain_lr": 1e-3, "labeled_images": 24,
              "transfer_steps": 20, "transfer_batch": 8, "transfer_lr": TransferConfig.lr, "eval_images": 8,
              "finetune": DEFAULT_FINETUNE, "image_size": LOOP_IMAGE_SIZE, "seeds": [0], "preset": "tiny",
              "device": "cpu"},
    "full": {"record_frames": 140, "pretrain_steps": 200, "pretrain_batch": 16, "pretrain_lr": 1e-3,
             "labeled_images": 240, "transfer_steps": 300, "transfer_batch": 16, "transfer_lr": TransferConfig.lr,
             "eval_images": 200, "finetune": DEFAULT_FINETUNE, "image_size": LOOP_IMAGE_SIZE, "seeds": [0, 1, 2],
             "preset": "tiny", "device": "cpu"},
}
# One intra-op thread: on a shared 2-core machine multi-threaded torch stalls on contended
# cores (measured 10x slower per step under load); results are recorded with the count used.
TORCH_THREADS = 1
# the base of `--scaling` and of `bench adapters` (unless its --preset names another): colour through the
# ImageNet backbone, as their documented figures were measured (before depth got its own backbone by default)
COLOUR_STEM_PRESET = "tiny-imagenet"


def check_image_size(size: int) -> int:
    """Every preset's patch (16) and the ImageNet backbone's deepest stride (32) must divide it."""
    if size <= 0 or size % 32:
        raise ValueError(f"image size must be a positive multiple of 32 (patch 16, backbone stride 32), got {size}")
    return int(size)


def _read_result(path: str) -> dict:
    import json

    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot merge {path}: {e}") from None


def check_preset(name: str) -> str:
    from tst_ros.models import PRESETS
    if name not in PRESETS or PRESETS[name].get("stem"):
        plain = [p for p in PRESETS if not PRESETS[p].get("stem")]
        raise ValueError(f"--preset names a plain ViT preset: one of {plain}, got {name!r}")
    return name


def sensor_modalities() -> list[str]:
    """What TST-MM pre-trains on by default: the loop's configured modalities."""
    return list(PretrainConfig().modalities)


def teacher_modalities() -> list[str]:
    from tst_ros import modalities as registry
    return [m.name for m in registry.teachers()]


def pretraining_modalities(spec) -> list[str] | None:
    if spec == "sensors+teachers":
        return sensor_modalities() + teacher_modalities()
    return spec


def _log(msg: str) -> None:
    logging.getLogger("tst_ros.bench.specialization").info(msg)


def pretrain_config(method: str, steps: int, budget: dict, seed: int, preset: str):
    """The benchmark's pre-training: the loop's recipe at the budget's batch, lr and image size,
    one process on the budget's device (bf16 on CUDA), no periodic checkpoints."""
    return PretrainConfig(preset=preset, method=method, steps=steps, batch=budget["pretrain_batch"],
                          lr=budget["pretrain_lr"], warmup_steps=max(1, steps // 10),
                          image_size=budget["image_size"], patch=16, seed=seed, workers=0, checkpoint_every=0,
                          device=budget["device"], tensorboard=False, val_batches=1)


def pretrain_encoder(method: str, store: Path, out: Path, budget: dict, seed: int,
                     modalities: list[str] | None = None, init: str = "", steps_factor: int = 1,
                     target_only: list[str] | None = None, preset: str | None = None,
                     colour_only_share: float = 0.0) -> str:
    """The encoder file of one pre-training at the benchmark budget."""
    from tst_ros.train.pretrain import pretrain

    cfg = pretrain_config(method, budget["pretrain_steps"] * steps_factor, budget, seed, preset or budget["preset"])
    if modalities:
        cfg.modalities = list(modalities)
    cfg.init = init
    cfg.target_only = list(target_only or [])
    cfg.colour_only_share = colour_only_share
    return pretrain(cfg, str(store), out)["encoder"]


def row_metrics(result: dict) -> dict:
    return {"seg_miou": 100 * result["miou"], "things_miou": 100 * result["things_miou"],
            "stuff_miou": 100 * result["stuff_miou"], "det_map": 100 * result["map"],
            "det_map50": 100 * result["map50"],
            "per_class_iou": {r["name"]: None if r["iou"] is None else 100 * r["iou"] for r in result["per_class_iou"]}}


def _needed(pretrainings: dict, keys: set[str]) -> list[str]:
    """The pre-trainings that `keys` need, each after the one it starts from."""
    order: list[str] = []

    def add(key: str) -> None:
        if key in pretrainings and key not in order:
            if pretrainings[key].init:
                add(pretrainings[key].init)
            order.append(key)
    for key in pretrainings:
        if key in keys:
            add(key)
    return order


def evaluate_serving_variants(model_dir: Path, paths: dict, encoder_source: str) -> dict[str, dict]:
    """A trained model evaluated without and with flip averaging, each with its own batch-norm
    statistics and re-estimated on the building's store, its encoder interpolated toward `encoder_source`'s
    pre-trained weights (not for a random encoder), and zoom-averaged (`SERVING_VARIANTS`)."""
    from tst_ros.perception.heads import load_model
    from tst_ros.perception.interpolation import encoder_anchor, interpolate_encoder
    from tst_ros.perception.norm_stats import building_inputs, reestimate_batch_norms
    from tst_ros.perception.runtime import Predictor
    from tst_ros.perception.transfer import evaluate, resolve_encoder

    out, frames, anchor = {}, None, None
    for label, (building_stats, flip, share, zoom) in SERVING_VARIANTS.items():
        if share < 1 and encoder_source == "scratch":
            continue
        model, meta = load_model(model_dir)
        if share < 1:
            if anchor is None:                  # the pre-trained weights, read once
                anchor = encoder_anchor(resolve_encoder(encoder_source, image_size=meta["image_size"])[0])
            interpolate_encoder(model, anchor, share)
        if building_stats:
            frames = frames if frames is not None else building_inputs(str(paths["store"]), meta)   # read once
            reestimate_batch_norms(model, frames)
        predictor = Predictor.from_torch_model(model, {**meta, "flip_average": flip, "zoom_average": zoom},
                                               str(model_dir))
        out[label] = row_metrics(evaluate(str(model_dir), str(paths["held_out"]), predictor=predictor))
    return out


def run_seed(seed: int, paths: dict, tmp: Path, budget: dict, rows_run: list[tuple], pretrainings: dict,
             figure: Path | None = None, variants: bool = False) -> dict[str, dict]:
    """Pre-train, transfer and evaluate `rows_run` (ROWS-like tuples whose pre-training keys
    are in `pretrainings`) with one seed; with `variants`, each model's `evaluate_serving_variants` too,
    as rows "NAME [VARIANT]"."""
    from tst_ros.perception.transfer import GENERALIST, evaluate, transfer

    encoders = {GENERALIST: GENERALIST}
    for key in _needed(pretrainings, {r[1] for r in rows_run}):
        p = pretrainings[key]
        _log(f"seed {seed}: pre-training {key}")
        encoders[key] = pretrain_encoder(p.method, paths[p.data], tmp / f"pretrain-{key}-{seed}", budget, seed,
                                         pretraining_modalities(p.modalities), encoders.get(p.init, ""), p.steps_factor,
                                         teacher_modalities() if p.teachers_target_only else None, p.preset,
                                         p.colour_only_share)
    rows, model_dirs = {}, {}
    for name, key, inputs, labels, finetune in rows_run:
        _log(f"seed {seed}: transfer + eval {name}")
        cfg = TransferConfig(steps=budget["transfer_steps"], batch=budget["transfer_batch"], seed=seed,
                             finetune=finetune or budget["finetune"], device=budget["device"],
                             labeled_images=budget["labeled_images"],
                             **{"lr": budget["transfer_lr"], **ROW_TRANSFER.get(name, {})})
        model_dir = tmp / f"model-{name.replace(' ', '_')}-{seed}"
        summary = transfer(encoders[key], str(paths[labels]), str(model_dir), cfg, image_size=budget["image_size"],
                           input_modalities=inputs, show_bar=False, building_store=str(paths["store"]))
        rows[name] = {**row_metrics(evaluate(str(model_dir), str(paths["held_out"]))),
                      "transfer_seconds": summary["seconds"]}
        model_dirs[name] = str(model_dir)
        if variants:
            variant_rows = evaluate_serving_variants(model_dir, paths, encoders[key])
            rows.update({f"{name} [{label}]": r for label, r in variant_rows.items()})
    if figure is not None:
        from tst_ros.bench.samples import sample_figure

        sample_figure({n: d for n, d in model_dirs.items() if n in ("scratch", "tst-mae", "tst-mm", "oracle")},
                      paths["held_out"], figure)
    return rows


def run(quick: bool = False, rows: list[str] | None = None, scaling: bool = False, finetune: str | None = None,
        building: str = TEST_BUILDING, image_size: int | None = None, serving_variants: bool = False,
        preset: str | None = None, device: str = "cpu", seeds: list[int] | None = None,
        merge: list[str] | None = None, data: str | None = None) -> dict:
    """Every row (or those named in `rows`) at the quick or the full budget on the test `building`
    ("style:seed"), the encoder transferred as `finetune` says (default: the budget's) unless a
    row fixes it, every stage at `image_size` px (default: the loop's), the plain-ViT rows on
    `preset` (default: tiny), pre-training and transfer on `device`, with `seeds` instead of the
    budget's, on the data in `data` (built there once, `bench.data.bench_data`; default: a
    temporary directory); with `scaling`, the compute-scaling curve instead; with `merge`, the
    result of those JSON files (runs of some seeds and rows) merged, nothing run."""
    import torch

    if (merge or scaling) and (preset or device != "cpu" or seeds is not None or data):
        raise ValueError("--preset, --device, --seeds and --data apply to a table run, not to --merge or --scaling")
    if merge:
        return merge_runs([_read_result(f) for f in merge])
    if scaling:
        from tst_ros.bench import scaling as compute_scaling

        return compute_scaling.run(quick, building=building)
    if unknown := set(rows or []) - {r[0] for r in ROWS}:
        raise ValueError(f"unknown rows {sorted(unknown)}; rows: {[r[0] for r in ROWS]}")
    rows_wanted = list(rows or [r[0] for r in ROWS])
    budget = {**BUDGETS["quick" if quick else "full"], **({"finetune": finetune} if finetune else {}),
              **({"image_size": check_image_size(image_size)} if image_size is not None else {}),
              **({"preset": check_preset(preset)} if preset else {}), "device": resolve_device(device)}
    seeds = list(seeds if seeds is not None else budget["seeds"])
    torch.set_num_threads(TORCH_THREADS)
    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="tst-bench-spec-") as tmp:
        tmp = Path(tmp)
        rows_run = [r for r in ROWS if r[0] in rows_wanted]
        needed = [PRETRAININGS[k] for k in _needed(PRETRAININGS, {r[1] for r in rows_run})]
        paths = bench_data(Path(data) if data else tmp / "data", budget, building,
                           teacher_modalities() if any(p.modalities for p in needed) else None,
                           source_store=any(p.data == "source_store" for p in needed),
                           mixed_store=any(p.data == "mixed_store" for p in needed))
        figure = OUT_DIR / f"specialization_samples{_file_suffix(quick, budget, building)}.png"
        OUT_DIR.mkdir(exist_ok=True)
        figure_rows = figure if {"scratch", "tst-mm"} <= set(rows_wanted) else None
        per_seed = [run_seed(seed, paths, tmp, budget, rows_run, PRETRAININGS, figure_rows if i == 0 else None,
                             serving_variants) for i, seed in enumerate(seeds)]
    rows = summarise(per_seed, seeds)
    return {**_protocol(budget, building, rows_wanted), "seeds": seeds, "device": budget["device"] + (
                f" ({torch.cuda.get_device_name(budget['device'])})" if budget["device"] != "cpu" else ""),
            "torch_threads": torch.get_num_threads(), "methods": rows,
            "gap_closed": {name: row["gap_closed"] for name, row in rows.items()},
            "figure": str(figure_rows) if figure_rows else None, "table_markdown": table_markdown(rows),
            "total_seconds": round(time.perf_counter() - t_all, 1)}


def _file_suffix(quick: bool, budget: dict, building: str) -> str:
    """The sample figure's name suffix: what differs from the default full run."""
    suffix = "_quick" if quick else ("" if budget["finetune"] == DEFAULT_FINETUNE else f"_{budget['finetune']}")
    suffix += "" if building == TEST_BUILDING else "_" + building.replace(":", "")
    suffix += "" if budget["image_size"] == LOOP_IMAGE_SIZE else f"_{budget['image_size']}px"
    return suffix + ("" if budget["preset"] == "tiny" else f"_{budget['preset']}")


def _protocol(budget: dict, building: str, rows_wanted: list[str]) -> dict:
    """What defines the run's protocol (merged runs must agree on it): data, budget, encoders, inputs."""
    inputs = {name: ",".join(i or (["rgb", "depth"] if m.startswith("tst-mm") else ["rgb"]))
              for name, m, i, _, _ in ROWS if name in rows_wanted}
    return {"test_building": building, "budget": {k: v for k, v in budget.items() if k != "seeds"},
            "eval_frames": {"count": budget["eval_images"], "first": budget["record_frames"] + EVAL_GAP,
                            "recorded_frames": [0, budget["record_frames"] - 1]},
            "encoder": {"image_size": budget["image_size"], "patch": 16, "presets": {
                name: (PRETRAININGS[m].preset or budget["preset"]) if m in PRETRAININGS else "efficientnet-lite0"
                for name, m, *_ in ROWS if name in rows_wanted}},
            "inputs": inputs, "finetune": {n: f or budget["finetune"] for n, _, _, _, f in ROWS if n in rows_wanted},
            "transfer_overrides": {n: o for n, o in ROW_TRANSFER.items() if n in rows_wanted}}
