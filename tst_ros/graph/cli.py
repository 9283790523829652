"""`tst-ros specialize`, `tst-ros pipeline`, `tst-ros report`, `tst-ros node NAME` and
`tst-ros config dump` (the loop's configuration, e.g. to regenerate config/specialize.yaml)."""
from __future__ import annotations

import logging
import os

from tst_ros import config

NODE_NAMES = ["sim", "recorder", "trainer", "segmentation", "detection", "ttt_kd", "replay"]

# Budgets of `--micro`: the same loop, small enough for an end-to-end test.
MICRO = ["specialize.record_frames=24", "specialize.eval_images=6", "specialize.tttkd_scenes=1",
         "specialize.deploy_seconds=4", "pretrain.steps=6", "pretrain.batch=8", "pretrain.checkpoint_every=3",
         "pretrain.workers=0", "record.image_size=64", "pretrain.image_size=64", "transfer.steps=6", "transfer.batch=4",
         "transfer.labeled_images=8", "ttt_kd.train_steps=4", "ttt_kd.buildings=1", "ttt_kd.clouds_per_building=2",
         "ttt_kd.point_budget=2000", "ttt_kd.teacher=hed", "sim.width=128", "sim.height=96"]


def register(sub) -> None:
    p = sub.add_parser("specialize", help="the whole loop on a live graph in one process, then a report",
                       description="Starts sim (unless --no-sim), recorder, trainer, segmentation, detection and "
                                   "ttt_kd from the same description as launch/specialize.launch.py, runs record -> "
                                   "pre-train -> transfer -> export -> hot reload -> deployment, writes "
                                   "RUN/report/index.html and exits 0 (or keeps serving with --serve).")
    config.add_config_arguments(p)
    p.add_argument("--data-dir", default="", help="run directory (default: specialize.output from the config)")
    p.add_argument("--preset", default="",
                   help="encoder preset (pretrain.preset): tiny-imagenet, tiny-imagenet-rgbd-maps, tiny, s, b, ...")
    p.add_argument("--device", default="", help="training device auto | cpu | cuda")
    p.add_argument("--sim", dest="use_sim", action=argparse_bool(), default=True,
                   help="start the simulated building (--no-sim: your sensors or a bag feed the topics)")
    add_graph_arguments(p)
    p.add_argument("--serve", action=argparse_bool(), default=None, help="keep serving after the report")
    p.add_argument("--micro", action="store_true", help="tiny budgets (seconds per stage) for a quick end-to-end check")
    p.add_argument("--timeout", type=float, default=0.0, help="give up after this many seconds (0: never)")
    p.set_defaults(func=run_specialize)

    q = sub.add_parser("pipeline", help="offline stages after recording: pretrain, transfer, export, evaluate, TTT-KD")
    config.add_config_arguments(q)
    q.add_argument("--run", required=True, help="run directory")
    q.add_argument("--data", required=True, help="dataset store recorded in the test building")
    q.add_argument("--progress-jsonl", action="store_true", help="progress protocol lines on stdout (trainer node)")
    q.add_argument("--micro", action="store_true", help="tiny budgets (seconds per stage) for a quick end-to-end check")
    q.set_defaults(func=run_pipeline)

    c = sub.add_parser("config", help="the loop's configuration: `config dump` prints the resolved YAML")
    csub = c.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    d = csub.add_parser("dump", help="resolved config as YAML (no --config/--set: the defaults, which are "
                                     "config/specialize.yaml)")
    config.add_config_arguments(d)
    d.add_argument("--out", help="write to this file instead of stdout")
    d.add_argument("--format", choices=("tst_ros", "ros"), default="tst_ros",
                   help="tst_ros: sections (config/specialize.yaml); ros: a ROS 2 ros__parameters file, each "
                        "node's section under its name (also accepted by --config and --params-file)")
    d.set_defaults(func=run_config_dump)

    r = sub.add_parser("report", help="(re)write RUN/report/index.html from a run directory")
    r.add_argument("run", help="run directory")
    r.set_defaults(func=run_report)

    n = sub.add_parser("node", help="run one node, e.g. `tst-ros node recorder --ros-args -p dataset:=data/x`; "
                       "`--managed` before --ros-args starts segmentation, detection or recorder as a managed "
                       "(lifecycle) node")
    n.add_argument("name", choices=NODE_NAMES)
    n.add_argument("ros_args", nargs="...", help="passed to the node (--ros-args ...)")
    n.set_defaults(func=run_node)


