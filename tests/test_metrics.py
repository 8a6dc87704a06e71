"""Tests for the anomaly-segmentation metrics (clipsam_ros.eval.metrics)."""
from __future__ import annotations

import math
import tracemalloc

import numpy as np
import pytest
from scipy import ndimage
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score

from clipsam_ros.eval.metrics import (
    METRIC_KEYS,
    MetricAccumulator,
    compute_metrics,
    f1_max,
    trapezoid_area,
)

# Undefined metrics must come back as NaN, silently: turn warnings into failures.
pytestmark = pytest.mark.filterwarnings("error")


def _random_class(seed: int, n: int = 6, size: int = 64, logits: bool = False):
    """Score maps that are informative but noisy, with blob masks on half the images."""
    rng = np.random.default_rng(seed)
    scores, masks = [], []
    for i in range(n):
        m = np.zeros((size, size), bool)
        if i % 2:
            for _ in range(rng.integers(1, 4)):
                y, x = rng.integers(0, size - 12, 2)
                h, w = rng.integers(3, 12, 2)
                m[y:y + h, x:x + w] = True
        if logits:  # unbounded scores: exercises the global [min, max] range
            s = rng.normal(0.0, 1.0, (size, size)) + 1.5 * m
        else:
            s = np.clip(rng.normal(0.35, 0.15, (size, size)) + 0.25 * m, 0.0, 1.0)
        scores.append(s.astype(np.float32))
        masks.append(m)
    image_scores = np.array([s.max() for s in scores]) + rng.normal(0, 0.05, n)
    image_labels = np.array([int(m.any()) for m in masks])
    return scores, masks, image_scores, image_labels


def _sklearn_pixel(scores, masks) -> dict[str, float]:
    s = np.concatenate([x.ravel() for x in scores]).astype(np.float64)
    g = np.concatenate([m.ravel() for m in masks])
    p, r, _ = precision_recall_curve(g, s)
    f1 = 2 * p * r / np.maximum(p + r, 1e-300)
    return {"pixel_auroc": roc_auc_score(g, s), "pixel_ap": average_precision_score(g, s),
            "pixel_f1_max": float(f1.max())}


def _exact_aupro(scores, masks, limit: float = 0.3) -> float:
    """Sort-based AUPRO over every distinct threshold (the MVTec AD reference algorithm)."""
    s_all, fp_w, pro_w = [], [], []
    n_regions = sum(ndimage.label(m, structure=np.ones((3, 3)))[1] for m in masks)
    n_neg = sum(int((~m).sum()) for m in masks)
    for s, m in zip(scores, masks):
        lab, n = ndimage.label(m, structure=np.ones((3, 3)))
        sizes = np.bincount(lab.ravel())
        s_all.append(s.ravel().astype(np.float64))
        fp_w.append((~m).ravel() / n_neg)
        w = np.where(lab > 0, 1.0 / sizes[lab], 0.0) / n_regions
        pro_w.append(w.ravel())
    s = np.concatenate(s_all)
    order = np.argsort(-s, kind="stable")
    s = s[order]
    fpr = np.cumsum(np.concatenate(fp_w)[order])
    pro = np.cumsum(np.concatenate(pro_w)[order])
    last = np.r_[np.diff(s) != 0, True]  # one point per distinct threshold
    x = np.r_[0.0, fpr[last], 1.0]
    y = np.r_[0.0, pro[last], 1.0]
    area = 0.0
    for x0, x1, y0, y1 in zip(x[:-1], x[1:], y[:-1], y[1:]):
        if x0 >= limit:
            break
        xe = min(x1, limit)
        ye = y0 + (y1 - y0) * (xe - x0) / (x1 - x0) if x1 > x0 else y1
        area += (xe - x0) * (y0 + ye) / 2
    return area / limit


# --- agreement with sklearn / the reference algorithm ------------------------

@pytest.mark.parametrize("logits", [False, True])
def test_pixel_metrics_match_sklearn_on_random_data(logits: bool) -> None:
    scores, masks, img_s, img_l = _random_class(seed=1, logits=logits)
    got = compute_metrics(scores, masks, img_s, img_l)
    want = _sklearn_pixel(scores, masks)
    for key, value in want.items():
        assert got[key] == pytest.approx(value, abs=1e-3), key
    assert 0.6 < got["pixel_auroc"] < 0.999  # the data is neither trivial nor random
    # image level goes through sklearn itself: exact
    assert got["image_auroc"] == roc_auc_score(img_l, img_s)
    p, r, _ = precision_recall_curve(img_l, img_s)
    assert got["image_f1_max"] == pytest.approx(float(np.max(2 * p * r / np.maximum(p + r, 1e-300))))


