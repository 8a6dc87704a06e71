"""Reference localizer (few-shot, beyond the papers): a memory bank of normal SAM patches.

The bank holds L2-normalised SAM-encoder cell embeddings from N images of good
parts. A frame's anomaly at a cell is its mean cosine distance to the k nearest
bank entries. It reuses the frame's SAM embedding, so it adds no encoder pass.

Calibration: when the bank is built, every normal image is scored against a
bank made without it (leave-one-out); the 99.5th percentile of those distances
is the bank's `normal_distance`. The map is distance / (normal_distance ·
`localizer.distance_scale`), clipped to 0..1, so with the default scale 2 a
normal surface stays below 0.5 and θ = 0.5 has a meaning that does not depend
on the product.

The bank is saved as safetensors (no pickle) with the SAM variant in its metadata.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from ..config import LocalizerConfig
from ..features import AnomalyEstimate, ClipFeatures, SamEmbedding

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
_QUANTILE = 0.995


class BankError(RuntimeError):
    """A reference folder or bank file that cannot be used; the message is one line."""


@dataclass
class MemoryBank:
    patches: torch.Tensor      # (M, C) L2-normalised
    normal_distance: float     # 99.5th percentile of leave-one-out normal distances
    sam_variant: str


def cell_embeddings(embedding: SamEmbedding) -> torch.Tensor:
    """(rows*cols, C) L2-normalised embeddings of the cells that cover the frame."""
    rows, cols = embedding.valid_cells()
    grid = embedding.features[0, :, :rows, :cols].float()
    return F.normalize(grid.flatten(1).T, dim=1)


def knn_distance(queries: torch.Tensor, bank: torch.Tensor, k: int, chunk: int = 4096) -> torch.Tensor:
    """Mean cosine distance of each query to its k nearest bank rows."""
    out = []
    for start in range(0, len(queries), chunk):
        sim = queries[start:start + chunk] @ bank.T
        top = sim.topk(min(k, bank.shape[0]), dim=1).values
        out.append(1.0 - top.mean(dim=1))
    return torch.cat(out)


def list_images(folder: str | Path) -> list[Path]:
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise BankError(f"localizer.reference_dir={str(folder)!r} is not a folder; "
                        "point it at a folder of images of good parts")
    images = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if len(images) < 2:
        raise BankError(f"localizer.reference_dir={str(folder)!r} holds {len(images)} images; "
                        "it needs at least 2 images of good parts")
    return images


def read_rgb(path: Path) -> np.ndarray:
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise BankError(f"cannot read image {path}; remove it from localizer.reference_dir")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def build_bank(images: Sequence[np.ndarray], encode: Callable[[np.ndarray], SamEmbedding],
               sam_variant: str, max_patches: int, seed: int = 0, progress: bool = True) -> MemoryBank:
    """Encode the normal images, calibrate by leave-one-out, subsample to `max_patches`."""
    per_image = [cell_embeddings(encode(img)).cpu()
                 for img in tqdm(images, desc="reference bank", unit="img", disable=not progress)]
    distances = []
    for i, cells in enumerate(per_image):
        others = torch.cat([c for j, c in enumerate(per_image) if j != i])
        distances.append(knn_distance(cells, others, 1))
    normal_distance = float(torch.quantile(torch.cat(distances), _QUANTILE))
    patches = torch.cat(per_image)
    if len(patches) > max_patches:
        generator = torch.Generator().manual_seed(seed)
        patches = patches[torch.randperm(len(patches), generator=generator)[:max_patches]]
    return MemoryBank(patches.contiguous(), max(normal_distance, 1e-6), sam_variant)


def save_bank(bank: MemoryBank, path: str | Path) -> None:
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file({"patches": bank.patches}, str(tmp),
              metadata={"normal_distance": repr(bank.normal_distance), "sam_variant": bank.sam_variant})
    tmp.replace(path)


def load_bank(path: str | Path, sam_variant: str) -> MemoryBank:
    path = Path(path).expanduser()
    try:
        tensors = load_file(str(path))
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            meta = handle.metadata() or {}
        bank = MemoryBank(tensors["patches"], float(meta["normal_distance"]), meta["sam_variant"])
    except Exception as exc:
        raise BankError(f"localizer.bank={str(path)!r} is not a readable memory bank "
                        f"({type(exc).__name__}); delete it to rebuild from localizer.reference_dir") from None
    if bank.sam_variant != sam_variant:
        raise BankError(f"localizer.bank={str(path)!r} was built with sam.variant={bank.sam_variant}, "
                        f"not {sam_variant}; delete it to rebuild")
    return bank


class ReferenceLocalizer:
    """kNN distance of the frame's SAM cells to a bank of normal cells."""

    uses_clip = False

    def __init__(self, bank: MemoryBank, cfg: LocalizerConfig):
        self.bank = bank
        self.cfg = cfg

    def __call__(self, clip: ClipFeatures | None, sam: SamEmbedding,
                 image_size: tuple[int, int]) -> AnomalyEstimate:
        rows, cols = sam.valid_cells()
        bank = self.bank.patches.to(sam.features.device)
        dist = knn_distance(cell_embeddings(sam), bank, self.cfg.knn).reshape(rows, cols)
        score = (dist / (self.bank.normal_distance * self.cfg.distance_scale)).clamp(0, 1)
        return AnomalyEstimate(anomaly_map=grid_to_frame(score.cpu().numpy(), sam, self.cfg.sigma),
                               image_score=float(score.max()))


def grid_to_frame(grid_map: np.ndarray, sam: SamEmbedding, sigma: float) -> np.ndarray:
    """A map over the valid SAM cells → frame pixels (bilinear, then Gaussian σ), 0..1 float32."""
    cell = sam.img_size / sam.grid
    rows, cols = grid_map.shape
    up = cv2.resize(grid_map.astype(np.float32), (int(cols * cell), int(rows * cell)),
                    interpolation=cv2.INTER_LINEAR)
    h_in, w_in = sam.input_size
    h, w = sam.original_size
    frame = cv2.resize(up[:h_in, :w_in], (w, h), interpolation=cv2.INTER_LINEAR)
    if sigma > 0:
        frame = cv2.GaussianBlur(frame, (0, 0), sigma)
    return np.clip(frame, 0.0, 1.0).astype(np.float32)
