"""`refiner.box_core_level` and `box_peak_share`: the stage-3 box per region, M2's, M2's united
with the map's core, or the region's peak.

No network: `_boxes_of` and `generate_prompts` (without negative points) work on arrays.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import torch

from clipsam_ros.config import Config, RefinerConfig, config_path, load
from clipsam_ros.refine.cps import CORE_SHARE, _boxes_of, leaked_off_core
from clipsam_ros.refine.ppg import PromptSet, generate_prompts, mask_box

SIZE = (120, 160)


def rect(x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
    m = np.zeros(SIZE, bool)
    m[y0:y1 + 1, x0:x1 + 1] = True
    return m


REGION = rect(20, 20, 119, 99)
CORE = rect(50, 40, 89, 79)


def prompt(core: np.ndarray | None = CORE) -> PromptSet:
    empty = np.zeros((0, 2), np.float32)
    return PromptSet(positive=np.array([[70, 60]], np.float32), negative=empty, region=REGION,
                     ring=np.zeros(SIZE, bool), core=core)


def box_for(m2: np.ndarray, cfg: RefinerConfig, core: np.ndarray | None = CORE) -> np.ndarray:
    return _boxes_of(torch.as_tensor(m2[None]), [prompt(core)], cfg, SIZE)[0]


CFG = RefinerConfig(box_covers_region=False, box_core_level=0.9, box_margin_px=0.0)


def test_leaked_is_empty_or_mostly_outside_the_core():
    assert leaked_off_core(np.zeros(SIZE, bool), CORE)
    assert not leaked_off_core(rect(55, 45, 64, 54), CORE)                       # all inside
    assert leaked_off_core(rect(0, 0, 9, 9), CORE)                               # all outside
    half_in = rect(80, 45, 99, 54)                                      # x 80..89 in, 90..99 out
    assert (half_in & CORE).sum() == CORE_SHARE * half_in.sum() and not leaked_off_core(half_in, CORE)


def test_a_mask_inside_the_core_keeps_its_own_box():
    m2 = rect(55, 45, 64, 54)
    assert np.array_equal(box_for(m2, CFG), mask_box(m2))


def test_a_mask_that_leaked_off_the_core_gets_the_core_too():
    m2 = rect(22, 85, 40, 99)                                            # in the region, outside the core
    assert np.array_equal(box_for(m2, CFG), mask_box(m2 | CORE))


def test_an_empty_mask_gets_the_core_box_not_the_region_box():
    assert np.array_equal(box_for(np.zeros(SIZE, bool), CFG), mask_box(CORE))


def test_off_or_no_core_or_region_box_keep_the_old_rules():
    m2 = rect(22, 85, 40, 99)
    assert np.array_equal(box_for(m2, CFG, core=None), mask_box(m2))
    assert np.array_equal(box_for(np.zeros(SIZE, bool), CFG, core=np.zeros(SIZE, bool)), mask_box(REGION))
    covers = dataclasses.replace(CFG, box_covers_region=True)
    assert np.array_equal(box_for(m2, covers), mask_box(REGION))
    # box_covers_region takes precedence: a core off the region (built by hand) is not added
    assert np.array_equal(box_for(m2, covers, core=rect(0, 0, 9, 9)), mask_box(REGION))


def test_each_row_gets_its_own_rule():
    kept, leaked = rect(55, 45, 64, 54), rect(22, 85, 40, 99)
    boxes = _boxes_of(torch.as_tensor(np.stack([kept, leaked])), [prompt(), prompt()], CFG, SIZE)
    assert np.array_equal(boxes[0], mask_box(kept))
    assert np.array_equal(boxes[1], mask_box(leaked | CORE))


def test_the_margin_still_grows_the_box():
    grown = box_for(np.zeros(SIZE, bool), dataclasses.replace(CFG, box_margin_px=5.0))
    assert np.array_equal(grown, mask_box(CORE) + np.array([-5, -5, 5, 5], np.float32))


def test_ppg_gives_each_region_its_core_only_when_asked():
    amap = np.where(REGION, 0.7, 0.0).astype(np.float32)
    amap[CORE] = 1.0
    cfg = dataclasses.replace(CFG, use_negative_points=False)
    (p,) = generate_prompts(amap, None, cfg)
    assert np.array_equal(p.core, CORE) and np.array_equal(p.region, REGION)
    # off, or no stage-3 box that would read it
    for unused in ({"box_core_level": 0.0}, {"box_covers_region": True}, {"stage3_box": False}):
        (p,) = generate_prompts(amap, None, dataclasses.replace(cfg, **unused))
        assert p.core is None, unused


PEAK = rect(60, 50, 69, 59)


def peaked_maps() -> tuple[np.ndarray, np.ndarray]:
    """A clipped map flat at 1 over the region (the backbone's halo) and its unclipped values,
    which fall off from a peak."""
    unclipped = np.where(REGION, 1.3, 0.0).astype(np.float32)
    unclipped[CORE] = 2.0
    unclipped[PEAK] = 3.0
    return np.minimum(unclipped, 1.0), unclipped


def test_the_peak_box_is_where_the_unclipped_map_peaks():
    clipped, unclipped = peaked_maps()
    cfg = RefinerConfig(box_peak_share=0.8, box_core_level=0.9, box_margin_px=0.0, use_negative_points=False)
    (p,) = generate_prompts(clipped, None, cfg, unclipped)
    assert np.array_equal(p.core, PEAK)
    # the box is the peak's, however far SAM's stage-2 mask leaked or however empty it came out
    for m2 in (rect(22, 85, 40, 99), np.zeros(SIZE, bool), REGION):
        assert np.array_equal(_boxes_of(torch.as_tensor(m2[None]), [p], cfg, SIZE)[0], mask_box(PEAK))
    # a lower share reaches the shoulder too
    (p,) = generate_prompts(clipped, None, dataclasses.replace(cfg, box_peak_share=0.6), unclipped)
    assert np.array_equal(p.core, CORE)
    # without unclipped values (a localizer whose scores stop at 1) the peak is the whole plateau
    (p,) = generate_prompts(clipped, None, cfg)
    assert np.array_equal(p.core, REGION)


def test_a_capped_cascade_prompts_the_highest_unclipped_peak():
    """Two regions flat at 1 once clipped: the one whose unclipped peak is higher is prompted,
    whichever it is."""
    first, second = rect(10, 10, 49, 49), rect(90, 60, 139, 109)
    cfg = RefinerConfig(max_regions=1, use_negative_points=False)
    for stronger in (first, second):
        unclipped = np.where(first | second, 1.5, 0.0).astype(np.float32)
        unclipped[stronger & (np.cumsum(stronger, axis=1) <= 10)] = 3.0        # a peak inside it
        (p,) = generate_prompts(np.minimum(unclipped, 1.0), None, cfg, unclipped)
        assert np.array_equal(p.region, stronger)


def test_defaults_leave_them_off_and_the_offline_profile_boxes_the_peak():
    assert Config().refiner.box_core_level == 0.0 and Config().refiner.box_peak_share == 0.0
    offline = load(config_path("offline.yaml")).refiner
    assert 0 < offline.box_peak_share < 1 and not offline.box_covers_region and offline.stage3_box
