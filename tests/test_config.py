"""Config: both shipped profiles load; every bad key or value fails in one line naming it."""
from __future__ import annotations

import pytest

from clipsam_ros.config import (
    Config,
    ConfigError,
    apply,
    config_path,
    flatten,
    load,
    needs_reload,
    read_params_file,
    set_value,
    spec,
    specs,
)


def test_shipped_profiles_load_and_differ_where_documented():
    paper = load(config_path("inspect.yaml"))
    offline = load(config_path("offline.yaml"))
    assert (paper.clip.model, paper.clip.image_size, paper.sam.variant) == ("ViT-L-14-336", 518, "vit_h")
    assert paper.clip.pretrained == "openai" and paper.clip.layers == [6, 12, 18, 24]
    assert (paper.refiner.dilation_shape, paper.refiner.dilation_size) == ("ellipse", 25)
    assert not paper.refiner.confine_to_ring and paper.refiner.mask_input   # the paper's cascade
    assert (offline.sam.variant, offline.localizer.method) == ("lite_medsam", "reference")


def test_every_key_is_declared_once_with_help_and_a_default_that_passes_its_own_checks():
    assert list(specs()) == list(flatten(Config()))
    for key, s in specs().items():
        assert s.name == key and s.help.strip(), key
        assert s.default == flatten(Config())[key] and isinstance(s.default, s.type), key
    apply(Config(), flatten(Config()))                      # every default within its choices, range, check


def test_list_item_types_come_from_the_annotations_and_set_coerces_to_them():
    lists = {k: s.item_type for k, s in specs().items() if s.type is list}
    assert lists == {"clip.layers": int, "refiner.mmr_weights": float, "input.image_topics": str,
                     "localizer.backbone_layers": int}
    assert all(s.item_type is None for s in specs().values() if s.type is not list)
    cfg = load(None, ["clip.layers=3,6", "refiner.mmr_weights=1,1,2", "input.image_topics=cam0/image,cam1/image"])
    assert cfg.clip.layers == [3, 6] and all(type(v) is int for v in cfg.clip.layers)
    assert cfg.refiner.mmr_weights == [1.0, 1.0, 2.0] and all(type(v) is float for v in cfg.refiner.mmr_weights)
    assert cfg.input.image_topics == ["cam0/image", "cam1/image"]
    with pytest.raises(ConfigError, match="not a list of names"):
        load(None, ["input.image_topics=[1, 2]"])
    with pytest.raises(ConfigError, match="not a list of integers"):
        load(None, ["clip.layers=[a]"])


@pytest.mark.parametrize("key", [k for k, s in specs().items() if s.choices])
def test_choices_are_enforced(key):
    cfg = Config()
    for choice in spec(key).choices:
        set_value(cfg, key, choice)
        assert flatten(cfg)[key] == choice
    with pytest.raises(ConfigError, match=f"^{key}='nope' is not allowed"):
        set_value(cfg, key, "nope")


@pytest.mark.parametrize("key", [k for k, s in specs().items() if s.range])
def test_ranges_are_enforced_at_both_ends(key):
    cfg = Config()
    low, high = spec(key).range
    for inside in (low, high):
        set_value(cfg, key, inside)
        assert flatten(cfg)[key] == inside
    step = 1 if spec(key).type is int else max(abs(low), abs(high), 1.0) * 1e-3
    for outside in (low - step, high + step):
        with pytest.raises(ConfigError, match=f"^{key}=.* is out of range"):
            set_value(cfg, key, outside)


def test_choices_ranges_and_rules_reach_the_ros_descriptors():
    pytest.importorskip("rclpy")
    from clipsam_ros.ros.params import READ_ONLY_NOTE, descriptor, param_specs

    params = {p.name: p for p in param_specs()}
    assert set(params) == set(specs())
    for key, s in specs().items():
        d = descriptor(params[key])
        assert d.description == s.help and not d.read_only, key   # the node refuses them when configured
        assert (READ_ONLY_NOTE in d.additional_constraints) == s.reload, key
        if s.choices:
            assert "one of: " + ", ".join(s.choices) in d.additional_constraints, key
        if s.range and s.type is int:
            assert (d.integer_range[0].from_value, d.integer_range[0].to_value) == s.range, key
        elif s.range:
            assert (d.floating_point_range[0].from_value, d.floating_point_range[0].to_value) == s.range, key
        else:
            assert not d.integer_range and not d.floating_point_range, key
    assert "odd" in params["refiner.dilation_size"].constraints.split("; ")


