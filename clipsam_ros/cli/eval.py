"""`clipsam-ros eval`: the papers' metrics on MVTec-AD, VisA or a synthetic set, with ablations.

    clipsam-ros eval --root R --layout mvtec|visa|synth|folders [--classes C ...] [--config F]
                     [--set k=v]... [--ablation cps-stages|dilation]... [--size N] [--shots K]
                     --report DIR
"""
from __future__ import annotations

import argparse

from ..config import ConfigError


def cmd_eval(args: argparse.Namespace) -> int:
    from ..data.datasets import load_dataset
    from ..eval.report import COLUMNS, write_report
    from ..eval.runner import Evaluator
    from ..inspector import resolve_device
    from ..models.sam import build_sam
    from .common import load_config

    cfg = load_config(args, "inspect.yaml")
    if args.size < 0 or args.shots < 0:
        raise ConfigError(f"--size {args.size} / --shots {args.shots}: use 0 (native / all) or a positive number")
    classes = load_dataset(args.root, args.layout, args.classes)   # layout errors before loading models
    device = resolve_device(cfg.device)
    evaluator = Evaluator(cfg, build_sam(cfg, device), device, ablations=args.ablation or [],
                          size=args.size, shots=args.shots, worst=args.worst)
    result = evaluator.run(classes)
    report = write_report(result, cfg, args.root, args.layout, args.report)
    mean = report["mean"]
    cells = ", ".join(f"{name} {'–' if mean[k] is None else f'{100 * mean[k]:.1f}'}" for k, name in COLUMNS)
    print(f"eval: {sum(c.images for c in result.classes)} images in {len(classes)} classes, "
          f"{result.wall_s:.0f} s; mean {cells}; wrote {args.report}/report.md")
    return 0


def register(subparsers) -> None:
    from ..data.datasets import LAYOUTS
    from ..eval.variants import ABLATIONS
    from .common import add_config_args

    p = subparsers.add_parser("eval", help="pixel/image metrics on MVTec-AD, VisA or synth data, with the "
                                           "papers' ablations; writes report.json/.md, curves, overlays")
    add_config_args(p)
    p.add_argument("--root", required=True, help="dataset folder")
    p.add_argument("--layout", required=True, choices=LAYOUTS)
    p.add_argument("--classes", nargs="+", help="only these classes (default: all in the root)")
    p.add_argument("--report", required=True, help="output folder for the report")
    p.add_argument("--ablation", action="append", choices=ABLATIONS,
                   help="also run the paper's ablation in the same pass (repeatable): cps-stages (Table 3 "
                        "plus the coarse map) or dilation (Table 2)")
    p.add_argument("--size", type=int, default=0,
                   help="resize images so the longer side is N px before evaluating (default 0: own size)")
    p.add_argument("--shots", type=int, default=8,
                   help="reference localizer: train/good images per class in the bank (default 8, 0 = all); "
                        "with --layout folders they come from good/ and are never tested; the stream localizer "
                        "takes none (a fresh memory per class, warm-up images left out: docs/EVAL.md)")
    p.add_argument("--worst", type=int, default=3, help="overlays of the N worst images per class (default 3)")
    p.set_defaults(func=cmd_eval)
