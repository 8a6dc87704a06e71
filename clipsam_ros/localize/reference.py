"""Reference localizer (few-shot, beyond the papers): a PatchCore memory bank of normal patches.

Patch features come from `localizer.backbone`: an ImageNet EfficientNet-Lite (the
`localizer.backbone_layers` stages, by default stride 8 and stride 16, each averaged
over 3x3 neighbours, the coarser upsampled to the finest grid, concatenated;
PatchCore's recipe), or `sam`, the
frame's SAM embedding cells (no extra encoder pass). Every patch is L2-normalised;
a frame's anomaly at a patch is its mean cosine distance to the k nearest bank patches.

Coreset: `localizer.coreset_ratio` < 1 keeps that fraction of the bank, chosen by
PatchCore's greedy k-center selection (on a random projection, for speed), so every
dropped patch lies within the coreset's covering radius of a kept one.

Position: parts on a line are fixtured, so where a patch is matters. With
`localizer.spatial_radius` = R ≥ 0 a patch is compared only with bank patches at
most R cells away (a bite out of a washer shows belt, which is normal elsewhere in
the frame, but not there). R = -1 compares with every bank patch (parts that arrive
anywhere; the bank is then subsampled to `bank_max_patches`). A frame whose grid
differs from the bank's falls back to R = -1.

Calibration: every normal image is scored against the bank without its own patches
(leave-one-out; with a single image, without the patch itself); the 99.5th
percentile of those distances is the bank's `normal_distance`. The map is distance /
(normal_distance · `localizer.distance_scale`), clipped to 0..1, so θ = 0.5 means the
same whatever the product.

Augmentation: many parts look the same mirrored or turned (a solar cell, a washer). With
`localizer.augment_references` = flips (or d4, square frames only) each good image enters
the bank also mirrored left-right, upside down and both (d4: and each of those turned
90°), so a few references cover more of what normal looks like. The copies share their
image's source, so leave-one-out calibration never matches an image with its own mirror.

The bank is saved as safetensors (no pickle) with its backbone, layers and radius in
the metadata; a bank made otherwise is refused.
"""
from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass, field
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
from ..models.backbone import BACKBONES, PADDING, BackboneFeatures, BackboneModel, GridPlacement
from ..models.features import ClipFeatures, SamEmbedding
from .base import AnomalyEstimate

_QUANTILE = 0.995
_PROJECTION = 128        # coreset selection runs on a random projection to this many dims


class BankError(ClipsamError, RuntimeError):
    """A reference folder or bank file that cannot be used; the message is one line."""


@dataclass
class MemoryBank:
    patches: torch.Tensor      # (M, C) L2-normalised patch features of good parts
    positions: torch.Tensor    # (M, 2) long: (row, col) of each patch on the grid
    sources: torch.Tensor      # (M,) long: which good image each patch came from
    grid: tuple[int, int]      # (rows, cols) of a frame's patch grid
    normal_distance: float     # 99.5th percentile of leave-one-out normal distances
    backbone: str              # what made the features: "efficientnet_lite0", "sam:lite_medsam", ...
    layers: str                # e.g. "2,4@224" (blocks and input side) or "sam"
    spatial_radius: int        # the radius the calibration was made with
    covering_radius: float = 0.0   # Euclidean: every full-bank patch is this close to a kept one
    augment: str = "none"          # localizer.augment_references the bank was built with
    coreset_ratio: float = 1.0     # localizer.coreset_ratio it was built with
    references: str = ""           # `references_id` of the localizer.reference_dir images ("": other images)
    # (radius, k) -> neighbour index (see neighbours); built on first use, never saved
    _neighbours: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def neighbours(self, radius: int, k: int) -> torch.Tensor | None:
        """(cells, L) long: for each grid cell, the bank rows at most `radius` cells away (-1 pads
        the rows). None when a cell has fewer than k such rows (a coreset can leave one with
        few): knn_distance then searches anywhere for it. A fixtured frame is then compared with
        its neighbourhood only, (2R+1)² cells per good image instead of the whole bank."""
        if (radius, k) not in self._neighbours:
            self._neighbours[(radius, k)] = neighbour_index(self.positions, self.grid, radius, k)
        return self._neighbours[(radius, k)]

    def to(self, device: torch.device) -> MemoryBank:
        return dataclasses.replace(self, patches=self.patches.to(device), positions=self.positions.to(device),
                                   sources=self.sources.to(device))


# ---------------------------------------------------------------- patch features