@pytest.mark.parametrize("override, key", [
    ("refiner.threshold=1.5", "refiner.threshold"),
    ("refiner.method=magic", "refiner.method"),
    ("refiner.dilation_size=24", "refiner.dilation_size"),
    ("refiner.num_positive=abc", "refiner.num_positive"),
    ("refiner.stage2_logits=maybe", "refiner.stage2_logits"),
    ("clip.layers=[0,6]", "clip.layers"),
    ("localizer.backbone_layers=[4,2]", "localizer.backbone_layers"),     # finest first
    ("localizer.backbone_layers=[2,7]", "localizer.backbone_layers"),     # lite0/1/2 have blocks 0 … 6
    ("localizer.backbone_layers=[]", "localizer.backbone_layers"),
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


@pytest.mark.parametrize("key", ["clipsam_inspector", "/line3/clipsam_inspector", "/**/clipsam_inspector",
                                 "/**", "/line3/*", "/*/clipsam_*"])
def test_the_node_keys_ros_accepts_are_read(tmp_path, key):
    f = tmp_path / "line.yaml"
    f.write_text(f"{key}:\n  ros__parameters:\n    refiner:\n      threshold: 0.7\n")
    assert read_params_file(f) == {"refiner.threshold": 0.7}              # the CLI: any namespace
    assert read_params_file(f, namespace="line3") == {"refiner.threshold": 0.7}
    assert load(f, namespace="/line3").refiner.threshold == 0.7


def test_sections_for_other_nodes_or_namespaces_are_not_read(tmp_path):
    f = tmp_path / "plant.yaml"
    f.write_text("/line3/clipsam_inspector:\n  ros__parameters:\n    device: cpu\n"
                 "/line4/clipsam_inspector:\n  ros__parameters:\n    device: cuda\n"
                 "/**:\n  ros__parameters:\n    refiner:\n      threshold: 0.6\n"
                 "line5:\n  clipsam_inspector:\n    ros__parameters:\n      device: cuda\n"
                 "camera_driver:\n  ros__parameters:\n    fps: 30\n")
    assert read_params_file(f, namespace="line3") == {"device": "cpu", "refiner.threshold": 0.6}
    assert read_params_file(f, namespace="line5") == {"refiner.threshold": 0.6, "device": "cuda"}  # nested
    assert read_params_file(f, namespace="") == {"refiner.threshold": 0.6}
    other = tmp_path / "other.yaml"
    other.write_text("camera_driver:\n  ros__parameters:\n    fps: 30\n")
    with pytest.raises(ConfigError, match=r"no section for clipsam_inspector.*/\*\*/clipsam_inspector"):
        read_params_file(other)


def test_reload_keys():
    assert needs_reload("sam.variant") and needs_reload("localizer.method") and needs_reload("device")
    assert not needs_reload("refiner.threshold") and not needs_reload("decision.min_defect_area_px")
    assert not needs_reload("no.such_key")


def test_the_reload_set_is_whole_sections_plus_the_models_own_keys():
    """What a running node refuses to change: pinned, so a declaration cannot move a key by accident."""
    sections = ("runtime.", "clip.", "sam.", "weights.", "input.")
    assert all(s.reload for k, s in specs().items() if k.startswith(sections))
    assert {k for k, s in specs().items() if s.reload and not k.startswith(sections)} == {
        "device", "precision", "compile", "localizer.method", "localizer.checkpoint", "localizer.reference_dir",
        "localizer.bank", "localizer.spatial_radius", "localizer.bank_max_patches", "refiner.method",
        # the backbone, the bank's coreset and augmentation and the stream's memory are built with the localizer
        "localizer.backbone", "localizer.backbone_size", "localizer.backbone_layers", "localizer.coreset_ratio",
        "localizer.augment_references",
        "localizer.window",
        "localizer.warmup_frames", "localizer.memory"}


def test_method_choices_are_the_registries():
    """A new localizer or refiner is one module and one registry line; its config choice must follow."""
    from clipsam_ros.config import spec
    from clipsam_ros.localize import LOCALIZERS
    from clipsam_ros.refine import REFINERS

    assert set(spec("localizer.method").choices) == set(LOCALIZERS)
    assert set(spec("refiner.method").choices) == set(REFINERS)
