"""`tst-ros`: the one command-line entry point, one subcommand per stage.

Each stage module exposes `register(subparsers)`; its heavy imports happen inside the
command function so that `tst-ros --help` stays fast.

Output rule (docs/ARCHITECTURE.md, "Logging"): stdout carries a command's result only (its
JSON, or the progress protocol with --progress-jsonl); messages for people go through the
stdlib logger `tst_ros.<topic>` and progress bars through tqdm, both on stderr.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys

from tst_ros import __version__

# module path of each stage's CLI; order is the order shown in --help
COMMAND_MODULES = [
    "tst_ros.sim.cli",          # sim export | labeled-set | preview
    "tst_ros.data.cli",         # ingest, replay, dataset
    "tst_ros.train.cli",        # pretrain, probe
    "tst_ros.perception.cli",   # transfer, eval, export
    "tst_ros.perception.bank_cli",  # bank init | add | list | remove | activate
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


class _ShortNames(logging.Formatter):
    """`[specialize] text` rather than `[tst_ros.specialize] text`."""

    def format(self, record: logging.LogRecord) -> str:
        name = record.name.removeprefix("tst_ros.")
        level = "" if record.levelno == logging.INFO else f"{record.levelname.lower()}: "
        return f"[{name}] {level}{record.getMessage()}"


def configure_logging(level: int = logging.INFO) -> None:
    """Send the package's messages to stderr once, without disturbing tqdm's bars."""
    root = logging.getLogger("tst_ros")
    if any(getattr(h, "_tst_ros", False) for h in root.handlers):
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_ShortNames())
    handler._tst_ros = True
    root.addHandler(handler)
    root.setLevel(level)
    root.propagate = False


def main(argv: list[str] | None = None) -> int:
    from tqdm.contrib.logging import logging_redirect_tqdm

    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    configure_logging()
    log = logging.getLogger(f"tst_ros.{args.command}")
    try:
        with logging_redirect_tqdm([logging.getLogger("tst_ros")]):
            return int(args.func(args) or 0)
    except KeyboardInterrupt:
        log.info("interrupted")
        return 130
    except (ValueError, FileNotFoundError, KeyError, RuntimeError) as e:
        if getattr(args, "debug", False):
            raise
        log.error(str(e))
        return 1


if __name__ == "__main__":
    sys.exit(main())