def test_aupro_matches_exact_reference_on_random_data() -> None:
    scores, masks, img_s, img_l = _random_class(seed=2)
    got = compute_metrics(scores, masks, img_s, img_l)["aupro"]
    assert got == pytest.approx(_exact_aupro(scores, masks), abs=1e-3)
    assert 0.1 < got < 0.99


def test_nhw_array_input_equals_list_input() -> None:
    scores, masks, img_s, img_l = _random_class(seed=3)
    a = compute_metrics(scores, masks, img_s, img_l)
    b = compute_metrics(np.stack(scores), np.stack(masks), img_s, img_l)
    assert a == b


# --- hand-worked cases --------------------------------------------------------

def test_perfect_predictor() -> None:
    masks = [np.zeros((8, 8), bool) for _ in range(4)]
    masks[1][2:4, 2:5] = True
    masks[3][5:7, 0:2] = True
    masks[3][0, 7] = True
    scores = [m.astype(np.float32) for m in masks]      # 1.0 on defects, 0.0 elsewhere
    labels = [int(m.any()) for m in masks]
    got = compute_metrics(scores, masks, [float(s.max()) for s in scores], labels)
    assert got == {k: 1.0 for k in METRIC_KEYS}


def test_inverted_predictor() -> None:
    masks = [np.zeros((8, 8), bool) for _ in range(2)]
    masks[1][2:4, 2:6] = True                           # 8 of 128 pixels anomalous
    scores = [(~m).astype(np.float32) for m in masks]
    got = compute_metrics(scores, masks, [1.0, 0.0], [0, 1])
    assert got["pixel_auroc"] == 0.0
    assert got["image_auroc"] == 0.0
    assert got["aupro"] == 0.0                          # no region pixel before FPR = 1
    # Every anomalous pixel comes after all normal ones: one PR step, at full
    # recall, with precision = prevalence = 8 / 128.
    assert got["pixel_ap"] == pytest.approx(8 / 128)
    assert got["pixel_f1_max"] == pytest.approx(2 * (8 / 128) / (1 + 8 / 128))


def test_tiny_hand_worked_ap_and_f1() -> None:
    # scores 0.9 0.6 0.4 0.2, labels 1 0 1 0. Thresholds, high to low:
    #   0.9: TP1 FP0 -> P 1,   R 1/2, F1 2/3
    #   0.6: TP1 FP1 -> P 1/2, R 1/2, F1 1/2
    #   0.4: TP2 FP1 -> P 2/3, R 1,   F1 4/5
    #   0.2: TP2 FP2 -> P 1/2, R 1,   F1 2/3
    # AP = 1/2 * 1 + 1/2 * 2/3 = 5/6; F1-max = 4/5.
    # AUROC: positive-above-negative pairs (0.9>0.6, 0.9>0.2, 0.4>0.2) = 3 of 4.
    s = np.array([[0.9, 0.6, 0.4, 0.2]], np.float32)
    g = np.array([[1, 0, 1, 0]], np.uint8)
    for score_range in (None, (0.0, 1.0)):
        got = compute_metrics([s], [g], [0.5], [1], score_range=score_range)
        assert got["pixel_ap"] == pytest.approx(5 / 6, abs=1e-9)
        assert got["pixel_f1_max"] == pytest.approx(4 / 5, abs=1e-9)
        assert got["pixel_auroc"] == pytest.approx(3 / 4, abs=1e-9)


def _aupro_case(normal_tail: float = 0.0, normal_top: float = 0.5):
    """One 1x108 image: two 4-pixel regions and 100 normal pixels.

    R1 (cols 0-3) scores 0.9, above every normal pixel. R2 (cols 50-53) has two
    pixels at 0.9 and two at 0.02. Normal pixels: 10 at `normal_top` (0.5), 40 at
    0.02 (tied with R2's lower half), 50 at `normal_tail` (< 0.02).
    """
    s = np.full((1, 108), np.float32(normal_tail))
    g = np.zeros((1, 108), bool)
    g[0, 0:4] = True
    g[0, 50:54] = True
    s[0, 0:4] = 0.9
    s[0, 50:52] = 0.9
    s[0, 52:54] = 0.02
    normal = np.flatnonzero(~g[0])
    s[0, normal[:10]] = normal_top
    s[0, normal[10:50]] = 0.02
    return s, g


