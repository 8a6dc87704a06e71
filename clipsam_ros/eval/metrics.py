"""Anomaly-segmentation metrics, as the MVTec-AD / VisA literature computes them.

Pixel level (all pixels of all images of a class pooled together):

* ``pixel_auroc``  - area under the ROC curve (TPR over FPR), trapezoid rule.
* ``pixel_ap``     - average precision, sum over thresholds of (R_k - R_{k-1}) * P_k
                     (sklearn's ``average_precision_score``, no interpolation).
* ``pixel_f1_max`` - max over thresholds of 2PR / (P + R) (APRIL-GAN / AnomalyCLIP).
* ``aupro``        - area under the per-region-overlap curve (MVTec AD official
  definition). Ground-truth regions are the 8-connected components of each
  image's mask. At a threshold t, PRO(t) is the mean over all regions of all
  images of the fraction of the region's pixels scoring >= t, and FPR(t) is the
  fraction of all normal pixels (of all images) scoring >= t. The curve, from
  (0, 0) to (1, 1), is integrated over FPR in [0, limit] (limit 0.3) with the
  trapezoid rule, PRO being linearly interpolated at FPR = limit exactly, and
  the area is divided by the limit so a perfect detector scores 1.
  (APRIL-GAN / AnomalyCLIP use a 200-threshold approximation that rescales FPR
  to [0, 1]; their numbers may differ slightly from these.)

Image level: ``image_auroc`` and ``image_f1_max`` from one score per image,
computed with sklearn directly (N is small).

Undefined metrics (no anomalous pixels, no normal pixels, a single image class,
no images) are ``float('nan')``; they never raise.

Binning (why and how precise): a class at 518 px holds ~54M pixels, too many
for sklearn or for float64 copies. Each pixel score is instead quantized into
one of ``bins`` equal-width bins over a score range [lo, hi] (default 2**16
bins), and per-image histograms are summed: normal-pixel counts, anomalous-pixel
counts, and for AUPRO anomalous pixels weighted by 1 / (size of their region),
whose top-down cumulative sum is sum_regions(fraction of the region >= t).
Every curve then follows from cumulative sums over the bins, so memory is
O(bins) plus one image's temporaries, and float32 scores are never upcast.

The results are *exactly* the metrics of the quantized scores
floor((s - lo) / (hi - lo) * bins): ordering between different bins is kept,
and pixels sharing a bin are ties (half credit in AUROC, one step in PR, as
sklearn treats ties). The error against unquantized scores is thus bounded by
the mass of anomalous/normal pixel pairs sharing a bin, O(1 / bins) for smooth
score distributions. Measured on random data with 2**16 bins against sklearn
and an exact sort-based AUPRO: AUROC and AUPRO within ~1e-5, AP within ~5e-5,
F1-max within ~3e-4 (a max over thresholds: merging the top few thresholds,
which hold few pixels, can drop the best one); the tests demand 1e-3.
Precision is relative to the range: scores crowded into a small part of
[lo, hi] get fewer bins.

* ``MetricAccumulator`` streams images and needs the range up front: by
  default [0, 1], what our pipeline's pixel scores are. Scores outside are
  clipped into the end bins (so they tie with lo / hi); NaN scores raise.
* ``compute_metrics`` takes a list / (N, H, W) array, finds the global
  [min, max] of the pixel scores in a first cheap pass and bins over that, so it
  also suits scores outside [0, 1] (logits, distances); pass ``score_range`` to
  skip the first pass (then it equals the accumulator exactly).

Ground-truth masks may be bool, 0/1 or 0/255: a pixel is anomalous when its
value is above half the mask's convention (> 0.5 when the mask's max <= 1,
else > 127), which also binarizes resized soft masks sensibly.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np
from sklearn.metrics import precision_recall_curve, roc_auc_score

DEFAULT_BINS = 1 << 16
METRIC_KEYS = ("pixel_auroc", "pixel_ap", "pixel_f1_max", "aupro", "image_auroc", "image_f1_max")
NAN = float("nan")


# ---------------------------------------------------------------------------
# small helpers
# ---------------------------------------------------------------------------

def iou(pred: np.ndarray, truth: np.ndarray) -> float:
    """Intersection over union of two masks (non-zero = in); two empty masks agree perfectly."""
    pred, truth = np.asarray(pred) > 0, np.asarray(truth) > 0
    union = np.logical_or(pred, truth).sum()
    return 1.0 if union == 0 else float(np.logical_and(pred, truth).sum() / union)


def f1_max(precision: Sequence[float] | np.ndarray, recall: Sequence[float] | np.ndarray) -> float:
    """Max over curve points of 2PR / (P + R); points with P + R == 0 count as 0.

    Non-finite points (sklearn's NaN recall when there are no positives) are
    ignored; NaN when no point is left.
    """
    p = np.asarray(precision, dtype=np.float64)
    r = np.asarray(recall, dtype=np.float64)
    if p.shape != r.shape:
        raise ValueError(f"precision {p.shape} and recall {r.shape} differ in shape")
    ok = np.isfinite(p) & np.isfinite(r)
    p, r = p[ok], r[ok]
    if p.size == 0:
        return NAN
    denom = p + r
    f1 = np.divide(2.0 * p * r, denom, out=np.zeros_like(denom), where=denom > 0)
    return float(f1.max())


def trapezoid_area(x: np.ndarray, y: np.ndarray, x_max: float | None = None) -> float:
    """Trapezoid-rule area under y(x) for non-decreasing x, optionally only up to `x_max`.

    When `x_max` falls between two points, y is linearly interpolated there (the
    MVTec AD evaluation's rule), so the area stops at `x_max` exactly.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x_max is not None:
        n = int(np.searchsorted(x, x_max, side="right"))  # points with x <= x_max
        if n == 0:
            return 0.0
        if n < x.size and x[n - 1] < x_max:
            x0, x1, y0, y1 = x[n - 1], x[n], y[n - 1], y[n]
            y_at = y0 + (y1 - y0) * (x_max - x0) / (x1 - x0)
            x = np.append(x[:n], x_max)
            y = np.append(y[:n], y_at)
        else:
            x, y = x[:n], y[:n]
    if x.size < 2:
        return 0.0
    return float(np.sum(np.diff(x) * (y[1:] + y[:-1]) * 0.5))


def binarize_mask(mask: np.ndarray) -> np.ndarray:
    """Bool anomaly mask from a bool, 0/1 or 0/255 (possibly soft) mask."""
    mask = np.asarray(mask)
    if mask.dtype == bool:
        return mask
    if mask.size and mask.max() > 1:
        return mask > 127
    return mask > 0.5


def image_metrics(image_scores: Sequence[float] | np.ndarray,
                  image_labels: Sequence[int] | np.ndarray) -> dict[str, float]:
    """``image_auroc`` and ``image_f1_max`` with sklearn; NaN where undefined."""
    scores = np.asarray(image_scores, dtype=np.float64).ravel()
    labels = np.asarray(image_labels).ravel() > 0
    if scores.shape != labels.shape:
        raise ValueError(f"{scores.size} image scores but {labels.size} image labels")
    if not np.all(np.isfinite(scores)):
        raise ValueError("image scores must be finite")
    n_pos = int(labels.sum())
    auroc = float(roc_auc_score(labels, scores)) if 0 < n_pos < labels.size else NAN
    if n_pos > 0:
        precision, recall, _ = precision_recall_curve(labels, scores)
        f1 = f1_max(precision, recall)
    else:
        f1 = NAN
    return {"image_auroc": auroc, "image_f1_max": f1}


# ---------------------------------------------------------------------------
# pixel-level curves from histograms
# ---------------------------------------------------------------------------

@dataclass
class PixelCurves:
    """Pixel-level curves, one point per bin, thresholds descending.

    Point k counts the pixels scoring >= ``thresholds[k]`` (the lower edge of
    bin k, up to float rounding at the edges). NaN-filled where undefined.
    """
    thresholds: np.ndarray
    tpr: np.ndarray         # = recall
    fpr: np.ndarray
    precision: np.ndarray   # 1 where nothing is above the threshold yet
    pro: np.ndarray         # mean per-region overlap
    n_pos: int              # anomalous pixels
    n_neg: int              # normal pixels
    n_regions: int          # ground-truth connected components


def _pixel_metrics(c: PixelCurves, aupro_fpr_limit: float) -> dict[str, float]:
    out = {"pixel_auroc": NAN, "pixel_ap": NAN, "pixel_f1_max": NAN, "aupro": NAN}
    if c.n_pos > 0:
        recall_steps = np.diff(c.tpr, prepend=0.0)
        out["pixel_ap"] = float(np.sum(recall_steps * c.precision))
        out["pixel_f1_max"] = f1_max(c.precision, c.tpr)
        if c.n_neg > 0:
            out["pixel_auroc"] = trapezoid_area(np.r_[0.0, c.fpr], np.r_[0.0, c.tpr])
    if c.n_regions > 0 and c.n_neg > 0:
        # The curve runs from (0, 0) (threshold above every score) to (1, 1).
        fpr = np.r_[0.0, c.fpr, 1.0]
        pro = np.r_[0.0, c.pro, 1.0]
        out["aupro"] = trapezoid_area(fpr, pro, aupro_fpr_limit) / aupro_fpr_limit
    return out


class MetricAccumulator:
    """Streams images one at a time into fixed-size histograms; see the module docstring.

    Pixel scores are binned over ``score_range`` (default [0, 1]); values
    outside are clipped into the end bins. Memory is O(bins) plus the image
    scores / labels lists, independent of the number of pixels.
    """

    def __init__(self, bins: int = DEFAULT_BINS, score_range: tuple[float, float] = (0.0, 1.0),
                 aupro_fpr_limit: float = 0.3) -> None:
        lo, hi = (float(v) for v in score_range)
        if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
            raise ValueError(f"score_range must be finite with lo < hi, got {score_range}")
        if int(bins) < 2:
            raise ValueError(f"bins must be >= 2, got {bins}")
        if not 0.0 < aupro_fpr_limit <= 1.0:
            raise ValueError(f"aupro_fpr_limit must be in (0, 1], got {aupro_fpr_limit}")
        self.bins = int(bins)
        self.lo, self.hi = lo, hi
        self.aupro_fpr_limit = float(aupro_fpr_limit)
        # counts[k, 0]: normal pixels in bin k, counts[k, 1]: anomalous pixels in bin k
        self._counts = np.zeros((self.bins, 2), dtype=np.int64)
        # sum over anomalous pixels in bin k of 1 / (size of their region)
        self._pro_mass = np.zeros(self.bins, dtype=np.float64)
        self._n_regions = 0
        self._image_scores: list[float] = []
        self._image_labels: list[int] = []

    @property
    def n_images(self) -> int:
        return len(self._image_scores)

    def _bin_index(self, scores: np.ndarray) -> np.ndarray:
        # Stay in the input's float precision (float32 stays float32); the
        # float ops are monotone so the quantization never reorders scores.
        if scores.dtype not in (np.float32, np.float64):
            scores = scores.astype(np.float32)
        if np.isnan(scores).any():
            raise ValueError("pixel scores contain NaN")
        q = (scores - scores.dtype.type(self.lo)) * scores.dtype.type(self.bins / (self.hi - self.lo))
        np.clip(q, 0, self.bins - 1, out=q)
        return q.astype(np.intp).ravel()  # truncation == floor for q >= 0

    def add_image(self, image_score: float, image_label: int | bool) -> None:
        """Add an image to the image-level metrics only (an anomalous image with no mask)."""
        self._image_scores.append(float(image_score))
        self._image_labels.append(int(bool(image_label)))

    def add(self, pixel_scores: np.ndarray, gt_mask: np.ndarray,
            image_score: float, image_label: int | bool) -> None:
        """Add one image: (H, W) pixel scores, its (H, W) mask, its image score and 0/1 label."""
        scores = np.asarray(pixel_scores)
        gt = binarize_mask(gt_mask)
        if scores.ndim != 2 or scores.shape != gt.shape:
            raise ValueError(f"pixel scores {scores.shape} and mask {gt.shape} must be the same (H, W)")
        idx = self._bin_index(scores)
        gt_flat = gt.ravel()

        # One bincount over (bin, is_anomalous) pairs: no boolean-indexed copies.
        pair = idx * 2
        pair += gt_flat
        self._counts += np.bincount(pair, minlength=2 * self.bins).reshape(self.bins, 2)
        del pair

        if gt_flat.any():
            gt_u8 = np.ascontiguousarray(gt).view(np.uint8)
            n, labels, stats, _ = cv2.connectedComponentsWithStats(gt_u8, connectivity=8)
            area = stats[:, cv2.CC_STAT_AREA].astype(np.float64)
            weight = np.zeros(n, dtype=np.float64)
            weight[1:] = 1.0 / area[1:]
            sel = np.flatnonzero(gt_flat)  # anomalous pixels are usually few
            self._pro_mass += np.bincount(idx[sel], weights=weight[labels.ravel()[sel]],
                                          minlength=self.bins)
            self._n_regions += n - 1

        self._image_scores.append(float(image_score))
        self._image_labels.append(int(bool(image_label)))

    def curves(self) -> PixelCurves:
        """Pixel ROC / PR / PRO curves over descending bin thresholds."""
        width = (self.hi - self.lo) / self.bins
        thresholds = self.lo + width * np.arange(self.bins - 1, -1, -1, dtype=np.float64)
        # cumulative from the top bin down: pixels scoring >= each threshold
        cum = np.cumsum(self._counts[::-1], axis=0)
        fp, tp = cum[:, 0], cum[:, 1]
        n_neg, n_pos = int(fp[-1]), int(tp[-1])
        with np.errstate(invalid="ignore", divide="ignore"):
            tpr = tp / n_pos if n_pos else np.full(self.bins, NAN)
            fpr = fp / n_neg if n_neg else np.full(self.bins, NAN)
            above = tp + fp
            precision = np.divide(tp, above, out=np.ones(self.bins), where=above > 0)
            if self._n_regions:
                pro = np.minimum(np.cumsum(self._pro_mass[::-1]) / self._n_regions, 1.0)
            else:
                pro = np.full(self.bins, NAN)
        return PixelCurves(thresholds, tpr, fpr, precision, pro, n_pos, n_neg, self._n_regions)

    def result(self) -> dict[str, float]:
        """All six metrics (``METRIC_KEYS``) as floats, NaN where undefined."""
        out = _pixel_metrics(self.curves(), self.aupro_fpr_limit)
        out.update(image_metrics(self._image_scores, self._image_labels))
        return {k: out[k] for k in METRIC_KEYS}


# ---------------------------------------------------------------------------
# whole-class entry point
# ---------------------------------------------------------------------------

def _as_images(x: Iterable[np.ndarray] | np.ndarray, materialize: bool) -> Iterable[np.ndarray]:
    # An (N, H, W) array iterates as views. A generator is kept lazy when one
    # pass is enough, else materialized as a list of references (not copies).
    if isinstance(x, np.ndarray):
        if x.ndim == 2:
            return [x]
        if x.ndim != 3:
            raise ValueError(f"expected (N, H, W) or a sequence of (H, W), got shape {x.shape}")
        return x
    if materialize and not isinstance(x, Sequence):
        return list(x)
    return x


def score_range_of(pixel_scores: Iterable[np.ndarray]) -> tuple[float, float]:
    """Global (min, max) of the pixel scores; a widened range when all are equal or empty."""
    lo, hi = np.inf, -np.inf
    for s in pixel_scores:
        s = np.asarray(s)
        if s.size == 0:
            continue
        smin, smax = float(s.min()), float(s.max())  # NaN propagates through min / max
        if not (np.isfinite(smin) and np.isfinite(smax)):
            raise ValueError("pixel scores must be finite")
        lo, hi = min(lo, smin), max(hi, smax)
    if not np.isfinite(lo):
        return 0.0, 1.0
    if hi <= lo:
        return lo, lo + 1.0  # constant scores: everything ties in the bottom bin
    return lo, hi  # the top score itself is clipped into the last bin


def compute_metrics(pixel_scores: Iterable[np.ndarray] | np.ndarray,
                    gt_masks: Iterable[np.ndarray] | np.ndarray,
                    image_scores: Sequence[float] | np.ndarray,
                    image_labels: Sequence[int] | np.ndarray,
                    *, aupro_fpr_limit: float = 0.3, bins: int = DEFAULT_BINS,
                    score_range: tuple[float, float] | None = None) -> dict[str, float]:
    """Pixel and image metrics of one class; keys ``METRIC_KEYS``, NaN where undefined.

    `pixel_scores` / `gt_masks`: (N, H, W) arrays, or sequences / iterables of
    (H, W) arrays (images may differ in size). Binning is over the global
    [min, max] of the pixel scores (a first pass; an iterator of score maps is
    then held as a list) unless `score_range` is given, which makes it one
    streaming pass, identical to ``MetricAccumulator``.
    """
    scores = _as_images(pixel_scores, materialize=score_range is None)
    masks = _as_images(gt_masks, materialize=False)
    image_scores = np.asarray(image_scores, dtype=np.float64).ravel()
    image_labels = np.asarray(image_labels).ravel()
    if image_scores.size != image_labels.size:
        raise ValueError(f"{image_scores.size} image scores but {image_labels.size} image labels")
    if score_range is None:
        score_range = score_range_of(scores)
    acc = MetricAccumulator(bins=bins, score_range=score_range, aupro_fpr_limit=aupro_fpr_limit)
    # strict: a different number of score maps, masks or image scores raises ValueError
    for s, m, si, li in zip(scores, masks, image_scores, image_labels, strict=True):
        acc.add(s, m, si, li)
    return acc.result()
