"""Result files out: the `inspect` contract (mask PNG, overlay PNG, JSON per image)."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from ..errors import one_line
from ..imaging.overlay import render_overlay
from ..inspector import InspectionResult, error_result


def write_result(out: Path, stem: str, image_rgb: np.ndarray, result: InspectionResult) -> None:
    """`<stem>_mask.png` (0/255), `<stem>_overlay.png` and `<stem>.json`."""
    cv2.imwrite(str(out / f"{stem}_mask.png"), result.mask)
    overlay = render_overlay(image_rgb, result.mask, result.defects, result.verdict, result.score)
    cv2.imwrite(str(out / f"{stem}_overlay.png"), overlay)
    (out / f"{stem}.json").write_text(json.dumps(result.to_json(), indent=2) + "\n")


def write_error(out: Path, stem: str, message: str) -> None:
    """The JSON of a file that could not even be read: verdict "error", never a silent skip."""
    data = error_result((1, 1), one_line(message)).to_json()
    (out / f"{stem}.json").write_text(json.dumps(data, indent=2) + "\n")
