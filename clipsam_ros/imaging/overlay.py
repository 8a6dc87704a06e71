"""Overlay rendering: tinted defect mask, boxes, verdict and score, for people and RViz."""
from __future__ import annotations

import cv2
import numpy as np

from ..decision import Defect, Verdict

# BGR, because overlays go to cv2.imwrite and to bgr8 topics
VERDICT_COLOURS = {Verdict.PASS: (60, 180, 60), Verdict.FAIL: (40, 40, 230), Verdict.ERROR: (0, 165, 255)}
MASK_TINT = (40, 40, 230)


def render_overlay(image_rgb: np.ndarray, mask: np.ndarray, defects: list[Defect], verdict: Verdict | str,
                   score: float, alpha: float = 0.45) -> np.ndarray:
    """A BGR uint8 image: the frame, the mask tinted, one box per defect, and a verdict banner."""
    out = cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR)
    region = mask > 0
    if region.any():
        tint = np.empty_like(out)
        tint[:] = MASK_TINT
        out[region] = cv2.addWeighted(out, 1 - alpha, tint, alpha, 0)[region]
        contours, _ = cv2.findContours(region.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(out, contours, -1, MASK_TINT, 1)
    colour = VERDICT_COLOURS.get(Verdict(verdict), VERDICT_COLOURS[Verdict.ERROR])
    thickness = max(1, round(min(out.shape[:2]) / 320))
    for d in defects:
        x0, y0, x1, y1 = d.bbox
        cv2.rectangle(out, (x0, y0), (x1, y1), (0, 255, 255), thickness)
        cv2.putText(out, f"{d.score:.2f}", (x0, max(12, y0 - 4)), cv2.FONT_HERSHEY_SIMPLEX,
                    0.4 * thickness, (0, 255, 255), thickness, cv2.LINE_AA)
    banner = f"{verdict.upper()}  score {score:.2f}  defects {len(defects)}"
    scale = 0.6 * thickness
    (tw, th), base = cv2.getTextSize(banner, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness + 1)
    cv2.rectangle(out, (0, 0), (tw + 12, th + base + 10), colour, -1)
    cv2.putText(out, banner, (6, th + 5), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255),
                thickness + 1, cv2.LINE_AA)
    return out
