"""Pixel scores from the map and SAM's logits, and the baseline refiner (the map thresholded).

    score = w · S_a + (1 − w) · σ(L),   w = `refiner.fuse_weight`

σ(L) is 0 where no region was prompted; the mask is score > MASK_LEVEL (base.py).
A prompted region the fused mask keeps fewer pixels of than a defect needs (SAM outlined nothing
there, or a speck) is judged as if SAM had confirmed it (`keep_map_regions`), in every refiner
that prompts SAM.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .base import MASK_LEVEL, Refinement

if TYPE_CHECKING:
    from ..config import RefinerConfig
    from ..models.features import SamEmbedding
    from ..models.sam import SamModel
    from ..timing import Stopwatch
    from .ppg import PromptSet


def fuse_scores(anomaly_map: np.ndarray, logits: np.ndarray | None, weight: float) -> np.ndarray:
    """w · S_a + (1 − w) · σ(L); σ(L) = 0 where there is no SAM mask."""
    sam_prob = np.zeros_like(anomaly_map) if logits is None else 1.0 / (1.0 + np.exp(-np.clip(logits, -50.0, 50.0)))
    return fuse_probabilities(anomaly_map, sam_prob, weight)


def fuse_probabilities(anomaly_map: np.ndarray, sam_prob: np.ndarray, weight: float) -> np.ndarray:
    """w · S_a + (1 − w) · P, with P SAM's soft mask in 0..1."""
    return (weight * anomaly_map + (1.0 - weight) * sam_prob).astype(np.float32)


def regions_sam_missed(mask: np.ndarray, prompts: list[PromptSet], min_px: int) -> np.ndarray | None:
    """The prompted regions that the fused `mask` keeps fewer than `min_px` pixels of (SAM outlined
    nothing there, or less than a defect), or None."""
    missed = [p.region for p in prompts if int((mask & p.region).sum()) < min_px]
    return np.logical_or.reduce(missed) if missed else None


def keep_map_regions(anomaly_map: np.ndarray, scores: np.ndarray, regions: np.ndarray | None, weight: float
                     ) -> tuple[np.ndarray, np.ndarray]:
    """The mask (score > MASK_LEVEL) and scores of a frame, with `regions` judged as if SAM had
    confirmed them: in the mask, and scored at least w · S_a + (1 − w), what SAM's certainty
    (σ(L) = 1) would give. For regions the decoder never saw (beyond `max_regions`) and regions it
    found (almost) nothing in: the fused rule alone would drop them (below fuse_weight 0.5 it needs
    some of SAM's confidence even where S_a = 1), and SAM finding nothing must not pass a part that
    SAM outlining the defect would fail."""
    mask = scores > MASK_LEVEL
    if regions is None:
        return mask, scores
    confirmed = fuse_probabilities(anomaly_map, np.ones_like(anomaly_map), weight)
    return mask | regions, np.where(regions, np.maximum(scores, confirmed), scores).astype(np.float32)


def threshold_only(anomaly_map: np.ndarray, cfg: RefinerConfig) -> Refinement:
    """The baseline: S_a > θ is the mask, S_a the score."""
    return Refinement(mask=anomaly_map > cfg.threshold, pixel_scores=anomaly_map.astype(np.float32))


def refine_none(anomaly_map: np.ndarray, embedding: SamEmbedding, sam: SamModel, cfg: RefinerConfig,
                watch: Stopwatch, unclipped: np.ndarray | None = None, min_defect_px: int = 0) -> Refinement:
    """`refiner.method: none` as a refiner: no prompt, no decoder pass."""
    with watch.stage("fuse"):
        return threshold_only(anomaly_map, cfg)
