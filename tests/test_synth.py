"""Tests for the synthetic MVTec-style dataset (clipsam_ros.data.synth)."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from clipsam_ros.data.synth import DEFECT_KINDS, PRODUCTS, generate_dataset, make_sample

SIZE = (320, 240)  # small frames keep the suite fast; sizes scale with the image


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    root = tmp_path_factory.mktemp("synth_a")
    return root, generate_dataset(root, n=2, seed=3, size=SIZE)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.png"))}


def _diff(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.abs(a.astype(np.int16) - b.astype(np.int16)).mean(axis=2)


def test_products_cover_three_classes_with_known_defects() -> None:
    assert {"metal", "fabric", "washer"} <= set(PRODUCTS)
    for kinds in PRODUCTS.values():
        assert 2 <= len(kinds) <= 3 and set(kinds) <= set(DEFECT_KINDS)


def test_layout(dataset: tuple[Path, object]) -> None:
    root, summary = dataset
    assert tuple(summary.classes) == tuple(PRODUCTS)
    w, h = SIZE
    for cls, kinds in PRODUCTS.items():
        assert sorted(p.name for p in (root / cls / "train" / "good").iterdir()) == ["000.png", "001.png"]
        assert sorted(p.name for p in (root / cls / "test" / "good").iterdir()) == ["000.png"]
        assert sorted(p.name for p in (root / cls / "test").iterdir()) == sorted(("good", *kinds))
        assert sorted(p.name for p in (root / cls / "ground_truth").iterdir()) == sorted(kinds)
        for kind in kinds:
            for img_path in sorted((root / cls / "test" / kind).glob("*.png")):
                img = cv2.imread(str(img_path), cv2.IMREAD_UNCHANGED)
                mask = cv2.imread(str(root / cls / "ground_truth" / kind / f"{img_path.stem}_mask.png"),
                                  cv2.IMREAD_UNCHANGED)
                assert img.shape == (h, w, 3) and img.dtype == np.uint8
                assert mask.shape == (h, w) and mask.dtype == np.uint8
                assert set(np.unique(mask)) == {0, 255}
    assert summary.counts["metal"] == {"train/good": 2, "test/good": 1,
                                       "test/scratch": 2, "test/hole": 2, "test/stain": 2}
    assert summary.n_images == len(list(root.rglob("*.png"))) - 3 * 3 * 2  # masks excluded


def test_png_is_rgb_written_as_bgr(dataset: tuple[Path, object]) -> None:
    # The blue fabric must read back blue: cv2 gives BGR, so channel 0 is largest.
    root, _ = dataset
    bgr = cv2.imread(str(root / "fabric" / "train" / "good" / "000.png"))
    b, g, r = bgr.reshape(-1, 3).mean(0)
    assert b > r + 40
    rgb, _ = make_sample("fabric", None, 0, SIZE)
    assert rgb[..., 2].mean() > rgb[..., 0].mean() + 40


def test_deterministic(dataset: tuple[Path, object], tmp_path: Path) -> None:
    root, _ = dataset
    generate_dataset(tmp_path / "again", n=2, seed=3, size=SIZE)
    assert _files(root) == _files(tmp_path / "again")
    generate_dataset(tmp_path / "other", n=2, seed=4, size=SIZE, classes=["metal"])
    other = _files(tmp_path / "other")
    first = _files(root)
    assert all(other[k] != first[k] for k in other)


def test_single_class_and_order_independence(tmp_path: Path) -> None:
    # Image content depends only on (seed, class, split, index), not on what else is generated.
    generate_dataset(tmp_path / "all", n=1, seed=9, size=SIZE)
    generate_dataset(tmp_path / "one", n=1, seed=9, size=SIZE, classes=["washer"])
    assert _files(tmp_path / "one") == {k: v for k, v in _files(tmp_path / "all").items()
                                        if k.startswith("washer")}


@pytest.mark.parametrize("product", list(PRODUCTS))
def test_defects_change_exactly_their_mask(product: str) -> None:
    for kind in DEFECT_KINDS:  # every kind is drawable on every product
        for seed in (0, 1):
            good, empty = make_sample(product, None, seed, SIZE)
            bad, mask = make_sample(product, kind, seed, SIZE)
            assert not empty.any()
            inside = mask > 0
            d = _diff(bad, good)
            assert inside.any()
            assert d[inside].mean() > 25, (product, kind, seed)
            assert d[~inside].mean() < 0.01 * d[inside].mean()


@pytest.mark.parametrize("product", list(PRODUCTS))
def test_defect_area_bounds(product: str) -> None:
    for kind in PRODUCTS[product]:
        for seed in range(4):
            _, mask = make_sample(product, kind, seed)  # the default 640x480
            frac = (mask > 0).mean()
            lo, hi = (0.0004, 0.004) if kind == "scratch" else (0.003, 0.04)
            assert lo <= frac <= hi, (product, kind, seed, frac)


def test_washer_defects_lie_on_ring() -> None:
    for kind in PRODUCTS["washer"]:
        for seed in range(3):
            good, _ = make_sample("washer", None, seed, SIZE)
            _, mask = make_sample("washer", kind, seed, SIZE)
            # The ring is bright; the belt is dark (edge pixels are anti-aliased).
            ring = cv2.dilate((good.mean(2) > 90).astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
            assert not np.any((mask > 0) & ~ring), (kind, seed)


def test_good_images_similar_within_class() -> None:
    goods = {p: [make_sample(p, None, s, SIZE)[0] for s in (0, 1)] for p in PRODUCTS}

    def coarse(img: np.ndarray) -> np.ndarray:  # texture averaged out, layout kept
        return cv2.resize(img, (SIZE[0] // 16, SIZE[1] // 16), interpolation=cv2.INTER_AREA)

    for p, (a, b) in goods.items():
        assert not np.array_equal(a, b)  # jitter exists
        within = _diff(a, b).mean()
        within_coarse = _diff(coarse(a), coarse(b)).mean()
        for q, (c, _) in goods.items():
            if q == p:
                continue
            assert within < 0.5 * _diff(a, c).mean(), (p, q)
            assert within_coarse < 0.2 * _diff(coarse(a), coarse(c)).mean(), (p, q)


def test_rejects_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        make_sample("bolt", None, 0)
    with pytest.raises(ValueError):
        make_sample("metal", "dent", 0)
    with pytest.raises(ValueError):
        generate_dataset(tmp_path, n=1, classes=["bolt"])
