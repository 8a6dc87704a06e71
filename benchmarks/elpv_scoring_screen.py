"""ELPV scoring screen on POLYCRYSTALLINE cells (the tuning set; never run it on mono):
cosine on normalised vs Euclidean on raw features (PatchCore), knn 1 / 3, and the image
score as the mean of the top 1 / 5 / 20 patch distances, over the draws of
benchmarks/elpv.py's few-shot protocol (seeds 0-2, 1 and 16 shots). A bare re-implementation
of the bank's search (radius -1, whole bank) on the same features, so every variant shares
one encoding. Results: benchmarks/ELPV.md.

    python benchmarks/elpv_scoring_screen.py
"""
from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn.functional as F
from elpv import Cells, auroc, draw, load_cells  # benchmarks/elpv.py: cells, features, draws, metric

from clipsam_ros.models.backbone import BackboneModel


def grid(levels: list[torch.Tensor], normalise: bool) -> torch.Tensor:
    """(patches, C) as backbone_grid makes them; without `normalise` the raw averaged features."""
    finest = levels[0].shape[-2:]
    parts = []
    for level in levels:
        x = F.avg_pool2d(level, 3, 1, 1, count_include_pad=False)
        if x.shape[-2:] != finest:
            x = F.interpolate(x, size=finest, mode="bilinear", align_corners=False)
        parts.append(F.normalize(x, dim=1) if normalise else x)
    flat = torch.cat(parts, 1)[0].permute(1, 2, 0).reshape(-1, sum(p.shape[1] for p in parts))
    return F.normalize(flat, dim=-1) if normalise else flat


def main() -> None:
    torch.set_num_threads(1)
    images, good, bad = load_cells("poly")
    cells = Cells(BackboneModel("efficientnet_lite0", torch.device("cpu")), images)

    results: dict[str, list[float]] = {}
    started = time.time()
    for shots in (1, 16):
        for seed in range(3):   # benchmarks/elpv.py's few-shot draws
            refs, test, labels = draw(good, bad, shots, seed)
            for metric in ("cosine", "euclidean"):
                normalise = metric == "cosine"
                bank = torch.cat([grid(f.levels, normalise) for f in cells.features(refs)])
                queries = [grid(f.levels, normalise) for f in cells.features(test)]
                dist = [1 - q @ bank.T if normalise else torch.cdist(q, bank) for q in queries]
                for knn in (1, 3):
                    patch = [d.topk(knn, dim=1, largest=False).values.mean(1) for d in dist]
                    for top in (1, 5, 20):
                        scores = [float(p.topk(top).values.mean()) for p in patch]
                        name = f"{shots} shots, {metric}, knn {knn}, image = mean of top {top}"
                        results.setdefault(name, []).append(auroc(labels, scores))
    print(f"poly, 3 seeds ({time.time() - started:.0f} s)")
    for name, values in results.items():
        print(f"{name:50s} {np.mean(values):.3f} ± {np.std(values):.3f}")


if __name__ == "__main__":
    main()
