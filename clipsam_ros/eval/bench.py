"""`clipsam-ros bench`: where every millisecond of a frame goes.

Runs the configured Inspector over synthetic frames (PNG-encoded up front, so
`decode` is a real image decode) and reports per-stage p50/p95, frames/s and
peak host and device memory. Random-init weights are fine for timing: the
compute is the same.

`--naive` runs the same prompts the way a per-call predictor implementation
does (`SamPredictor.set_image` before every prompt call, one region at a time):
the SAM image encoder again for every cascade stage and every region. Side by
side with the default run it measures what reusing one embedding buys.
"""
from __future__ import annotations

import copy
import resource
import time

import cv2
import numpy as np
import torch

from ..config import Config, flatten
from ..data.synth import make_sample, sample_seed
from ..decision import Verdict
from ..localize import needs_references
from ..models.sam import DecoderOutput, SamModel
from ..timing import percentile

# `encoders`: the wall time of CLIP and SAM overlapped on CUDA streams (then less than their sum)
STAGES = ("decode", "clip_encoder", "sam_encoder", "encoders", "backbone", "localize", "ppg", "cps", "mmr", "fuse",
          "decide", "total")
BENCH_PRODUCT = "metal"


class PerCallPredictorSam:
    """SAM used like a per-call predictor: the image encoder runs again before each region's
    decoder call. Everything else is forwarded to the real `SamModel`."""

    def __init__(self, sam: SamModel):
        self.sam = sam
        self._image: np.ndarray | None = None

    def encode(self, image_rgb: np.ndarray):
        self._image = image_rgb
        return self.sam.encode(image_rgb)

    def decode(self, embedding, points=None, labels=None, boxes=None, mask_input=None,
               multimask=False, every_mask=False) -> DecoderOutput:
        if every_mask:   # a predictor answers single- or multimask per call: two calls
            single, multi = (self.decode(embedding, points, labels, boxes, mask_input, m) for m in (False, True))
            return DecoderOutput(*(torch.cat([getattr(single, f), getattr(multi, f)], dim=1)
                                   for f in ("logits", "low_res_logits", "iou_scores")))
        rows = len(points) if points is not None else len(boxes)
        outs = []
        for b in range(rows):
            fresh = self.sam.encode(self._image)                 # set_image, again
            one = [None if a is None else a[b:b + 1] for a in (points, labels, boxes, mask_input)]
            outs.append(self.sam.decode(fresh, *one, multimask))
        return DecoderOutput(logits=torch.cat([o.logits for o in outs]),
                             low_res_logits=torch.cat([o.low_res_logits for o in outs]),
                             iou_scores=torch.cat([o.iou_scores for o in outs]))

    def __getattr__(self, name):
        return getattr(self.sam, name)


def bench_frames(count: int, size: tuple[int, int]) -> list[bytes]:
    """PNG bytes of synthetic frames of one product, most with a defect, deterministic."""
    from ..data.synth import PRODUCTS

    kinds = (None,) + PRODUCTS[BENCH_PRODUCT]
    frames = []
    for i in range(count):
        rgb, _ = make_sample(BENCH_PRODUCT, kinds[i % len(kinds)], seed=1000 + i, size=size)
        ok, png = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        frames.append(png.tobytes())
    return frames


def bench_references(cfg: Config, size: tuple[int, int]) -> list[np.ndarray] | None:
    """Good parts for a localizer that learns from them, when the config names none."""
    if not needs_references(cfg) or cfg.localizer.reference_dir or cfg.localizer.bank:
        return None
    return [make_sample(BENCH_PRODUCT, None, sample_seed(0, BENCH_PRODUCT, "train/good", i), size=size)[0]
            for i in range(3)]