def sam_grid(embedding: SamEmbedding) -> torch.Tensor:
    """(rows, cols, C) L2-normalised SAM embeddings of the cells that cover the frame."""
    rows, cols = embedding.valid_cells()
    grid = embedding.features[0, :, :rows, :cols].float()
    return F.normalize(grid.permute(1, 2, 0), dim=-1)


cell_grid = sam_grid   # the name other modules know


def backbone_grid(features: BackboneFeatures) -> torch.Tensor:
    """(rows, cols, C): each level 3x3-averaged, upsampled to the finest grid, normalised per
    level (so no level outweighs the other), concatenated, normalised."""
    finest = features.levels[0].shape[-2:]
    parts = []
    for index, level in enumerate(features.levels):
        x = F.avg_pool2d(level, 3, stride=1, padding=1, count_include_pad=False)
        if x.shape[-2:] != finest:
            x = onto_finest(x, features, index)
        parts.append(F.normalize(x, dim=1))
    return F.normalize(torch.cat(parts, dim=1)[0].permute(1, 2, 0), dim=-1)


def onto_finest(x: torch.Tensor, features: BackboneFeatures, level: int) -> torch.Tensor:
    """A coarser level (1, C, h, w) resampled at the finest level's cells. Where the strides
    divide the input, the levels' cells nest and plain bilinear upsampling is exact; else
    "SAME" padding shifts each level by its own amount (260 px: stride 8 starts 4 px before
    the input, stride 16 12 px), so the coarser level is sampled at the finer cells' centres."""
    finest = features.levels[0].shape[-2:]
    coarse, fine = features.placement(level), features.placement(0)
    if coarse is None and fine is None:
        return F.interpolate(x, size=finest, mode="bilinear", align_corners=False)
    size = features.input_size
    coarse = coarse or GridPlacement(0, size, size)
    fine = fine or GridPlacement(0, size, size)
    cells = x.shape[-1]
    stride = coarse.extent / cells
    # fine centres in the coarse level's cell index, then in grid_sample's −1..1 (corner-aligned)
    at = (fine.centres(finest[-1]) + coarse.shift - (stride - 1) / 2) / stride
    at = (at / max(cells - 1, 1) * 2 - 1).to(x)
    grid = torch.stack(torch.meshgrid(at, at, indexing="xy"), dim=-1)[None]
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=True)


def patch_grid(features: BackboneFeatures | None, sam: SamEmbedding) -> torch.Tensor:
    return backbone_grid(features) if features is not None else sam_grid(sam)


def grid_to_frame(grid_map: np.ndarray, sam: SamEmbedding | None, sigma: float,
                  size: tuple[int, int] | None = None, placement: GridPlacement | None = None,
                  clip: bool = True) -> np.ndarray:
    """A map over the patch grid → frame pixels (bilinear, then Gaussian σ), float32 clipped to
    0..1 unless `clip` is False.
    SAM cells cover the resized frame inside a padded square; backbone patches (sam=None)
    cover the frame of `size` (h, w), placed by `BackboneFeatures.placement` when given."""
    grid_map = grid_map.astype(np.float32)
    if sam is not None:
        cell = sam.img_size / sam.grid
        rows, cols = grid_map.shape
        up = cv2.resize(grid_map, (int(cols * cell), int(rows * cell)), interpolation=cv2.INTER_LINEAR)
        h_in, w_in = sam.input_size
        grid_map, (h, w) = up[:h_in, :w_in], sam.original_size
    else:
        assert size is not None
        h, w = size
        if placement is not None:
            # the cells at their input pixels, then the input's own square cut out
            up = cv2.resize(grid_map, (placement.extent, placement.extent), interpolation=cv2.INTER_LINEAR)
            inside = slice(placement.shift, placement.shift + placement.size)
            grid_map = up[inside, inside]
    frame = cv2.resize(grid_map, (w, h), interpolation=cv2.INTER_LINEAR)
    if sigma > 0:
        frame = cv2.GaussianBlur(frame, (0, 0), sigma)
    return (np.clip(frame, 0.0, 1.0) if clip else frame).astype(np.float32)


def map_to_frame(grid_map: np.ndarray, features: BackboneFeatures | None, sam: SamEmbedding | None, sigma: float,
                 size: tuple[int, int], clip: bool = True) -> np.ndarray:
    """A localizer's grid map on the frame: over the backbone's cells when it has features, else
    over the SAM embedding's."""
    if features is None:
        return grid_to_frame(grid_map, sam, sigma, size, clip=clip)
    return grid_to_frame(grid_map, None, sigma, size, features.placement(), clip)


