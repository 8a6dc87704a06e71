"""MMR: Multi-level Mask Refinement (ClipSAM, Li et al.), on one cached SAM embedding.

The paper gives the idea, not the code: CLIP's regions become point and box
prompts, SAM answers with its hierarchical (multimask) masks, and these are
merged with weights, then with the CLIP map. Our reading, step by step:

1. Regions: the connected components M_i of S_a > θ (`refiner.threshold`),
   at least `refiner.min_region_px` large (`ppg.extreme_regions`, shared with CPS).
2. Prompts per region (one batch row each): the top-`num_positive` points of
   S_a inside M_i, `point_spacing_px` apart (`ppg.spaced_extremes`: CLIP's
   most certain pixels; on a plateau, the most central ones, as PPG picks them),
   and the bounding box of M_i grown by `box_margin_px` (`ppg.mask_box`). No
   negative points: MMR's prompts carry CLIP's position only; PPG's co-feature
   negatives belong to CPS.
3. ONE decoder pass for all regions with `multimask=True`: SAM's three mask
   tokens, for SAM roughly sub-part / part / whole, in decoder order: the
   "hierarchical levels".
4. Level merge per region: P_i = Σ_k w_k σ(L_ik) / Σ_k w_k with
   w = `refiner.mmr_weights` (one per level, decoder order); with
   `refiner.mmr_iou_weighting` each w_k is multiplied by SAM's own IoU
   estimate for that mask first. Soft masks σ(L), not binarised ones, so the
   pixel scores keep SAM's confidence (and equal the binary merge where SAM is sure).
   With `refiner.confine_to_ring`, P_i is zero outside M_i and its ring (as in CPS).
5. Regions: P = max_i P_i (a pixel belongs to the region most certain of it).
6. With the CLIP map, the same rule as CPS (`fuse.fuse_probabilities`, with P for σ(L)):
   score = w·S_a + (1 − w)·P, w = `refiner.fuse_weight`; mask = score > 0.5
   (`base.MASK_LEVEL`). Per-level masks (union over regions, σ(L) > 0.5) and
   the merged one are kept in `Refinement.stage_masks` for inspection.

No region above θ: no decoder pass, an empty mask, score = w·S_a. A region the fused mask
keeps fewer pixels of than a defect needs (SAM outlined nothing there, or a speck) is
judged as if SAM had confirmed it, as in CPS (`fuse.keep_map_regions`).
"""
from __future__ import annotations

import numpy as np
import torch

from ..config import RefinerConfig
from ..models.features import SamEmbedding
from ..models.sam import SamModel
from ..timing import Stopwatch
from .base import MASK_LEVEL, Refinement
from .fuse import fuse_probabilities, keep_map_regions, regions_sam_missed
from .ppg import (
    PromptSet,
    batch_points,
    central_first,
    extreme_regions,
    grown_boxes,
    mask_box,
    ring_mask,
    spaced_extremes,
)

LEVELS = ("level1", "level2", "level3")


def mmr_prompts(anomaly_map: np.ndarray, cfg: RefinerConfig) -> list[PromptSet]:
    """One PromptSet (positive points only, the region and its ring) per extreme region."""
    regions = extreme_regions(anomaly_map, cfg.threshold, cfg.min_region_px)
    if not regions:
        return []
    all_regions = np.logical_or.reduce(regions)
    none = np.zeros((0, 2), np.float32)
    return [PromptSet(positive=spaced_extremes(central_first(anomaly_map, region), region, cfg.num_positive,
                                               cfg.point_spacing_px),
                      negative=none, region=region,
                      ring=ring_mask(region, all_regions, cfg.dilation_shape, cfg.dilation_size))
            for region in regions]


def region_boxes(prompts: list[PromptSet], margin: float, size: tuple[int, int]) -> np.ndarray:
    """(B, 4) box of each region grown by `margin` pixels, inside the frame."""
    return grown_boxes(np.stack([mask_box(p.region) for p in prompts]), margin, size)


def level_weights(weights: list[float], iou_scores: torch.Tensor, use_iou: bool) -> torch.Tensor:
    """(B, K) non-negative merge weights, each row summing to 1."""
    w = torch.as_tensor(weights, dtype=torch.float32, device=iou_scores.device).expand_as(iou_scores)
    if use_iou:
        w = w * iou_scores.float().clamp(min=0.0)
    total = w.sum(dim=1, keepdim=True)
    # every IoU estimate ≤ 0 leaves nothing to weigh with: fall back to the configured weights
    fallback = torch.as_tensor(weights, dtype=torch.float32, device=w.device).expand_as(w)
    w = torch.where(total > 0, w, fallback)
    return w / w.sum(dim=1, keepdim=True)


def merge_levels(logits: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """(B, K, H, W) level logits and (B, K) weights → (B, H, W) merged soft mask in 0..1."""
    return (torch.sigmoid(logits.float()) * weights[:, :, None, None]).sum(dim=1)


def refine_mmr(anomaly_map: np.ndarray, embedding: SamEmbedding, sam: SamModel,
               cfg: RefinerConfig, watch: Stopwatch | None = None, unclipped: np.ndarray | None = None,
               min_defect_px: int = 0) -> Refinement:
    """ClipSAM's MMR on one frame; every region in one multimask decoder pass (see module docstring)."""
    watch = watch or Stopwatch()
    with watch.stage("mmr_prompts"):
        prompts = mmr_prompts(anomaly_map, cfg)
    if not prompts:
        scores = (cfg.fuse_weight * anomaly_map).astype(np.float32)
        return Refinement(mask=np.zeros(anomaly_map.shape, bool), pixel_scores=scores)
    with watch.stage("mmr"):
        points, labels = batch_points(prompts)
        boxes = region_boxes(prompts, cfg.box_margin_px, embedding.original_size)
        out = sam.decode(embedding, points, labels, boxes=boxes, multimask=True)
        levels = torch.sigmoid(out.logits.float())                                 # (B, K, H, W)
        weights = level_weights(cfg.mmr_weights, out.iou_scores, cfg.mmr_iou_weighting)
        per_region = merge_levels(out.logits, weights)                             # (B, H, W)
        if cfg.confine_to_ring:
            allowed = torch.as_tensor(np.stack([p.neighbourhood for p in prompts]), device=per_region.device)
            per_region = per_region * allowed
            levels = levels * allowed[:, None]
    with watch.stage("fuse"):
        merged = per_region.max(dim=0).values.cpu().numpy()
        fused = fuse_probabilities(anomaly_map, merged, cfg.fuse_weight)
        missed = regions_sam_missed(fused > MASK_LEVEL, prompts, max(cfg.min_region_px, min_defect_px))
        mask, scores = keep_map_regions(anomaly_map, fused, missed, cfg.fuse_weight)
        stage_masks = {name: (levels[:, k] > 0.5).any(dim=0).cpu().numpy() for k, name in enumerate(LEVELS)}
        stage_masks["merged"] = merged > 0.5
    return Refinement(mask=mask, pixel_scores=scores, prompts=prompts, stage_masks=stage_masks, boxes=boxes)
