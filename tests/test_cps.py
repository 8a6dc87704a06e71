"""CPS on the real LiteMedSAM: what each stage is given, batching, and what the masks cover.

`RecordingSam` is not a mock: every decode runs the real prompt encoder and mask
decoder; it only keeps a copy of what each pass was given and returned.
"""
from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import pytest
import torch
from conftest import coarse_from_truth

from clipsam_ros.config import RefinerConfig
from clipsam_ros.data.synth import make_sample
from clipsam_ros.refine.cps import refine_cps
from clipsam_ros.refine.ppg import mask_box

PAPER = RefinerConfig()                       # the paper's cascade, our guards off


class RecordingSam:
    def __init__(self, sam):
        self.sam = sam
        self.passes: list[dict] = []

    def decode(self, embedding, points=None, labels=None, boxes=None, mask_input=None, multimask=False,
               every_mask=False):
        out = self.sam.decode(embedding, points, labels, boxes, mask_input, multimask, every_mask)
        self.passes.append(dict(points=points, labels=labels, boxes=boxes, mask_input=mask_input,
                                multimask=multimask, every_mask=every_mask, out=out))
        return out

    def __getattr__(self, name):
        return getattr(self.sam, name)


@pytest.fixture(scope="module")
def stain(lite_sam):
    image, truth = make_sample("metal", "stain", seed=1)
    return image, truth > 0, lite_sam.encode(image)


@pytest.fixture(scope="module")
def two_defects(lite_sam):
    """One frame with a stain and a hole far apart: two extreme regions."""
    image, truth_a = make_sample("metal", "stain", seed=1)
    other, truth_b = make_sample("metal", "hole", seed=3)
    truth_b = truth_b > 0
    if (truth_b & (truth_a > 0)).any():
        pytest.skip("synthetic defects overlap for these seeds")
    image = image.copy()
    image[truth_b] = other[truth_b]
    truth = (truth_a > 0) | truth_b
    return image, truth, lite_sam.encode(image)


def test_paper_cascade_feeds_each_stage_the_previous_one(lite_sam, stain):
    _, truth, emb = stain
    rec = RecordingSam(lite_sam)
    result = refine_cps(coarse_from_truth(truth), emb, rec, PAPER)
    assert len(rec.passes) == 3
    first, second, third = rec.passes
    # stage 1: points only, three candidate masks
    assert first["multimask"] and first["boxes"] is None and first["mask_input"] is None
    # stage 2: the same points plus stage 1's low-res logits of its best-scoring mask
    best = first["out"].iou_scores.argmax(dim=1)
    expected = first["out"].low_res_logits[torch.arange(len(best)), best][:, None]
    assert torch.equal(second["mask_input"], expected)
    assert np.array_equal(second["points"], first["points"]) and second["boxes"] is None
    # stage 3: the same points, the box of M2, and stage 2's logits
    m2 = second["out"].logits[:, 0] > 0
    assert np.allclose(third["boxes"][0], mask_box(m2[0].numpy()))
    assert torch.equal(third["mask_input"], second["out"].low_res_logits)
    assert np.array_equal(third["points"], first["points"])
    assert list(result.stage_masks) == ["points", "logits", "box"]


def test_positive_points_sit_on_the_defect(lite_sam, stain):
    _, truth, emb = stain
    result = refine_cps(coarse_from_truth(truth), emb, lite_sam, PAPER)
    (prompt,) = result.prompts
    assert all(truth[int(y), int(x)] for x, y in prompt.positive)
    assert not any(truth[int(y), int(x)] for x, y in prompt.negative)


def test_regions_are_decoded_as_one_batch(lite_sam, two_defects):
    _, truth, emb = two_defects
    rec = RecordingSam(lite_sam)
    result = refine_cps(coarse_from_truth(truth), emb, rec, PAPER)
    assert len(result.prompts) == 2
    assert len(rec.passes) == 3                                   # not 3 per region
    assert all(p["points"].shape[0] == 2 for p in rec.passes)
    assert rec.passes[2]["boxes"].shape == (2, 4)


