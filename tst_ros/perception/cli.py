"""`tst-ros transfer`, `tst-ros eval`, `tst-ros export`."""
from __future__ import annotations

import argparse
import json
import logging
import sys

from tst_ros import config


def register(sub) -> None:
    p = sub.add_parser("transfer", help="fine-tune segmentation + detection heads on a COCO-style labeled set")
    config.add_config_arguments(p)
    p.add_argument("--encoder", required=True, help="pre-training run dir / encoder .safetensors, 'scratch', or "
                   "'generalist' (ImageNet EfficientNet-Lite0, the baseline)")
    p.add_argument("--labeled", help="COCO-style labeled set from OTHER buildings (default: transfer.labeled_set)")
    p.add_argument("--out", required=True, help="model directory to write (model.safetensors + model.json)")
    p.add_argument("--finetune", choices=["frozen", "partial", "full", "tp-mome"],
                   help="encoder fine-tuning mode; tp-mome: stage 2 of modality adapters (task prompts + modality "
                        "experts + heads on the frozen encoder and its frozen --adapter LoRAs)")
    p.add_argument("--adapter", action="append", dest="adapters",
                   help="modality adapter file from `tst-ros adapt-modality` (repeatable; with --finetune tp-mome)")
    p.add_argument("--tasks", help="comma-separated tasks to train: segmentation,detection (default: both)")
    p.add_argument("--layer-decay", type=float, help="layer-wise lr decay over encoder blocks (e.g. 0.75)")
    p.add_argument("--steps", type=int)
    p.add_argument("--batch", type=int)
    p.add_argument("--lr", type=float, help="learning rate (transfer.lr; with tp-mome, transfer.stage2_lr)")
    p.add_argument("--seed", type=int)
    p.add_argument("--images", type=int, help="use at most this many labeled images (0: all)")
    p.add_argument("--inputs",
                   help="comma-separated input modalities (default: transfer.inputs, else rgb plus depth when the "
                        "encoder accepts it)")
    p.add_argument("--building-data", help="the building's dataset store, for self-training "
                   "(--set transfer.self_training=SHARE, labels fused across views with "
                   "transfer.pseudo_fusion=VOXEL_M), its look on the labeled images "
                   "(--set transfer.building_style=SHARE), masked modeling on its frames "
                   "(--set transfer.building_mm=WEIGHT) and its batch-norm statistics "
                   "(--set transfer.building_norm_stats=true)")
    p.add_argument("--preset", default="tiny", help="encoder preset for --encoder scratch")
    p.add_argument("--image-size", type=int, default=128, help="input size for --encoder scratch or generalist")
    p.add_argument("--patch", type=int, default=16, help="patch size for --encoder scratch")
    p.add_argument("--progress-jsonl", action="store_true", help="print progress as JSON lines on stdout")
    p.add_argument("--debug", action="store_true")
    p.set_defaults(func=run_transfer)

    p = sub.add_parser("eval", help="mIoU / per-class IoU and COCO mAP of a model on a labeled set, as JSON")
    p.add_argument("--model", required=True, help="model directory (PyTorch) or .onnx file (ONNX Runtime)")
    p.add_argument("--labeled", required=True, help="held-out labeled set of the test building")
    p.add_argument("--json", action="store_true", help="print JSON only (default: IoU table on stderr too)")
    p.add_argument("--score-threshold", type=float, default=0.05)
    p.add_argument("--nms-iou", type=float, default=0.5)
    p.add_argument("--limit", type=int, default=0, help="evaluate only the first N images")
    p.add_argument("--out", help="also write the JSON here")
    p.add_argument("--debug", action="store_true")
    p.set_defaults(func=run_eval)

    p = sub.add_parser("export", help="export a model to ONNX (static shapes, metadata) with a parity check")
    p.add_argument("--model", required=True, help="model directory written by `tst-ros transfer`")
    p.add_argument("--out", required=True, help="x.onnx (manifest: x.onnx.manifest.json) or a directory")
    p.add_argument("--tolerance", type=float, default=1e-4, help="max abs logit difference PyTorch vs ORT")
    p.add_argument("--frames", help="labeled set to take real parity frames from (default: the transfer set, "
                                    "else simulator frames)")
    p.add_argument("--flip-average", action=argparse.BooleanOptionalAction, default=None,
                   help="serve each frame also mirrored and average (2x inference); default: as the model was "
                        "transferred (transfer.flip_average)")
    p.add_argument("--debug", action="store_true")
    p.set_defaults(func=run_export)


def run_transfer(args) -> int:
    from tst_ros.perception.transfer import STAGE2, transfer

    cfg = config.from_args(args)
    t = cfg.transfer
    for flag, field in (("finetune", "finetune"), ("layer_decay", "layer_decay"), ("steps", "steps"),
                        ("batch", "batch"), ("seed", "seed"), ("images", "labeled_images")):
        value = getattr(args, flag)
        if value is not None:
            setattr(t, field, value)
    if args.lr is not None:
        setattr(t, "stage2_lr" if t.finetune == STAGE2 else "lr", args.lr)
    if args.adapters:
        t.adapters = list(args.adapters)
    if args.tasks:
        t.tasks = [s for s in args.tasks.split(",") if s]
    labeled = args.labeled or t.labeled_set
    if not labeled:
        raise ValueError("no labeled set: pass --labeled DIR (make one with `tst-ros sim labeled-set`)")
    inputs = [s for s in args.inputs.split(",") if s] if args.inputs else None
    summary = transfer(args.encoder, labeled, args.out, t, preset=args.preset, image_size=args.image_size,
                       patch=args.patch, input_modalities=inputs,
                       progress_stream=sys.stdout if args.progress_jsonl else None, building_store=args.building_data)
    config.save_resolved(cfg, args.out)
    if summary.get("account"):
        from tst_ros.train.stage2 import format_account

        print(format_account(summary["account"]), file=sys.stderr)
    if not args.progress_jsonl:
        print(json.dumps(summary))
    return 0


def run_eval(args) -> int:
    from tst_ros.perception.transfer import evaluate
    from tst_ros.util import atomic_write_json

    result = evaluate(args.model, args.labeled, args.score_threshold, args.nms_iou, limit=args.limit,
                      show_bar=not args.json)
    if not args.json:
        logging.getLogger("tst_ros.eval").info(f"{result['iou_table']}\nmAP@[.5:.95] {100 * result['map']:.1f}"
                                                f"   mAP@.5 {100 * result['map50']:.1f}")
    print(json.dumps(result))
    if args.out:
        atomic_write_json(args.out, result)
    return 0


def run_export(args) -> int:
    from tst_ros.perception.export import export_model, real_frames

    frames = real_frames(2, args.frames) if args.frames else None
    manifest = export_model(args.model, args.out, frames=frames, tolerance=args.tolerance,
                            flip_average=args.flip_average)
    print(json.dumps({k: manifest[k] for k in ("path", "manifest_path", "sha256", "bytes")} |
                     {"parity_max_abs_diff": manifest["parity"]["max_abs_diff"]}))
    return 0
