"""`clipsam-ros bench` argument parsing; the work (and torch) is imported only when it runs."""
from __future__ import annotations

import argparse
import json
import sys


def cmd_bench(args: argparse.Namespace) -> int:
    from ..eval.bench import print_report, run_bench
    from .common import load_config

    cfg = load_config(args, "offline.yaml")
    width, height = (int(v) for v in args.size.lower().split("x"))
    report = run_bench(cfg, frames=args.frames, warmup=args.warmup, batch=args.batch, naive=args.naive,
                       size=(width, height))
    if args.json:
        json.dump(report, sys.stdout)
        print()
    else:
        print_report(report)
    return 0


def register(sub) -> None:
    from .common import add_config_args

    p = sub.add_parser("bench", help="per-stage latency, frames/s and memory on synthetic frames")
    add_config_args(p)
    p.add_argument("--frames", type=int, default=20, help="measured frames (default 20)")
    p.add_argument("--warmup", type=int, default=2, help="frames run before measuring (default 2)")
    p.add_argument("--batch", type=int, default=1, help="frames per batch, as from B cameras (default 1)")
    p.add_argument("--naive", action="store_true",
                   help="re-run the SAM image encoder for every cascade stage and region, as a per-call "
                        "predictor does")
    p.add_argument("--size", default="640x480", help="frame size WxH (default 640x480)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_bench)
