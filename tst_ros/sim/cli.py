"""`tst-ros sim export | labeled-set | preview`."""
from __future__ import annotations

import json


def _sim_flags(p) -> None:
    from tst_ros.config import add_config_arguments

    add_config_arguments(p)
    p.add_argument("--seed", type=int, help="building seed (default: config sim.seed)")
    p.add_argument("--style", help="style name (default: config sim.style)")
    p.add_argument("--width", type=int)
    p.add_argument("--height", type=int)
    p.add_argument("--rooms", type=int)


def _sim_config(args):
    from tst_ros.config import from_args

    cfg = from_args(args).sim
    for key in ("seed", "style", "width", "height", "rooms"):
        value = getattr(args, key, None)
        if value is not None:
            setattr(cfg, key, value)
    return cfg


def register(sub) -> None:
    p = sub.add_parser("sim", help="simulated test spaces: export bags, labeled sets, previews")
    ss = p.add_subparsers(dest="sim_command", metavar="SIM_COMMAND")

    e = ss.add_parser("export", help="write a rosbag2 MCAP of the sensor topics (+ <bag>_gt.npz ground truth)")
    _sim_flags(e)
    e.add_argument("--out", required=True, help="bag directory to create")
    e.add_argument("--frames", type=int, default=0, help="camera frames (default: config sim.frames or 100)")
    e.add_argument("--start-frame", type=int, default=0)
    e.add_argument("--overwrite", action="store_true")
    e.set_defaults(func=cmd_export)

    ls = ss.add_parser("labeled-set", help="write a COCO-style labeled set (default: other buildings, source styles)")
    ls.add_argument("--out", required=True)
    ls.add_argument("--images", type=int, default=240)
    ls.add_argument("--styles", default="", help="comma separated (default: SOURCE_STYLES)")
    ls.add_argument("--seed", type=int, default=1000,
                    help="first building seed (>= 1000: other buildings; e.g. 0 with --styles home: the test building)")
    ls.add_argument("--buildings", type=int, default=0,
                    help="number of buildings (0: one for a seed < 1000, else one per 30 images)")
    ls.add_argument("--start-frame", type=int, default=0, help="first frame index in each building")
    ls.add_argument("--span-frames", type=int, default=0,
                    help="spread the images over this many frames from --start-frame (0: one lap)")
    ls.add_argument("--width", type=int, default=256)
    ls.add_argument("--height", type=int, default=192)
    ls.add_argument("--depth", action="store_true", default=True, help="write depth PNGs (default)")
    ls.add_argument("--no-depth", dest="depth", action="store_false")
    ls.set_defaults(func=cmd_labeled_set)

    pv = ss.add_parser("preview", help="write a PNG contact sheet (RGB, depth, normals, semantics, boxes, cloud)")
    _sim_flags(pv)
    pv.add_argument("--out", required=True)
    pv.add_argument("--frames", type=int, default=4, help="rows of the sheet")
    pv.add_argument("--start-frame", type=int, default=0)
    pv.add_argument("--stride", type=int, default=0, help="frames between rows (0: spread over one lap)")
    pv.set_defaults(func=cmd_preview)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def cmd_export(args) -> int:
    from tst_ros.sim.export import export_bag
    from tst_ros.sim.simulator import Simulator

    cfg = _sim_config(args)
    frames = args.frames or cfg.frames or 100
    result = export_bag(Simulator(cfg), args.out, frames, start=args.start_frame, overwrite=args.overwrite)
    print(json.dumps(result))
    return 0


def cmd_labeled_set(args) -> int:
    from tst_ros.sim.labeled_set import write

    styles = [s for s in args.styles.split(",") if s] or None
    result = write(args.out, args.images, styles, seed=args.seed, buildings=args.buildings,
                   start_frame=args.start_frame, width=args.width, height=args.height, depth=args.depth,
                   span_frames=args.span_frames)
    print(json.dumps(result))
    return 0


def cmd_preview(args) -> int:
    from tst_ros.sim.preview import contact_sheet
    from tst_ros.sim.simulator import Simulator

    out = contact_sheet(Simulator(_sim_config(args)), args.out, frames=args.frames, start=args.start_frame,
                        stride=args.stride)
    print(json.dumps({"preview": out}))
    return 0
