"""MMR on the real LiteMedSAM: prompts where the map says, one multimask pass, weights obeyed.

Maps are constructed from the ground truth (`coarse_from_truth`), so where the
prompts must land is known. `RecordingSam` (as in test_cps) runs the real
decoder and keeps what each pass was given and returned.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from conftest import coarse_from_truth
from test_cps import BlindSam, RecordingSam, SpeckSam

from clipsam_ros.config import ConfigError, RefinerConfig, load
from clipsam_ros.data.synth import make_sample
from clipsam_ros.refine.mmr import LEVELS, level_weights, merge_levels, mmr_prompts, refine_mmr
from clipsam_ros.refine.ppg import mask_box
from clipsam_ros.timing import Stopwatch

SIZE = (320, 240)
# fuse_weight 0: the pixel scores are the merged SAM levels themselves
MMR = RefinerConfig(method="mmr", num_positive=2, box_margin_px=5.0, fuse_weight=0.0)


def _sigmoid(x: torch.Tensor) -> np.ndarray:
    return torch.sigmoid(x.float()).numpy()


@pytest.fixture(scope="module")
def two_defects(lite_sam):
    """A stain and a hole far apart on one metal sheet: two extreme regions."""
    image, truth_a = make_sample("metal", "stain", seed=1, size=SIZE)
    other, truth_b = make_sample("metal", "hole", seed=3, size=SIZE)
    truth_a, truth_b = truth_a > 0, truth_b > 0
    if (truth_a & truth_b).any():
        pytest.skip("synthetic defects overlap for these seeds")
    image = image.copy()
    image[truth_b] = other[truth_b]
    # one coarse map per defect, so each peaks at 1 whatever its size
    amap = np.maximum(coarse_from_truth(truth_a), coarse_from_truth(truth_b))
    return image, truth_a | truth_b, lite_sam.encode(image), amap


@pytest.fixture(scope="module")
def recorded(lite_sam, two_defects):
    """One MMR run on the two-defect frame: (map, result, the decoder passes)."""
    _, truth, emb, amap = two_defects
    rec = RecordingSam(lite_sam)
    watch = Stopwatch()
    return amap, refine_mmr(amap, emb, rec, MMR, watch), rec.passes, watch


def test_prompts_come_from_each_region_of_the_map(two_defects, recorded):
    truth = two_defects[1]
    amap, result, passes, _ = recorded
    assert len(result.prompts) == 2
    for prompt in result.prompts:
        assert prompt.negative.shape == (0, 2)                       # MMR sends CLIP's positions only
        assert 1 <= len(prompt.positive) <= MMR.num_positive
        for x, y in prompt.positive:
            assert prompt.region[int(y), int(x)] and truth[int(y), int(x)]
        # the first point is the region's peak of the map
        x, y = prompt.positive[0]
        assert amap[int(y), int(x)] == amap[prompt.region].max()
    boxes = result.boxes
    for prompt, box in zip(result.prompts, boxes):
        x0, y0, x1, y1 = mask_box(prompt.region)
        m = MMR.box_margin_px
        np.testing.assert_allclose(box, [max(x0 - m, 0), max(y0 - m, 0), min(x1 + m, SIZE[0] - 1),
                                         min(y1 + m, SIZE[1] - 1)])


def test_all_regions_in_one_multimask_pass(recorded):
    _, result, passes, watch = recorded
    assert len(passes) == 1
    (one,) = passes
    assert one["multimask"] and one["mask_input"] is None
    assert one["points"].shape == (2, MMR.num_positive, 2) and one["boxes"].shape == (2, 4)
    assert set(np.unique(one["labels"])) <= {1, -1}                  # positives (and padding) only
    assert one["out"].logits.shape[:2] == (2, 3)
    assert {"mmr_prompts", "mmr", "fuse"} <= set(watch.ms)
    assert list(result.stage_masks) == [*LEVELS, "merged"]


def test_levels_are_merged_with_the_configured_weights(lite_sam, two_defects, recorded):
    emb = two_defects[2]
    amap, result, passes, _ = recorded
    out = passes[0]["out"]
    levels = _sigmoid(out.logits)                                     # (2 regions, 3 levels, H, W)
    w = np.array(MMR.mmr_weights) / sum(MMR.mmr_weights)
    expected = np.einsum("k,bkhw->bhw", w, levels).max(axis=0)
    np.testing.assert_allclose(result.pixel_scores, expected, atol=1e-6)
    # one level alone: the scores are that level's soft mask
    for k in (0, 2):
        only = dataclasses.replace(MMR, mmr_weights=[float(i == k) for i in range(3)])
        single = refine_mmr(amap, emb, lite_sam, only)
        np.testing.assert_allclose(single.pixel_scores, levels[:, k].max(axis=0), atol=1e-5)
    # the decoder's IoU estimates, when asked to, scale the weights
    iou = out.iou_scores
    weighted = level_weights(MMR.mmr_weights, iou, True)
    raw = torch.tensor(MMR.mmr_weights) * iou.clamp(min=0)
    torch.testing.assert_close(weighted, raw / raw.sum(dim=1, keepdim=True))
    torch.testing.assert_close(merge_levels(out.logits, weighted),
                               (torch.sigmoid(out.logits) * weighted[:, :, None, None]).sum(dim=1))


def test_the_clip_map_is_fused_like_cps(lite_sam, two_defects, recorded):
    emb = two_defects[2]
    amap, result, _, _ = recorded
    clip_only = refine_mmr(amap, emb, lite_sam, dataclasses.replace(MMR, fuse_weight=1.0))
    np.testing.assert_allclose(clip_only.pixel_scores, amap, atol=1e-6)
    np.testing.assert_array_equal(clip_only.mask, amap > 0.5)
    half = refine_mmr(amap, emb, lite_sam, dataclasses.replace(MMR, fuse_weight=0.5))
    np.testing.assert_allclose(half.pixel_scores, 0.5 * amap + 0.5 * result.pixel_scores, atol=1e-6)
    np.testing.assert_array_equal(half.mask, half.pixel_scores > 0.5)


def test_a_stain_is_outlined_and_confined(lite_sam):
    image, truth = make_sample("metal", "stain", seed=1, size=SIZE)
    truth = truth > 0
    emb = lite_sam.encode(image)
    cfg = dataclasses.replace(MMR, fuse_weight=0.5, confine_to_ring=True, box_margin_px=15.0, num_positive=1)
    result = refine_mmr(coarse_from_truth(truth), emb, lite_sam, cfg)
    (prompt,) = result.prompts
    assert not (result.mask & ~prompt.neighbourhood).any()
    assert not (result.stage_masks["merged"] & ~prompt.neighbourhood).any()
    iou = (result.mask & truth).sum() / (result.mask | truth).sum()
    assert iou > 0.75, iou                                            # measured 0.85


def test_a_region_sam_outlines_nothing_keeps_the_map_and_fails_the_part(lite_sam, two_defects):
    """As in CPS: with fuse_weight < 0.5 the fused rule alone would drop a region SAM finds nothing
    in (0.3 · 1 < 0.5), and the part would pass."""
    from clipsam_ros.config import DecisionConfig
    from clipsam_ros.decision import Verdict, find_defects, verdict_of

    _, _, emb, amap = two_defects
    cfg = dataclasses.replace(MMR, fuse_weight=0.3)
    result = refine_mmr(amap, emb, BlindSam(lite_sam), cfg)
    peak = np.unravel_index(int(np.argmax(amap)), amap.shape)
    speck = refine_mmr(amap, emb, SpeckSam(lite_sam, (int(peak[1]), int(peak[0])), 2), cfg, min_defect_px=30)
    np.testing.assert_array_equal(speck.mask, result.mask)
    assert (result.pixel_scores[amap > cfg.threshold] >= 0.3 * amap[amap > cfg.threshold] + 0.7 - 1e-6).all()
    regions = amap > cfg.threshold
    assert regions.any() and not (cfg.fuse_weight * amap > 0.5).any()
    assert result.mask[regions].all() and not result.mask[~regions].any()
    assert verdict_of(find_defects(result.mask, result.pixel_scores, DecisionConfig())) == Verdict.FAIL


def test_nothing_above_threshold_means_no_decoder_pass(lite_sam, two_defects):
    _, _, emb, amap = two_defects
    rec = RecordingSam(lite_sam)
    amap = amap * 0.3
    result = refine_mmr(amap, emb, rec, dataclasses.replace(MMR, fuse_weight=0.5))
    assert rec.passes == [] and result.prompts == [] and not result.mask.any()
    np.testing.assert_allclose(result.pixel_scores, 0.5 * amap, atol=1e-7)
    assert mmr_prompts(amap, MMR) == []


@pytest.mark.parametrize("value, ok", [("[1,0,0]", [1.0, 0.0, 0.0]), ("0.2,0.3,0.5", [0.2, 0.3, 0.5]),
                                       ("[1,2]", None), ("[0,0,0]", None), ("[-1,1,1]", None), ("abc", None)])
def test_merge_weights_config(value, ok):
    if ok is not None:
        assert load(None, [f"refiner.mmr_weights={value}"]).refiner.mmr_weights == ok
        return
    with pytest.raises(ConfigError) as err:
        load(None, [f"refiner.mmr_weights={value}"])
    assert "refiner.mmr_weights" in str(err.value) and "\n" not in str(err.value)


def test_a_plateau_is_prompted_at_its_centre_as_ppg_does():
    """A map clipped at 1 is flat over the region: the point goes to its most central pixels (the
    ridge of its distance transform, 30 px from the long sides), not to the first pixel in raster
    order (the region's corner, 0 px from two sides)."""
    amap = np.zeros((240, 320), np.float32)
    amap[100:160, 80:200] = 1.0
    (prompt,) = mmr_prompts(amap, dataclasses.replace(MMR, num_positive=1))
    x, y = prompt.positive[0]
    assert abs(y - 129.5) <= 1 and 105 <= x <= 175, (x, y)
