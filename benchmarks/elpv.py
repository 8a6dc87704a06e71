"""ELPV (electroluminescence images of solar cells, the `elpv-dataset` package): image AUROC of
the reference (few-shot) and stream (zero-shot) localizers on real parts nobody here made.

Good = defect probability 0, defective = probability 1. Tune on `--type poly` only; `mono`
is the hold-out. Results: benchmarks/ELPV.md.

    python benchmarks/elpv.py --type poly --seeds 3 --set localizer.augment_references=flips
        --set localizer.backbone=efficientnet_lite2 --set localizer.backbone_size=300   # (one line)

Settings are the benchmark's own (below) plus `--set`; one row per protocol, mean ± sd
over the seeds (seed s draws the references, the test cells and the stream's order).
"""
from __future__ import annotations

import argparse
import hashlib
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
    """Backbone features of cells, each encoded once (in batches) and reused by every protocol;
    images the bank makes (mirrored copies) are cached by content."""

    def __init__(self, backbone: BackboneModel, images: list[np.ndarray]):
        self.backbone, self.images, self.cache, self.made = backbone, images, {}, {}

    def features(self, indices) -> list:
        todo = [i for i in dict.fromkeys(indices) if i not in self.cache]
        for start in range(0, len(todo), 16):
            chunk = todo[start:start + 16]
            for i, f in zip(chunk, self.backbone.encode_batch([self.images[i] for i in chunk])):
                self.cache[i] = f
        return [self.cache[i] for i in indices]

    def grid(self, image: np.ndarray):
        key = hashlib.sha1(image.tobytes()).digest()
        if key not in self.made:
            self.made[key] = backbone_grid(self.backbone.encode(image))
        return self.made[key]


def auroc(labels, scores) -> float:
    return image_metrics(scores, labels)["image_auroc"]


def draw(good, bad, shots: int, seed: int, n_test: int = 60) -> tuple[list[int], list[int], list[int]]:
    """Seed s's few-shot draw: `shots` good cells as references; `n_test` other good and `n_test`
    defective cells as the test, and their labels (0 good, 1 defective)."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(good))
    refs = [good[i] for i in order[:shots]]
    test = [good[i] for i in order[shots:shots + n_test]] + [bad[i] for i in rng.permutation(len(bad))[:n_test]]
    return refs, test, [0] * n_test + [1] * n_test


def few_shot(cfg: Config, cells: Cells, good, bad, shots: int, seed: int, n_test: int = 60) -> float:
    """`shots` good cells as references; 60 other good and 60 defective cells as the test."""
    refs, test, labels = draw(good, bad, shots, seed, n_test)
    bank = build_bank([cells.images[i] for i in refs], cells.grid, cfg.localizer.backbone, "",
                      cfg.localizer.spatial_radius, cfg.localizer.coreset_ratio, progress=False,
                      augment=cfg.localizer.augment_references)
    loc = ReferenceLocalizer(bank, cfg.localizer, cells.backbone)
    scores = [loc(None, None, (300, 300), features=f).image_score  # type: ignore[arg-type]
              for f in cells.features(test)]
    return auroc(labels, scores)


def stream(cfg: Config, cells: Cells, good, bad, defect_rate: float, seed: int, n_frames: int = 200) -> float:
    """AUROC over the frames after warm-up of a stream with `defect_rate` defective cells, no references."""
    rng = np.random.default_rng(seed)
    n_bad = int(round(defect_rate * n_frames))
    frames = [(good[i], 0) for i in rng.permutation(len(good))[:n_frames - n_bad]]
    frames += [(bad[i], 1) for i in rng.permutation(len(bad))[:n_bad]]
    frames = [frames[i] for i in rng.permutation(len(frames))]
    loc = StreamLocalizer(cfg.localizer, cells.backbone, cfg.refiner, "elpv")
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
    parser.add_argument("--set", action="append", default=[], help="config key=value")
    args = parser.parse_args()
    torch.set_num_threads(2)
    cfg = Config()
    # the benchmark's settings: cells arrive anywhere in the frame as far as grains and cracks go
    cfg.localizer.backbone, cfg.localizer.spatial_radius, cfg.localizer.distance_scale = "efficientnet_lite0", -1, 4.0
    for item in args.set:
        name, value = item.split("=", 1)
        set_value(cfg, name, value)
    backbone = BackboneModel(cfg.localizer.backbone, torch.device("cpu"), cfg.localizer.backbone_size,
                             layers=cfg.localizer.backbone_layers)
    images, good, bad = load_cells(args.type)
    cells = Cells(backbone, images)
    out: dict = {"type": args.type, "set": args.set, "seeds": args.seeds, "few_shot": {}, "stream": {}}
    protocols = [("few_shot", shots, few_shot) for shots in args.shots]
    protocols += [("stream", rate, stream) for rate in args.stream]
    for kind, value, run in protocols:
        start = time.perf_counter()
        values = [run(cfg, cells, good, bad, value, seed) for seed in range(args.seeds)]
        mean, sd = float(np.mean(values)), float(np.std(values))
        out[kind][value] = [round(mean, 3), round(sd, 3), [round(v, 3) for v in values]]
        what = f"{value} shots" if kind == "few_shot" else f"stream {value:.0%} defective"
        print(f"{args.type} {what}: AUROC {mean:.3f} ± {sd:.3f} ({time.perf_counter() - start:.0f} s)", flush=True)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
