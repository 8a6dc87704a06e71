"""What every subcommand shares: the --config/--set arguments, loading the config, exit codes."""
from __future__ import annotations

import argparse

EXIT_USAGE, EXIT_ERROR = 2, 1


def add_config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="ROS 2 params YAML (default: the package's config/offline.yaml "
                                         "for demo, config/inspect.yaml otherwise)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override one config key, e.g. --set refiner.threshold=0.6 (repeatable)")


def load_config(args: argparse.Namespace, default_name: str):
    from ..config import config_path, load

    return load(args.config or config_path(default_name), args.overrides)
