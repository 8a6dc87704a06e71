"""Image files in, result files out (the `inspect` contract)."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from ..inspector import InspectionResult, error_result
from .overlay import render_overlay
from ..errors import one_line


def read_image(path: str | Path) -> np.ndarray:
    """An RGB uint8 frame from an image file; one-line error when it is not one."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image {path} does not exist")
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError(f"image {path} is not a readable image file (png, jpg, bmp, tif)")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


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
