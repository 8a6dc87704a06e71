"""PPG: Co-Feature Point Prompt Generation (Hou et al., §3.1).

From the CLIP anomaly map S_a and the frame's SAM embedding F:

- extreme region M = S_a > θ, split into connected components (one prompt set each);
- positives: top-k of R_a = S_a·M inside the component, at least `spacing` apart; among
  equal scores the pixel deepest inside the component (a map clipped at 1 has a
  plateau, and its first pixel in raster order would sit on the region's top edge);
- ring N_a = dilate(M_i) − M with a (shape, size) kernel (paper's best: ellipse 25×25);
- F_a = mean SAM embedding over M_i; negatives: the k ring pixels whose embedding
  is least cosine-similar to F_a, at least `spacing` apart.

"Spaced by 400 pixels" in the paper is read as a squared distance (400 px², so
points 20 px apart): 400 px apart would leave one point per defect on MVTec's
≤1024 px images, while the paper speaks of several. `point_spacing_px` holds it.

All coordinates are (x, y) in frame pixels. Nothing here runs a network.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from ..config import RefinerConfig
from ..models.features import SamEmbedding

KERNEL_SHAPES = {"ellipse": cv2.MORPH_ELLIPSE, "rect": cv2.MORPH_RECT, "cross": cv2.MORPH_CROSS}


@dataclass
class PromptSet:
    """The prompts for one extreme region."""

    positive: np.ndarray   # (P, 2) x, y
    negative: np.ndarray   # (Q, 2) x, y
    region: np.ndarray     # (H, W) bool, the component M_i
    ring: np.ndarray       # (H, W) bool, dilate(M_i) - M
    # (H, W) bool, the part of M_i the stage-3 box leans on (`region_core`); None when unused
    core: np.ndarray | None = None

    @property
    def neighbourhood(self) -> np.ndarray:
        """M_i with its ring: where SAM's mask for this region may lie when confined."""
        return self.region | self.ring

    @property
    def region_box(self) -> np.ndarray:
        return mask_box(self.region)


def mask_box(mask: np.ndarray) -> np.ndarray:
    """[x0, y0, x1, y1] (inclusive pixel extents) of a non-empty bool mask."""
    ys, xs = np.nonzero(mask)
    return np.array([xs.min(), ys.min(), xs.max(), ys.max()], dtype=np.float32)


def grown_boxes(boxes: np.ndarray, margin: float, size: tuple[int, int]) -> np.ndarray:
    """(B, 4) boxes grown by `margin` pixels on every side, kept inside the (h, w) frame."""
    h, w = size
    grown = np.asarray(boxes, np.float64) + np.array([-margin, -margin, margin, margin], np.float64)
    return np.clip(grown, 0, [w - 1, h - 1, w - 1, h - 1]).astype(np.float32)


def extreme_regions(anomaly_map: np.ndarray, threshold: float, min_region_px: int) -> list[np.ndarray]:
    """Connected components of S_a > θ, largest first, small ones dropped."""
    above = (anomaly_map > threshold).astype(np.uint8)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(above, connectivity=8)
    order = sorted(range(1, count), key=lambda i: -stats[i, cv2.CC_STAT_AREA])
    return [labels == i for i in order if stats[i, cv2.CC_STAT_AREA] >= min_region_px]


def spaced_extremes(scores: np.ndarray, allowed: np.ndarray, k: int, spacing: float,
                    largest: bool = True) -> np.ndarray:
    """Up to k pixels of `allowed` with the largest (or smallest) scores, pairwise ≥ spacing apart.

    Greedy non-maximum suppression: take the best pixel, blank a disc of radius
    `spacing` around it, repeat. Returns (n, 2) x, y with n ≤ k.
    """
    work = np.where(allowed, scores if largest else -scores, -np.inf).astype(np.float64)
    h, w = work.shape
    yy, xx = np.ogrid[:h, :w]
    picked: list[tuple[int, int]] = []
    for _ in range(k):
        flat = int(np.argmax(work))
        y, x = divmod(flat, w)
        if not np.isfinite(work[y, x]):
            break
        picked.append((x, y))
        # strictly inside the disc is too close; exactly `spacing` away is allowed
        work[(xx - x) ** 2 + (yy - y) ** 2 < spacing ** 2] = -np.inf
        work[y, x] = -np.inf
    return np.array(picked, dtype=np.float32).reshape(-1, 2)


# smaller than any difference of scores that matters, larger than float32 rounding of values near 1
_TIE_BREAK = 1e-4


def central_first(anomaly_map: np.ndarray, region: np.ndarray) -> np.ndarray:
    """S_a plus a tie-break toward the region's interior (its distance transform, scaled to at
    most `_TIE_BREAK`): equal scores go to the most central pixel; scores further apart than that keep their order."""
    depth = cv2.distanceTransform(region.astype(np.uint8), cv2.DIST_L2, 3)
    return anomaly_map.astype(np.float64) + _TIE_BREAK * depth / max(float(depth.max()), 1.0)


def ring_mask(region: np.ndarray, all_regions: np.ndarray, shape: str, size: int) -> np.ndarray:
    """N_a = dilate(M_i) − M: the band around one region, outside every region."""
    kernel = cv2.getStructuringElement(KERNEL_SHAPES[shape], (size, size))
    dilated = cv2.dilate(region.astype(np.uint8), kernel) > 0
    return dilated & ~all_regions


