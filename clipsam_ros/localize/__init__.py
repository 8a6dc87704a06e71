"""Localizers: where a frame looks anomalous (S_a and an image score), from cached encoder outputs.

One builder per `localizer.method` in `LOCALIZERS`; `build_localizer` is the one way
the Inspector, eval, bench and the demo get one. A new method is a module here and
one line in the registry. Every localizer is a `base.Localizer`: it names the CLIP
encoder it needs per frame (or None) and maps cached features to an `AnomalyEstimate`.

    clip_zero_shot  training-free CLIP map (prompt ensemble, value-value attention path)
    clip_adapter    the papers' trained linear heads on CLIP patch tokens
    umci            ClipSAM's UMCI heads
    reference       few-shot: a PatchCore memory bank of normal parts' patch features
    stream          zero-shot: each camera's rolling memory of the last frames' patch features
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np

from ..config import Config, ConfigError
from .base import AnomalyEstimate, Localizer

if TYPE_CHECKING:  # torch, open_clip and SAM load when a localizer is built, not on import
    import torch

    from ..models.clip import ClipEncoder
    from ..models.sam import SamModel

__all__ = ["AnomalyEstimate", "Localizer", "LOCALIZERS", "build_localizer", "build_localizer_clip", "build_heads_clip"]

# the methods that cannot start without normal images (a folder, a saved bank or `references`)
NEEDS_REFERENCES = frozenset({"reference"})


def needs_references(cfg: Config) -> bool:
    """Whether the configured localizer learns "normal" only from images of good parts."""
    return cfg.localizer.method in NEEDS_REFERENCES


# the methods that learn "normal" from the frames they judge: order matters, a fresh memory
# answers warm-up errors, and a product (an eval class) needs a memory of its own
LEARNS_ONLINE = frozenset({"stream"})


def learns_online(cfg: Config) -> bool:
    """Whether the configured localizer learns from the frames it inspects (the stream)."""
    return cfg.localizer.method in LEARNS_ONLINE


# (config, SAM, device, normal images or None, progress) -> Localizer
LocalizerBuilder = Callable[[Config, "SamModel", "torch.device", "Sequence[np.ndarray] | None", bool], Localizer]


def build_backbone(cfg: Config, device: torch.device):
    """The configured ImageNet backbone, or None for `localizer.backbone: sam`."""
    if cfg.localizer.backbone == "sam":
        return None
    from ..models.backbone import build_backbone as build_backbone_model

    return build_backbone_model(cfg, device)


def patch_encoder(sam: SamModel, backbone) -> Callable[[np.ndarray], torch.Tensor]:
    """image → (rows, cols, C) normalised patch features, as the localizer will see them."""
    from .reference import backbone_grid, sam_grid

    if backbone is None:
        return lambda image: sam_grid(sam.encode(image))
    return lambda image: backbone_grid(backbone.encode(image))


def _reference(cfg: Config, sam: SamModel, device: torch.device, references: Sequence[np.ndarray] | None,
               progress: bool) -> Localizer:
    """From `references` when given (eval's shots, the demo's good parts), else from
    `localizer.bank` when that file exists, else from `localizer.reference_dir` (saved to
    `localizer.bank` when that is set)."""
    from ..imaging.files import read_rgb
    from .reference import (
        BankError,
        ReferenceLocalizer,
        backbone_id,
        build_bank,
        layers_id,
        list_images,
        load_bank,
        references_id,
        save_bank,
    )

    loc = cfg.localizer
    backbone = build_backbone(cfg, device)
    source, layers = backbone_id(loc.backbone, cfg.sam.variant), layers_id(backbone)
    bank_path = Path(loc.bank).expanduser() if loc.bank and references is None else None
    if bank_path is not None and bank_path.exists():
        # a saved bank built from another set of reference images is refused; one whose folder
        # is gone (the line PC keeps only the bank) is used as it is
        try:
            held = references_id(list_images(loc.reference_dir)) if loc.reference_dir else ""
        except BankError:
            held = ""
        bank = load_bank(bank_path, source, layers, loc.spatial_radius, loc.augment_references, loc.coreset_ratio,
                         held)
        return ReferenceLocalizer(bank, loc, backbone)
    folder = None
    if references is None:
        if not loc.reference_dir:
            raise ConfigError("localizer.method=reference needs localizer.reference_dir (a folder of good "
                              "parts) or an existing localizer.bank file")
        folder = list_images(loc.reference_dir)
        fix = "remove it from localizer.reference_dir"
        references = [read_rgb(p, fix=fix) for p in folder]
    bank = build_bank(references, patch_encoder(sam, backbone), source, layers, loc.spatial_radius,
                      loc.coreset_ratio, progress=progress, augment=loc.augment_references)
    if folder is not None:
        bank.references = references_id(folder)
    if bank_path is not None:
        save_bank(bank, bank_path)
    return ReferenceLocalizer(bank, loc, backbone)


def _stream(cfg: Config, sam: SamModel, device: torch.device, references: Sequence[np.ndarray] | None,
            progress: bool) -> Localizer:
    """A memory per camera, seeded from `references` or `localizer.reference_dir` when given."""
    from ..imaging.files import read_rgb
    from .reference import backbone_id, layers_id, list_images
    from .stream import StreamLocalizer

    loc = cfg.localizer
    backbone = build_backbone(cfg, device)
    if references is None and loc.reference_dir:
        references = [read_rgb(p, fix="remove it from localizer.reference_dir")
                      for p in list_images(loc.reference_dir)]
    encode = patch_encoder(sam, backbone)
    seed = [encode(image) for image in references] if references else None
    source = f"{backbone_id(loc.backbone, cfg.sam.variant)} layers {layers_id(backbone)}"
    return StreamLocalizer(loc, backbone, cfg.refiner, source, seed)


# the CLIP token path each CLIP localizer reads: zero-shot the value-value path, trained heads
# the residual one
CLIP_TOKEN_PATHS: dict[str, str] = {"clip_zero_shot": "vv", "clip_adapter": "residual", "umci": "residual"}


def build_localizer_clip(cfg: Config, device: torch.device) -> ClipEncoder | None:
    """The frozen CLIP `localizer.method` runs on each frame (None: it runs none), as the
    localizer, `clipsam-ros train` and `clipsam-ros export` all build it."""
    token_path = CLIP_TOKEN_PATHS.get(cfg.localizer.method)
    return None if token_path is None else _seeded_clip(cfg, device, token_path)


def build_heads_clip(cfg: Config, device: torch.device) -> ClipEncoder:
    """The frozen residual-path CLIP that trained heads (clip_adapter, umci) sit on."""
    return _seeded_clip(cfg, device, CLIP_TOKEN_PATHS["clip_adapter"])


def _seeded_clip(cfg: Config, device: torch.device, token_path: str) -> ClipEncoder:
    """Built under a fixed seed (the global RNG is left as it was): with clip.pretrained=none the
    random-init CLIP then is the same in training, export and inference, whatever was built
    before it; real weights overwrite every parameter, so for them the seed changes nothing."""
    import torch

    from ..models.accel import AccelSettings
    from ..models.clip import build_clip

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return build_clip(cfg.clip, device, precision=cfg.precision, token_path=token_path,
                          cache_dir=cfg.weights.cache_dir or None, accel=AccelSettings.from_config(cfg, device))


def _clip_zero_shot(cfg: Config, sam: SamModel, device: torch.device, references, progress: bool) -> Localizer:
    from ..models.clip import on_backend
    from .clip_zero_shot import ClipZeroShotLocalizer

    encoder = _seeded_clip(cfg, device, CLIP_TOKEN_PATHS["clip_zero_shot"])
    return ClipZeroShotLocalizer(on_backend(encoder, cfg), cfg.localizer)


def _trained_heads(cfg: Config, sam: SamModel, device: torch.device, references, progress: bool) -> Localizer:
    from ..models.clip import on_backend
    from .clip_adapter import ClipAdapterLocalizer
    from .umci import UmciLocalizer, checkpoint_method

    method = cfg.localizer.method
    # say a method / checkpoint mix-up before building a large CLIP
    held = checkpoint_method(cfg.localizer.checkpoint) if cfg.localizer.checkpoint else None
    if held is not None and held != method:
        raise ConfigError(f"localizer.checkpoint={cfg.localizer.checkpoint} holds {held} heads but "
                          f"localizer.method={method}; set localizer.method={held} or use a {method} checkpoint")
    kind = {"umci": UmciLocalizer, "clip_adapter": ClipAdapterLocalizer}[method]
    return kind.from_checkpoint(on_backend(build_heads_clip(cfg, device), cfg), cfg.localizer)


LOCALIZERS: dict[str, LocalizerBuilder] = {
    "clip_zero_shot": _clip_zero_shot,
    "clip_adapter": _trained_heads,
    "umci": _trained_heads,
    "reference": _reference,
    "stream": _stream,
}


def build_localizer(cfg: Config, sam: SamModel, device: torch.device, progress: bool = True,
                    references: Sequence[np.ndarray] | None = None) -> Localizer:
    """The configured localizer. `references`: images of normal parts to learn from instead of
    `localizer.reference_dir` / `localizer.bank` (ignored by methods that learn nothing)."""
    builder = LOCALIZERS.get(cfg.localizer.method)
    if builder is None:
        raise ConfigError(f"localizer.method={cfg.localizer.method!r} is not registered "
                          f"(choose one of: {', '.join(LOCALIZERS)})")
    return builder(cfg, sam, device, references, progress)
