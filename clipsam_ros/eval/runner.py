"""The evaluation loop: one pass over a dataset, every refiner variant on the same embeddings.

Per image, the Inspector's own first stage runs once (`Inspector.analyse`: the
SAM encoder, CLIP's when the localizer uses it, overlapped on CUDA streams as
on the line, then the localizer); then its second stage (`Inspector.conclude`)
runs once per distinct refiner variant (the configured pipeline, plus the
ablation rows) on that cached embedding and map. So eval measures exactly the
code a frame runs. Each variant has its own `MetricAccumulator` per class.

Choices, documented in docs/EVAL.md:

* resolution: each image at its own size, or with `size` > 0 resized so its
  longer side is `size` (aspect kept; masks nearest-neighbour) before anything
  runs. Metrics pool all pixels of a class at that resolution.
* pixel scores: the refiner's fused scores (`InspectionResult.pixel_scores`);
  image score: their maximum (`InspectionResult.score`), per variant, so the
  image AUROC also reflects the refinement.
* reference localizer: a memory bank per class from `shots` of its train/good
  images (evenly spaced over the sorted list), through `Inspector.from_config(
  references=...)`; the configured `localizer.bank` and `reference_dir` are not
  used. Other localizers are built once, in one Inspector for every class.
* stream localizer (learns online): run as the node runs it, on the same config.
  Each class is a product and gets a fresh memory (its own Inspector); its test
  images go by in a fixed shuffled order (`line_order`: a line does not sort its
  parts by defect kind, and sorted folders would fill the memory with one kind).
  With `localizer.reference_dir` set the memory starts seeded from it; otherwise
  the first `localizer.warmup_frames` images are warm-up frames, answered
  "error" on a line: they are left out of every metric and the verdict table and
  counted (`ClassResult.warmup_frames`). `shots` does not apply.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..config import Config
from ..data.datasets import ClassData, DatasetError, Sample, read_mask
from ..decision import Defect, Verdict
from ..imaging.files import read_rgb
from ..inspector import FrameAnalysis, InspectionResult, Inspector
from ..localize import learns_online, needs_references
from ..localize.stream import StreamWarmUp
from ..timing import Stopwatch
from .metrics import MetricAccumulator, PixelCurves, iou
from .variants import PIPELINE, Variant, ablation_variants


@dataclass
class WorstImage:
    """A badly segmented image, kept for the overlays."""

    iou: float
    sample: Sample
    pred: np.ndarray          # bool
    truth: np.ndarray         # bool
    defects: list[Defect]
    verdict: Verdict
    score: float


@dataclass
class ClassResult:
    name: str
    images: int
    metrics: dict[str, dict[str, float]]   # variant name -> metric -> value
    curves: PixelCurves                    # the pipeline variant's
    worst: list[WorstImage]
    bank_images: int = 0                   # reference localizer: normal images in the bank
    # the pipeline's verdicts at the configured thresholds: good|defect -> pass|fail (error = fail)
    confusion: dict[str, dict[str, int]] = field(default_factory=dict)
    warmup_frames: int = 0                 # stream localizer: images that only filled the memory


@dataclass
class EvalResult:
    classes: list[ClassResult]
    pipeline: Variant
    ablations: dict[str, list[Variant]]
    size: int
    shots: int
    wall_s: float
    stage_ms: dict[str, float] = field(default_factory=dict)   # summed over all images


def line_order(samples: list[Sample], seed: int = 0) -> list[Sample]:
    """The samples in a fixed pseudo-random order, as parts come down a line."""
    order = np.random.default_rng(seed).permutation(len(samples))
    return [samples[i] for i in order]


def pick_shots(paths: list[Path], shots: int) -> list[Path]:
    """`shots` paths evenly spaced over the sorted list (all of them when shots is 0 or more)."""
    if not shots or shots >= len(paths):
        return list(paths)
    idx = np.linspace(0, len(paths) - 1, shots).round().astype(int)
    return [paths[i] for i in sorted(set(idx))]


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
        self._shared: Inspector | None = None

    # --------------------------------------------------------------- inspectors

    def learns_from_references(self) -> bool:
        # eval gives a localizer that learns from good parts each class's shots
        return needs_references(self.cfg)

    def inspector_for(self, data: ClassData, bar: tqdm | None = None) -> Inspector:
        """The class's Inspector: one with a bank of the class's shots, or the one shared by all."""
        if learns_online(self.cfg):
            # a product of its own: a fresh memory, never the previous class's parts
            return Inspector.from_config(self.cfg, progress=False, sam=self.sam)
        if not self.learns_from_references():
            if self._shared is None:
                self._shared = Inspector.from_config(self.cfg, progress=False, sam=self.sam)
            return self._shared
        paths = pick_shots(data.train_good, self.shots)
        if len(paths) < 2:
            raise DatasetError(f"class {data.name} has {len(data.train_good)} train/good images; the reference "
                               f"localizer needs at least 2 (or use another localizer.method)")
        if bar is not None:
            bar.set_postfix_str(f"{data.name}: reference bank")
        images = [read_rgb(p, self.size, fix="remove it or fix the dataset") for p in paths]
        with self.watch.stage("reference_bank"):
            inspector = Inspector.from_config(self.cfg, progress=False, sam=self.sam, references=images)
        if bar is not None:
            bar.update(len(images))
        return inspector

    def bank_images(self, data: ClassData) -> int:
        return len(pick_shots(data.train_good, self.shots)) if self.learns_from_references() else 0

    # --------------------------------------------------------------- one image

    def analyse(self, inspector: Inspector, image: np.ndarray) -> tuple[FrameAnalysis, dict[str, InspectionResult]]:
        """The Inspector's first stage once, then its second for every distinct refiner variant."""
        analysis = inspector.analyse(image, self.watch)
        results = {}
        for key, variant in self.unique.items():
            with self.watch.stage(f"refine[{variant.name}]"):
                results[key] = inspector.conclude(analysis, variant.refiner)
        return analysis, results

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
        inspector = self.inspector_for(data, bar)
        bar.set_postfix_str(data.name)
        bank_images = self.bank_images(data)
        # a reference is never a test image (the folders layout draws both from good/)
        shots = set(pick_shots(data.train_good, self.shots)) if self.learns_from_references() else set()
        test = [s for s in data.test if s.image not in shots]
        if learns_online(self.cfg):
            test = line_order(test)
        warmup = 0
        accs = {key: MetricAccumulator() for key in self.unique}
        worst: list[WorstImage] = []
        confusion = {"good": {"pass": 0, "fail": 0}, "defect": {"pass": 0, "fail": 0}}
        for sample in test:
            image = read_rgb(sample.image, self.size, fix="remove it or fix the dataset")
            truth = read_mask(sample, image.shape[:2])
            try:
                _, results = self.analyse(inspector, image)
            except StreamWarmUp:        # the memory learnt the frame; there is nothing to score yet
                warmup += 1
                bar.update(1)
                continue
            for key, result in results.items():
                if sample.pixel_truth:
                    accs[key].add(result.pixel_scores, truth, result.score, sample.label)
                else:
                    accs[key].add_image(result.score, sample.label)
            pipeline = results[self.pipeline.key]
            confusion["defect" if sample.label else "good"]["pass" if pipeline.verdict == "pass" else "fail"] += 1
            if sample.pixel_truth:
                self._keep_worst(worst, sample, truth, pipeline)
            bar.update(1)
        by_key = {key: acc.result() for key, acc in accs.items()}
        names = {v.name: by_key[v.key] for v in [self.pipeline] + [v for vs in self.ablations.values() for v in vs]}
        return ClassResult(data.name, len(test) - warmup, names, accs[self.pipeline.key].curves(), worst,
                           bank_images, confusion, warmup)

    def _keep_worst(self, worst: list[WorstImage], sample: Sample, truth: np.ndarray,
                    result: InspectionResult) -> None:
        if not self.worst_k:
            return
        pred = result.mask > 0
        overlap = iou(pred, truth)
        if len(worst) == self.worst_k and overlap >= worst[-1].iou:
            return
        worst.append(WorstImage(overlap, sample, pred, truth, result.defects, result.verdict, result.score))
        # lowest IoU first; among equals the larger wrong area
        worst.sort(key=lambda w: (w.iou, -int(np.logical_xor(w.pred, w.truth).sum())))
        del worst[self.worst_k:]

