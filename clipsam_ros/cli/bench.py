"""`clipsam-ros bench` argument parsing; the work (and torch) is imported only when it runs."""
from __future__ import annotations

import argparse
import json
import sys
from typing import Callable


def cmd_bench(args: argparse.Namespace) -> int:
    from ..eval.bench import print_report, run_bench
    from .common import load_config

    cfg = load_config(args, "offline.yaml")
    width, height = (int(v) for v in args.size.lower().split("x"))
    if args.backends:
        return _bench_backends(args, cfg, (width, height))
    report = run_bench(cfg, frames=args.frames, warmup=args.warmup, batch=args.batch, naive=args.naive,
                       size=(width, height))
    return _show(report, args.json, print_report)


def _bench_backends(args: argparse.Namespace, cfg, size: tuple[int, int]) -> int:
    from ..config import ConfigError, spec
    from ..eval.bench import print_backends_report, run_bench_backends

    names = [n.strip() for n in args.backends.split(",") if n.strip()]
    choices = spec("runtime.backend").choices or ()
    bad = [n for n in names if n not in choices]
    if bad or not names:
        raise ConfigError(f"--backends {args.backends!r}: {bad[0] if bad else 'nothing'} is not a backend; "
                          f"use a comma list of {', '.join(choices)} (the first is the base of the speed-ups)")
    if args.naive or args.batch != 1:
        raise ConfigError("--backends runs one frame at a time the default way; drop --naive and --batch")
    report = run_bench_backends(cfg, names, frames=args.frames, warmup=args.warmup, size=size)
    return _show(report, args.json, print_backends_report)


def _show(report: dict, as_json: bool, print_table: Callable[[dict], None]) -> int:
    """One JSON object on stdout (for make_results.py), or the tables for a person."""
    if as_json:
        json.dump(report, sys.stdout)
        print()
    else:
        print_table(report)
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
    p.add_argument("--backends", default="", metavar="A,B,...",
                   help="the same frames through each runtime.backend side by side (e.g. torch,onnxruntime,"
                        "openvino); speed-ups over the first")
    p.set_defaults(func=cmd_bench)
