"""`clipsam-ros train`: clip_adapter or UMCI heads on a frozen CLIP; the work is in `trainer`.

    clipsam-ros train --root R --layout mvtec|visa|synth --out CKPT [--config F] [--set k=v]...
                      [--device auto|cpu|cuda] [--resume CKPT]

`localizer.method` (clip_adapter | umci) picks the heads. This module only
parses arguments: it is imported for every `clipsam-ros` call, so torch and
the models are imported when the command runs (docs/CLIPSAM.md).
"""
from __future__ import annotations

import argparse


def cmd_train(args: argparse.Namespace) -> int:
    from ..config import set_value
    from ..train.data import training_samples
    from ..train.trainer import train
    from .common import load_config

    cfg = load_config(args, "inspect.yaml")
    if args.device:
        set_value(cfg, "device", args.device)
    samples = training_samples(args.root, args.layout)     # dataset errors before building CLIP
    result = train(cfg, samples, args.out, resume=args.resume)
    losses = result.epoch_losses
    trend = f"loss {losses[0]:.4f} -> {losses[-1]:.4f}" if losses else "no epoch left to run"
    print(f"train: {result.method} heads, {result.images} images, {len(losses)} epochs run "
          f"({result.epochs_done} in total), {trend}; tokens {'cached' if result.cached else 're-encoded'}; "
          f"wrote {result.checkpoint} (set localizer.method={result.method} localizer.checkpoint={result.checkpoint})")
    return 0


def register(subparsers) -> None:
    from ..data.datasets import LAYOUTS  # light (numpy, cv2), and `eval` imports it anyway
    from .common import add_config_args

    p = subparsers.add_parser("train", help="train clip_adapter / umci heads (localizer.method) on a frozen CLIP")
    add_config_args(p)
    p.add_argument("--root", required=True, help="dataset folder (its test split, with masks, is trained on)")
    p.add_argument("--layout", required=True, choices=LAYOUTS)
    p.add_argument("--out", required=True, help="checkpoint to write (.safetensors); rewritten after every epoch")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), help="override the config's device")
    p.add_argument("--resume", help="continue from this checkpoint (and its .adam.safetensors) up to train.epochs")
    p.set_defaults(func=cmd_train)
