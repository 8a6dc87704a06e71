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
from clipsam_ros.localize import patch_encoder
from clipsam_ros.localize.reference import ReferenceLocalizer, build_bank
from clipsam_ros.localize.stream import StreamLocalizer, StreamWarmUp
from clipsam_ros.models.backbone import BackboneModel


def load_cells(kind: str) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(good, defective) cells of one type as RGB uint8."""
    from elpv_dataset.utils import load_dataset

    images, probs, types = load_dataset()
    rgb = [np.repeat(im[:, :, None], 3, axis=2) for im in images]
    good = [rgb[i] for i in np.flatnonzero((types == kind) & (probs == 0.0))]
    bad = [rgb[i] for i in np.flatnonzero((types == kind) & (probs == 1.0))]
    return good, bad


def auroc(labels, scores) -> float:
    return image_metrics(scores, labels)["image_auroc"]


def few_shot(cfg: Config, backbone: BackboneModel, good, bad, shots: int, seed: int, n_test: int = 60) -> float:
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(good))
    refs = [good[i] for i in order[:shots]]
    test_good = [good[i] for i in order[shots:shots + n_test]]
    test_bad = [bad[i] for i in rng.permutation(len(bad))[:n_test]]
    encode = patch_encoder(None, backbone)  # type: ignore[arg-type]
    bank = build_bank(refs, encode, cfg.localizer.backbone, "", cfg.localizer.spatial_radius,
                      cfg.localizer.coreset_ratio, progress=False)
    loc = ReferenceLocalizer(bank, cfg.localizer, backbone)
    scores = [loc(None, None, im.shape[:2], features=f).image_score  # type: ignore[arg-type]
              for im, f in ((im, backbone.encode(im)) for im in test_good + test_bad)]
    return auroc([0] * len(test_good) + [1] * len(test_bad), scores)


def stream(cfg: Config, backbone: BackboneModel, good, bad, defect_rate: float, seed: int,
           n_frames: int = 300) -> float:
    """AUROC over the frames after warm-up of a stream with `defect_rate` defective cells."""
    rng = np.random.default_rng(seed)
    n_bad = int(round(defect_rate * n_frames))
    frames = [(good[i], 0) for i in rng.permutation(len(good))[:n_frames - n_bad]]
    frames += [(bad[i], 1) for i in rng.permutation(len(bad))[:n_bad]]
    frames = [frames[i] for i in rng.permutation(len(frames))]
    loc = StreamLocalizer(cfg.localizer, backbone, cfg.refiner.threshold, "elpv")
    labels, scores = [], []
    for image, label in frames:
        try:
            est = loc(None, None, image.shape[:2], features=backbone.encode(image))  # type: ignore[arg-type]
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
    cfg.localizer.backbone = "efficientnet_lite0"
    cfg.localizer.spatial_radius, cfg.localizer.distance_scale = 1, 4.0
    for item in args.set:
        name, value = item.split("=", 1)
        set_value(cfg, name, value)
    backbone = BackboneModel(cfg.localizer.backbone, torch.device("cpu"), cfg.localizer.backbone_size)
    good, bad = load_cells(args.type)
    out: dict = {"type": args.type, "set": args.set, "few_shot": {}, "stream": {}}
    for shots in args.shots:
        start = time.perf_counter()
        values = [few_shot(cfg, backbone, good, bad, shots, seed) for seed in range(args.seeds)]
        out["few_shot"][shots] = [round(float(np.mean(values)), 3), round(float(np.std(values)), 3)]
        print(f"{args.type} {shots} shots: AUROC {np.mean(values):.3f} ± {np.std(values):.3f} "
              f"({time.perf_counter() - start:.0f} s)", flush=True)
    for rate in args.stream:
        start = time.perf_counter()
        values = [stream(cfg, backbone, good, bad, rate, seed) for seed in range(args.seeds)]
        out["stream"][rate] = [round(float(np.mean(values)), 3), round(float(np.std(values)), 3)]
        print(f"{args.type} stream {rate:.0%} defective: AUROC {np.mean(values):.3f} ± {np.std(values):.3f} "
              f"({time.perf_counter() - start:.0f} s)", flush=True)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
