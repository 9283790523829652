"""`tst-ros ttt-kd train` and `tst-ros ttt-kd eval`."""
from __future__ import annotations

import json
import logging
import sys

from tst_ros import config
from tst_ros.config import default_help

_FLAGS = (("backbone", "backbone"), ("teacher", "teacher"), ("run", "run"), ("train_steps", "train_steps"),
          ("buildings", "buildings"), ("clouds_per_building", "clouds_per_building"), ("steps", "steps"),
          ("lr", "lr"), ("point_budget", "point_budget"), ("seed", "seed"), ("device", "device"))


def register(sub) -> None:
    p = sub.add_parser("ttt-kd", help="TTT-KD 3D point labels: joint training and test-time-adapted evaluation")
    tsub = p.add_subparsers(dest="ttt_kd_command", metavar="{train,eval}")

    t = tsub.add_parser("train", help="train backbone + label/feature projectors on source buildings")
    config.add_config_arguments(t)
    t.add_argument("--out", required=True, help="run directory (tttkd.safetensors, train.json, config.yaml)")
    t.add_argument("--teacher", help="hed | imagenet | tstmm[:<run>] | onnx:<file> | seg:<model> | auto "
                                     "(default: tstmm if --run, else hed)")
    t.add_argument("--run", help="TST-MM pre-training run / encoder file used as teacher")
    t.add_argument("--backbone", choices=["pointnet", "voxel"], help=default_help("ttt_kd.backbone"))
    t.add_argument("--train-steps", type=int, help=default_help("ttt_kd.train_steps"))
    t.add_argument("--buildings", type=int,
                   help=default_help("ttt_kd.buildings", "source buildings (seeds 1000.., SOURCE_STYLES)"))
    t.add_argument("--clouds-per-building", type=int, help=default_help("ttt_kd.clouds_per_building"))
    t.add_argument("--point-budget", type=int, help=default_help("ttt_kd.point_budget", "points per cloud"))
    t.add_argument("--seed", type=int, help=default_help("ttt_kd.seed"))
    t.add_argument("--device", help=default_help("ttt_kd.device", "auto | cpu | cuda"))
    t.add_argument("--progress-jsonl", action="store_true", help="print progress as JSON lines on stdout")
    t.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    t.set_defaults(func=run_train, steps=None, lr=None)

    e = tsub.add_parser("eval", help="mIoU before/after k adaptation steps on simulated test scenes, as JSON")
    config.add_config_arguments(e)
    e.add_argument("--model", required=True, help="TTT-KD run directory or tttkd.safetensors")
    e.add_argument("--style", default="home", help="sim style of the test scenes (home, home_shifted, ...)")
    e.add_argument("--scenes", type=int, default=5, help="test scenes (seeds 0, 1, ...)")
    e.add_argument("--clouds", type=int, default=2, help="clouds per scene")
    e.add_argument("--ks", default="0,1,3,10", help="adaptation step counts to score")
    e.add_argument("--lr", type=float, help=default_help("ttt_kd.lr", "test-time learning rate"))
    e.add_argument("--point-budget", type=int, help=default_help("ttt_kd.point_budget", "points per cloud"))
    e.add_argument("--device", help=default_help("ttt_kd.device", "auto | cpu | cuda"))
    e.add_argument("--json", action="store_true", help="JSON only (default: an IoU table on stderr too)")
    e.add_argument("--out", help="also write the JSON here")
    e.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    e.set_defaults(func=run_eval)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def _apply_flags(cfg, args):
    t = cfg.ttt_kd
    for flag, field in _FLAGS:
        value = getattr(args, flag, None)
        if value is not None:
            setattr(t, field, value)
    return t


def run_train(args) -> int:
    from tst_ros.tttkd.train import run_training

    cfg = config.from_args(args)
    t = _apply_flags(cfg, args)
    summary = run_training(t, cfg.sim, args.out, show_bar=not args.progress_jsonl,
                           progress_stream=sys.stdout if args.progress_jsonl else None)
    config.save_resolved(cfg, args.out)
    if not args.progress_jsonl:
        print(json.dumps(summary))
    return 0


def run_eval(args) -> int:
    from dataclasses import replace

    from tqdm import tqdm

    from tst_ros.perception.metrics import format_iou_table
    from tst_ros.sim import CLASSES
    from tst_ros.tttkd.adapt import TestTimeAdapter
    from tst_ros.tttkd.checkpoint import load_checkpoint
    from tst_ros.tttkd.evaluate import evaluate_clouds
    from tst_ros.tttkd.teachers import teacher_from_description
    from tst_ros.tttkd.train import scene_clouds
    from tst_ros.util import atomic_write_json, resolve_device

    cfg = config.from_args(args)
    t = _apply_flags(cfg, args)
    device = resolve_device(t.device)
    ks = sorted({int(k) for k in args.ks.split(",") if k.strip()})
    model, reducer, meta = load_checkpoint(args.model, device=device)
    teacher = teacher_from_description(meta["teacher"], device=device)
    adapter = TestTimeAdapter(model, reducer, steps=max(ks), lr=t.lr, point_budget=t.point_budget,
                              voxel_size=t.voxel_size, device=device, optimizer=t.optimizer,
                              adapt_label_head=t.adapt_label_head)
    clouds = []
    with tqdm(total=args.scenes * args.clouds, desc=f"{args.style} clouds", disable=args.json, leave=False) as bar:
        for seed in range(args.scenes):
            clouds += scene_clouds(replace(cfg.sim, seed=seed, style=args.style), teacher, args.clouds, progress=bar)
        reports = evaluate_clouds(adapter, clouds, ks, len(CLASSES), CLASSES)
    result = {"style": args.style, "scenes": args.scenes, "clouds": len(clouds), "lr": t.lr, "optimizer": t.optimizer,
              "adapt_label_head": adapter.adapt_label_head,
              **{f"miou.k{k}": reports[k]["miou"] for k in ks},
              **{f"point_accuracy.k{k}": reports[k]["pixel_accuracy"] for k in ks},
              "per_class": {f"k{k}": reports[k]["per_class"] for k in ks}}
    if not args.json:
        for k in ks:
            logging.getLogger("tst_ros.ttt-kd").info(f"k = {k}\n{format_iou_table(reports[k])}")
    print(json.dumps(result))
    if args.out:
        atomic_write_json(args.out, result)
    return 0
