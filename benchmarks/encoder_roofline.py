"""Where the SAM image encoder's time goes on OpenVINO, and its floor measured on this CPU.

    python benchmarks/encoder_roofline.py                 # offline profile (LiteMedSAM), 1 frame
    python benchmarks/encoder_roofline.py --runs 10

The encoder's exported graph (`runtime.backend: openvino`, fp32, from the weights cache as
the node uses it) is compiled twice at a static batch of 1: once plain, for the wall time,
and once with OpenVINO's per-node counters, for where that time goes (the counters' own
overhead stays out of the wall time). The plugin's counters are averages since compile, so
the warm-up passes are subtracted out. Each node's time is summed by kind; the matrix
products (FullyConnected, MatMul, Convolution, GroupConvolution) get their FLOPs from the
compiled model's shapes (2 per multiply-add). The floor is the encoder's FLOPs at the best
rate any of its large matrix products reached: a ceiling measured on this CPU, with no
guess of the VM's boost clock. Figures: docs/SPEED.md.
"""
from __future__ import annotations

import argparse
import time
from collections import defaultdict
from math import prod

import numpy as np
import torch

# FLOPs below this are too small for their rate to say anything about the CPU's peak
MIN_GEMM_FLOP = 1e9


def node_flops(kind: str, inputs: list[list[int]], outputs: list[list[int]]) -> float:
    """2 × multiply-adds of one matrix-product node; 0 for any other kind or unknown shapes."""
    if not inputs or not outputs or not all(inputs[:2]) or not outputs[0]:
        return 0.0
    if kind in ("FullyConnected", "MatMul"):   # each output element sums over x's last axis
        # (a MatMul's transpose flags are folded into the compiled node's input shapes)
        return 2.0 * prod(outputs[0]) * inputs[0][-1]
    if kind == "Convolution":                  # W (Co, Ci, kh, kw) over the output's B·H·W
        return 2.0 * prod(outputs[0]) * prod(inputs[1][1:])
    if kind == "GroupConvolution":             # W (G, Co/G, Ci/G, kh, kw)
        return 2.0 * prod(outputs[0]) * prod(inputs[1][2:])
    return 0.0


def _static(shape) -> list[int]:
    return [d.get_length() for d in shape] if shape.is_static else []


def _compile(core, onnx, size: int, counters: bool):
    graph = core.read_model(str(onnx))
    graph.reshape({graph.inputs[0]: [1, 3, size, size]})
    return core.compile_model(graph, "CPU", {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY",
                                             "PERF_COUNT": counters})


def _node_seconds(request) -> dict[str, tuple[str, str, float]]:
    """name -> (kind, kernel, mean seconds per pass since compile) from the plugin's counters."""
    return {i.node_name: (i.node_type, i.exec_type, i.real_time.total_seconds())
            for i in request.get_profiling_info()}


def profile(runs: int, warmup: int = 2) -> dict:
    import openvino as ov

    from clipsam_ros.config import config_path, load
    from clipsam_ros.models.export import ensure_export
    from clipsam_ros.models.sam import build_sam, checkpoint_path, sam_encoder_export_spec

    cfg = load(config_path("offline.yaml"), ["runtime.backend=torch"])
    model = build_sam(cfg, torch.device("cpu"))
    onnx = ensure_export(sam_encoder_export_spec(model, checkpoint_path(cfg), cfg),
                         cfg.runtime.export_dir, cfg.weights.cache_dir)
    core = ov.Core()
    pixels = np.random.default_rng(0).random((1, 3, model.img_size, model.img_size), dtype=np.float32)

    plain = _compile(core, onnx, model.img_size, counters=False).create_infer_request()
    for _ in range(warmup):
        plain.infer({0: pixels})
    walls = []
    for _ in range(runs):
        start = time.perf_counter()
        plain.infer({0: pixels})
        walls.append(time.perf_counter() - start)

    counted = _compile(core, onnx, model.img_size, counters=True)
    shapes = {op.get_friendly_name(): ([_static(op.input(i).get_partial_shape()) for i in range(op.get_input_size())],
                                       [_static(op.output(i).get_partial_shape()) for i in range(op.get_output_size())])
              for op in counted.get_runtime_model().get_ordered_ops()}
    request = counted.create_infer_request()
    for _ in range(warmup):
        request.infer({0: pixels})
    after_warmup = _node_seconds(request)
    for _ in range(runs):
        request.infer({0: pixels})
    by_kind, flops = defaultdict(float), defaultdict(float)
    best_rate, best_node = 0.0, ""
    for name, (kind, kernel, mean_all) in _node_seconds(request).items():
        # the counters average over every pass since compile: take the warm-up passes out
        seconds = max((mean_all * (warmup + runs) - after_warmup.get(name, (0, 0, 0.0))[2] * warmup) / runs, 0.0)
        label = f"{kind} ({kernel})"
        f = node_flops(kind, *shapes.get(name, ([], [])))
        by_kind[label] += seconds
        flops[label] += f
        if f >= MIN_GEMM_FLOP and seconds > 0 and f / seconds > best_rate:
            best_rate, best_node = f / seconds, name
    if best_rate == 0.0:
        raise SystemExit(f"encoder_roofline: no matrix product of at least {MIN_GEMM_FLOP:.0e} FLOP was timed; "
                         "lower MIN_GEMM_FLOP for this encoder")
    return {"wall_s": float(np.median(walls)), "by_kind": dict(by_kind), "flops": dict(flops),
            "best_rate": best_rate, "best_node": best_node}


def total_flops() -> float:
    """The encoder's FLOPs as torch counts them (eager attention: its matmuls too)."""
    from torch.utils.flop_counter import FlopCounterMode

    from clipsam_ros.config import config_path, load
    from clipsam_ros.models.sam import build_sam

    cfg = load(config_path("offline.yaml"), ["runtime.backend=torch", "runtime.sdpa=false"])
    model = build_sam(cfg, torch.device("cpu"))
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model.sam.image_encoder(torch.zeros(1, 3, model.img_size, model.img_size))
    return float(counter.get_total_flops())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5, help="profiled passes (default 5)")
    args = parser.parse_args()
    total = total_flops()
    p = profile(args.runs)
    counted = sum(p["by_kind"].values())
    covered = sum(p["flops"].values())
    print(f"encoder wall p50 {p['wall_s'] * 1e3:.0f} ms; node time {counted * 1e3:.0f} ms; "
          f"{total / 1e9:.1f} GFLOP (torch's count), {covered / 1e9:.1f} of them in the nodes below")
    print(f"{'node kind (kernel)':<46} {'ms':>7} {'share':>6} {'GFLOP':>6} {'GFLOP/s':>8}")
    for kind, seconds in sorted(p["by_kind"].items(), key=lambda kv: -kv[1]):
        if seconds * 1e3 < 0.5:
            continue
        f = p["flops"].get(kind, 0.0)
        rate = f"{f / seconds / 1e9:8.0f}" if f else f"{'':>8}"
        print(f"{kind:<46} {seconds * 1e3:7.1f} {100 * seconds / counted:5.1f}% {f / 1e9:6.2f} {rate}")
    floor = total / p["best_rate"]
    print(f"best matrix-product rate {p['best_rate'] / 1e9:.0f} GFLOP/s ({p['best_node']}): "
          f"floor {floor * 1e3:.0f} ms; encoder at {p['wall_s'] / floor:.2f}x its floor")


if __name__ == "__main__":
    main()
