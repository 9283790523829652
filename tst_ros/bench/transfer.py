"""`tst-ros bench transfer`: the time of one transfer step (full fine-tuning, the main job's default settings)
of the main job's perception model (the configuration's defaults: its preset, modalities, inputs, resolution
and patch), on labeled images
from the simulator, with its ImageNet backbones in the channels-last layout (as built) and in the contiguous
one. The two layouts take turns step by step, so both see the same machine; each reports its fastest and
median step, and the ratio of the medians. The features of one batch in both layouts show that the layout
changes the speed only (`layouts.max_abs_feature_difference`)."""
from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

LAYOUTS = ("channels_last", "contiguous")


def _training(labeled: Path):
    """The transfer loop's state for a random-weight model of the main job's shape: (run, cfg, data, model)."""
    import numpy as np
    import torch

    from tst_ros.config import Config
    from tst_ros.models import build_encoder
    from tst_ros.perception import transfer as tr
    from tst_ros.perception.augment import Augmentation
    from tst_ros.perception.self_training import TransferBatches

    main_job = Config()
    cfg, pre = main_job.transfer, main_job.pretrain
    torch.manual_seed(cfg.seed)
    items, classes, categories = tr.load_labeled(str(labeled))
    encoder = build_encoder(pre.preset, list(pre.modalities), main_job.record.image_size, pre.patch)
    model, meta = tr.new_model(encoder, encoder.describe(), classes, categories, cfg.inputs or None)
    data = tr.TransferData(items, meta["input_modalities"], meta["preprocessing"], meta["thing_class_ids"])
    groups = tr.param_groups(model, cfg.finetune, cfg.lr, cfg.layer_decay)
    augmentation = Augmentation(cfg.zoom, cfg.colour_jitter, cfg.input_drop, cfg.building_style, cfg.paste)
    batches = TransferBatches(data, None, cfg, np.random.default_rng(cfg.seed), augmentation)
    seg_weights = torch.from_numpy(data.class_weights(len(classes), cfg.class_balance))
    run = tr._Training(model, torch.optim.AdamW(groups), groups, batches, list(cfg.tasks), seg_weights, None, None,
                       torch.device("cpu"))
    return run, cfg, data, model


def _set_layout(model, layout: str) -> None:
    import torch

    from tst_ros.models.generalist import EfficientNetLite0Encoder

    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    for module in model.modules():
        if isinstance(module, EfficientNetLite0Encoder):
            module.set_memory_format(fmt)


def _feature_difference(model, data) -> float:
    """Max abs difference of the encoder's features of the first 4 labeled images in the two layouts."""
    import torch

    x = {n: torch.from_numpy(v[:4]) for n, v in data.inputs.items()}
    feats = {}
    model.eval()
    with torch.no_grad():
        for layout in LAYOUTS:
            _set_layout(model, layout)
            feats[layout] = model.features(x)
    model.train()
    return float((feats[LAYOUTS[0]] - feats[LAYOUTS[1]]).abs().max())


def run(quick: bool = False) -> dict:
    import torch

    from tst_ros.sim import labeled_set

    steps = 2 if quick else 8
    with tempfile.TemporaryDirectory(prefix="tst_bench_transfer_") as tmp:
        labeled_set.write(Path(tmp) / "labeled", 16, seed=1000, progress=False)
        run_, cfg, data, model = _training(Path(tmp) / "labeled")
        difference = _feature_difference(model, data)
        times: dict[str, list[float]] = {layout: [] for layout in LAYOUTS}
        for step in range(steps + 1):                 # the first step of each layout warms up, not counted
            for layout in LAYOUTS:
                _set_layout(model, layout)
                t0 = time.perf_counter()
                run_.step(step, cfg)
                if step:
                    times[layout].append(time.perf_counter() - t0)
    out = {"preset": model.encoder.describe()["preset"], "inputs": ",".join(model.input_modalities),
           "image_size": model.image_size, "batch": cfg.batch,
           "threads": torch.get_num_threads(), "steps_per_layout": steps,
           "layouts.max_abs_feature_difference": float(f"{difference:.3g}")}
    for layout, t in times.items():
        out.update({f"{layout}.median_step_s": round(statistics.median(t), 3),
                    f"{layout}.fastest_step_s": round(min(t), 3)})
    fast, slow = out["channels_last.median_step_s"], out["contiguous.median_step_s"]
    out["contiguous_over_channels_last"] = round(slow / fast, 3)
    out["main_job_transfer_saving_s"] = round((slow - fast) * cfg.steps, 1)     # over the main job's steps
    return out
