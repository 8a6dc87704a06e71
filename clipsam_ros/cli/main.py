"""`clipsam-ros`: the command line, one module per subcommand. Every error is one line on
stderr and a non-zero exit."""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from typing import Callable

from ..errors import one_line
from .common import EXIT_ERROR

# Each module has `register(subparsers)`, which adds its parser and sets `func`. The work
# and its heavy imports (torch, rosbags, rclpy) load only when that subcommand runs, so
# `--help` stays fast and a missing optional dependency only affects its own subcommand.
COMMAND_MODULES: list[str] = [
    "clipsam_ros.cli.inspect",
    "clipsam_ros.cli.synth",
    "clipsam_ros.cli.demo",
    "clipsam_ros.cli.node",
    "clipsam_ros.cli.replay",
    "clipsam_ros.cli.eval",
    "clipsam_ros.cli.train",
    "clipsam_ros.cli.bench",
    "clipsam_ros.cli.export",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="clipsam-ros", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    # no model hub here or on a line PC: never wait on one
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except KeyboardInterrupt:
        print("clipsam-ros: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # the contract: one line, non-zero exit
        if args.verbose:
            raise
        print(f"clipsam-ros {args.command}: error: {one_line(exc)}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
