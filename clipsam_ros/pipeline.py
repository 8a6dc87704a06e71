"""Inspector: one RGB frame → one InspectionResult.

Per frame the SAM image encoder runs exactly once and the CLIP image encoder at
most once (only when the localizer uses CLIP); the localizer and every refiner
stage work on those cached embeddings. Each result carries the encoder calls
it made and per-stage milliseconds, so the property can be counted from
outside. A frame that fails anywhere gets verdict "error", never "pass".
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import torch

from .config import Config, ConfigError
from .decision import ERROR, Defect, find_defects, verdict_of
from .models.sam import SamModel, build_sam
from .refine.cps import Refinement, refine_cps, threshold_only
from .timing import Stopwatch

log = logging.getLogger(__name__)


@dataclass
class InspectionResult:
    verdict: str                          # pass | fail | error
    score: float                          # highest pixel score of the frame
    mask: np.ndarray                      # (H, W) uint8, 255 = defect
    anomaly_map: np.ndarray               # (H, W) float32 0..1, the localizer's S_a
    pixel_scores: np.ndarray              # (H, W) float32 0..1, fused (see refine.cps)
    defects: list[Defect]
    image_score: float                    # the localizer's own image score
    timings_ms: dict[str, float]
    encoder_calls: dict[str, int]         # {"sam": .., "clip": ..} during this frame
    refinement: Refinement | None = None
    error: str = ""

    @property
    def reject(self) -> bool:
        """What an ejector acts on: anything but a clean pass is rejected."""
        return self.verdict != "pass"

    def to_json(self) -> dict:
        out = {
            "verdict": self.verdict,
            "score": round(float(self.score), 6),
            "defects": [d.to_json() for d in self.defects],
            "timings_ms": {k: round(v, 3) for k, v in self.timings_ms.items()},
            "encoder_calls": dict(self.encoder_calls),
        }
        if self.error:
            out["error"] = self.error
        return out


def error_result(shape: tuple[int, int], message: str, timings_ms: dict[str, float] | None = None,
                 encoder_calls: dict[str, int] | None = None) -> InspectionResult:
    """The fail-safe answer for a frame that could not be inspected."""
    h, w = shape
    return InspectionResult(
        verdict=ERROR, score=1.0, mask=np.zeros((h, w), np.uint8),
        anomaly_map=np.zeros((h, w), np.float32), pixel_scores=np.zeros((h, w), np.float32),
        defects=[], image_score=1.0, timings_ms=timings_ms or {},
        encoder_calls=encoder_calls or {"sam": 0, "clip": 0}, error=message)


def resolve_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device=cuda but no CUDA device is available (set device: auto or cpu)")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


@dataclass
class Inspector:
    cfg: Config
    sam: SamModel
    localizer: object                     # callable (clip, sam, size) -> AnomalyEstimate
    device: torch.device
    frames: int = field(default=0)

    @classmethod
    def from_config(cls, cfg: Config, progress: bool = True) -> "Inspector":
        """Build models and weights; raises one-line errors (ConfigError, WeightError, ...)."""
        if cfg.refiner.method == "mmr":
            raise ConfigError("refiner.method=mmr is not in this release yet (use cps or none)")
        from .localize.factory import build_localizer

        device = resolve_device(cfg.device)
        sam = build_sam(cfg, device)
        localizer = build_localizer(cfg, sam, device, progress=progress)
        return cls(cfg=cfg, sam=sam, localizer=localizer, device=device)

    @property
    def clip_encoder(self):
        return getattr(self.localizer, "encoder", None) if getattr(self.localizer, "uses_clip", False) else None

    def _clip_calls(self) -> int:
        encoder = self.clip_encoder
        return int(encoder.calls) if encoder is not None else 0

    def inspect(self, image_rgb: np.ndarray, watch: Stopwatch | None = None) -> InspectionResult:
        """Inspect one RGB uint8 frame. Never raises for a bad frame: returns verdict "error"."""
        watch = watch or Stopwatch(sync_cuda=self.device.type == "cuda")
        sam_before, clip_before = self.sam.encoder_calls, self._clip_calls()

        def calls() -> dict[str, int]:
            return {"sam": self.sam.encoder_calls - sam_before, "clip": self._clip_calls() - clip_before}

        shape = image_rgb.shape[:2] if getattr(image_rgb, "ndim", 0) >= 2 else (1, 1)
        try:
            result = self._inspect(image_rgb, watch)
        except Exception as exc:  # one bad frame must not take the line down: fail safe
            message = f"{type(exc).__name__}: {' '.join(str(exc).split())}"[:300]
            log.error("frame could not be inspected: %s", message)
            return error_result(shape, message, dict(watch.ms), calls())
        result.encoder_calls = calls()
        self.frames += 1
        return result

    def _inspect(self, image_rgb: np.ndarray, watch: Stopwatch) -> InspectionResult:
        if image_rgb.ndim != 3 or image_rgb.shape[2] != 3 or image_rgb.dtype != np.uint8:
            raise ValueError(f"expected an RGB uint8 HxWx3 frame, got {image_rgb.dtype} {image_rgb.shape}")
        size = image_rgb.shape[:2]
        with watch.stage("total"):
            clip = None
            if self.clip_encoder is not None:
                with watch.stage("clip_encoder"):
                    clip = self.clip_encoder.encode_image(image_rgb)
            with watch.stage("sam_encoder"):
                embedding = self.sam.encode(image_rgb)
            with watch.stage("localize"):
                estimate = self.localizer(clip, embedding, size)
            refinement = self._refine(estimate.anomaly_map, embedding, watch)
            with watch.stage("decide"):
                defects = find_defects(refinement.mask, refinement.pixel_scores, self.cfg.decision)
        return InspectionResult(
            verdict=verdict_of(defects),
            score=float(refinement.pixel_scores.max()),
            mask=refinement.mask.astype(np.uint8) * 255,
            anomaly_map=estimate.anomaly_map,
            pixel_scores=refinement.pixel_scores,
            defects=defects,
            image_score=float(estimate.image_score),
            timings_ms=dict(watch.ms),
            encoder_calls={},
            refinement=refinement,
        )

    def _refine(self, anomaly_map: np.ndarray, embedding, watch: Stopwatch) -> Refinement:
        method = self.cfg.refiner.method
        if method == "cps":
            return refine_cps(anomaly_map, embedding, self.sam, self.cfg.refiner, watch)
        with watch.stage("fuse"):
            return threshold_only(anomaly_map, self.cfg.refiner)
