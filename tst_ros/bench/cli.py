"""`tst-ros bench NAME [--json] [--quick] [--out FILE] [--rows A,B] [--teacher T] [--modalities M,N] [--scaling]
[--finetune MODE] [--building STYLE:SEED] [--image-size PX] [--preset P] [--serving-variants] [--device D]
[--seeds 0,1] [--data DIR] [--merge A.json,B.json]`."""
from __future__ import annotations

import importlib
import inspect
import json
import logging
import platform
import time

from tst_ros.bench import BENCHMARKS


def register(sub) -> None:
    p = sub.add_parser("bench", help="run a benchmark and print its figures as JSON")
    p.add_argument("name", choices=sorted(BENCHMARKS))
    p.add_argument("--json", action="store_true", help="print one JSON object (default: also a table on stderr)")
    p.add_argument("--quick", action="store_true", help="a shortened run of the same measurement")
    p.add_argument("--out", help="also write the JSON to this file")
    p.add_argument("--rows", help="specialization, modalities, adapters: comma-separated rows to run (default: all)")
    p.add_argument("--teacher",
                   help="ttt-kd only: the 2D teacher (hed, imagenet, tstmm:<run>, onnx:<file>, seg:<model>)")
    p.add_argument("--scaling", action="store_true",
                   help="specialization only: seg mIoU against pre-training minutes (TST-MM, also fed RGB, and "
                        "TST-MAE on preset tiny-imagenet) and its plot")
    p.add_argument("--modalities", help="adapters only: comma-separated second modalities (default: depth,thermal)")
    p.add_argument("--finetune", choices=("frozen", "partial", "full"),
                   help="specialization only: how every row's transfer treats the encoder (default: the loop's, full)")
    p.add_argument("--building", help="specialization, adapters: the test building as style:seed (default home:0)")
    p.add_argument("--image-size", type=int, help="specialization only: the resolution of every stage, px (default: "
                                                  "the loop's, 128; a multiple of 32)")
    p.add_argument("--serving-variants", action="store_true",
                   help="specialization only: also evaluate every trained model without and with flip "
                        "averaging, each with its own and with the building's batch-norm statistics, and with "
                        "its encoder interpolated toward the pre-trained weights")
    p.add_argument("--preset", help="adapters: the frozen base's preset (default: tiny-imagenet, --scaling's); "
                                    "specialization: the plain-ViT rows' preset (default: tiny)")
    p.add_argument("--device", help="specialization only: where pre-training and transfer run (cpu, cuda[:N], auto; "
                                    "default cpu; bf16 on CUDA)")
    p.add_argument("--seeds", help="specialization, ttt-kd: comma-separated seeds instead of the default")
    p.add_argument("--data", help="specialization only: a directory for the benchmark's simulated data, built there "
                                  "once and read again by later runs of the same data (default: a temporary one)")
    p.add_argument("--merge", help="specialization only: comma-separated JSON results of runs that each ran some "
                                   "seeds and rows, merged into one table (nothing is run)")
    p.set_defaults(func=run)


def run(args) -> int:
    from tst_ros.util import atomic_write_json

    module = importlib.import_module(BENCHMARKS[args.name])
    t0 = time.perf_counter()
    options = {"rows": [r.strip() for r in args.rows.split(",") if r.strip()]} if args.rows else {}
    if args.teacher:
        options["teacher"] = args.teacher
    if args.scaling:
        options["scaling"] = True
    if args.finetune:
        options["finetune"] = args.finetune
    if args.building:
        options["building"] = args.building
    if args.image_size is not None:
        options["image_size"] = args.image_size
    if args.preset:
        options["preset"] = args.preset
    if args.serving_variants:
        options["serving_variants"] = True
    if args.device:
        options["device"] = args.device
    if args.seeds:
        try:
            options["seeds"] = [int(s) for s in args.seeds.split(",") if s.strip()]
        except ValueError:
            raise SystemExit(f"--seeds takes comma-separated integers (e.g. 0,1,2), got {args.seeds!r}") from None
    if args.data:
        options["data"] = args.data
    if args.merge:
        options["merge"] = [f.strip() for f in args.merge.split(",") if f.strip()]
    if args.modalities:
        options["modalities"] = tuple(m.strip() for m in args.modalities.split(",") if m.strip())
    for option in options:
        if option not in inspect.signature(module.run).parameters:
            raise SystemExit(f"bench {args.name} has no --{option}")
    figures = module.run(quick=args.quick, **options)
    result = {"benchmark": args.name, "quick": args.quick, "host": platform.node(),
              "python": platform.python_version(), "wall_s": round(time.perf_counter() - t0, 2), **figures}
    if not args.json:
        table = "\n".join(f"{k:>40}  {v}" for k, v in result.items())
        logging.getLogger(f"tst_ros.bench.{args.name}").info(table)
    print(json.dumps(result, default=str))
    if args.out:
        atomic_write_json(args.out, result)
    return 0
