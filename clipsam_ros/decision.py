"""Defects and the verdict, from the final mask and the pixel scores.

A defect is a connected region (8-connectivity) of the final mask with at least
`decision.min_defect_area_px` pixels whose peak pixel score reaches
`decision.score_threshold`. A part fails when it has at least one defect, so
the published boxes and the verdict never disagree. The frame score is the
highest pixel score in the frame.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import Enum

import cv2
import numpy as np

from .config import DecisionConfig


class Verdict(str, Enum):
    """What a frame ends in. A str, so it compares, prints and serialises as "pass" etc."""

    PASS = "pass"
    FAIL = "fail"
    ERROR = "error"      # the frame could not be inspected: fail-safe, never a silent pass

    def __str__(self) -> str:
        return self.value

    @property
    def reject(self) -> bool:
        """The one reject rule, what ejectors and PLC bridges act on: anything but a clean pass."""
        return self is not Verdict.PASS


@dataclass
class Defect:
    bbox: list[int]      # [x0, y0, x1, y1], inclusive pixel extents
    area_px: int
    score: float         # peak pixel score inside the region

    def to_json(self) -> dict:
        return asdict(self)


def find_defects(mask: np.ndarray, pixel_scores: np.ndarray, cfg: DecisionConfig) -> list[Defect]:
    """Connected regions of `mask` that pass the area and score rules, highest score first."""
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    defects = []
    for i in range(1, count):
        x, y, w, h, area = (int(v) for v in stats[i])
        if area < cfg.min_defect_area_px:
            continue
        score = float(pixel_scores[labels == i].max())
        if score >= cfg.score_threshold:
            defects.append(Defect(bbox=[x, y, x + w - 1, y + h - 1], area_px=area, score=score))
    return sorted(defects, key=lambda d: -d.score)


def verdict_of(defects: list[Defect]) -> Verdict:
    return Verdict.FAIL if defects else Verdict.PASS
