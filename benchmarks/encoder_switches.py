"""The SAM image encoder under each speed switch, and a first frame with and without warm-up.

    python benchmarks/encoder_switches.py                  # offline profile (LiteMedSAM), this device
    python benchmarks/encoder_switches.py --rounds 10 --compile

Encoder variants run interleaved, round after round, on the same input, so load from
other processes hits them alike; min and median per variant are printed, with the
largest difference from the plain encoder. `--first-frame` runs in fresh processes:
one whole frame cold, and one after `Inspector.warm_up()`. Figures: docs/SPEED.md.
"""
from __future__ import annotations

import argparse
import copy
import subprocess
import sys
import time
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def encoder_variants(compile_too: bool) -> dict[str, tuple[torch.nn.Module, bool]]:
    from clipsam_ros.config import config_path, load
    from clipsam_ros.models.accel import maybe_compile, to_channels_last, use_sdpa
    from clipsam_ros.models.sam import build_sam

    cfg = load(config_path("offline.yaml"))
    cfg.runtime.sdpa = False
    plain = build_sam(cfg, torch.device("cpu")).sam.image_encoder
    sdpa = copy.deepcopy(plain)
    use_sdpa(sdpa)
    out = {"plain": (plain, False), "sdpa": (sdpa, False),
           "channels_last": (to_channels_last(copy.deepcopy(plain)), True),
           "sdpa+channels_last": (to_channels_last(copy.deepcopy(sdpa)), True)}
    if compile_too:
        out["compile"] = (maybe_compile(copy.deepcopy(plain), True), False)
    return out


def time_encoders(rounds: int, compile_too: bool) -> None:
    from clipsam_ros.models.accel import channels_last_input

    variants = encoder_variants(compile_too)
    x = torch.rand(1, 3, 256, 256)
    times: dict[str, list[float]] = {name: [] for name in variants}
    with torch.no_grad():
        want = variants["plain"][0](x)
        diff = {}
        for name, (module, nhwc) in variants.items():     # first call: compiles, allocates
            start = time.perf_counter()
            diff[name] = float((module(channels_last_input(x, nhwc)) - want).abs().max())
            if name == "compile":
                print(f"compile: first call {time.perf_counter() - start:.1f} s")
        for _ in range(rounds):
            for name, (module, nhwc) in variants.items():
                start = time.perf_counter()
                module(channels_last_input(x, nhwc))
                times[name].append((time.perf_counter() - start) * 1000.0)
    print(f"SAM image encoder (LiteMedSAM, 256 px), {rounds} interleaved rounds, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}")
    for name, ms in times.items():
        ms.sort()
        print(f"  {name:<20} min {ms[0]:7.0f} ms  median {ms[len(ms) // 2]:7.0f} ms  max |diff| {diff[name]:.1e}")


FIRST_FRAME = """
import time, warnings, torch
warnings.simplefilter("ignore")
from clipsam_ros.eval.bench import bench_references
from clipsam_ros.config import load
from clipsam_ros.inspector import Inspector
from clipsam_ros.config import config_path
from clipsam_ros.data.synth import make_sample
cfg = load(config_path("offline.yaml"))
inspector = Inspector.from_config(cfg, progress=False, references=bench_references(cfg, (640, 480)))
warm_s = inspector.warm_up({warmup})
image, _ = make_sample("metal", "scratch", seed=4)
frames = []
for _ in range(3):
    start = time.perf_counter()
    result = inspector.inspect(image)
    frames.append((time.perf_counter() - start) * 1000)
print(f"warm-up {warmup} frame(s) {{warm_s:.2f}} s; frames 1-3: " + ", ".join(f"{{ms:.0f}}" for ms in frames)
      + f" ms (verdict {{result.verdict}})")
"""


def first_frame() -> None:
    for warmup in (0, 1):
        code = FIRST_FRAME.format(warmup=warmup)
        out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
        print(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--compile", action="store_true", help="also torch.compile (slow first call)")
    parser.add_argument("--first-frame", action="store_true", help="also cold vs warmed first frame")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    time_encoders(args.rounds, args.compile)
    if args.first_frame:
        first_frame()


if __name__ == "__main__":
    main()
