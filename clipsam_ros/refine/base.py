"""What every refiner is: the Protocol, and what it returns.

A refiner is a plain function of (anomaly map, the frame's SAM embedding, the SAM
model whose prompt decoder it may call, its config, a stopwatch): no hidden state,
so eval can run several refiners on one embedding and get what the Inspector would.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import numpy as np

if TYPE_CHECKING:
    from ..config import RefinerConfig
    from ..models.features import SamEmbedding
    from ..models.sam import SamModel
    from ..timing import Stopwatch
    from .ppg import PromptSet

# the fused score above which a pixel is a defect: with fuse_weight 0 this is SAM's own L > 0
MASK_LEVEL = 0.5


@dataclass
class Refinement:
    """A refiner's answer for one frame."""

    mask: np.ndarray                      # (H, W) bool, the final defect mask
    pixel_scores: np.ndarray              # (H, W) float32 in 0..1
    prompts: list[PromptSet] = field(default_factory=list)
    # union mask after each stage that ran, e.g. {"points": .., "logits": .., "box": ..}
    stage_masks: dict[str, np.ndarray] = field(default_factory=dict)
    boxes: np.ndarray | None = None       # (B, 4) the last decoder pass's boxes, when it had any


class Refiner(Protocol):
    def __call__(self, anomaly_map: np.ndarray, embedding: SamEmbedding, sam: SamModel,
                 cfg: RefinerConfig, watch: Stopwatch, unclipped: np.ndarray | None = None,
                 min_defect_px: int = 0) -> Refinement:
        """The defect mask and pixel scores of one frame from S_a and the cached embedding
        (`unclipped`: S_a before clipping at 1, where the localizer has it; `min_defect_px`: the
        decision's smallest defect, below which SAM's outline of a region counts as none)."""
        ...
