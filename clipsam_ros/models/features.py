"""What the encoders produce for one frame.

These (and the localizer's `AnomalyEstimate`) are the only things that flow between
the encoders, the localizers and the refiners, so every stage after the encoders
works on cached tensors.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class SamEmbedding:
    """The SAM image-encoder output for one frame, with the geometry to map it back."""

    features: torch.Tensor            # (1, 256, G, G), G = img_size // 16
    original_size: tuple[int, int]    # (h, w) of the frame
    input_size: tuple[int, int]       # (h, w) of the resized frame inside the padded square
    img_size: int                     # side of SAM's square input (1024, or 256 for LiteMedSAM)

    @property
    def grid(self) -> int:
        return int(self.features.shape[-1])

    def valid_cells(self) -> tuple[int, int]:
        """(rows, cols) of embedding cells that cover the frame (the rest is padding)."""
        scale = self.grid / self.img_size
        rows = max(1, int(np.ceil(self.input_size[0] * scale)))
        cols = max(1, int(np.ceil(self.input_size[1] * scale)))
        return rows, cols


@dataclass
class ClipFeatures:
    """CLIP image-encoder output for one frame, in the joint image-text space."""

    patch_tokens: list[torch.Tensor]  # one (Hp*Wp, D) per selected layer
    grid: tuple[int, int]             # (Hp, Wp)
    image_embedding: torch.Tensor     # (D,) class token, projected