def test_switching_stages_off(lite_sam, stain):
    _, truth, emb = stain
    amap = coarse_from_truth(truth)
    rec = RecordingSam(lite_sam)
    refine_cps(amap, emb, rec, dataclasses.replace(PAPER, stage2_logits=False))
    assert len(rec.passes) == 2
    first, third = rec.passes
    best = first["out"].iou_scores.argmax(dim=1)
    assert torch.equal(third["mask_input"], first["out"].low_res_logits[torch.arange(len(best)), best][:, None])
    assert np.allclose(third["boxes"][0], mask_box((first["out"].logits[0, best[0]] > 0).numpy()))

    rec = RecordingSam(lite_sam)
    result = refine_cps(amap, emb, rec, dataclasses.replace(PAPER, stage3_box=False))
    assert len(rec.passes) == 2 and rec.passes[1]["boxes"] is None and rec.passes[1]["mask_input"] is not None
    assert list(result.stage_masks) == ["points", "logits"] and result.boxes is None


def test_without_mask_input_stage_two_is_read_from_the_first_pass(lite_sam, stain):
    """Points alone twice is one decoder computation: one pass, the same masks as two."""
    _, truth, emb = stain
    amap = coarse_from_truth(truth)
    cfg = dataclasses.replace(PAPER, mask_input=False)
    rec = RecordingSam(lite_sam)
    shared = refine_cps(amap, emb, rec, cfg)
    assert len(rec.passes) == 2 and rec.passes[0]["every_mask"]             # points (+ stage 2), box
    assert rec.passes[1]["boxes"] is not None and rec.passes[1]["mask_input"] is None
    points, labels = rec.passes[0]["points"], rec.passes[0]["labels"]
    multi = lite_sam.decode(emb, points, labels, multimask=True)             # stage 1 as its own pass
    single = lite_sam.decode(emb, points, labels)                            # stage 2 as its own pass
    every = rec.passes[0]["out"]
    assert torch.allclose(every.logits[:, 1:], multi.logits, atol=1e-4)
    assert torch.allclose(every.logits[:, :1], single.logits, atol=1e-4)
    assert np.array_equal(shared.stage_masks["logits"],
                          refine_cps(amap, emb, lite_sam, dataclasses.replace(cfg, stage3_box=False)).mask)


def test_nothing_above_threshold_means_no_decoder_pass_and_an_empty_mask(lite_sam, stain):
    _, truth, emb = stain
    rec = RecordingSam(lite_sam)
    result = refine_cps(coarse_from_truth(truth) * 0.3, emb, rec, PAPER)
    assert rec.passes == [] and not result.mask.any() and result.prompts == []


def test_offline_guards_keep_masks_near_the_region_and_cover_the_defect(lite_sam, stain, offline_cfg):
    _, truth, emb = stain
    # the region-covering box with a 15 px margin, as for a CLIP-like map (offline.yaml's backbone
    # map over-covers, so the profile itself takes SAM's stage-2 box: README, "Offline profile")
    cfg = dataclasses.replace(offline_cfg.refiner, box_covers_region=True, box_margin_px=15.0)
    rec = RecordingSam(lite_sam)
    result = refine_cps(coarse_from_truth(truth), emb, rec, cfg)
    (prompt,) = result.prompts
    assert not (result.mask & ~prompt.neighbourhood).any()
    box = rec.passes[-1]["boxes"][0]
    x0, y0, x1, y1 = prompt.region_box
    assert box[0] <= x0 - cfg.box_margin_px + 1e-3 and box[2] >= x1 + cfg.box_margin_px - 1e-3
    assert rec.passes[-1]["mask_input"] is None
    covered = (result.mask & truth).sum() / truth.sum()
    assert covered > 0.8, covered
    iou = (result.mask & truth).sum() / (result.mask | truth).sum()
    assert iou > 0.7, iou


def test_fused_scores_follow_the_documented_rule(lite_sam, stain):
    _, truth, emb = stain
    amap = coarse_from_truth(truth)
    sam_only = refine_cps(amap, emb, lite_sam, dataclasses.replace(PAPER, fuse_weight=0.0))
    clip_only = refine_cps(amap, emb, lite_sam, dataclasses.replace(PAPER, fuse_weight=1.0))
    assert np.allclose(clip_only.pixel_scores, amap, atol=1e-6)
    # with weight 0 the mask is exactly SAM's L > 0 (σ(L) > 0.5)
    assert np.array_equal(sam_only.mask, sam_only.pixel_scores > 0.5)
    assert sam_only.pixel_scores.min() >= 0 and sam_only.pixel_scores.max() <= 1


