"""Config: both shipped profiles load; every bad key or value fails in one line naming it."""
from __future__ import annotations

import pytest

from clipsam_ros.config import (CHOICES, DESCRIPTIONS, RANGES, Config, ConfigError, flatten, load,
                                needs_reload, read_params_file)
from clipsam_ros.resources import config_path


def test_shipped_profiles_load_and_differ_where_documented():
    paper = load(config_path("inspect.yaml"))
    offline = load(config_path("offline.yaml"))
    assert (paper.clip.model, paper.clip.image_size, paper.sam.variant) == ("ViT-L-14-336", 518, "vit_h")
    assert paper.clip.pretrained == "openai" and paper.clip.layers == [6, 12, 18, 24]
    assert (paper.refiner.dilation_shape, paper.refiner.dilation_size) == ("ellipse", 25)
    assert not paper.refiner.confine_to_ring and paper.refiner.mask_input   # the paper's cascade
    assert (offline.sam.variant, offline.localizer.method) == ("lite_medsam", "reference")


def test_every_key_is_described():
    keys = set(flatten(Config()))
    assert keys == set(DESCRIPTIONS), keys ^ set(DESCRIPTIONS)
    assert set(CHOICES) <= keys and set(RANGES) <= keys


@pytest.mark.parametrize("override, key", [
    ("refiner.threshold=1.5", "refiner.threshold"),
    ("refiner.method=magic", "refiner.method"),
    ("refiner.dilation_size=24", "refiner.dilation_size"),
    ("refiner.num_positive=abc", "refiner.num_positive"),
    ("refiner.stage2_logits=maybe", "refiner.stage2_logits"),
    ("clip.layers=[0,6]", "clip.layers"),
    ("device=tpu", "device"),
    ("refiner.no_such_key=1", "refiner.no_such_key"),
    ("nonsense=1", "nonsense"),
    ("refiner=1", "refiner"),
])
def test_bad_values_name_the_key(override, key):
    with pytest.raises(ConfigError) as info:
        load(None, [override])
    message = str(info.value)
    assert key in message and "\n" not in message


def test_set_overrides_the_file_and_coerces_types(tmp_path):
    cfg = load(config_path("offline.yaml"), ["refiner.threshold=0.6", "clip.layers=[3,6]",
                                             "refiner.stage3_box=false", "refiner.num_negative=0"])
    assert cfg.refiner.threshold == 0.6 and cfg.clip.layers == [3, 6]
    assert cfg.refiner.stage3_box is False and cfg.refiner.num_negative == 0


def test_params_file_shape_is_checked(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("refiner:\n  threshold: 0.5\n")
    with pytest.raises(ConfigError, match="ros__parameters"):
        load(bad)
    broken = tmp_path / "broken.yaml"
    broken.write_text("clipsam_inspector:\n  ros__parameters: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load(broken)
    with pytest.raises(ConfigError, match="does not exist"):
        load(tmp_path / "missing.yaml")
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("clipsam_inspector:\n  ros__parameters:\n    refiner:\n      thresold: 0.4\n")
    with pytest.raises(ConfigError, match="refiner.thresold"):
        load(unknown)
    wildcard = tmp_path / "wild.yaml"
    wildcard.write_text("/**:\n  ros__parameters:\n    device: cpu\n")
    assert read_params_file(wildcard) == {"device": "cpu"}


def test_reload_keys():
    assert needs_reload("sam.variant") and needs_reload("localizer.method") and needs_reload("device")
    assert not needs_reload("refiner.threshold") and not needs_reload("decision.min_defect_area_px")
