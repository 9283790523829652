"""`tst-ros`: the one command-line entry point, one subcommand per stage.

Each stage module exposes `register(subparsers)`; its heavy imports happen inside the
command function so that `tst-ros --help` stays fast.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from tst_ros import __version__

# module path of each stage's CLI; order is the order shown in --help
COMMAND_MODULES = [
    "tst_ros.sim.cli",          # sim export | labeled-set | preview
    "tst_ros.data.cli",         # ingest, replay, dataset
    "tst_ros.train.cli",        # pretrain, probe
    "tst_ros.perception.cli",   # transfer, eval, export
    "tst_ros.tttkd.cli",        # ttt-kd train | eval
    "tst_ros.graph.cli",        # specialize, node
    "tst_ros.bench.cli",        # bench <name>
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tst-ros",
        description="Test-Space Training for ROS 2: record a building, pre-train on it, deploy specialised perception.")
    parser.add_argument("--version", action="version", version=f"tst-ros {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name and name.startswith(e.name):  # stage not present in this build
                continue
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, KeyError, RuntimeError) as e:
        if getattr(args, "debug", False):
            raise
        print(f"tst-ros {args.command}: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
