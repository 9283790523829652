"""`tst-ros pretrain`, `tst-ros adapt-modality` and `tst-ros probe`."""
from __future__ import annotations


def register(sub) -> None:
    from tst_ros.config import add_config_arguments, default_help
    from tst_ros.modalities import PRIMARY_IMAGE

    p = sub.add_parser("pretrain", help="TST-MM / TST-MAE masked-modeling pre-training on a dataset store")
    p.add_argument("--data", required=True, help="dataset store directory (or synthetic:N for a smoke test)")
    p.add_argument("--out", required=True, help="run directory (checkpoints, encoder, logs, pictures)")
    p.add_argument("--preset", help=default_help("pretrain.preset",
                                                 "encoder: tiny-imagenet, tiny-imagenet-rgbd-maps, tiny, s, b, ..."))
    p.add_argument("--method", choices=["tst-mm", "tst-mae", "scratch"], help=default_help("pretrain.method"))
    p.add_argument("--modalities", help=default_help("pretrain.modalities", "comma-separated modalities for tst-mm"))
    p.add_argument("--steps", type=int, help=default_help("pretrain.steps", "optimizer steps"))
    p.add_argument("--batch", type=int, help=default_help("pretrain.batch", "global batch per optimizer step"))
    p.add_argument("--image-size", type=int, help=default_help("pretrain.image_size", "training resolution"))
    p.add_argument("--patch", type=int, help=default_help("pretrain.patch", "patch size in pixels"))
    p.add_argument("--lr", type=float, help=default_help("pretrain.lr", "peak learning rate; 0: base_lr * batch / 256"))
    p.add_argument("--workers", type=int, help=default_help("pretrain.workers", "data-loader worker processes"))
    p.add_argument("--device", help=default_help("pretrain.device", "auto | cpu | cuda"))
    p.add_argument("--seed", type=int, help=default_help("pretrain.seed"))
    p.add_argument("--init", metavar="RUN|FILE",
                   help=default_help("pretrain.init", "start from this encoder (a run directory or encoder "
                                     ".safetensors, e.g. TST-MM pre-trained on other buildings) instead of random "
                                     "weights"))
    p.add_argument("--resume", action="store_true", help="continue from RUN_DIR/checkpoint.safetensors if present")
    p.add_argument("--no-resume", dest="resume", action="store_false")
    p.add_argument("--progress-jsonl", action="store_true", help="print progress as JSON lines on stdout")
    add_config_arguments(p)
    p.set_defaults(func=run_pretrain, resume=False)

    a = sub.add_parser("adapt-modality", help="PSST: learn a modality adapter (LoRA) on a frozen encoder from "
                                              "unlabeled frames (MAE warm-up, then MAE + error-weighted DINO)")
    a.add_argument("--modality", required=True, help="registry modality to adapt to (e.g. depth)")
    a.add_argument("--base", required=True, help="frozen base encoder: run directory or encoder .safetensors")
    a.add_argument("--data", required=True, help="dataset store with the modality (or synthetic:N)")
    a.add_argument("--out", required=True, help="adapter file to write (.safetensors); its checkpoint sits beside")
    a.add_argument("--rank", type=int, help=default_help("adapt.rank", "LoRA rank"))
    a.add_argument("--warmup-steps", type=int, help=default_help("adapt.warmup_steps", "MAE warm-up steps"))
    a.add_argument("--joint-steps", type=int, help=default_help("adapt.joint_steps", "MAE + DINO steps"))
    a.add_argument("--batch", type=int, help=default_help("adapt.batch"))
    a.add_argument("--device", help=default_help("adapt.device", "auto | cpu | cuda"))
    a.add_argument("--no-resume", dest="resume", action="store_false", help="ignore an existing checkpoint")
    a.add_argument("--json", action="store_true", help="print the summary as JSON")
    add_config_arguments(a)
    a.set_defaults(func=run_adapt_modality, resume=True)

    q = sub.add_parser("probe", help="per-patch linear probe of semantic class on frozen encoder features")
    q.add_argument("--encoder", required=True, nargs="+",
                   help="run directory, encoder .safetensors, or 'scratch' (several to compare)")
    q.add_argument("--data", required=True, help="dataset store with ground-truth semantic labels")
    q.add_argument("--preset", default="tiny", help="preset of the scratch encoder")
    q.add_argument("--image-size", type=int, default=0, help="scratch encoder image size (default: config)")
    q.add_argument("--patch", type=int, default=0, help="scratch encoder patch size (default: config)")
    q.add_argument("--inputs", default=PRIMARY_IMAGE,
                   help=f"comma-separated encoder inputs for the probe (default: {PRIMARY_IMAGE})")
    q.add_argument("--steps", type=int, default=300, help="L-BFGS iterations of the linear layer")
    q.add_argument("--out", help="also write the JSON result to this file")
    add_config_arguments(q)
    q.set_defaults(func=run_probe)


FLAG_FIELDS = {"preset": "preset", "method": "method", "steps": "steps", "batch": "batch", "image_size": "image_size",
               "patch": "patch", "lr": "lr", "workers": "workers", "device": "device", "seed": "seed", "init": "init"}


def run_pretrain(args) -> int:
    import json

    from tst_ros.config import from_args
    from tst_ros.train.pretrain import pretrain

    cfg = from_args(args)
    for arg, fld in FLAG_FIELDS.items():
        value = getattr(args, arg, None)
        if value is not None:
            setattr(cfg.pretrain, fld, value)
    if args.modalities:
        cfg.pretrain.modalities = [m for m in args.modalities.split(",") if m]
    summary = pretrain(cfg.pretrain, args.data, args.out, resume=args.resume, progress_jsonl=args.progress_jsonl,
                       full_config=cfg)
    if not args.progress_jsonl:
        brief = {k: v for k, v in summary.items() if k != "losses"}
        brief["final_loss"] = summary["losses"][-1] if summary["losses"] else None
        print(json.dumps(brief))
    return 0


def run_adapt_modality(args) -> int:
    import json

    from tst_ros.config import from_args
    from tst_ros.train.psst import adapt_modality

    cfg = from_args(args)
    for arg in ("rank", "warmup_steps", "joint_steps", "batch", "device"):
        if getattr(args, arg) is not None:
            setattr(cfg.adapt, arg, getattr(args, arg))
    summary = adapt_modality(cfg.adapt, args.data, args.base, args.modality, args.out, resume=args.resume)
    print(json.dumps(summary) if args.json else
          f"{args.modality} adapter: {summary['parameters']} parameters, {summary['bytes']} bytes "
          f"-> {summary['adapter']}")
    return 0


def run_probe(args) -> int:
    import json

    from tst_ros.config import from_args
    from tst_ros.train.probe import probe_many
    from tst_ros.util import atomic_write_json

    cfg = from_args(args)
    results = probe_many(args.encoder, args.data, args.preset, args.image_size or cfg.pretrain.image_size,
                         args.patch or cfg.pretrain.patch, steps=args.steps,
                         inputs=[m for m in args.inputs.split(",") if m])
    print(json.dumps(results))
    if args.out:
        atomic_write_json(args.out, results)
    return 0
