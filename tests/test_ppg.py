"""PPG on constructed anomaly maps and SAM embeddings: where the points land."""
from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import pytest
import torch

from clipsam_ros.config import RefinerConfig
from clipsam_ros.models.features import SamEmbedding
from clipsam_ros.refine.ppg import (
    batch_points,
    extreme_regions,
    generate_prompts,
    ring_mask,
    similarity_to_region,
    spaced_extremes,
)

H, W = 480, 640          # frame; SAM input 256 → resized 192×256, 64×64 grid, 48×64 valid cells
CELL = 10                # frame pixels per embedding cell (4 input px × 2.5)


def blob_map(centres, radius=30.0) -> np.ndarray:
    yy, xx = np.mgrid[:H, :W]
    amap = np.zeros((H, W), np.float32)
    for cx, cy in centres:
        amap = np.maximum(amap, np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * radius ** 2)))
    return amap


def embedding_with(cells: dict[tuple[int, int], torch.Tensor], base: torch.Tensor,
                   region: np.ndarray, inside: torch.Tensor) -> SamEmbedding:
    """Every cell `base`, cells under `region` `inside`, listed (row, col) cells their own vector."""
    feats = base[:, None, None].repeat(1, 64, 64).clone()
    small = cv2.resize(region.astype(np.uint8), (64, 48), interpolation=cv2.INTER_NEAREST) > 0
    feats[:, :48, :][:, torch.from_numpy(small)] = inside[:, None]
    for (r, c), vec in cells.items():
        feats[:, r, c] = vec
    return SamEmbedding(features=feats[None], original_size=(H, W), input_size=(192, 256), img_size=256)


def unit(i: int, dim: int = 256) -> torch.Tensor:
    v = torch.zeros(dim)
    v[i] = 1.0
    return v


@pytest.fixture
def cfg() -> RefinerConfig:
    return RefinerConfig(threshold=0.5, num_positive=3, num_negative=2, point_spacing_px=20.0,
                         dilation_shape="ellipse", dilation_size=25)


def test_positives_are_top_scores_inside_the_region_and_spaced(cfg):
    amap = blob_map([(300, 200)])
    region = amap > cfg.threshold
    emb = embedding_with({}, unit(0), region, unit(1))
    (prompt,) = generate_prompts(amap, emb, cfg)
    pos = prompt.positive
    assert pos.shape == (3, 2)
    assert tuple(pos[0]) == (300, 200)                                 # the map's maximum comes first
    assert all(region[int(y), int(x)] for x, y in pos)
    gaps = [np.hypot(*(a - b)) for i, a in enumerate(pos) for b in pos[i + 1:]]
    assert min(gaps) >= cfg.point_spacing_px
    # greedy order: each next point is the best one outside the discs of those before it
    assert amap[int(pos[1][1]), int(pos[1][0])] >= amap[int(pos[2][1]), int(pos[2][0])]


def test_a_saturated_plateau_puts_the_positive_point_at_its_centre_not_its_edge(cfg):
    # a map clipped at 1 over a whole region: every pixel ties; raster order would pick the top-left one
    amap = np.zeros((H, W), np.float32)
    amap[100:181, 230:311] = 1.0
    region = amap > cfg.threshold
    (prompt,) = generate_prompts(amap, embedding_with({}, unit(0), region, unit(1)), cfg)
    x, y = prompt.positive[0]
    assert abs(x - 270) <= 2 and abs(y - 140) <= 2


def test_spacing_limits_how_many_points_fit():
    scores = np.zeros((50, 50), np.float32)
    allowed = np.zeros((50, 50), bool)
    allowed[20:30, 20:30] = True                                       # a 10×10 patch
    scores[allowed] = 1.0
    assert len(spaced_extremes(scores, allowed, 5, spacing=30.0)) == 1
    assert len(spaced_extremes(scores, allowed, 5, spacing=0.0)) == 5
    low = spaced_extremes(-np.arange(2500, dtype=np.float32).reshape(50, 50), allowed, 1, 5, largest=False)
    assert tuple(low[0]) == (29, 29)                                   # smallest = most negative


