"""Dataset readers: MVTec-AD, VisA and our synthetic sets, as lists of per-class samples.

Layouts (paths relative to `--root`):

* mvtec:  <class>/train/good/*.png, <class>/test/<defect|good>/*.png,
          <class>/ground_truth/<defect>/<stem>_mask.png   (0/255)
* synth:  the same tree, as written by `clipsam-ros synth --out` (classes from the folders)
* folders: good/*, <defect kind>/*, optional masks/<kind>/<stem>*.png: a line's own images,
          one class named after the root; every good image is a reference candidate
          (eval takes its --shots from them and never tests on those)
* visa:   split_csv/1cls.csv with columns object,split,label,image,mask
          (label normal|anomaly; image and mask paths relative to the root), as in
          the VisA release; masks hold small non-zero ids for defect pixels.

Good images have no mask file: their mask is empty. Any non-zero mask pixel is a
defect. A root that does not match its layout fails with one line saying what
was expected where.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from ..errors import ClipsamError
from ..imaging.files import IMAGE_SUFFIXES

LAYOUTS = ("mvtec", "visa", "synth", "folders")


class DatasetError(ClipsamError, ValueError):
    """A root that does not hold the expected layout; the message is one line."""


@dataclass(frozen=True)
class Sample:
    image: Path
    mask: Path | None        # None: a good part, empty mask
    defect: str              # "good" or the defect type
    label: int               # 0 good, 1 anomalous
    pixel_truth: bool = True  # False: an anomalous image without a mask (image metrics only)


@dataclass
class ClassData:
    name: str
    train_good: list[Path] = field(default_factory=list)
    test: list[Sample] = field(default_factory=list)


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def _mvtec_class(root: Path, name: str) -> ClassData:
    base = root / name
    data = ClassData(name, train_good=_images(base / "train" / "good"))
    for folder in sorted(p for p in (base / "test").iterdir() if p.is_dir()):
        for image in _images(folder):
            if folder.name == "good":
                data.test.append(Sample(image, None, "good", 0))
                continue
            mask = base / "ground_truth" / folder.name / f"{image.stem}_mask.png"
            if not mask.is_file():
                raise DatasetError(f"expected the mask {mask} for the test image {image} (MVTec-AD layout)")
            data.test.append(Sample(image, mask, folder.name, 1))
    return data


def _mvtec(root: Path, layout: str) -> list[ClassData]:
    names = sorted(p.name for p in root.iterdir()
                   if (p / "train" / "good").is_dir() and (p / "test").is_dir()) if root.is_dir() else []
    if not names:
        raise DatasetError(f"--layout {layout}: expected {root}/<class>/train/good/ and {root}/<class>/test/ "
                           f"folders (MVTec-AD layout); found no such class folder")
    return [_mvtec_class(root, n) for n in names]


def _visa(root: Path) -> list[ClassData]:
    table = root / "split_csv" / "1cls.csv"
    if not table.is_file():
        raise DatasetError(f"--layout visa: expected {table} (the VisA release's split file with columns "
                           f"object,split,label,image,mask)")
    classes: dict[str, ClassData] = {}
    with open(table, newline="") as handle:
        rows = csv.DictReader(handle)
        missing = {"object", "split", "label", "image", "mask"} - set(rows.fieldnames or [])
        if missing:
            raise DatasetError(f"--layout visa: {table} lacks the columns {', '.join(sorted(missing))}")
        for line, row in enumerate(rows, start=2):
            data = classes.setdefault(row["object"], ClassData(row["object"]))
            image = root / row["image"]
            anomalous = row["label"].strip().lower() == "anomaly"
            if row["split"] == "train":
                if not anomalous:
                    data.train_good.append(image)
                continue
            mask = root / row["mask"] if anomalous and row["mask"].strip() else None
            if anomalous and mask is None:
                raise DatasetError(f"--layout visa: {table} line {line}: anomalous image {row['image']} has no mask")
            data.test.append(Sample(image, mask, "anomaly" if anomalous else "good", int(anomalous)))
    for data in classes.values():
        first = next((s.image for s in data.test if not s.image.is_file()), None)
        if first is not None:
            raise DatasetError(f"--layout visa: {table} lists {first}, which does not exist; "
                               f"--root must be the folder that holds split_csv/ and the class folders")
    return [classes[n] for n in sorted(classes)]


def _folders(root: Path) -> list[ClassData]:
    if not (root / "good").is_dir():
        raise DatasetError(f"--layout folders: expected {root}/good/ (images of good parts) and "
                           f"{root}/<defect kind>/ folders")
    good = _images(root / "good")
    data = ClassData(root.name, train_good=good, test=[Sample(p, None, "good", 0) for p in good])
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and p.name not in ("good", "masks")):
        masks = root / "masks" / folder.name
        for image in _images(folder):
            found = sorted(masks.glob(f"{image.stem}*")) if masks.is_dir() else []
            data.test.append(Sample(image, found[0] if found else None, folder.name, 1, bool(found)))
    if not any(s.label for s in data.test):
        raise DatasetError(f"--layout folders: {root} has no <defect kind>/ folder with images beside good/")
    return [data]


def load_dataset(root: str | Path, layout: str, classes: Sequence[str] | None = None) -> list[ClassData]:
    """The classes of a dataset root, each with its train/good images and test samples."""
    root = Path(root).expanduser()
    if layout not in LAYOUTS:
        raise DatasetError(f"--layout {layout!r} is unknown (choose one of: {', '.join(LAYOUTS)})")
    if not root.is_dir():
        raise DatasetError(f"--root {root} is not a folder")
    found = _visa(root) if layout == "visa" else _folders(root) if layout == "folders" else _mvtec(root, layout)
    if classes:
        names = [c.name for c in found]
        unknown = [c for c in classes if c not in names]
        if unknown:
            raise DatasetError(f"--classes {' '.join(unknown)}: not in {root} (classes there: {', '.join(names)})")
        found = [c for c in found if c.name in classes]
    for data in found:
        if not data.test:
            raise DatasetError(f"class {data.name} in {root} has no test images")
    return found


def read_mask(sample: Sample, shape: tuple[int, int]) -> np.ndarray:
    """The bool defect mask at `shape` (h, w): empty for good parts, nearest-neighbour resized."""
    if sample.mask is None:
        return np.zeros(shape, bool)
    raw = cv2.imread(str(sample.mask), cv2.IMREAD_GRAYSCALE)
    if raw is None:
        raise DatasetError(f"cannot read the mask {sample.mask}; fix the dataset")
    if raw.shape != shape:
        raw = cv2.resize(raw, (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST)
    return raw > 0
