"""CPS: Cascaded Prompts for SAM (Hou et al., §3.2), on one cached SAM embedding.

Stage 1 (points):          Dec(F, P)                     → best-scoring of 3 masks: M1, logits1
Stage 2 (points+logits):   Dec(F, P, mask=logits1)       → M2, logits2
Stage 3 (points+box+logits): Dec(F, P, box(M2), logits2) → M3

Every extreme region is one row of a batch, so each stage is one decoder pass
whatever the number of defects. Stages 2 and 3 can be switched off (the paper's
Table 3); a later stage then takes the last stage that ran. A region whose
previous mask came out empty gets its own bounding box as the stage-3 box.

The decoder's cost grows with the number of regions. `refiner.max_regions` caps
it for a takt time: only the regions with the highest peaks are prompted, and
every other extreme region is judged as if SAM had confirmed it (`fuse.keep_map_regions`:
its pixels stay in the mask, S_a > θ, scored at least w·S_a + (1 − w)), so the part still fails.

Pixel scores (for metrics and the image score) fuse the two sources:
    score = w · S_a + (1 − w) · σ(L),   L = max over regions of the final logits,
with w = `refiner.fuse_weight`; σ(L) is 0 where no region was prompted. The
final mask is score > 0.5. With w = 0 that is exactly SAM's mask (L > 0); with
w = 0.5 a pixel needs SAM's and CLIP's evidence together (S_a + σ(L) > 1), which
trims the uncertain rim a weak decoder leaves around a defect.

Two guards of ours, both off in the paper's setting: `confine_to_ring` keeps each
stage's mask inside dilate(M_i) (the region and the ring its negative points were
drawn from), and `box_covers_region` makes the stage-3 box cover M_i as well as
M2, so a stage-2 mask that collapsed cannot shrink the box below the region.

Which box is right depends on the map. A region that fits the defect wants the box to
cover it; one that over-covers the defect (an ImageNet backbone's halo) wants a tighter
one. Two per-region rules of ours (used when `box_covers_region` is off):
`box_peak_share` boxes the region's peak, where the map before clipping
(`AnomalyEstimate.unclipped`) reaches that share of its maximum in the region; M2 then
does not shape the box (stage 2 still feeds stage 3 its points, and the ablation its
masks). Else `box_core_level`: the region's core is where S_a ≥ that level; M2's box is
kept while at least half of M2 lies in the core, and is united with the core's when M2 is
empty or mostly outside it — SAM's mask then leaked off the defect or found nothing.

A prompted region the fused mask keeps fewer pixels of than a defect needs (max of
`min_region_px` and the decision's `min_defect_area_px`: SAM outlined nothing there, or a
speck) is judged so too, as the regions beyond `max_regions` are: with `fuse_weight` < 0.5
a pixel needs some of SAM's confidence even where S_a = 1, and SAM finding nothing must not
pass a part that SAM outlining the defect would fail.
"""
from __future__ import annotations

import numpy as np
import torch

from ..config import RefinerConfig
from ..models.features import SamEmbedding
from ..models.sam import SamModel
from ..timing import Stopwatch
from .base import MASK_LEVEL, Refinement
from .fuse import fuse_scores, keep_map_regions, regions_sam_missed
from .ppg import PromptSet, batch_points, extreme_regions, generate_prompts, grown_boxes, mask_box


def _best_of(output_logits: torch.Tensor, low_res: torch.Tensor, iou: torch.Tensor):
    """Per row, the mask the decoder scored best: (B, H, W) logits and (B, 1, h, w) low-res."""
    best = iou.argmax(dim=1)
    rows = torch.arange(len(best))
    return output_logits[rows, best], low_res[rows, best][:, None]


# `box_core_level`: a stage-2 mask with less than this fraction of its pixels in the region's
# core lies mostly outside the map's surest part: it leaked, so the box covers the core too
CORE_SHARE = 0.5


def leaked_off_core(mask: np.ndarray, core: np.ndarray) -> bool:
    """True when `mask` is empty or less than CORE_SHARE of it lies inside `core`."""
    area = int(mask.sum())
    return area == 0 or int((mask & core).sum()) < CORE_SHARE * area


def _boxes_of(masks: torch.Tensor, prompts: list[PromptSet], cfg: RefinerConfig,
              size: tuple[int, int]) -> np.ndarray:
    """Stage-3 box per row, grown by `box_margin_px`: the bounding box of the previous mask,
    united with the region when `box_covers_region`; else the region's peak with `box_peak_share`;
    else, with `box_core_level`, united with the region's core where that mask is empty or lies
    mostly outside the core; where it is still empty, the region's own box."""
    boxes = []
    for mask, prompt in zip(masks.cpu().numpy(), prompts):
        if cfg.box_covers_region:
            mask = mask | prompt.region
        elif cfg.box_peak_share > 0 and prompt.core is not None:
            mask = prompt.core
        # (an empty core would add nothing to the box: skip the test)
        elif prompt.core is not None and prompt.core.any() and leaked_off_core(mask, prompt.core):
            mask = mask | prompt.core
        boxes.append(mask_box(mask) if mask.any() else prompt.region_box)
    return grown_boxes(np.stack(boxes), cfg.box_margin_px, size)