def estimate_of(ratio: torch.Tensor, features: BackboneFeatures | None, sam: SamEmbedding, sigma: float,
                size: tuple[int, int]) -> AnomalyEstimate:
    """The frame's map from the grid's ratio to the calibrated distance (1 = the map's 1): clipped
    to 0..1 before smoothing, and unclipped, which keeps where a defect peaks."""
    grid = ratio.cpu().numpy()
    return AnomalyEstimate(anomaly_map=map_to_frame(np.clip(grid, 0.0, 1.0), features, sam, sigma, size),
                           image_score=image_score(ratio),
                           unclipped=map_to_frame(np.clip(grid, 0.0, None), features, sam, sigma, size, clip=False))


def grid_positions(rows: int, cols: int, device: torch.device | str = "cpu") -> torch.Tensor:
    r, c = torch.meshgrid(torch.arange(rows, device=device), torch.arange(cols, device=device), indexing="ij")
    return torch.stack([r.flatten(), c.flatten()], dim=1)


# ---------------------------------------------------------------- search

def knn_distance(query: torch.Tensor, patches: torch.Tensor, positions: torch.Tensor, k: int, radius: int,
                 drop: torch.Tensor | None = None, drop_self: bool = False, chunk: int = 1024) -> torch.Tensor:
    """(rows, cols) mean cosine distance of each query patch to its k nearest bank patches:
    those at most `radius` cells away (any, when radius < 0 or when fewer than k are that
    close), minus the rows `drop` marks and, with `drop_self`, the bank patch at the query's
    own position."""
    rows, cols, channels = query.shape
    flat = query.reshape(-1, channels)
    where = grid_positions(rows, cols, flat.device)
    out = []
    for start in range(0, len(flat), chunk):
        sim = flat[start:start + chunk] @ patches.T
        excluded = torch.zeros_like(sim, dtype=torch.bool)
        far = None
        if radius >= 0 or drop_self:
            gap = (where[start:start + chunk, None, :] - positions[None, :, :]).abs().amax(-1)
            if radius >= 0:
                far = gap > radius
            if drop_self:
                excluded |= gap == 0
        if drop is not None:
            excluded |= drop[None, :]
        if far is not None:
            # a coreset may keep fewer than k patches near a position: there, search anywhere
            few = ((~far & ~excluded).sum(dim=1) < k)[:, None]
            excluded |= far & ~few
        # an excluded patch is never a neighbour
        sim = sim.masked_fill(excluded, -2.0)
        top = sim.topk(min(k, patches.shape[0]), dim=1).values
        out.append(1.0 - top.mean(dim=1))
    return torch.cat(out).reshape(rows, cols)


def neighbour_index(positions: torch.Tensor, grid: tuple[int, int], radius: int, k: int) -> torch.Tensor | None:
    """For each cell of the grid, the rows of `positions` within `radius` cells (Chebyshev), padded
    with -1 to the longest list; None when some cell has fewer than k."""
    rows, cols = grid
    pairs = []
    for dr in range(-radius, radius + 1):
        for dc in range(-radius, radius + 1):
            r, c = positions[:, 0] + dr, positions[:, 1] + dc
            inside = (r >= 0) & (r < rows) & (c >= 0) & (c < cols)
            pairs.append(torch.stack([(r * cols + c)[inside], torch.nonzero(inside).flatten()], dim=1))
    cell, row = torch.cat(pairs).cpu().T
    cell, order = cell.sort(stable=True)
    row = row[order]
    counts = torch.bincount(cell, minlength=rows * cols)
    if int(counts.min()) < k:
        return None
    start = torch.cumsum(counts, 0) - counts
    slot = torch.arange(len(cell)) - start[cell]
    index = torch.full((rows * cols, int(counts.max())), -1, dtype=torch.long)
    index[cell, slot] = row
    return index.to(positions.device)


def local_knn_distance(query: torch.Tensor, patches: torch.Tensor, index: torch.Tensor, k: int,
                       chunk: int = 256) -> torch.Tensor:
    """knn_distance over each query cell's own neighbour rows (`neighbour_index`): the same
    distances, without comparing every patch with the whole bank."""
    rows, cols, channels = query.shape
    flat = query.reshape(-1, channels)
    out = []
    for start in range(0, len(flat), chunk):
        rows_of = index[start:start + chunk]
        candidates = patches[rows_of.clamp(min=0)]                      # (n, L, C)
        sim = torch.einsum("nc,nlc->nl", flat[start:start + chunk], candidates)
        sim = sim.masked_fill(rows_of < 0, -2.0)                           # padding is never a neighbour
        out.append(1.0 - sim.topk(k, dim=1).values.mean(dim=1))
    return torch.cat(out).reshape(rows, cols)