def test_max_regions_prompts_the_strongest_and_keeps_the_rest_in_the_mask(lite_sam, two_defects):
    """A capped cascade decodes fewer rows, but no extreme region leaves the mask."""
    _, truth, emb = two_defects
    amap = coarse_from_truth(truth)
    count, labels = cv2.connectedComponents((amap > PAPER.threshold).astype(np.uint8))
    assert count - 1 == 2
    weaker = labels == 2
    amap = np.where(weaker, amap * 0.8, amap).astype(np.float32)     # region 2 peaks lower
    rec = RecordingSam(lite_sam)
    capped = refine_cps(amap, emb, rec, dataclasses.replace(PAPER, max_regions=1))
    (prompt,) = capped.prompts
    assert np.array_equal(prompt.region, labels == 1)                   # the stronger one
    assert all(p["points"].shape[0] == 1 for p in rec.passes)                            # one row per pass
    above_weaker = weaker & (amap > PAPER.threshold)
    assert capped.mask[above_weaker].all()                 # the unprompted region stays a defect
    assert (capped.pixel_scores[above_weaker] > 0.5).all()
    # the prompted region got the same decoder answer as in the uncapped, two-row batch
    rec_full = RecordingSam(lite_sam)
    full = refine_cps(amap, emb, rec_full, PAPER)
    row = next(i for i, p in enumerate(full.prompts) if (p.region & (labels == 1)).any())
    assert torch.allclose(rec.passes[-1]["out"].logits[0], rec_full.passes[-1]["out"].logits[row], atol=1e-3)


class BlindSam(RecordingSam):
    """The real decoder's passes with every logit set to -20: SAM outlining nothing. LiteMedSAM
    does miss faint defects, but cannot be made to on demand, so its answer is replaced."""

    def decode(self, *args, **kwargs):
        out = super().decode(*args, **kwargs)
        return dataclasses.replace(out, logits=torch.full_like(out.logits, -20.0),
                                   low_res_logits=torch.full_like(out.low_res_logits, -20.0))


class SpeckSam(RecordingSam):
    """The real decoder's passes with SAM outlining a (2·half+1)² square at `where` (x, y) and
    nothing else."""

    def __init__(self, sam, where: tuple[int, int], half: int = 0):
        super().__init__(sam)
        self.where, self.half = where, half

    def decode(self, *args, **kwargs):
        out = super().decode(*args, **kwargs)
        logits = torch.full_like(out.logits, -20.0)
        (x, y), h = self.where, self.half
        logits[..., y - h:y + h + 1, x - h:x + h + 1] = 5.0
        return dataclasses.replace(out, logits=logits, low_res_logits=torch.full_like(out.low_res_logits, -20.0))


@pytest.mark.parametrize("case", ["blind", "speck", "25 px, under the smallest defect", "blind, a faint map, θ 0.3"])
def test_a_region_sam_finds_nothing_in_is_judged_as_if_sam_confirmed_it(lite_sam, stain, offline_cfg, case):
    """A region SAM outlines nothing of, or less than a defect (decision.min_defect_area_px),
    stays in the mask, scored as SAM's certainty would score it (w·S_a + 1 − w), so the part
    fails with the default decision wherever SAM outlining the defect would fail it."""
    from clipsam_ros.decision import Verdict, find_defects, verdict_of

    _, truth, emb = stain
    amap = coarse_from_truth(truth)
    cfg = offline_cfg.refiner
    if case.startswith("blind, a faint map"):
        # S_a peaks at 0.45: a region by θ 0.3, below the decision's 0.5 on the map alone
        amap = (0.45 * amap / amap.max()).astype(np.float32)
        cfg = dataclasses.replace(cfg, threshold=0.3)
    peak = np.unravel_index(int(np.argmax(amap)), amap.shape)
    where = (int(peak[1]), int(peak[0]))
    sam = {"speck": SpeckSam(lite_sam, where), "25 px, under the smallest defect": SpeckSam(lite_sam, where, 2)}.get(
        case, BlindSam(lite_sam))
    min_defect = offline_cfg.decision.min_defect_area_px
    assert cfg.min_region_px < 25 < min_defect
    result = refine_cps(amap, emb, sam, cfg, min_defect_px=min_defect)
    region = amap > cfg.threshold
    assert region.sum() > 1000
    assert result.mask[region].all() and not result.mask[~region].any()
    confirmed = cfg.fuse_weight * amap + (1 - cfg.fuse_weight)
    assert (result.pixel_scores[region] >= confirmed[region] - 1e-6).all()
    assert verdict_of(find_defects(result.mask, result.pixel_scores, offline_cfg.decision)) == Verdict.FAIL
