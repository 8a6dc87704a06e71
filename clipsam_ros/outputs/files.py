"""Result files out: the `inspect` contract (mask PNG, overlay PNG, JSON per image)."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from ..errors import one_line
from ..imaging.overlay import render_overlay
from ..inspector import InspectionResult, error_result


def result_stems(paths: Sequence[str | Path]) -> list[str]:
    """One output name per image: its stem, or, where stems collide (MVTec's test/*/000.png),
    with as many parent folders as make it unique ("hole_000", "crack_000"); a file given
    twice gets "_1", "_2"... So no result overwrites another."""
    files = [Path(p).resolve().with_suffix("") for p in paths]
    names = {f: f.name for f in dict.fromkeys(files)}
    for depth in range(2, max(len(f.parts) for f in files) + 1):
        counts = Counter(names.values())
        if max(counts.values()) == 1:
            break
        names = {f: "_".join(f.parts[-depth:]).lstrip("/_") if counts[n] > 1 else n for f, n in names.items()}
    repeats: Counter[Path] = Counter()
    out = []
    for f in files:
        out.append(names[f] + (f"_{repeats[f]}" if repeats[f] else ""))
        repeats[f] += 1
    return out


def _write_png(path: Path, image: np.ndarray) -> None:
    if not cv2.imwrite(str(path), image):
        raise OSError(f"cannot write {path}: check the --out folder's space and permissions")


def write_result(out: Path, stem: str, image_rgb: np.ndarray, result: InspectionResult) -> None:
    """`<stem>_mask.png` (0/255), `<stem>_overlay.png` and `<stem>.json`."""
    _write_png(out / f"{stem}_mask.png", result.mask)
    _write_png(out / f"{stem}_overlay.png",
               render_overlay(image_rgb, result.mask, result.defects, result.verdict, result.score))
    (out / f"{stem}.json").write_text(json.dumps(result.to_json(), indent=2) + "\n")


def write_error(out: Path, stem: str, message: str) -> None:
    """The JSON of a file that could not even be read: verdict "error", never a silent skip."""
    data = error_result((1, 1), one_line(message)).to_json()
    (out / f"{stem}.json").write_text(json.dumps(data, indent=2) + "\n")
