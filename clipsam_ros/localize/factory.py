"""Build the configured localizer (and its CLIP encoder, when it has one)."""
from __future__ import annotations

from pathlib import Path

import torch

from ..config import Config, ConfigError
from ..models.sam import SamModel
from .reference import ReferenceLocalizer, build_bank, list_images, load_bank, read_rgb, save_bank


def _reference(cfg: Config, sam: SamModel, progress: bool) -> ReferenceLocalizer:
    loc = cfg.localizer
    bank_path = Path(loc.bank).expanduser() if loc.bank else None
    if bank_path is not None and bank_path.exists():
        return ReferenceLocalizer(load_bank(bank_path, cfg.sam.variant), loc)
    if not loc.reference_dir:
        raise ConfigError("localizer.method=reference needs localizer.reference_dir (a folder of good "
                          "parts) or an existing localizer.bank file")
    images = [read_rgb(p) for p in list_images(loc.reference_dir)]
    bank = build_bank(images, sam.encode, cfg.sam.variant, loc.bank_max_patches, progress=progress)
    if bank_path is not None:
        save_bank(bank, bank_path)
    return ReferenceLocalizer(bank, loc)


def build_localizer(cfg: Config, sam: SamModel, device: torch.device, progress: bool = True):
    """A callable (clip, sam, image_size) -> AnomalyEstimate with `uses_clip`, and `encoder` if it does."""
    method = cfg.localizer.method
    if method == "reference":
        return _reference(cfg, sam, progress)
    if method == "umci":
        raise ConfigError("localizer.method=umci is not in this release yet "
                          "(use clip_zero_shot, clip_adapter or reference)")
    from ..models.clip import build_clip

    cache = cfg.weights.cache_dir or None
    if method == "clip_zero_shot":
        from .clip_zero_shot import ClipZeroShotLocalizer

        encoder = build_clip(cfg.clip, device, precision=cfg.precision, cache_dir=cache)
        return ClipZeroShotLocalizer(encoder, cfg.localizer)
    from .clip_adapter import ClipAdapterLocalizer

    encoder = build_clip(cfg.clip, device, precision=cfg.precision, token_path="residual", cache_dir=cache)
    return ClipAdapterLocalizer.from_checkpoint(encoder, cfg.localizer)