def test_hand_worked_aupro() -> None:
    # (FPR, PRO) points, thresholds high to low:
    #   above all  (0,   0)
    #   0.9        (0,   0.75)   R1 full, R2 half
    #   0.5        (0.1, 0.75)   10 of 100 normals
    #   0.02       (0.5, 1.0)    40 more normals and the rest of R2, at once
    #   0.0        (1,   1)
    # At FPR 0.3, on the sloped segment: PRO = 0.75 + 0.25 * (0.2 / 0.4) = 0.875.
    # Area to 0.3 = 0.1 * 0.75 + 0.2 * (0.75 + 0.875) / 2 = 0.075 + 0.1625 = 0.2375,
    # AUPRO = 0.2375 / 0.3 = 0.791667.
    s, g = _aupro_case()
    got = compute_metrics([s], [g], [0.9], [1])
    assert got["aupro"] == pytest.approx(0.2375 / 0.3, abs=1e-3)
    assert got["aupro"] == pytest.approx(_exact_aupro([s], [g]), abs=1e-6)
    # A larger limit reaches the flat part: area to 1 = 0.075 + 0.35 + 0.5 = 0.925.
    got1 = compute_metrics([s], [g], [0.9], [1], aupro_fpr_limit=1.0)
    assert got1["aupro"] == pytest.approx(0.925, abs=1e-3)


def test_aupro_uses_8_connectivity() -> None:
    # An L of three pixels plus one pixel touching it only diagonally: one
    # 8-connected region of 4. The L scores 1.0, the diagonal pixel 0.0, every
    # normal pixel 0.5. With 8-connectivity PRO = 3/4 from FPR 0 up to FPR 1,
    # so AUPRO = 0.75 (4-connectivity would give two regions: (1 + 0) / 2 = 0.5).
    g = np.zeros((6, 6), bool)
    g[1, 1] = g[2, 1] = g[2, 2] = True
    g[3, 3] = True
    s = np.where(g, 1.0, 0.5).astype(np.float32)
    s[3, 3] = 0.0
    assert compute_metrics([s], [g], [1.0], [1])["aupro"] == pytest.approx(0.75, abs=1e-9)


def test_aupro_integration_limit_is_respected() -> None:
    # The 50 normal pixels at the bottom only enter past FPR 0.5 > 0.3:
    # moving them around below 0.02 leaves AUPRO unchanged...
    base = compute_metrics(*[[a] for a in _aupro_case(0.0)], [0.9], [1])
    moved = compute_metrics(*[[a] for a in _aupro_case(0.015)], [0.9], [1], score_range=(0.0, 1.0))
    assert moved["aupro"] == pytest.approx(base["aupro"], abs=1e-12)
    # ...while the 10 normal pixels that set FPR 0.1 do matter: above every
    # region pixel they delay PRO 0.75 to FPR 0.1, losing 0.1 * 0.75 of area.
    top = compute_metrics(*[[a] for a in _aupro_case(0.0, normal_top=0.95)], [0.9], [1])
    assert top["aupro"] == pytest.approx((0.2375 - 0.075) / 0.3, abs=1e-3)

    # Same on random data: push down the normal pixels ranked past FPR 0.3.
    scores, masks, img_s, img_l = _random_class(seed=4)
    ref = compute_metrics(scores, masks, img_s, img_l, score_range=(0.0, 1.0))
    normal = np.concatenate([s[~m] for s, m in zip(scores, masks)])
    cut = np.quantile(normal, 0.6)          # FPR(cut) = 0.4 > 0.3
    low = [np.where(~m & (s < cut), s * 0.5, s).astype(np.float32) for s, m in zip(scores, masks)]
    # keep the anomalous pixels' order against the moved ones intact where it matters:
    # region pixels below `cut` only count past FPR 0.4 as well.
    got = compute_metrics(low, masks, img_s, img_l, score_range=(0.0, 1.0))
    assert got["aupro"] == pytest.approx(ref["aupro"], abs=1e-12)
    assert got["pixel_auroc"] != pytest.approx(ref["pixel_auroc"], abs=1e-4)


# --- undefined cases ------------------------------------------------------------

def test_nan_when_undefined() -> None:
    rng = np.random.default_rng(0)
    scores = [rng.random((5, 5)).astype(np.float32) for _ in range(3)]
    normal = [np.zeros((5, 5), bool)] * 3
    got = compute_metrics(scores, normal, [0.1, 0.2, 0.3], [0, 0, 0])
    assert all(math.isnan(got[k]) for k in METRIC_KEYS)

    # all pixels anomalous: no FPR, so AUROC and AUPRO are undefined; AP is 1
    anomalous = [np.ones((5, 5), np.uint8) * 255] * 3
    got = compute_metrics(scores, anomalous, [0.1, 0.2, 0.3], [1, 1, 1])
    assert math.isnan(got["pixel_auroc"]) and math.isnan(got["aupro"])
    assert math.isnan(got["image_auroc"])
    assert got["pixel_ap"] == 1.0 and got["pixel_f1_max"] == 1.0 and got["image_f1_max"] == 1.0

    empty = compute_metrics([], [], [], [])
    assert all(math.isnan(empty[k]) for k in METRIC_KEYS)
    assert all(math.isnan(v) for v in MetricAccumulator().result().values())


