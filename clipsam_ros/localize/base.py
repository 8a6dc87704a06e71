"""What every localizer is: the Protocol, and what it returns.

A localizer says *where* a frame looks anomalous, from the frame's cached encoder
outputs: the CLIP features (only when it names a CLIP `encoder`) and the SAM
embedding. It never runs an image encoder itself, so the Inspector can count the
encoder passes and run them once per frame (overlapped on CUDA streams).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np

if TYPE_CHECKING:  # torch and open_clip load with the models, not with this contract
    from ..models.backbone import BackboneFeatures, BackboneModel
    from ..models.clip import ClipEncoder
    from ..models.features import ClipFeatures, SamEmbedding


@dataclass
class AnomalyEstimate:
    anomaly_map: np.ndarray           # float32 (H, W) in 0..1, frame resolution
    image_score: float                # 0..1
    # the map before clipping at 1, same scale (where a defect peaks past 1); None: scores stop at 1
    unclipped: np.ndarray | None = None


class Localizer(Protocol):
    @property
    def encoder(self) -> ClipEncoder | None:
        """The CLIP image encoder the Inspector must run on each frame for it; None: it needs
        nothing but the frame's SAM embedding (no extra encoder pass)."""
        ...

    @property
    def backbone(self) -> BackboneModel | None:
        """The ImageNet backbone the Inspector must run on each frame for it (patch-feature
        localizers: reference, stream); None: none."""
        ...

    def __call__(self, clip: ClipFeatures | None, sam: SamEmbedding, image_size: tuple[int, int], *,
                 features: BackboneFeatures | None = None, camera: int = 0) -> AnomalyEstimate:
        """The anomaly map S_a at frame resolution `image_size` (h, w), and an image score.
        `features`: the frame's `backbone` output; `camera`: which camera the frame came from
        (a localizer that learns from the stream keeps one memory per camera)."""
        ...

    def close(self) -> None:
        """Keep what it learnt while running (the stream's memory file) before it goes; the
        Inspector's owner calls it once, when it is done with the frames."""
        ...


def clip_features(clip: ClipFeatures | None) -> ClipFeatures:
    """The CLIP features a CLIP localizer was given; its own encoder must have made them."""
    if clip is None:
        raise ValueError("a CLIP localizer got no CLIP features: encode the frame with its `encoder` first")
    return clip
