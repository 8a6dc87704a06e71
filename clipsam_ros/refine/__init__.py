"""Refiners: anomaly map + one SAM embedding -> defect mask and pixel scores.

One function per `refiner.method` in `REFINERS`; `refine` is the one dispatch the
Inspector and eval's ablation variants both use. Every refiner is a `base.Refiner`.

    cps   PPG + CPS (Hou et al.): point prompts, then the three-stage cascade
    mmr   ClipSAM's multi-level mask refinement
    none  the map thresholded at θ (the baseline)
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..config import ConfigError, RefinerConfig
from ..timing import Stopwatch
from .base import MASK_LEVEL, Refinement, Refiner
from .cps import refine_cps
from .fuse import refine_none
from .mmr import refine_mmr

if TYPE_CHECKING:
    from ..models.features import SamEmbedding
    from ..models.sam import SamModel

__all__ = ["MASK_LEVEL", "REFINERS", "Refinement", "Refiner", "refine"]

REFINERS: dict[str, Refiner] = {
    "cps": refine_cps,
    "mmr": refine_mmr,
    "none": refine_none,
}


def refine(cfg: RefinerConfig, anomaly_map: np.ndarray, embedding: SamEmbedding, sam: SamModel,
           watch: Stopwatch | None = None, unclipped: np.ndarray | None = None, min_defect_px: int = 0) -> Refinement:
    """The refiner `cfg.method` on one frame's cached embedding."""
    refiner = REFINERS.get(cfg.method)
    if refiner is None:
        raise ConfigError(f"refiner.method={cfg.method!r} is not registered (choose one of: {', '.join(REFINERS)})")
    return refiner(anomaly_map, embedding, sam, cfg, watch or Stopwatch(), unclipped, min_defect_px)
