"""Reference localizer (few-shot, beyond the papers): a memory bank of normal SAM patches.

The bank holds the L2-normalised SAM-encoder cell embeddings of N images of good
parts, as grids. A frame's anomaly at a cell is its mean cosine distance to the k
nearest bank cells. It reuses the frame's SAM embedding: no extra encoder pass.

Position: parts on a line are fixtured, so where a patch is matters. With
`localizer.spatial_radius` = R ≥ 0 a cell is compared only with bank cells at
most R cells away (a bite out of a washer shows belt, which is normal elsewhere
in the frame, but not there). R = -1 compares with every bank cell (for parts
that arrive at any position; the bank is then subsampled to `bank_max_patches`).
A frame whose embedding grid differs from the bank's falls back to R = -1.

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
from ..errors import ClipsamError
from ..imaging.files import IMAGE_SUFFIXES
from ..models.features import ClipFeatures, SamEmbedding
from .base import AnomalyEstimate

_QUANTILE = 0.995


class BankError(ClipsamError, RuntimeError):
    """A reference folder or bank file that cannot be used; the message is one line."""


@dataclass
class MemoryBank:
    grids: torch.Tensor        # (N, rows, cols, C) L2-normalised cell embeddings of N good parts
    normal_distance: float     # 99.5th percentile of leave-one-out normal distances
    sam_variant: str
    spatial_radius: int        # the radius the calibration was made with

    def patches(self, max_patches: int, seed: int = 0) -> torch.Tensor:
        """All bank cells as (M, C), randomly subsampled to at most `max_patches`."""
        flat = self.grids.reshape(-1, self.grids.shape[-1])
        if len(flat) <= max_patches:
            return flat
        generator = torch.Generator().manual_seed(seed)
        return flat[torch.randperm(len(flat), generator=generator)[:max_patches].to(flat.device)]


def cell_grid(embedding: SamEmbedding) -> torch.Tensor:
    """(rows, cols, C) L2-normalised embeddings of the cells that cover the frame."""
    rows, cols = embedding.valid_cells()
    grid = embedding.features[0, :, :rows, :cols].float()
    return F.normalize(grid.permute(1, 2, 0), dim=-1)


def knn_distance(queries: torch.Tensor, bank: torch.Tensor, k: int, chunk: int = 4096) -> torch.Tensor:
    """Mean cosine distance of each query to its k nearest bank rows."""
    out = []
    for start in range(0, len(queries), chunk):
        sim = queries[start:start + chunk] @ bank.T
        top = sim.topk(min(k, bank.shape[0]), dim=1).values
        out.append(1.0 - top.mean(dim=1))
    return torch.cat(out)


def spatial_knn_distance(query: torch.Tensor, grids: torch.Tensor, k: int, radius: int) -> torch.Tensor:
    """(rows, cols) mean cosine distance of each query cell to its k nearest bank cells
    among those at most `radius` cells away (in every bank image)."""
    rows, cols, _ = query.shape
    # zero padding: a cell outside the grid has similarity 0, never a near neighbour
    padded = F.pad(grids.permute(0, 3, 1, 2), (radius, radius, radius, radius))
    q = query.permute(2, 0, 1)
    sims = [torch.einsum("nchw,chw->nhw", padded[:, :, dr:dr + rows, dc:dc + cols], q)
            for dr in range(2 * radius + 1) for dc in range(2 * radius + 1)]
    top = torch.cat(sims).topk(min(k, len(grids) * len(sims)), dim=0).values
    return 1.0 - top.mean(dim=0)


def distance_map(query: torch.Tensor, bank: MemoryBank, k: int, radius: int,
                 max_patches: int) -> torch.Tensor:
    """The kNN distance of each query cell, spatially restricted when the grids line up."""
    if radius >= 0 and query.shape[:2] == bank.grids.shape[1:3]:
        return spatial_knn_distance(query, bank.grids, k, radius)
    rows, cols, channels = query.shape
    flat = knn_distance(query.reshape(-1, channels), bank.patches(max_patches), k)
    return flat.reshape(rows, cols)


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


def build_bank(images: Sequence[np.ndarray], encode: Callable[[np.ndarray], SamEmbedding],
               sam_variant: str, spatial_radius: int, max_patches: int,
               progress: bool = True) -> MemoryBank:
    """Encode the normal images and calibrate by leave-one-out."""
    grids = [cell_grid(encode(img)).cpu()
             for img in tqdm(images, desc="reference bank", unit="img", disable=not progress)]
    if len({g.shape for g in grids}) != 1:
        raise BankError("localizer.reference_dir holds images of different sizes; "
                        "use images from the camera that inspects the line")
    stacked = torch.stack(grids)
    distances = []
    for i in range(len(grids)):
        others = MemoryBank(torch.cat([stacked[:i], stacked[i + 1:]]), 1.0, sam_variant, spatial_radius)
        distances.append(distance_map(stacked[i], others, 1, spatial_radius, max_patches).flatten())
    normal_distance = float(torch.quantile(torch.cat(distances), _QUANTILE))
    return MemoryBank(stacked.contiguous(), max(normal_distance, 1e-6), sam_variant, spatial_radius)


def save_bank(bank: MemoryBank, path: str | Path) -> None:
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file({"grids": bank.grids}, str(tmp),
              metadata={"normal_distance": repr(bank.normal_distance), "sam_variant": bank.sam_variant,
                        "spatial_radius": str(bank.spatial_radius)})
    tmp.replace(path)


def load_bank(path: str | Path, sam_variant: str, spatial_radius: int) -> MemoryBank:
    path = Path(path).expanduser()
    try:
        tensors = load_file(str(path))
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            meta = handle.metadata() or {}
        bank = MemoryBank(tensors["grids"], float(meta["normal_distance"]), meta["sam_variant"],
                          int(meta["spatial_radius"]))
    except Exception as exc:
        raise BankError(f"localizer.bank={str(path)!r} is not a readable memory bank "
                        f"({type(exc).__name__}); delete it to rebuild from localizer.reference_dir") from None
    if bank.sam_variant != sam_variant:
        raise BankError(f"localizer.bank={str(path)!r} was built with sam.variant={bank.sam_variant}, "
                        f"not {sam_variant}; delete it to rebuild")
    if bank.spatial_radius != spatial_radius:
        # the calibration depends on the radius
        raise BankError(f"localizer.bank={str(path)!r} was calibrated with localizer.spatial_radius="
                        f"{bank.spatial_radius}, not {spatial_radius}; delete it to rebuild")
    return bank


class ReferenceLocalizer:
    """kNN distance of the frame's SAM cells to a bank of normal cells."""

    encoder = None       # the frame's SAM embedding is all it needs

    def __init__(self, bank: MemoryBank, cfg: LocalizerConfig):
        self.bank = bank
        self.cfg = cfg

    def __call__(self, clip: ClipFeatures | None, sam: SamEmbedding,
                 image_size: tuple[int, int]) -> AnomalyEstimate:
        bank = self.bank
        if bank.grids.device != sam.features.device:
            bank = self.bank = MemoryBank(bank.grids.to(sam.features.device), bank.normal_distance,
                                          bank.sam_variant, bank.spatial_radius)
        dist = distance_map(cell_grid(sam), bank, self.cfg.knn, self.cfg.spatial_radius,
                            self.cfg.bank_max_patches)
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
