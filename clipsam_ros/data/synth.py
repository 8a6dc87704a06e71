"""Deterministic synthetic production-line dataset in the MVTec-AD layout.

Three product types, each rendered with numpy + OpenCV only:

* ``metal``  - brushed steel sheet: grey, fine horizontal streaks, a slight
  illumination gradient.
* ``fabric`` - plain-weave cloth: blue warp / weft threads in a regular
  over-under pattern.
* ``washer`` - a bright machined ring centred on a dark conveyor belt.

Good images of one class differ only by small jitter (texture noise and phase,
lighting, a few pixels of object position), so a few-shot memory bank of
normal images can learn what "normal" looks like.

Defect kinds (``PRODUCTS`` says which ones each class gets by default; every
kind can be drawn on every class):

* ``scratch``       - thin bright or dark curved line, 2-5 px wide, 40-150 px
  long (at 480 px image height; sizes scale with ``min(width, height)``).
* ``hole``          - dark irregular blob with a lighter rim.
* ``stain``         - semi-transparent coloured blob, darker at its edge.
* ``missing``       - washer: a bite out of the ring showing the belt;
  textures: a patch replaced by a flat colour.
* ``contamination`` - a cluster of small particles, sometimes with a fibre.

Every defect changes exactly the pixels of its ground-truth mask and lies
inside the part (for the washer: on the ring). Mask areas are 0.3 %-4 % of
the image, except scratches which, being 2-5 px wide and at most 150 px long,
cover only about 0.05 %-0.35 %.

Randomness comes from ``numpy.random.default_rng`` seeded from
(seed, class, split, index), so files do not depend on generation order and
the same arguments always give byte-identical PNGs. Within one sample the part
and the defect draw from separate streams: ``make_sample(p, d, s)`` and
``make_sample(p, None, s)`` show the same part, with and without the defect.

Layout written by ``generate_dataset``::

    out_dir/<class>/train/good/000.png ...
    out_dir/<class>/test/good/000.png ...
    out_dir/<class>/test/<defect>/000.png ...
    out_dir/<class>/ground_truth/<defect>/000_mask.png   (mono, 0/255)

CLI: ``clipsam-ros synth --out OUT_DIR --n 8 --seed 0``.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import cv2
import numpy as np
from tqdm import tqdm

PRODUCTS: dict[str, tuple[str, ...]] = {
    "metal": ("scratch", "hole", "stain"),
    "fabric": ("hole", "stain", "contamination"),
    "washer": ("missing", "scratch", "contamination"),
}
DEFECT_KINDS: tuple[str, ...] = ("scratch", "hole", "stain", "missing", "contamination")

# Sizes below are in pixels at this reference height and scale with the image.
_REF_SIDE = 480.0
# Candidate defect shapes that leave the part are redrawn up to this many times.
_MAX_TRIES = 200


@dataclass(frozen=True)
class Base:
    """A rendered defect-free part plus what defect drawing needs to know."""

    rgb: np.ndarray  # float32 HxWx3 in 0..255
    part: np.ndarray  # bool HxW: where a defect may lie
    background: np.ndarray | None  # float32 HxWx3 seen through a missing piece


@dataclass(frozen=True)
class DatasetSummary:
    root: Path
    classes: tuple[str, ...]
    size: tuple[int, int]  # (width, height)
    counts: dict[str, dict[str, int]]  # class -> {"train/good": n, "test/<kind>": n}

    @property
    def n_images(self) -> int:
        return sum(sum(c.values()) for c in self.counts.values())


# --------------------------------------------------------------------- seeding

def _key(part: str | int) -> int:
    # crc32 is stable across runs and platforms, unlike hash() on str.
    return part if isinstance(part, int) else zlib.crc32(part.encode())


def _rng(seed: int, *parts: str | int) -> np.random.Generator:
    return np.random.default_rng([seed, *(_key(p) for p in parts)])


def sample_seed(seed: int, product: str, split: str, index: int) -> int:
    """Seed of one dataset image; depends only on its own coordinates."""
    ss = np.random.SeedSequence([seed, _key(product), _key(split), index])
    return int(ss.generate_state(1, np.uint32)[0])


# -------------------------------------------------------------------- helpers

def _grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    return x, y


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cells: tuple[int, int]) -> np.ndarray:
    """Low-frequency noise: a coarse random grid upsampled bilinearly (cells = rows, cols)."""
    coarse = rng.normal(size=(max(cells[0], 2), max(cells[1], 2))).astype(np.float32)
    return cv2.resize(coarse, (w, h), interpolation=cv2.INTER_LINEAR)


def _border_part(h: int, w: int, margin: int) -> np.ndarray:
    part = np.zeros((h, w), bool)
    part[margin:h - margin, margin:w - margin] = True
    return part


def _blob(rng: np.random.Generator, center: np.ndarray, radius: float,
          roughness: float, n: int = 72) -> np.ndarray:
    """Irregular closed polygon: a circle whose radius wobbles with a few harmonics."""
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    r = np.ones(n)
    for k in (2, 3, 5):
        r += roughness / k ** 0.5 * rng.uniform(-1, 1) * np.cos(k * t + rng.uniform(0, 2 * np.pi))
    stretch = rng.uniform(1.0, 1.4)  # elongate a little, along a random angle
    a = rng.uniform(0, np.pi)
    dx, dy = r * np.cos(t) * stretch, r * np.sin(t) / stretch
    pts = np.stack([dx * np.cos(a) - dy * np.sin(a), dx * np.sin(a) + dy * np.cos(a)], 1)
    return center + radius * pts


def _fill(shape: tuple[int, int], poly: np.ndarray) -> np.ndarray:
    m = np.zeros(shape, np.uint8)
    cv2.fillPoly(m, [np.round(poly).astype(np.int32)], 1, lineType=cv2.LINE_8)
    return m.astype(bool)


def _polyline(shape: tuple[int, int], pts: np.ndarray, width: int) -> np.ndarray:
    m = np.zeros(shape, np.uint8)
    cv2.polylines(m, [np.round(pts).astype(np.int32)], False, 1, thickness=width,
                  lineType=cv2.LINE_8)
    return m.astype(bool)


def _bezier(p0: np.ndarray, p1: np.ndarray, p2: np.ndarray, n: int = 40) -> np.ndarray:
    t = np.linspace(0, 1, n)[:, None]
    return (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t ** 2 * p2


def _inside(mask: np.ndarray, part: np.ndarray) -> bool:
    return bool(mask.any()) and not np.any(mask & ~part)


def _pick_point(rng: np.random.Generator, part: np.ndarray, clearance: float = 0.0) -> np.ndarray:
    """A random (x, y) in the part, at least `clearance` px from its edge if possible."""
    dist = cv2.distanceTransform(part.astype(np.uint8), cv2.DIST_L2, 3)
    ys, xs = np.nonzero(dist > clearance)
    if len(xs) == 0:  # part too thin for the request: take its deepest point
        ys, xs = np.nonzero(dist >= dist.max())
    i = rng.integers(len(xs))
    return np.array([xs[i], ys[i]], np.float64)


def _area_px(rng: np.random.Generator, shape: tuple[int, int], lo: float, hi: float) -> float:
    return rng.uniform(lo, hi) * shape[0] * shape[1]


# ------------------------------------------------------------------ products

def _metal(rng: np.random.Generator, h: int, w: int, s: float) -> Base:
    x, y = _grid(h, w)
    level = 150.0 * rng.uniform(0.96, 1.04)
    # Rows of 1-px noise stretched along x read as brushing marks.
    streak = (6.0 * _smooth_noise(rng, h, w, (h, max(int(w / (40 * s)), 2)))
              + 3.0 * _smooth_noise(rng, h, w, (h, max(int(w / (6 * s)), 2))))
    ang = 0.6 + rng.uniform(-0.15, 0.15)
    grad = 1 + 0.12 * ((x / w - 0.5) * np.cos(ang) + (y / h - 0.5) * np.sin(ang))
    grey = (level + streak) * grad + rng.normal(0, 1.5, (h, w)).astype(np.float32)
    rgb = grey[..., None] * np.array([0.97, 1.0, 1.04], np.float32)
    return Base(rgb.astype(np.float32), _border_part(h, w, int(10 * s)), None)


def _fabric(rng: np.random.Generator, h: int, w: int, s: float) -> Base:
    x, y = _grid(h, w)
    pitch = 8.0 * s  # one thread width
    # Small phase jitter keeps good images aligned to within a fraction of a thread.
    u = (x + rng.uniform(-1.5, 1.5) * s) / pitch
    v = (y + rng.uniform(-1.5, 1.5) * s) / pitch
    iu, iv = np.floor(u), np.floor(v)
    fu, fv = u - iu, v - iv
    warp_on_top = ((iu + iv) % 2) == 0
    # Thread cross-section is rounded: bright in its middle, dark at its sides and ends.
    warp = (0.55 + 0.45 * np.sin(np.pi * fu)) * (0.8 + 0.2 * np.sin(np.pi * fv))
    weft = (0.55 + 0.45 * np.sin(np.pi * fv)) * (0.8 + 0.2 * np.sin(np.pi * fu))
    warp_col = np.array([55, 85, 165], np.float32)
    weft_col = np.array([75, 105, 175], np.float32)
    shade = np.where(warp_on_top, warp, weft)[..., None]
    col = np.where(warp_on_top[..., None], warp_col, weft_col)
    light = rng.uniform(0.95, 1.05) * (1 + 0.06 * _smooth_noise(rng, h, w, (3, 4)))
    rgb = col * shade * light[..., None] + rng.normal(0, 3, (h, w, 1)).astype(np.float32)
    return Base(rgb.astype(np.float32), _border_part(h, w, int(10 * s)), None)


def _washer(rng: np.random.Generator, h: int, w: int, s: float) -> Base:
    x, y = _grid(h, w)
    # Conveyor belt: dark rubber with faint slats across the direction of travel.
    belt = (38 + 3 * _smooth_noise(rng, h, w, (h // 4, 3))
            + 4 * (np.sin(2 * np.pi * (x + rng.uniform(0, 24 * s)) / (24 * s)) > 0.9)
            + rng.normal(0, 2.5, (h, w)).astype(np.float32))
    side = min(h, w)
    cx = w / 2 + rng.uniform(-5, 5) * s
    cy = h / 2 + rng.uniform(-5, 5) * s
    r_out, r_in = 0.36 * side, 0.16 * side
    d = np.hypot(x - cx, y - cy)
    # Anti-aliased ring edges; alpha is what the ring covers.
    alpha = np.clip(r_out - d + 0.5, 0, 1) * np.clip(d - r_in + 0.5, 0, 1)
    shadow = cv2.GaussianBlur(np.roll(alpha, (int(6 * s), int(6 * s)), (0, 1)), (0, 0), 6 * s)
    background = (belt * (1 - 0.45 * shadow))[..., None] * np.ones(3, np.float32)
    theta = np.arctan2(y - cy, x - cx)
    light_dir = -2.3 + rng.uniform(-0.1, 0.1)
    mid, half = (r_out + r_in) / 2, (r_out - r_in) / 2
    bevel = 1 - 0.25 * np.clip((np.abs(d - mid) - half + 6 * s) / (6 * s), 0, 1)
    turned = 4 * np.sin(2 * np.pi * d / (3 * s) + rng.uniform(0, 2 * np.pi))  # lathe marks
    ring = (200 * rng.uniform(0.96, 1.04) * (1 + 0.08 * np.cos(theta - light_dir)) * bevel
            + turned + rng.normal(0, 2, (h, w)).astype(np.float32))
    ring_rgb = ring[..., None] * np.array([1.0, 0.99, 0.95], np.float32)
    a = alpha[..., None]
    rgb = a * ring_rgb + (1 - a) * background
    part = (d >= r_in + 3 * s) & (d <= r_out - 3 * s)
    return Base(rgb.astype(np.float32), part, background.astype(np.float32))


_RENDER: dict[str, Callable[[np.random.Generator, int, int, float], Base]] = {
    "metal": _metal, "fabric": _fabric, "washer": _washer,
}

# ------------------------------------------------------------------- defects
# Each takes (rng, base, scale) and returns (new float rgb, bool mask); it must
# change only pixels inside the mask and keep the mask inside base.part.


def _scratch(rng: np.random.Generator, base: Base, s: float) -> tuple[np.ndarray, np.ndarray]:
    shape = base.part.shape
    width = max(2, int(round(rng.integers(2, 6) * s)))
    for _ in range(_MAX_TRIES):
        length = rng.uniform(40, 150) * s
        p0 = _pick_point(rng, base.part, width)
        a = rng.uniform(0, 2 * np.pi)
        p2 = p0 + length * np.array([np.cos(a), np.sin(a)])
        normal = np.array([-np.sin(a), np.cos(a)])
        p1 = (p0 + p2) / 2 + normal * rng.uniform(-0.25, 0.25) * length
        mask = _polyline(shape, _bezier(p0, p1, p2), width)
        if _inside(mask, base.part):
            break
    else:  # no curve fitted: a short one at the deepest point always does
        p0 = _pick_point(rng, base.part, 40 * s)
        mask = _polyline(shape, np.stack([p0 - [20 * s, 0], p0 + [20 * s, 0]]), width)
    rgb = base.rgb.copy()
    local = float(rgb[mask].mean())
    # A scratch must contrast with its surface: dark on bright parts, else either.
    bright = local < 165 and rng.random() < 0.5
    along = 1 + 0.1 * rng.normal(size=int(mask.sum()))[:, None]
    rgb[mask] = (0.35 * rgb[mask] + 0.65 * 245 * along) if bright else 0.4 * rgb[mask] * along
    return rgb, mask


def _hole(rng: np.random.Generator, base: Base, s: float) -> tuple[np.ndarray, np.ndarray]:
    shape = base.part.shape
    for _ in range(_MAX_TRIES):
        radius = np.sqrt(_area_px(rng, shape, 0.004, 0.02) / np.pi)
        c = _pick_point(rng, base.part, radius)
        poly = _blob(rng, c, radius, roughness=rng.uniform(0.05, 0.25))
        mask = _fill(shape, poly)
        if _inside(mask, base.part):
            break
    rim_w = max(2.0, 0.2 * radius)
    inner = _fill(shape, c + (poly - c) * (1 - rim_w / radius)) & mask
    rim = mask & ~inner
    rgb = base.rgb.copy()
    # Interior: dark, deepest in the middle; rim: a raised, lighter edge.
    dist = cv2.distanceTransform(inner.astype(np.uint8), cv2.DIST_L2, 3)
    depth = np.clip(dist / max(dist.max(), 1.0), 0, 1)
    dark = 35 - 20 * depth[inner] + rng.normal(0, 2, int(inner.sum()))
    rgb[inner] = dark[:, None] * np.array([1.0, 0.95, 0.9], np.float32)
    rgb[rim] = 0.45 * rgb[rim] + 0.55 * 235
    return rgb, mask


_STAIN_COLOURS = np.array([[140, 80, 35], [110, 60, 25], [60, 50, 35], [150, 25, 45],
                           [170, 150, 40]], np.float32)


def _stain(rng: np.random.Generator, base: Base, s: float) -> tuple[np.ndarray, np.ndarray]:
    shape = base.part.shape
    for _ in range(_MAX_TRIES):
        radius = np.sqrt(_area_px(rng, shape, 0.006, 0.03) / np.pi)
        c = _pick_point(rng, base.part, radius)
        mask = _fill(shape, _blob(rng, c, radius, roughness=rng.uniform(0.25, 0.45)))
        if _inside(mask, base.part):
            break
    local = base.rgb[mask].mean(0)
    # Pick the stain colour that differs most from the surface so it stays visible.
    cands = _STAIN_COLOURS[rng.permutation(len(_STAIN_COLOURS))[:3]]
    colour = cands[np.argmax(np.abs(cands - local).sum(1))]
    # Liquid stains dry darker at the edge ("coffee ring").
    dist = cv2.distanceTransform(mask.astype(np.uint8), cv2.DIST_L2, 3)[mask]
    alpha = np.clip(rng.uniform(0.5, 0.65) + 0.3 * np.exp(-dist / (4 * s)), 0, 0.92)[:, None]
    rgb = base.rgb.copy()
    rgb[mask] = (1 - alpha) * rgb[mask] + alpha * colour
    return rgb, mask


def _missing(rng: np.random.Generator, base: Base, s: float) -> tuple[np.ndarray, np.ndarray]:
    shape = base.part.shape
    rgb = base.rgb.copy()
    if base.background is not None:
        # Object: bite a disc out of the ring's edge; the belt shows through.
        # Pixels the object covers at all (its anti-aliased edge included).
        covered = np.abs(base.rgb - base.background).max(2) > 1e-3
        edge = covered & ~cv2.erode(covered.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
        ys, xs = np.nonzero(edge)
        for _ in range(_MAX_TRIES):
            i = rng.integers(len(xs))
            r = rng.uniform(25, 45) * s
            disc = np.zeros(shape, np.uint8)
            cv2.circle(disc, (int(xs[i]), int(ys[i])), int(round(r)), 1, -1, cv2.LINE_8)
            mask = disc.astype(bool) & covered
            frac = mask.sum() / mask.size
            if 0.003 <= frac <= 0.04:
                break
        rgb[mask] = base.background[mask]
        return rgb, mask
    # Texture: a torn-off patch replaced by a flat backing colour.
    for _ in range(_MAX_TRIES):
        radius = np.sqrt(_area_px(rng, shape, 0.006, 0.025) / np.pi)
        c = _pick_point(rng, base.part, radius)
        mask = _fill(shape, _blob(rng, c, radius, roughness=0.12, n=rng.integers(5, 8)))
        if _inside(mask, base.part):
            break
    local = base.rgb[mask].mean(0)
    flat = np.clip(local * (0.45 if local.mean() > 110 else 1.9) + rng.uniform(-8, 8), 0, 255)
    rgb[mask] = flat
    return rgb, mask


def _contamination(rng: np.random.Generator, base: Base, s: float) -> tuple[np.ndarray, np.ndarray]:
    shape = base.part.shape
    dist = cv2.distanceTransform(base.part.astype(np.uint8), cv2.DIST_L2, 3)
    target = _area_px(rng, shape, 0.004, 0.012)
    spread = rng.uniform(14, 24) * s
    c = _pick_point(rng, base.part, spread)
    mask = np.zeros(shape, bool)
    rgb = base.rgb.copy()
    local = base.rgb[base.part].mean(0)
    # Dust on bright parts is dark; on dark parts it is light.
    tone = np.array([35, 30, 28], np.float32) if local.mean() > 90 else np.array([215, 205, 180], np.float32)
    if rng.random() < 0.4:  # a hair-like fibre curling through the cluster
        fw = max(1, int(round(2 * s)))
        for _ in range(20):
            a = rng.uniform(0, 2 * np.pi)
            half = rng.uniform(40, 80) * s * np.array([np.cos(a), np.sin(a)])
            bend = rng.normal(0, 25 * s, 2)
            fibre = _polyline(shape, _bezier(c - half, c + bend, c + half), fw)
            if _inside(fibre, base.part):
                mask |= fibre
                rgb[fibre] = 0.15 * rgb[fibre] + 0.85 * tone
                break
    area = int(mask.sum())
    for _ in range(400):
        if area >= target:
            break
        rp = rng.uniform(2, 6) * s
        p = c + rng.normal(0, spread, 2)
        xi, yi = int(round(p[0])), int(round(p[1]))
        if not (0 <= xi < shape[1] and 0 <= yi < shape[0]) or dist[yi, xi] <= rp + 2:
            continue
        # Draw in a small window around the particle: full-frame masks per particle are slow.
        # dist > rp + 2 keeps the window inside the part, hence inside the image.
        k = int(np.ceil(rp)) + 1
        win = (slice(yi - k, yi + k + 1), slice(xi - k, xi + k + 1))
        blob = np.zeros((2 * k + 1, 2 * k + 1), np.uint8)
        axes = (max(1, int(round(rp))), max(1, int(round(rp * rng.uniform(0.5, 1.0)))))
        cv2.ellipse(blob, (k, k), axes, rng.uniform(0, 180), 0, 360, 1, -1, cv2.LINE_8)
        blob = blob.astype(bool)
        shade = tone * rng.uniform(0.8, 1.15) + rng.normal(0, 6, 3)
        patch = rgb[win]
        patch[blob] = 0.1 * patch[blob] + 0.9 * shade
        area += int((blob & ~mask[win]).sum())
        mask[win] |= blob
    return rgb, mask


_DEFECTS: dict[str, Callable[[np.random.Generator, Base, float], tuple[np.ndarray, np.ndarray]]] = {
    "scratch": _scratch, "hole": _hole, "stain": _stain,
    "missing": _missing, "contamination": _contamination,
}

# ------------------------------------------------------------------ public API


def _to_u8(rgb: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def make_sample(product: str, defect: str | None, seed: int,
                size: tuple[int, int] = (640, 480)) -> tuple[np.ndarray, np.ndarray]:
    """One frame in memory: (RGB uint8 HxWx3, mask uint8 HxW with 0/255).

    The part depends only on (product, seed, size); the defect draws from its
    own stream, so the same seed with ``defect=None`` gives the same part
    without the defect and the two differ exactly inside the mask.
    """
    if product not in _RENDER:
        raise ValueError(f"unknown product {product!r}; expected one of {sorted(_RENDER)}")
    if defect is not None and defect not in _DEFECTS:
        raise ValueError(f"unknown defect {defect!r}; expected one of {DEFECT_KINDS}")
    w, h = int(size[0]), int(size[1])
    if w < 64 or h < 64:
        raise ValueError(f"size {size} too small; need at least 64x64")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    s = min(w, h) / _REF_SIDE
    base = _RENDER[product](_rng(seed, product, "base", w, h), h, w, s)
    if defect is None:
        return _to_u8(base.rgb), np.zeros((h, w), np.uint8)
    rgb, mask = _DEFECTS[defect](_rng(seed, product, defect, w, h), base, s)
    return _to_u8(rgb), mask.astype(np.uint8) * 255


def _write_png(path: Path, img: np.ndarray) -> None:
    if img.ndim == 3:
        img = cv2.cvtColor(img, cv2.COLOR_RGB2BGR)  # cv2 writes BGR
    if not cv2.imwrite(str(path), img):
        raise OSError(f"could not write {path}")


def generate_dataset(out_dir: str | Path, n: int = 8, seed: int = 0,
                     size: tuple[int, int] = (640, 480),
                     classes: Sequence[str] | None = None) -> DatasetSummary:
    """Write the MVTec-style tree under `out_dir` and return what was written.

    train/good gets `n` images, test/good `max(1, n // 2)`, every defect folder
    `n` (with masks under ground_truth/). Existing files are overwritten, other
    files are left alone.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    classes = tuple(PRODUCTS) if classes is None else tuple(classes)
    unknown = [c for c in classes if c not in PRODUCTS]
    if unknown:
        raise ValueError(f"unknown classes {unknown}; expected some of {list(PRODUCTS)}")
    root = Path(out_dir)
    jobs: list[tuple[str, str, str | None, int]] = []  # (class, split, defect, index)
    counts: dict[str, dict[str, int]] = {}
    for cls in classes:
        splits = [("train/good", None, n), ("test/good", None, max(1, n // 2))]
        splits += [(f"test/{d}", d, n) for d in PRODUCTS[cls]]
        counts[cls] = {split: k for split, _, k in splits}
        for split, defect, k in splits:
            (root / cls / split).mkdir(parents=True, exist_ok=True)
            if defect is not None:
                (root / cls / "ground_truth" / defect).mkdir(parents=True, exist_ok=True)
            jobs += [(cls, split, defect, i) for i in range(k)]
    for cls, split, defect, i in tqdm(jobs, desc="synth", unit="img", disable=None):
        rgb, mask = make_sample(cls, defect, sample_seed(seed, cls, split, i), size)
        _write_png(root / cls / split / f"{i:03d}.png", rgb)
        if defect is not None:
            _write_png(root / cls / "ground_truth" / defect / f"{i:03d}_mask.png", mask)
    return DatasetSummary(root, classes, (int(size[0]), int(size[1])), counts)
