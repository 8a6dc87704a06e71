"""ELPV (electroluminescence images of solar cells, the `elpv-dataset` package): image AUROC of
the reference (few-shot) and stream (zero-shot) localizers on real parts nobody here made.

Good = defect probability 0, defective = probability 1. Tune on `--type poly` only; `mono`
is the hold-out. Results: benchmarks/ELPV.md.

    python benchmarks/elpv.py --type poly --shots 1 4 16 --stream 0.1 0.3
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from clipsam_ros.config import Config, set_value
from clipsam_ros.eval.metrics import image_metrics
from clipsam_ros.localize.reference import ReferenceLocalizer, backbone_grid, build_bank
from clipsam_ros.localize.stream import StreamLocalizer, StreamWarmUp
from clipsam_ros.models.backbone import BackboneModel


def load_cells(kind: str) -> tuple[list[np.ndarray], list[int], list[int]]:
    """All cells as RGB uint8, and the indices of the good and the defective cells of one type."""
    from elpv_dataset.utils import load_dataset

    images, probs, types = load_dataset()
    rgb = [np.repeat(im[:, :, None], 3, axis=2) for im in images]
    good = np.flatnonzero((types == kind) & (probs == 0.0)).tolist()
    bad = np.flatnonzero((types == kind) & (probs == 1.0)).tolist()
    return rgb, good, bad


class Cells:
    """Backbone features of cells, each encoded once (in batches) and reused by every protocol."""

    def __init__(self, backbone: BackboneModel, images: list[np.ndarray]):
        self.backbone, self.images, self.cache = backbone, images, {}

    def features(self, indices) -> list:
        todo = [i for i in dict.fromkeys(indices) if i not in self.cache]
        for start in range(0, len(todo), 16):
            chunk = todo[start:start + 16]
            for i, f in zip(chunk, self.backbone.encode_batch([self.images[i] for i in chunk])):
                self.cache[i] = f
        return [self.cache[i] for i in indices]


def auroc(labels, scores) -> float:
    return image_metrics(scores, labels)["image_auroc"]


def few_shot(cfg: Config, cells: Cells, good, bad, shots: int, seed: int, n_test: int = 60) -> float:
    """`shots` good cells as references; 60 other good and 60 defective cells as the test."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(good))
    refs = [good[i] for i in order[:shots]]
    test = [good[i] for i in order[shots:shots + n_test]] + [bad[i] for i in rng.permutation(len(bad))[:n_test]]
    ref_features = iter(cells.features(refs))
    bank = build_bank(refs, lambda _: backbone_grid(next(ref_features)), cfg.localizer.backbone, "",
                      cfg.localizer.spatial_radius, cfg.localizer.coreset_ratio, progress=False)
    loc = ReferenceLocalizer(bank, cfg.localizer, cells.backbone)
    scores = [loc(None, None, (300, 300), features=f).image_score  # type: ignore[arg-type]
              for f in cells.features(test)]
    return auroc([0] * n_test + [1] * n_test, scores)


def stream(cfg: Config, cells: Cells, good, bad, defect_rate: float, seed: int, n_frames: int = 200) -> float:
    """AUROC over the frames after warm-up of a stream with `defect_rate` defective cells, no references."""
    rng = np.random.default_rng(seed)
    n_bad = int(round(defect_rate * n_frames))
    frames = [(good[i], 0) for i in rng.permutation(len(good))[:n_frames - n_bad]]
    frames += [(bad[i], 1) for i in rng.permutation(len(bad))[:n_bad]]
    frames = [frames[i] for i in rng.permutation(len(frames))]
    loc = StreamLocalizer(cfg.localizer, cells.backbone, cfg.refiner.threshold, "elpv")
    labels, scores = [], []
    for (_, label), feats in zip(frames, cells.features([i for i, _ in frames])):
        try:
            est = loc(None, None, (300, 300), features=feats)  # type: ignore[arg-type]
        except StreamWarmUp:
            continue
        labels.append(label)
        scores.append(est.image_score)
    return auroc(labels, scores)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--type", choices=("poly", "mono"), default="poly")
    parser.add_argument("--shots", type=int, nargs="*", default=[1, 4, 16])
    parser.add_argument("--stream", type=float, nargs="*", default=[0.1, 0.3])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--radius", type=int, nargs="+", default=[1], help="localizer.spatial_radius values")
    parser.add_argument("--set", action="append", default=[], help="config key=value")
    args = parser.parse_args()
    torch.set_num_threads(2)
    cfg = Config()
    cfg.localizer.backbone = "efficientnet_lite0"
    cfg.localizer.spatial_radius, cfg.localizer.distance_scale = 1, 4.0
    for item in args.set:
        name, value = item.split("=", 1)
        set_value(cfg, name, value)
    backbone = BackboneModel(cfg.localizer.backbone, torch.device("cpu"), cfg.localizer.backbone_size)
    images, good, bad = load_cells(args.type)
    cells = Cells(backbone, images)
    out: dict = {"type": args.type, "set": args.set, "runs": []}
    for radius in args.radius:
        cfg.localizer.spatial_radius = radius
        run = {"spatial_radius": radius, "few_shot": {}, "stream": {}}
        for shots in args.shots:
            start = time.perf_counter()
            values = [few_shot(cfg, cells, good, bad, shots, seed) for seed in range(args.seeds)]
            run["few_shot"][shots] = [round(float(np.mean(values)), 3), round(float(np.std(values)), 3)]
            print(f"{args.type} radius {radius} {shots} shots: AUROC {np.mean(values):.3f} ± {np.std(values):.3f} "
                  f"({time.perf_counter() - start:.0f} s)", flush=True)
        for rate in args.stream:
            start = time.perf_counter()
            values = [stream(cfg, cells, good, bad, rate, seed) for seed in range(args.seeds)]
            run["stream"][rate] = [round(float(np.mean(values)), 3), round(float(np.std(values)), 3)]
            print(f"{args.type} radius {radius} stream {rate:.0%} defective: AUROC {np.mean(values):.3f} ± "
                  f"{np.std(values):.3f} ({time.perf_counter() - start:.0f} s)", flush=True)
        out["runs"].append(run)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
