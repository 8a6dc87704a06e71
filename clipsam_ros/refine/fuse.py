"""Pixel scores from the map and SAM's logits, and the baseline refiner (the map thresholded).

    score = w · S_a + (1 − w) · σ(L),   w = `refiner.fuse_weight`

σ(L) is 0 where no region was prompted; the mask is score > MASK_LEVEL (base.py).
A prompted region where SAM outlined nothing keeps the thresholded map (`regions_sam_missed`),
in every refiner that prompts SAM.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from .base import Refinement

if TYPE_CHECKING:
    from ..config import RefinerConfig
    from ..models.features import SamEmbedding
    from ..models.sam import SamModel
    from ..timing import Stopwatch
    from .ppg import PromptSet


def fuse_scores(anomaly_map: np.ndarray, logits: np.ndarray | None, weight: float) -> np.ndarray:
    """w · S_a + (1 − w) · σ(L); σ(L) = 0 where there is no SAM mask."""
    sam_prob = np.zeros_like(anomaly_map) if logits is None else 1.0 / (1.0 + np.exp(-np.clip(logits, -50.0, 50.0)))
    return (weight * anomaly_map + (1.0 - weight) * sam_prob).astype(np.float32)


def regions_sam_missed(found: torch.Tensor, prompts: list[PromptSet]) -> np.ndarray | None:
    """The prompted regions whose SAM mask `found` (B, H, W bool, one row per prompt) is empty, or
    None. They keep the thresholded map, as regions left unprompted do: with `fuse_weight` < 0.5 a
    pixel needs some of SAM's confidence even where S_a = 1, and SAM finding nothing must not pass
    the part."""
    empty = ~found.flatten(1).any(dim=1).cpu().numpy()
    if not empty.any():
        return None
    return np.logical_or.reduce([p.region for p, miss in zip(prompts, empty) if miss])


def threshold_only(anomaly_map: np.ndarray, cfg: RefinerConfig) -> Refinement:
    """The baseline: S_a > θ is the mask, S_a the score."""
    return Refinement(mask=anomaly_map > cfg.threshold, pixel_scores=anomaly_map.astype(np.float32))


def refine_none(anomaly_map: np.ndarray, embedding: SamEmbedding, sam: SamModel, cfg: RefinerConfig,
                watch: Stopwatch, unclipped: np.ndarray | None = None) -> Refinement:
    """`refiner.method: none` as a refiner: no prompt, no decoder pass."""
    with watch.stage("fuse"):
        return threshold_only(anomaly_map, cfg)
