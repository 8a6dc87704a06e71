"""The evaluation loop: one pass over a dataset, every refiner variant on the same embeddings.

Per image, the SAM encoder (and CLIP's, when the localizer uses it) runs once
and the localizer once; then each distinct refiner variant (the configured
pipeline, plus the ablation rows) runs on that cached embedding and map. Each
variant has its own `MetricAccumulator` per class.

Choices, documented in docs/EVAL.md:

* resolution: each image at its own size, or with `size` > 0 resized so its
  longer side is `size` (aspect kept; masks nearest-neighbour) before anything
  runs. Metrics pool all pixels of a class at that resolution.
* pixel scores: the refiner's fused scores (`InspectionResult.pixel_scores`);
  image score: their maximum (`InspectionResult.score`), per variant, so the
  image AUROC also reflects the refinement.
* reference localizer: a memory bank per class from `shots` of its train/good
  images (evenly spaced over the sorted list); the configured `localizer.bank`
  and `reference_dir` are not used. Other localizers are built once.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..config import Config
from ..decision import Defect, find_defects, verdict_of
from ..timing import Stopwatch
from ..data.datasets import ClassData, DatasetError, Sample, read_mask, read_rgb
from .metrics import MetricAccumulator, PixelCurves
from .variants import PIPELINE, Variant, ablation_variants, refine


@dataclass
class WorstImage:
    """A badly segmented image, kept for the overlays."""

    iou: float
    sample: Sample
    pred: np.ndarray          # bool
    truth: np.ndarray         # bool
    defects: list[Defect]
    verdict: str
    score: float


@dataclass
class ClassResult:
    name: str
    images: int
    metrics: dict[str, dict[str, float]]   # variant name -> metric -> value
    curves: PixelCurves                    # the pipeline variant's
    worst: list[WorstImage]
    bank_images: int = 0                   # reference localizer: normal images in the bank


@dataclass
class EvalResult:
    classes: list[ClassResult]
    pipeline: Variant
    ablations: dict[str, list[Variant]]
    size: int
    shots: int
    wall_s: float
    stage_ms: dict[str, float] = field(default_factory=dict)   # summed over all images


def pick_shots(paths: list[Path], shots: int) -> list[Path]:
    """`shots` paths evenly spaced over the sorted list (all of them when shots is 0 or more)."""
    if not shots or shots >= len(paths):
        return list(paths)
    idx = np.linspace(0, len(paths) - 1, shots).round().astype(int)
    return [paths[i] for i in sorted(set(idx))]


def _iou(pred: np.ndarray, truth: np.ndarray) -> float:
    union = np.logical_or(pred, truth).sum()
    return 1.0 if union == 0 else float(np.logical_and(pred, truth).sum() / union)


class Evaluator:
    """Holds the models across classes; `run` evaluates a list of classes."""

    def __init__(self, cfg: Config, sam, device: torch.device, ablations: list[str] = (),
                 size: int = 0, shots: int = 8, worst: int = 3, progress: bool = True):
        self.cfg, self.sam, self.device = cfg, sam, device
        self.size, self.shots, self.worst_k, self.progress = size, shots, worst, progress
        self.pipeline = Variant(PIPELINE, cfg.refiner)
        self.ablations = {a: ablation_variants(a, cfg.refiner) for a in dict.fromkeys(ablations)}
        # distinct refiners, each computed once per image
        self.unique: dict[str, Variant] = {}
        for v in [self.pipeline] + [v for vs in self.ablations.values() for v in vs]:
            self.unique.setdefault(v.key, v)
        self.watch = Stopwatch(sync_cuda=device.type == "cuda")
        self._shared_localizer = None

    # --------------------------------------------------------------- localizers

    def localizer_for(self, data: ClassData, bar: tqdm | None = None):
        """The class's localizer: a fresh reference bank, or the shared CLIP-based one."""
        cfg = self.cfg
        if cfg.localizer.method != "reference":
            if self._shared_localizer is None:
                from ..localize.factory import build_localizer

                self._shared_localizer = build_localizer(cfg, self.sam, self.device, progress=False)
            return self._shared_localizer
        from ..localize.reference import ReferenceLocalizer, build_bank

        paths = pick_shots(data.train_good, self.shots)
        if len(paths) < 2:
            raise DatasetError(f"class {data.name} has {len(data.train_good)} train/good images; the reference "
                               f"localizer needs at least 2 (or use another localizer.method)")
        if bar is not None:
            bar.set_postfix_str(f"{data.name}: reference bank")

        def encode(image):
            if bar is not None:
                bar.update(1)
            with self.watch.stage("sam_encoder"):
                return self.sam.encode(image)

        images = [read_rgb(p, self.size) for p in paths]
        bank = build_bank(images, encode, sam_variant=cfg.sam.variant, spatial_radius=cfg.localizer.spatial_radius,
                          max_patches=cfg.localizer.bank_max_patches, progress=False)
        return ReferenceLocalizer(bank, cfg.localizer)

    def bank_images(self, data: ClassData) -> int:
        return len(pick_shots(data.train_good, self.shots)) if self.cfg.localizer.method == "reference" else 0

    # --------------------------------------------------------------- one image

    def analyse(self, localizer, image: np.ndarray):
        """Encoders once, localizer once, then every distinct refiner: (estimate, {key: Refinement})."""
        watch = self.watch
        clip = None
        if getattr(localizer, "uses_clip", False):
            with watch.stage("clip_encoder"):
                clip = localizer.encoder.encode_image(image)
        with watch.stage("sam_encoder"):
            embedding = self.sam.encode(image)
        with watch.stage("localize"):
            estimate = localizer(clip, embedding, image.shape[:2])
        refinements = {}
        for key, variant in self.unique.items():
            with watch.stage(f"refine[{variant.name}]"):
                refinements[key] = refine(variant.refiner, estimate.anomaly_map, embedding, self.sam)
        return estimate, refinements

    # --------------------------------------------------------------- classes

    def run(self, classes: list[ClassData]) -> EvalResult:
        started = time.perf_counter()
        total = sum(len(c.test) + self.bank_images(c) for c in classes)
        results = []
        with tqdm(total=total, desc="eval", unit="img", disable=not self.progress) as bar:
            for data in classes:
                results.append(self._run_class(data, bar))
        return EvalResult(results, self.pipeline, self.ablations, self.size, self.shots,
                          round(time.perf_counter() - started, 2),
                          {k: round(v, 1) for k, v in self.watch.ms.items()})

    def _run_class(self, data: ClassData, bar: tqdm) -> ClassResult:
        localizer = self.localizer_for(data, bar)
        bar.set_postfix_str(data.name)
        bank_images = self.bank_images(data)
        accs = {key: MetricAccumulator() for key in self.unique}
        worst: list[WorstImage] = []
        for sample in data.test:
            image = read_rgb(sample.image, self.size)
            truth = read_mask(sample, image.shape[:2])
            _, refinements = self.analyse(localizer, image)
            for key, ref in refinements.items():
                accs[key].add(ref.pixel_scores, truth, float(ref.pixel_scores.max()), sample.label)
            self._keep_worst(worst, sample, truth, refinements[self.pipeline.key])
            bar.update(1)
        by_key = {key: acc.result() for key, acc in accs.items()}
        names = {v.name: by_key[v.key] for v in [self.pipeline] + [v for vs in self.ablations.values() for v in vs]}
        return ClassResult(data.name, len(data.test), names, accs[self.pipeline.key].curves(), worst, bank_images)

    def _keep_worst(self, worst: list[WorstImage], sample: Sample, truth: np.ndarray, ref) -> None:
        if not self.worst_k:
            return
        pred = ref.mask.astype(bool)
        iou = _iou(pred, truth)
        if len(worst) == self.worst_k and iou >= worst[-1].iou:
            return
        defects = find_defects(pred, ref.pixel_scores, self.cfg.decision)
        worst.append(WorstImage(iou, sample, pred, truth, defects, verdict_of(defects),
                                float(ref.pixel_scores.max())))
        # lowest IoU first; among equals the larger wrong area
        worst.sort(key=lambda w: (w.iou, -int(np.logical_xor(w.pred, w.truth).sum())))
        del worst[self.worst_k:]

