"""`clipsam-ros demo`: the main job on its embedded default (see eval/demo.py)."""
from __future__ import annotations

import argparse
from pathlib import Path

from .common import add_config_args, load_config


def cmd_demo(args: argparse.Namespace) -> int:
    from ..eval.demo import run_demo

    cfg = load_config(args, "offline.yaml")
    run_demo(cfg, Path(args.out), n=args.n, seed=args.seed, classes=args.classes)
    return 0


def register(sub) -> None:
    p = sub.add_parser("demo", help="the offline demo: synth parts → reference bank → PPG+CPS → summary")
    add_config_args(p)
    p.add_argument("--out", default="demo_out", help="output folder (default demo_out)")
    p.add_argument("--n", type=int, default=2, help="synth images per folder (default 2)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--classes", nargs="+", help="synthetic products to run (default: all)")
    p.set_defaults(func=cmd_demo)