def test_ring_is_the_dilation_band_outside_every_region(cfg):
    amap = blob_map([(200, 200), (420, 200)], radius=25)
    regions = extreme_regions(amap, cfg.threshold, cfg.min_region_px)
    all_regions = np.logical_or.reduce(regions)
    ring = ring_mask(regions[0], all_regions, "ellipse", 25)
    assert ring.any() and not (ring & all_regions).any()
    dist = cv2.distanceTransform((~regions[0]).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    assert dist[ring].max() <= 12.8                                    # radius 12 of a 25×25 ellipse
    assert dist[ring].min() >= 1.0
    rect = ring_mask(regions[0], all_regions, "rect", 25)
    cross = ring_mask(regions[0], all_regions, "cross", 25)
    assert (ring & ~rect).sum() == 0 and rect.sum() > ring.sum()       # the ellipse fits in the square
    assert cross.sum() < rect.sum()


def test_negatives_are_the_least_similar_ring_pixels(cfg):
    amap = blob_map([(300, 200)])
    region = amap > cfg.threshold
    ring = ring_mask(region, region, "ellipse", 25)
    ys, xs = np.nonzero(ring)
    right, left = np.argmax(xs), np.argmin(xs)
    # two ring cells whose embedding points away from the region's: the only dissimilar places
    far = {(ys[right] // CELL, xs[right] // CELL): -unit(1), (ys[left] // CELL, xs[left] // CELL): -unit(1)}
    emb = embedding_with(far, unit(0) + unit(1), region, unit(1))
    (prompt,) = generate_prompts(amap, emb, cfg)
    neg = prompt.negative
    assert neg.shape == (2, 2)
    assert all(prompt.ring[int(y), int(x)] for x, y in neg)
    sim = similarity_to_region(region, emb)
    assert max(sim[int(y), int(x)] for x, y in neg) < np.percentile(sim[ring], 5)
    assert sorted(int(x) for x, _ in neg)[0] < 300 < sorted(int(x) for x, _ in neg)[1]  # one each side


def test_one_prompt_set_per_region_batched_with_padding(cfg):
    amap = blob_map([(150, 150), (480, 330)], radius=25)
    amap[200:210, 500:505] = 0.9                                       # 50 px: below min_region_px?
    small_cfg = dataclasses.replace(cfg, min_region_px=60)
    emb = embedding_with({}, unit(0), amap > 0.5, unit(1))
    prompts = generate_prompts(amap, emb, small_cfg)
    assert len(prompts) == 2
    centres = sorted(tuple(p.positive[0]) for p in prompts)
    assert centres == [(150.0, 150.0), (480.0, 330.0)]
    points, labels = batch_points(prompts)
    assert points.shape[0] == 2 and labels.shape == points.shape[:2]
    for i, p in enumerate(prompts):
        n_pos, n_neg = len(p.positive), len(p.negative)
        assert (labels[i, :n_pos] == 1).all() and (labels[i, n_pos:n_pos + n_neg] == 0).all()
        assert (labels[i, n_pos + n_neg:] == -1).all()


def test_no_region_above_threshold_means_no_prompts(cfg):
    amap = blob_map([(300, 200)]) * 0.4
    emb = embedding_with({}, unit(0), np.zeros((H, W), bool), unit(1))
    assert generate_prompts(amap, emb, cfg) == []


def test_negative_points_can_be_switched_off(cfg):
    amap = blob_map([(300, 200)])
    emb = embedding_with({}, unit(0), amap > 0.5, unit(1))
    (prompt,) = generate_prompts(amap, emb, dataclasses.replace(cfg, use_negative_points=False))
    assert len(prompt.negative) == 0 and len(prompt.positive) == 3