def _grid_weights(mask: np.ndarray, embedding: SamEmbedding) -> torch.Tensor:
    """The fraction of each valid embedding cell covered by `mask`, (rows, cols)."""
    rows, cols = embedding.valid_cells()
    h, w = embedding.input_size
    resized = cv2.resize(mask.astype(np.float32), (w, h), interpolation=cv2.INTER_AREA)
    cell = embedding.img_size / embedding.grid
    padded = np.zeros((rows * int(cell), cols * int(cell)), np.float32)
    padded[:h, :w] = resized[: rows * int(cell), : cols * int(cell)]
    pooled = padded.reshape(rows, int(cell), cols, int(cell)).mean(axis=(1, 3))
    return torch.from_numpy(pooled)


def similarity_to_region(region: np.ndarray, embedding: SamEmbedding) -> np.ndarray:
    """Cosine similarity of every frame pixel's SAM embedding to F_a, the region's mean embedding."""
    rows, cols = embedding.valid_cells()
    grid = embedding.features[0, :, :rows, :cols].float().cpu()          # (C, rows, cols)
    weights = _grid_weights(region, embedding)
    if float(weights.sum()) <= 0:
        weights = torch.ones_like(weights)
    f_a = (grid * weights).sum(dim=(1, 2)) / weights.sum()
    sim = F.cosine_similarity(grid, f_a[:, None, None], dim=0)           # (rows, cols)
    # back to frame pixels through the same geometry SAM used: grid → input → frame
    cell = embedding.img_size / embedding.grid
    up = F.interpolate(sim[None, None], size=(int(rows * cell), int(cols * cell)),
                       mode="bilinear", align_corners=False)[0, 0].numpy()
    h_in, w_in = embedding.input_size
    h, w = embedding.original_size
    return cv2.resize(up[:h_in, :w_in], (w, h), interpolation=cv2.INTER_LINEAR)


def strongest_first(regions: list[np.ndarray], anomaly_map: np.ndarray, limit: int) -> list[np.ndarray]:
    """The `limit` regions with the highest peak of `anomaly_map` (all when `limit` is 0), strongest
    first; ties keep their order."""
    ranked = sorted(regions, key=lambda region: -float(anomaly_map[region].max()))
    return ranked[:limit] if limit > 0 else ranked


def generate_prompts(anomaly_map: np.ndarray, embedding: SamEmbedding, cfg: RefinerConfig,
                     unclipped: np.ndarray | None = None) -> list[PromptSet]:
    """One PromptSet per extreme region of S_a (at most `cfg.max_regions`, strongest peak
    first); empty when nothing exceeds θ. Rings avoid every region, prompted or not.
    `unclipped` (S_a before clipping at 1) ranks the regions and places the peak of
    `box_peak_share`."""
    regions = extreme_regions(anomaly_map, cfg.threshold, cfg.min_region_px)
    if not regions:
        return []
    all_regions = np.logical_or.reduce(regions)
    # the core is only read by a stage-3 box that is not the region's own (refine/cps.py)
    wants_core = (cfg.box_core_level > 0 or cfg.box_peak_share > 0) and cfg.stage3_box and not cfg.box_covers_region
    prompts = []
    # regions clipped at 1 all tie: the unclipped map still ranks them
    for region in strongest_first(regions, anomaly_map if unclipped is None else unclipped, cfg.max_regions):
        positive = spaced_extremes(central_first(anomaly_map, region), region, cfg.num_positive,
                                   cfg.point_spacing_px)
        ring = ring_mask(region, all_regions, cfg.dilation_shape, cfg.dilation_size)
        negative = np.zeros((0, 2), np.float32)
        if cfg.use_negative_points and cfg.num_negative > 0 and ring.any():
            similarity = similarity_to_region(region, embedding)
            negative = spaced_extremes(similarity, ring, cfg.num_negative, cfg.point_spacing_px,
                                       largest=False)
        core = region_core(region, anomaly_map, unclipped, cfg) if wants_core else None
        prompts.append(PromptSet(positive=positive, negative=negative, region=region, ring=ring, core=core))
    return prompts


def region_core(region: np.ndarray, anomaly_map: np.ndarray, unclipped: np.ndarray | None,
                cfg: RefinerConfig) -> np.ndarray:
    """The part of a region its stage-3 box may lean on. With `box_peak_share`: its peak, where
    the unclipped map reaches that share of its maximum in the region (a clipped map is flat
    at 1 over the backbone's halo, several times the defect; its unclipped values still fall
    off from the defect). Else its core, S_a ≥ `box_core_level`."""
    if cfg.box_peak_share > 0:
        values = anomaly_map if unclipped is None else unclipped
        return region & (values >= cfg.box_peak_share * values[region].max())
    return region & (anomaly_map >= cfg.box_core_level)


def batch_points(prompts: list[PromptSet]) -> tuple[np.ndarray, np.ndarray]:
    """(B, N, 2) points and (B, N) labels, padded with SAM's "not a point" label −1."""
    n = max(len(p.positive) + len(p.negative) for p in prompts)
    points = np.zeros((len(prompts), n, 2), np.float32)
    labels = np.full((len(prompts), n), -1, np.int64)
    for i, p in enumerate(prompts):
        pts = np.concatenate([p.positive, p.negative])
        points[i, : len(pts)] = pts
        labels[i, : len(p.positive)] = 1
        labels[i, len(p.positive): len(pts)] = 0
    return points, labels
