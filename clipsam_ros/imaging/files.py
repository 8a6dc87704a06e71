"""Image files in: the one reader of image files (CLI, reference folders, datasets)."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from ..errors import ClipsamError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


class ImageFileError(ClipsamError, ValueError):
    """An image file that is missing or cannot be decoded; the message is one line naming it."""


def resize_longest(image: np.ndarray, size: int, nearest: bool = False) -> np.ndarray:
    """`image` with its longer side `size` (aspect kept); unchanged when size is 0."""
    if not size:
        return image
    h, w = image.shape[:2]
    scale = size / max(h, w)
    if scale == 1.0:
        return image
    new = (max(1, round(w * scale)), max(1, round(h * scale)))
    mode = cv2.INTER_NEAREST if nearest else (cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    return cv2.resize(image, new, interpolation=mode)


def read_rgb(path: str | Path, longest: int = 0, fix: str = "") -> np.ndarray:
    """An RGB uint8 frame from an image file, its longer side resized to `longest` when that is
    not 0. Raises ImageFileError (one line, ending with the caller's `fix` advice)."""
    path = Path(path)
    advice = f"; {fix}" if fix else ""
    if not path.is_file():
        raise ImageFileError(f"image {path} does not exist{advice}")
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ImageFileError(f"image {path} is not a readable image file (png, jpg, bmp, tif){advice}")
    return resize_longest(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), longest)