def add_graph_arguments(p) -> None:
    """The launch file's graph arguments as options: namespace, use_sim_time, log_level, enable_X."""
    from tst_ros.graph.description import LOG_LEVELS, SWITCHABLE

    p.add_argument("--namespace", default="", help="namespace of every node and topic (e.g. robot_a)")
    p.add_argument("--use-sim-time", action=argparse_bool(), default=False,
                   help="nodes take time from /clock (the simulator publishes it, not in real time)")
    p.add_argument("--log-level", default="info", choices=LOG_LEVELS, help="log level of the nodes")
    for name in SWITCHABLE:
        p.add_argument(f"--enable-{name.replace('_', '-')}", dest=f"enable_{name}", action=argparse_bool(),
                       default=True, help=f"start the {name} node (launch argument enable_{name})")
    p.add_argument("--nodes", default="", help=f"comma-separated nodes to start instead ({','.join(SWITCHABLE)})")


def graph_values(args) -> dict:
    """specialize's options under the launch argument names (description.resolve_arguments reads them)."""
    from tst_ros.graph.description import SWITCHABLE

    only = {n.strip() for n in args.nodes.split(",") if n.strip()}
    unknown = only - set(SWITCHABLE)
    if unknown:
        raise SystemExit(f"--nodes: unknown node(s) {', '.join(sorted(unknown))}; choose from {', '.join(SWITCHABLE)}")
    values = {"use_sim": args.use_sim, "config": args.config or "", "data_dir": args.data_dir, "preset": args.preset,
              "device": args.device, "namespace": args.namespace, "use_sim_time": args.use_sim_time,
              "log_level": args.log_level}
    values.update({f"enable_{n}": (n in only) if only else getattr(args, f"enable_{n}") for n in SWITCHABLE})
    return {k: str(v).lower() if isinstance(v, bool) else v for k, v in values.items()}


def argparse_bool():
    import argparse
    return argparse.BooleanOptionalAction


def run_specialize(args) -> int:
    from tst_ros.graph.description import resolve, resolve_arguments

    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    overrides = (MICRO if args.micro else []) + list(args.overrides)
    if args.serve is not None:
        overrides.append(f"specialize.serve={args.serve}")
    values = graph_values(args)
    cfg, run_dir, specs = resolve(**resolve_arguments(values.__getitem__), overrides=overrides)
    from tst_ros.ros.specialize import Specialize

    logging.getLogger("tst_ros.specialize").info(f"run directory {run_dir}; nodes: {', '.join(s.name for s in specs)}")
    return Specialize(cfg, run_dir, specs, timeout_s=args.timeout).run()


def run_pipeline(args) -> int:
    from tst_ros.graph.description import check_choices
    from tst_ros.graph.pipeline import Pipeline

    cfg = config.load(args.config, (MICRO if args.micro else []) + list(args.overrides))
    check_choices(cfg)
    Pipeline(cfg, args.run, args.data, progress_jsonl=args.progress_jsonl).run_all()
    return 0


def run_config_dump(args) -> int:
    from tst_ros.util import atomic_write_text

    if args.format == "ros":
        import yaml

        from tst_ros.ros_params import to_ros_parameters

        text = "# tst_ros: the loop's configuration as ROS 2 node parameters (tst-ros config dump --format ros)\n" \
            + yaml.safe_dump(to_ros_parameters(config.from_args(args)), sort_keys=False)
    elif args.config or args.overrides:
        text = config.to_yaml(config.from_args(args))
    else:
        text = config.default_yaml()
    if args.out:
        atomic_write_text(args.out, text)
    else:
        print(text, end="")
    return 0


def run_report(args) -> int:
    from tst_ros.graph.report import write_report

    print(write_report(args.run))
    return 0


def run_node(args) -> int:
    import importlib

    module = importlib.import_module(f"tst_ros.ros.nodes.{args.name}")
    return int(module.main(args.ros_args) or 0)