def spatial_knn_distance(query: torch.Tensor, grids: torch.Tensor, k: int, radius: int) -> torch.Tensor:
    """knn_distance against whole grids (N, rows, cols, C) of good parts."""
    n, rows, cols, channels = grids.shape
    positions = grid_positions(rows, cols, grids.device).repeat(n, 1)
    return knn_distance(query, grids.reshape(-1, channels), positions, k, radius)


def distance_map(query: torch.Tensor, bank: MemoryBank, k: int, radius: int, max_patches: int) -> torch.Tensor:
    """The kNN distance of each query patch, spatially restricted when the grids line up."""
    if radius >= 0 and tuple(query.shape[:2]) == tuple(bank.grid):
        index = bank.neighbours(radius, k)
        if index is not None:
            return local_knn_distance(query, bank.patches, index, k)
        return knn_distance(query, bank.patches, bank.positions, k, radius)
    patches, positions = bank.patches, bank.positions
    if len(patches) > max_patches:
        generator = torch.Generator().manual_seed(0)
        keep = torch.randperm(len(patches), generator=generator)[:max_patches].to(patches.device)
        patches, positions = patches[keep], positions[keep]
    return knn_distance(query, patches, positions, k, -1)


# ---------------------------------------------------------------- building

# how many of the square's symmetries each augmentation adds (see `augmented`)
AUGMENTATIONS = {"none": 1, "flips": 4, "d4": 8}


def augmented(image: np.ndarray, augment: str) -> list[np.ndarray]:
    """The image and its copies: mirrored left-right, upside down, both (= turned 180°);
    with d4 also each of those turned 90° (a non-square image is refused: its grid would differ)."""
    if augment not in AUGMENTATIONS:
        raise BankError(f"localizer.augment_references={augment!r}: choose one of {', '.join(AUGMENTATIONS)}")
    if augment == "none":
        return [image]
    if augment == "d4" and image.shape[0] != image.shape[1]:
        raise BankError(f"localizer.augment_references=d4 needs square images, not {image.shape[1]}x"
                        f"{image.shape[0]}; use flips")
    out = []
    for t in range(AUGMENTATIONS[augment]):
        x = image[:, ::-1] if t & 1 else image
        x = x[::-1] if t & 2 else x
        out.append(np.ascontiguousarray(np.rot90(x) if t & 4 else x))
    return out


def greedy_coreset(x: torch.Tensor, n: int, seed: int = 0) -> tuple[torch.Tensor, float]:
    """PatchCore's greedy k-center selection of `n` rows of x (M, C): each step takes the row
    farthest from those taken (measured on a random projection, for speed). Returns the kept
    indices and the covering radius: the largest Euclidean distance, in the full space, of any
    row to its nearest kept row."""
    generator = torch.Generator().manual_seed(seed)
    z = x
    if x.shape[1] > _PROJECTION:
        z = x @ (torch.randn(x.shape[1], _PROJECTION, generator=generator) / _PROJECTION ** 0.5).to(x)
    # squared distances as |a|² + |b|² − 2a·b: one matrix-vector product per step, not an
    # (M, C) difference tensor (a 92 k-patch bank: ~10x faster)
    squared = (z * z).sum(dim=1)
    first = int(torch.randint(len(x), (1,), generator=generator))
    chosen = [first]
    nearest = squared + squared[first] - 2 * (z @ z[first])
    for _ in range(n - 1):
        i = int(nearest.argmax())
        chosen.append(i)
        torch.minimum(nearest, squared + squared[i] - 2 * (z @ z[i]), out=nearest)
    keep = torch.tensor(chosen, dtype=torch.long)
    return keep, covering_radius(x, x[keep])


def covering_radius(x: torch.Tensor, kept: torch.Tensor, chunk: int = 4096) -> float:
    """The largest Euclidean distance of a row of x to its nearest row of `kept`."""
    worst = 0.0
    for start in range(0, len(x), chunk):
        worst = max(worst, float(torch.cdist(x[start:start + chunk], kept).min(dim=1).values.max()))
    return worst