def _confined(logits: torch.Tensor, allowed: torch.Tensor | None) -> torch.Tensor:
    # a very negative logit, not -inf: σ stays finite and boxes ignore the pixel
    return logits if allowed is None else logits.masked_fill(~allowed, -100.0)


def run_cascade(embedding: SamEmbedding, sam: SamModel, prompts: list[PromptSet],
                cfg: RefinerConfig) -> tuple[torch.Tensor, dict[str, torch.Tensor], np.ndarray | None]:
    """The decoder passes of CPS for all regions at once.

    Returns the final per-region logits (B, H, W), the per-region logits after
    each stage, and the stage-3 boxes (or None when stage 3 is off).
    """
    points, labels = batch_points(prompts)
    allowed = None
    if cfg.confine_to_ring:
        allowed = torch.as_tensor(np.stack([p.neighbourhood for p in prompts]), device=sam.device)
    # without logits as the dense prompt, stage 2 is the very pass of stage 1 read at its
    # single-mask token: one decoder pass gives both, with the same numbers
    shared = cfg.stage2_logits and not cfg.mask_input
    first = sam.decode(embedding, points, labels, multimask=True, every_mask=shared)
    multi = slice(1, None) if shared else slice(None)
    logits, low_res = _best_of(first.logits[:, multi], first.low_res_logits[:, multi], first.iou_scores[:, multi])
    logits = _confined(logits, allowed)
    stages = {"points": logits}
    if cfg.stage2_logits:
        second = first if shared else sam.decode(embedding, points, labels, mask_input=low_res)
        logits, low_res = _confined(second.logits[:, 0], allowed), second.low_res_logits[:, :1]
        stages["logits"] = logits
    boxes = None
    if cfg.stage3_box:
        boxes = _boxes_of(logits > 0, prompts, cfg, embedding.original_size)
        third = sam.decode(embedding, points, labels, boxes=boxes,
                           mask_input=low_res if cfg.mask_input else None)
        logits = _confined(third.logits[:, 0], allowed)
        stages["box"] = logits
    return logits, stages, boxes


def refine_cps(anomaly_map: np.ndarray, embedding: SamEmbedding, sam: SamModel,
               cfg: RefinerConfig, watch: Stopwatch | None = None, unclipped: np.ndarray | None = None,
               min_defect_px: int = 0) -> Refinement:
    """PPG + CPS on one frame. No region above θ: no prompts, empty mask."""
    watch = watch or Stopwatch()
    with watch.stage("ppg"):
        prompts = generate_prompts(anomaly_map, embedding, cfg, unclipped)
    if not prompts:
        empty = np.zeros(anomaly_map.shape, bool)
        return Refinement(mask=empty, pixel_scores=fuse_scores(anomaly_map, None, cfg.fuse_weight))
    with watch.stage("cps"):
        logits, stages, boxes = run_cascade(embedding, sam, prompts, cfg)
    with watch.stage("fuse"):
        unprompted = unprompted_regions(anomaly_map, prompts, cfg)
        judged = {name: judge_stage(anomaly_map, merged_logits(stage), prompts, unprompted, cfg, min_defect_px)
                  for name, stage in stages.items()}
        mask, scores = judged[list(stages)[-1]]
    return Refinement(mask=mask, pixel_scores=scores, prompts=prompts,
                      stage_masks={name: m for name, (m, _) in judged.items()}, boxes=boxes)


def judge_stage(anomaly_map: np.ndarray, logits: np.ndarray, prompts: list[PromptSet],
                unprompted: np.ndarray | None, cfg: RefinerConfig, min_defect_px: int = 0
                ) -> tuple[np.ndarray, np.ndarray]:
    """A stage's mask and pixel scores: the fused rule, with the regions left unprompted and
    those SAM outlined less than a defect of judged as if SAM had confirmed them."""
    scores = fuse_scores(anomaly_map, logits, cfg.fuse_weight)
    missed = regions_sam_missed(scores > MASK_LEVEL, prompts, max(cfg.min_region_px, min_defect_px))
    return keep_map_regions(anomaly_map, scores, either(unprompted, missed), cfg.fuse_weight)


def unprompted_regions(anomaly_map: np.ndarray, prompts: list[PromptSet], cfg: RefinerConfig) -> np.ndarray | None:
    """The extreme regions left out by `max_regions` (None when every region was prompted)."""
    if cfg.max_regions <= 0 or len(prompts) < cfg.max_regions:
        return None
    regions = extreme_regions(anomaly_map, cfg.threshold, cfg.min_region_px)
    if len(regions) <= len(prompts):
        return None
    return np.logical_or.reduce(regions) & ~np.logical_or.reduce([p.region for p in prompts])


def either(a: np.ndarray | None, b: np.ndarray | None) -> np.ndarray | None:
    return b if a is None else a if b is None else a | b


def merged_logits(per_region: torch.Tensor) -> np.ndarray:
    """(B, H, W) → (H, W): a pixel belongs to whichever region's mask is most certain of it."""
    return per_region.max(dim=0).values.float().cpu().numpy()