def test_bad_input_raises() -> None:
    s = np.zeros((4, 4), np.float32)
    s[0, 0] = np.nan
    with pytest.raises(ValueError):
        compute_metrics([s], [np.zeros((4, 4))], [0.0], [0])
    with pytest.raises(ValueError):
        MetricAccumulator().add(s, np.zeros((4, 4)), 0.0, 0)
    with pytest.raises(ValueError):
        compute_metrics([np.zeros((4, 4))], [np.zeros((4, 5))], [0.0], [0])
    with pytest.raises(ValueError):
        compute_metrics([np.zeros((4, 4))], [np.zeros((4, 4))], [0.0, 1.0], [0, 1])


# --- streaming, masks, helpers --------------------------------------------------

def test_accumulator_equals_compute_metrics() -> None:
    scores, masks, img_s, img_l = _random_class(seed=5)
    acc = MetricAccumulator()
    for s, m, si, li in zip(scores, masks, img_s, img_l):
        acc.add(s, m, si, li)
    streamed = acc.result()
    assert streamed == compute_metrics(scores, masks, img_s, img_l, score_range=(0.0, 1.0))
    assert streamed == compute_metrics(iter(scores), iter(masks), img_s, img_l, score_range=(0.0, 1.0))
    # and agrees with the data-range binning to histogram precision
    ranged = compute_metrics(iter(scores), iter(masks), img_s, img_l)   # generators are accepted
    for k in METRIC_KEYS:
        assert streamed[k] == pytest.approx(ranged[k], abs=1e-3), k


def test_accumulator_clips_scores_outside_range() -> None:
    s = np.array([[-3.0, 0.2, 0.7, 5.0]], np.float32)
    g = np.array([[0, 0, 1, 1]], bool)
    acc = MetricAccumulator()
    acc.add(s, g, 1.0, 1)
    got = acc.result()
    assert got["pixel_auroc"] == 1.0 and got["pixel_ap"] == 1.0


def test_mask_conventions_agree() -> None:
    scores, masks, img_s, img_l = _random_class(seed=6)
    ref = compute_metrics(scores, masks, img_s, img_l)
    for conv in (lambda m: m.astype(np.uint8), lambda m: m.astype(np.uint8) * 255,
                 lambda m: m.astype(np.float32), lambda m: m.astype(np.float32) * 255):
        assert compute_metrics(scores, [conv(m) for m in masks], img_s, img_l) == ref


def test_f1_max_and_trapezoid_helpers() -> None:
    assert f1_max([1.0, 0.5, 2 / 3], [0.5, 0.5, 1.0]) == pytest.approx(0.8)
    assert f1_max([0.0, 1.0], [0.0, 0.0]) == 0.0
    assert math.isnan(f1_max([], []))
    assert math.isnan(f1_max([np.nan], [np.nan]))
    x, y = np.array([0.0, 0.5, 1.0]), np.array([0.0, 1.0, 1.0])
    assert trapezoid_area(x, y) == pytest.approx(0.75)
    assert trapezoid_area(x, y, 0.25) == pytest.approx(0.25 * 0.5 / 2)   # interpolated y(0.25) = 0.5
    assert trapezoid_area(x, y, 0.5) == pytest.approx(0.25)


def test_float32_class_at_518px_stays_small_in_memory() -> None:
    # 100 x 518 x 518 float32 = 107 MB of scores (27M pixels). A float64 copy
    # would add 215 MB, a float32 copy 107 MB; the histogram path needs only
    # per-image temporaries plus O(bins) counts.
    n, size = 100, 518
    rng = np.random.default_rng(7)
    scores = rng.random((n, size, size), dtype=np.float32)
    masks = np.zeros((n, size, size), bool)
    masks[::2, 100:160, 200:300] = True
    masks[1::4, 400:420, 10:50] = True
    img_s = scores.max(axis=(1, 2))
    img_l = masks.any(axis=(1, 2)).astype(int)

    tracemalloc.start()
    try:
        got = compute_metrics(scores, masks, img_s, img_l)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 0.15 * scores.nbytes, f"peak {peak / 1e6:.1f} MB"
    assert got["pixel_auroc"] == pytest.approx(0.5, abs=0.01)   # random scores
    assert all(np.isfinite(got[k]) for k in METRIC_KEYS)
