"""PPG + CPS time against the number of extreme regions, with and without `refiner.max_regions`.

    python benchmarks/cps_regions.py [--cap 2] [--rounds 3]

Offline profile (LiteMedSAM on the CPU), one 640×480 good part encoded once; the
anomaly map is N Gaussian blobs of slightly decreasing peaks, so every blob is one
region and the strongest ones are prompted first. Prints the median of `rounds`.
"""
from __future__ import annotations

import argparse
import copy
import time

import numpy as np
import torch

from clipsam_ros.config import config_path, load
from clipsam_ros.data.synth import make_sample
from clipsam_ros.models.sam import build_sam
from clipsam_ros.refine import refine

SIZE = (480, 640)


def blobs(n: int) -> np.ndarray:
    """N separate blobs on a 4-wide grid, peaks 0.95, 0.93, ..."""
    yy, xx = np.ogrid[:SIZE[0], :SIZE[1]]
    out = np.zeros(SIZE, np.float32)
    for i in range(n):
        cx, cy = 60 + (i % 4) * 150, 100 + (i // 4) * 150
        out = np.maximum(out, (0.95 - 0.02 * i) * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * 15.0 ** 2)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cap", type=int, default=2, help="refiner.max_regions for the capped rows")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    cfg = load(config_path("offline.yaml"), ["device=cpu"])
    sam = build_sam(cfg, torch.device("cpu"))
    embedding = sam.encode(make_sample("metal", None, seed=1, size=(SIZE[1], SIZE[0]))[0])
    print("| regions | max_regions | PPG + CPS + fuse ms | regions prompted | mask px |")
    print("|---|---|---|---|---|")
    for n in (1, 2, 4, 8):
        for cap in (0, args.cap):
            refiner = copy.deepcopy(cfg.refiner)
            refiner.max_regions = cap
            amap = blobs(n)
            refine(refiner, amap, embedding, sam)           # first pass: allocations
            times = []
            for _ in range(args.rounds):
                start = time.perf_counter()
                result = refine(refiner, amap, embedding, sam)
                times.append((time.perf_counter() - start) * 1000.0)
            print(f"| {n} | {cap} | {np.median(times):.0f} | {len(result.prompts)} | {int(result.mask.sum())} |")


if __name__ == "__main__":
    main()