def build_bank(images: Sequence[np.ndarray], encode: Callable[[np.ndarray], torch.Tensor], backbone: str,
               layers: str, spatial_radius: int, coreset_ratio: float = 1.0,
               progress: bool = True, augment: str = "none") -> MemoryBank:
    """Patch grids of the normal images (`encode`: image → (rows, cols, C)) and of their
    `augment` copies, a coreset of them, and the leave-one-out calibration against that coreset."""
    grids = [encode(copy).cpu() for img in tqdm(images, desc="reference bank", unit="img", disable=not progress)
             for copy in augmented(img, augment)]
    copies = AUGMENTATIONS[augment]     # augmented() has refused any other name
    if len({g.shape for g in grids}) != 1:
        raise BankError("localizer.reference_dir holds images of different sizes; "
                        "use images from the camera that inspects the line")
    rows, cols, channels = grids[0].shape
    patches = torch.cat([g.reshape(-1, channels) for g in grids])
    positions = grid_positions(rows, cols).repeat(len(grids), 1)
    # copies keep their image's index; `copy` says which symmetry made them (0: the image itself)
    sources = torch.arange(len(images)).repeat_interleave(copies * rows * cols)
    copy = torch.arange(copies).repeat_interleave(rows * cols).repeat(len(images))
    covering = 0.0
    if coreset_ratio < 1.0:
        keep, covering = greedy_coreset(patches, max(1, int(round(coreset_ratio * len(patches)))))
        patches, positions, sources, copy = patches[keep], positions[keep], sources[keep], copy[keep]
    distances = []
    for i in range(len(images)):
        grid = grids[i * copies]
        if len(images) > 1:
            distances.append(knn_distance(grid, patches, positions, 1, spatial_radius, drop=sources == i).flatten())
        else:
            # one image: against its own other patches, not its mirrored copies (near-twins of itself)
            distances.append(knn_distance(grid, patches, positions, 1, spatial_radius, drop=copy != 0,
                                          drop_self=True).flatten())
    normal_distance = float(torch.quantile(torch.cat(distances), _QUANTILE))
    return MemoryBank(patches.contiguous(), positions, sources, (rows, cols), max(normal_distance, 1e-6),
                      backbone, layers, spatial_radius, covering, augment, coreset_ratio)


def backbone_id(cfg_backbone: str, sam_variant: str) -> str:
    """What a bank records as its feature source."""
    return f"sam:{sam_variant}" if cfg_backbone == "sam" else cfg_backbone


def layers_id(backbone: BackboneModel | None) -> str:
    return "sam" if backbone is None else f"{','.join(map(str, backbone.layers))}@{backbone.size}"


def references_id(paths: Sequence[Path], sample: int = 1 << 16) -> str:
    """The reference images' names, sizes and first and last 64 KiB, hashed: what a saved bank was
    built from (uncompressed images re-captured under the same names keep their sizes)."""
    digest = hashlib.sha256()
    for path in sorted(paths):
        size = path.stat().st_size
        digest.update(f"{path.name}\t{size}\n".encode())
        with open(path, "rb") as f:
            digest.update(f.read(sample))
            if size > sample:
                f.seek(max(size - sample, sample))
                digest.update(f.read())
    return digest.hexdigest()[:16]


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


# ---------------------------------------------------------------- files

def save_bank(bank: MemoryBank, path: str | Path) -> None:
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file({"patches": bank.patches.contiguous(), "positions": bank.positions.contiguous(),
               "sources": bank.sources.contiguous()}, str(tmp),
              metadata={"normal_distance": repr(bank.normal_distance), "backbone": bank.backbone,
                        "layers": bank.layers, "grid": f"{bank.grid[0]},{bank.grid[1]}",
                        "spatial_radius": str(bank.spatial_radius), "covering_radius": repr(bank.covering_radius),
                        "augment": bank.augment, "padding": PADDING, "coreset_ratio": repr(bank.coreset_ratio),
                        "references": bank.references})
    tmp.replace(path)


def stale_padding(held: str | None, backbone: str, what: str, fix: str) -> str | None:
    """Why a file of ImageNet-backbone features must be refused, or None: one made before the
    backbones padded as their weights were trained (`models.backbone.ARCHITECTURE`; metadata
    "padding") has its patches off their cells. `backbone` may be followed by more words (a
    stream memory's source); SAM cells have no padding to fix."""
    if backbone.split()[0] in BACKBONES and held != PADDING:
        return (f"{what} holds {backbone} features from before the backbone's padding fix "
                f"(no padding={PADDING} in its metadata; they sit about a cell off); {fix}")
    return None