def run_bench(cfg: Config, frames: int = 20, warmup: int = 2, batch: int = 1, naive: bool = False,
              size: tuple[int, int] = (640, 480)) -> dict:
    from ..inspector import Inspector

    if naive and batch > 1:
        raise ValueError("--naive runs one frame at a time, as a per-call predictor does; drop --batch")
    cfg = copy.deepcopy(cfg)
    inspector = Inspector.from_config(cfg, progress=False, references=bench_references(cfg, size))
    device, sam = inspector.device, inspector.sam
    # the same warm-up as the node's at start-up (a frame with a defect, at the batch shape)
    warmup_s = inspector.warm_up(frames=warmup, batch=batch, size=(size[1], size[0]))
    if naive:
        inspector.sam = PerCallPredictorSam(sam)
    data = bench_frames(frames, size)
    per_stage: dict[str, list[float]] = {s: [] for s in STAGES}
    first_frame_ms = None
    calls = {"sam": 0, "clip": 0}
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    wall_start = time.perf_counter()
    for i in range(0, len(data), batch):
        chunk = data[i:i + batch]
        start = time.perf_counter()
        images = [cv2.cvtColor(cv2.imdecode(np.frombuffer(b, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
                  for b in chunk]
        decode_ms = (time.perf_counter() - start) * 1000.0 / len(chunk)
        results = inspector.inspect_batch(images) if batch > 1 else [inspector.inspect(images[0])]
        if first_frame_ms is None:
            first_frame_ms = (time.perf_counter() - start) * 1000.0 / len(chunk)
        for result in results:
            if result.verdict == Verdict.ERROR:
                raise RuntimeError(f"bench frame failed: {result.error}")
            per_stage["decode"].append(decode_ms)
            for stage, ms in result.timings_ms.items():
                per_stage.setdefault(stage, []).append(ms)
            for k, n in result.encoder_calls.items():     # "backbone" too, when the localizer has one
                calls[k] = calls.get(k, 0) + n
    wall = time.perf_counter() - wall_start
    measured = {s: v for s, v in per_stage.items() if v}
    peak_device = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else 0.0
    return {
        "stages_ms": {s: round(percentile(v, 50), 2) for s, v in measured.items()},
        "p95_ms": {s: round(percentile(v, 95), 2) for s, v in measured.items()},
        "fps": round(frames / wall, 3) if wall > 0 else 0.0,
        "frames": frames,
        "warmup_frames": warmup,
        "warmup_s": round(warmup_s, 3),
        # the first measured frame, decode to result: what warm-up is for
        "first_frame_ms": round(first_frame_ms or 0.0, 1),
        "batch": batch,
        "naive": naive,
        "frame_size": list(size),
        "encoder_calls_per_frame": {k: round(v / frames, 2) for k, v in calls.items()},
        "peak_host_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "peak_device_mb": round(peak_device, 1),
        "device": (torch.cuda.get_device_name(device) if device.type == "cuda"
                   else f"cpu ({torch.get_num_threads()} threads)"),
        "torch": torch.__version__,
        "config": {k: v for k, v in flatten(cfg).items()
                   if k.split(".")[0] in ("device", "precision", "compile", "runtime", "clip", "sam", "localizer",
                                          "refiner")},
    }


def print_report(report: dict) -> None:
    print(f"{'stage':<14}{'p50 ms':>10}{'p95 ms':>10}")
    for stage, p50 in report["stages_ms"].items():
        print(f"{stage:<14}{p50:>10.1f}{report['p95_ms'][stage]:>10.1f}")
    print(f"{report['fps']:.2f} frames/s over {report['frames']} frames (batch {report['batch']}"
          f"{', naive' if report['naive'] else ''}) on {report['device']}; "
          f"encoder calls per frame {report['encoder_calls_per_frame']}; "
          f"peak host {report['peak_host_mb']:.0f} MB, device {report['peak_device_mb']:.0f} MB")
    print(f"warm-up {report['warmup_frames']} frame(s) in {report['warmup_s']:.1f} s; "
          f"first measured frame {report['first_frame_ms']:.0f} ms")


# ---------------------------------------------------------------- backends side by side

def run_bench_backends(cfg: Config, backends: list[str], frames: int = 20, warmup: int = 2,
                       size: tuple[int, int] = (640, 480)) -> dict:
    """The same frames through one Inspector per `runtime.backend`, in one process.

    Frames are interleaved (frame i on every backend, then frame i+1), so a noisy shared
    machine slows every backend alike and the ratios hold. `startup_s` is the Inspector's
    build (weights, export or its cache, compiling the runtime, the reference bank);
    `model_mb` the resident memory it added; `peak_host_mb` the peak while its frames ran."""
    from ..inspector import Inspector

    inspectors, reports = {}, {}
    for name in backends:
        one = copy.deepcopy(cfg)
        one.runtime.backend = name
        rss = _rss_mb()
        start = time.perf_counter()
        inspectors[name] = Inspector.from_config(one, progress=False, references=bench_references(one, size))
        startup_s = time.perf_counter() - start
        warmup_s = inspectors[name].warm_up(frames=warmup, size=(size[1], size[0]))
        reports[name] = {"backend": inspectors[name].sam.encoder_net.name, "precision": inspectors[name].sam.precision,
                         "networks": networks_of(inspectors[name]),
                         "startup_s": round(startup_s, 2), "warmup_s": round(warmup_s, 2),
                         "model_mb": round(_rss_mb() - rss, 1)}
    data = bench_frames(frames, size)
    per_stage: dict[str, dict[str, list[float]]] = {name: {} for name in backends}
    calls: dict[str, dict[str, int]] = {name: {} for name in backends}
    peaks = {name: 0.0 for name in backends}
    verdicts: dict[str, list[str]] = {name: [] for name in backends}
    for png in data:
        image = cv2.cvtColor(cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        for name, inspector in inspectors.items():
            _reset_peak_rss()
            result = inspector.inspect(image)
            peaks[name] = max(peaks[name], _peak_rss_mb())
            if result.verdict == Verdict.ERROR:
                raise RuntimeError(f"bench frame failed on {name}: {result.error}")
            for stage, ms in result.timings_ms.items():
                per_stage[name].setdefault(stage, []).append(ms)
            for k, n in result.encoder_calls.items():
                calls[name][k] = calls[name].get(k, 0) + n
            verdicts[name].append(str(result.verdict))
    base = backends[0]
    for name in backends:
        stages = {s: round(percentile(v, 50), 2) for s, v in per_stage[name].items()}
        base_stages = {s: percentile(v, 50) for s, v in per_stage[base].items()}
        reports[name].update({
            "stages_ms": stages,
            "p95_ms": {s: round(percentile(v, 95), 2) for s, v in per_stage[name].items()},
            "speedup": {s: round(base_stages[s] / stages[s], 2) for s in ("sam_encoder", "backbone", "cps", "total")
                        if s in stages and stages[s] > 0},
            "sam_encoder_calls_per_frame": round(calls[name].get("sam", 0) / frames, 2),
            "encoder_calls_per_frame": {k: round(v / frames, 2) for k, v in calls[name].items()},
            "verdicts_as_" + base: sum(a == b for a, b in zip(verdicts[name], verdicts[base])),
            "peak_host_mb": round(peaks[name], 1),
        })
    return {"base": base, "frames": frames, "frame_size": list(size), "torch": torch.__version__,
            "device": f"cpu ({torch.get_num_threads()} threads)" if cfg.device != "cuda" else "cuda",
            "backends": reports}


def networks_of(inspector) -> dict[str, str]:
    """Which backend runs each heavy network of this Inspector (torch for one not exported)."""
    out = {"sam_encoder": inspector.sam.encoder_net.name, "sam_decoder": inspector.sam.decoder_net.name}
    if inspector.backbone is not None:
        out["backbone"] = inspector.backbone.encoder_net.name
    if inspector.clip_encoder is not None:
        out["clip_encoder"] = getattr(getattr(inspector.clip_encoder, "encoder_net", None), "name", "torch")
    return out


def print_backends_report(report: dict) -> None:
    names = list(report["backends"])
    stages = [s for s in STAGES if any(s in r["stages_ms"] for r in report["backends"].values())]
    print(f"{'stage p50 ms':<16}" + "".join(f"{n:>14}" for n in names))
    for stage in stages:
        cells = (report["backends"][n]["stages_ms"].get(stage) for n in names)
        print(f"{stage:<16}" + "".join(f"{c:>14.1f}" if c is not None else f"{'–':>14}" for c in cells))
    rows = [("speed-up total", lambda r: f"{r['speedup'].get('total', 0):.2f}x"),
            ("speed-up encoder", lambda r: f"{r['speedup'].get('sam_encoder', 0):.2f}x"),
            ("SAM passes/frame", lambda r: f"{r['sam_encoder_calls_per_frame']:.2f}"),
            ("same verdicts", lambda r: f"{r['verdicts_as_' + report['base']]}/{report['frames']}"),
            ("start-up s", lambda r: f"{r['startup_s']:.1f}"),
            ("model MB", lambda r: f"{r['model_mb']:.0f}"),
            ("peak host MB", lambda r: f"{r['peak_host_mb']:.0f}")]
    for label, cell in rows:
        print(f"{label:<16}" + "".join(f"{cell(report['backends'][n]):>14}" for n in names))
    for network in dict.fromkeys(k for r in report["backends"].values() for k in r.get("networks", {})):
        print(f"{network + ' on':<16}" + "".join(f"{report['backends'][n]['networks'].get(network, '–'):>14}"
                                                for n in names))
    print(f"{report['frames']} frames {report['frame_size'][0]}x{report['frame_size'][1]}, interleaved, "
          f"on {report['device']}; speed-ups over {report['base']}")


def _rss_mb() -> float:
    return _status_mb("VmRSS")


def _peak_rss_mb() -> float:
    return _status_mb("VmHWM") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _reset_peak_rss() -> None:
    # Linux: "5" resets the peak resident set size, so each backend's frame has its own peak
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def _status_mb(field: str) -> float:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0
