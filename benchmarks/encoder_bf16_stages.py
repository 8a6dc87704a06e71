"""Where bf16 loses the SAM encoder's precision: each stage of LiteMedSAM's TinyViT in bf16 alone.

    python benchmarks/encoder_bf16_stages.py

OpenVINO's bf16 (this CPU has AVX-512-BF16) changes the offline profile's masks (docs/SPEED.md:
mask IoU 0.90 against torch fp32), so `precision: bf16` is refused. This splits the encoder into
its stages (patch embedding, the four layers, the neck), compiles each with OpenVINO in f32 and in
bf16, and chains them over three synth frames with one stage (or a few) in bf16 and the rest in
f32: the embedding's error against the all-f32 chain says which stage loses the precision, and
the per-stage times what keeping it in f32 would cost. Figures: docs/SPEED.md.
"""
from __future__ import annotations

import time

import numpy as np
import torch
from torch import nn

FRAMES = [("metal", "stain", 1), ("fabric", "hole", 2), ("washer", "contamination", 3)]
PRECISIONS = ("f32", "bf16")


class _Neck(nn.Module):
    """The encoder's tail as `TinyViT.forward_features` runs it: tokens back to a grid, then the neck."""

    def __init__(self, neck: nn.Module, grid: int):
        super().__init__()
        self.neck, self.grid = neck, grid

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.neck(x.view(x.shape[0], self.grid, self.grid, x.shape[2]).permute(0, 3, 1, 2))


def stages(encoder: nn.Module, grid: int) -> dict[str, nn.Module]:
    return {"patch_embed": encoder.patch_embed, **{f"layers.{i}": layer for i, layer in enumerate(encoder.layers)},
            "neck": _Neck(encoder.neck, grid)}


def main() -> None:
    import openvino as ov

    from clipsam_ros.config import config_path, load
    from clipsam_ros.data.synth import make_sample
    from clipsam_ros.models.sam import build_sam

    model = build_sam(load(config_path("offline.yaml"), ["runtime.backend=torch"]), torch.device("cpu"))
    parts = stages(model.sam.image_encoder.eval(), model.img_size // 4)
    frames = [model._prepare(make_sample(kind, defect, seed=seed)[0])[0] for kind, defect, seed in FRAMES]
    core, compiled, x = ov.Core(), {}, frames[0]
    with torch.no_grad():
        for name, part in parts.items():
            graph = ov.convert_model(part.eval(), example_input=x)
            for precision in PRECISIONS:
                compiled[name, precision] = core.compile_model(graph, "CPU", {
                    "INFERENCE_PRECISION_HINT": precision, "PERFORMANCE_HINT": "LATENCY"}).create_infer_request()
            x = part(x)

    def chain(pixels: torch.Tensor, choice: dict[str, str]) -> tuple[np.ndarray, dict[str, float]]:
        y, seconds = pixels.numpy(), {}
        for name in parts:
            start = time.perf_counter()
            y = compiled[name, choice[name]].infer({0: y})[0].copy()
            seconds[name] = time.perf_counter() - start
        return y, seconds

    reference = [chain(f, dict.fromkeys(parts, "f32"))[0] for f in frames]
    print("| stage | " + " | ".join(parts) + " | total |")
    print("|---|" + "---:|" * (len(parts) + 1))
    for precision in PRECISIONS:
        runs = [chain(frames[0], dict.fromkeys(parts, precision))[1] for _ in range(5)]
        ms = [1000 * float(np.median([r[n] for r in runs])) for n in parts]
        print(f"| {precision} ms | " + " | ".join(f"{m:.1f}" for m in ms) + f" | {sum(ms):.1f} |")
    print("\n| in bf16 | embedding max abs diff | mean relative diff |\n|---|---:|---:|")
    names = list(parts)
    picks = [[n] for n in names] + [names[i:] for i in range(1, len(names) - 1)] + [names]
    for pick in picks:
        choice = {n: "bf16" if n in pick else "f32" for n in parts}
        errors = [np.abs(chain(f, choice)[0] - r) for f, r in zip(frames, reference)]
        rel = np.mean([e.mean() / np.abs(r).mean() for e, r in zip(errors, reference)])
        print(f"| {', '.join(pick)} | {max(float(e.max()) for e in errors):.4f} | {rel:.4f} |")


if __name__ == "__main__":
    main()