def load_bank(path: str | Path, backbone: str, layers: str, spatial_radius: int,
              augment: str = "none", coreset_ratio: float | None = None, references: str = "") -> MemoryBank:
    """The bank saved at `path`, refused in one line when it was made otherwise than asked:
    another backbone, layers, radius or augmentation, another coreset ratio (when one is given),
    or other images in localizer.reference_dir (when `references` is given). Keys a bank from an
    older version lacks are not checked."""
    path = Path(path).expanduser()
    try:
        tensors = load_file(str(path))
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            meta = handle.metadata() or {}
        rows, cols = (int(v) for v in meta["grid"].split(","))
        bank = MemoryBank(tensors["patches"], tensors["positions"], tensors["sources"], (rows, cols),
                          float(meta["normal_distance"]), meta["backbone"], meta["layers"],
                          int(meta["spatial_radius"]), float(meta["covering_radius"]),
                          meta.get("augment", "none"),   # banks from before augmentation have none
                          float(meta.get("coreset_ratio", coreset_ratio or 1.0)), meta.get("references", ""))
    except Exception as exc:
        raise BankError(f"localizer.bank={str(path)!r} is not a readable memory bank "
                        f"({type(exc).__name__}); delete it to rebuild from localizer.reference_dir") from None
    if (bank.backbone, bank.layers) != (backbone, layers):
        def say(b: str, lay: str) -> str:
            return (f"localizer.backbone=sam with sam.variant={b[4:]}" if b.startswith("sam:")
                    else f"localizer.backbone={b} (backbone_layers@backbone_size {lay})")
        raise BankError(f"localizer.bank={str(path)!r} was built with {say(bank.backbone, bank.layers)}, "
                        f"not {say(backbone, layers)}; delete it to rebuild")
    stale = stale_padding(meta.get("padding"), bank.backbone, f"localizer.bank={str(path)!r}", "delete it to rebuild")
    if stale:
        raise BankError(stale)
    if bank.spatial_radius != spatial_radius:
        # the calibration depends on the radius
        raise BankError(f"localizer.bank={str(path)!r} was calibrated with localizer.spatial_radius="
                        f"{bank.spatial_radius}, not {spatial_radius}; delete it to rebuild")
    if bank.augment != augment:
        raise BankError(f"localizer.bank={str(path)!r} was built with localizer.augment_references="
                        f"{bank.augment}, not {augment}; delete it to rebuild")
    if coreset_ratio is not None and "coreset_ratio" in meta and bank.coreset_ratio != coreset_ratio:
        raise BankError(f"localizer.bank={str(path)!r} was built with localizer.coreset_ratio="
                        f"{bank.coreset_ratio:g}, not {coreset_ratio:g}; delete it to rebuild")
    if references and bank.references and bank.references != references:
        raise BankError(f"localizer.bank={str(path)!r} was built from other images than localizer.reference_dir "
                        f"holds now; delete it to rebuild from them")
    return bank


# ---------------------------------------------------------------- the localizer

class ReferenceLocalizer:
    """kNN distance of the frame's patches to a bank of normal patches."""

    encoder = None       # no CLIP

    def __init__(self, bank: MemoryBank, cfg: LocalizerConfig, backbone: BackboneModel | None = None):
        self.bank = bank
        self.cfg = cfg
        # the ImageNet network the Inspector runs once per frame for it; None: the SAM embedding
        self.backbone = backbone

    def close(self) -> None:
        """Nothing is learnt while running: nothing to keep."""

    def __call__(self, clip: ClipFeatures | None, sam: SamEmbedding, image_size: tuple[int, int],
                 features: BackboneFeatures | None = None, camera: int = 0) -> AnomalyEstimate:
        if self.backbone is not None and features is None:
            raise ValueError("the reference localizer got no backbone features: run its `backbone` first")
        query = patch_grid(features, sam)
        if self.bank.patches.device != query.device:
            self.bank = self.bank.to(query.device)
        dist = distance_map(query, self.bank, self.cfg.knn, self.cfg.spatial_radius, self.cfg.bank_max_patches)
        ratio = dist / (self.bank.normal_distance * self.cfg.distance_scale)
        return estimate_of(ratio, features, sam, self.cfg.sigma, image_size)


def image_score(ratio: torch.Tensor) -> float:
    """r/(1+r) of the largest ratio r = distance / (normal_distance · distance_scale): monotone and
    never saturated, so parts still rank where the map is clipped at 1 (r = 1 gives 0.5)."""
    top = float(ratio.max())
    return top / (1.0 + top)
