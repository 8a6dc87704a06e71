"""Build the configured localizer (and its CLIP encoder, when it has one)."""
from __future__ import annotations

from pathlib import Path

import torch

from ..config import Config, ConfigError
from ..models.accel import AccelSettings
from ..models.sam import SamModel
from .reference import ReferenceLocalizer, build_bank, list_images, load_bank, read_rgb, save_bank


def _reference(cfg: Config, sam: SamModel, progress: bool) -> ReferenceLocalizer:
    loc = cfg.localizer
    bank_path = Path(loc.bank).expanduser() if loc.bank else None
    if bank_path is not None and bank_path.exists():
        return ReferenceLocalizer(load_bank(bank_path, cfg.sam.variant, loc.spatial_radius), loc)
    if not loc.reference_dir:
        raise ConfigError("localizer.method=reference needs localizer.reference_dir (a folder of good "
                          "parts) or an existing localizer.bank file")
    images = [read_rgb(p) for p in list_images(loc.reference_dir)]
    bank = build_bank(images, sam.encode, cfg.sam.variant, loc.spatial_radius, loc.bank_max_patches,
                      progress=progress)
    if bank_path is not None:
        save_bank(bank, bank_path)
    return ReferenceLocalizer(bank, loc)


def build_heads_clip(cfg: Config, device: torch.device):
    """The frozen residual-path CLIP that trained heads (clip_adapter, umci) sit on.

    Built under a fixed seed (the global RNG is left as it was): with
    clip.pretrained=none the random-init CLIP then is the same in `clipsam-ros
    train` and at inference, whatever was built before it; real weights
    overwrite every parameter, so for them the seed changes nothing.
    """
    from ..models.clip import build_clip

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return build_clip(cfg.clip, device, precision=cfg.precision, token_path="residual",
                          cache_dir=cfg.weights.cache_dir or None, accel=AccelSettings.from_config(cfg, device))


def build_localizer(cfg: Config, sam: SamModel, device: torch.device, progress: bool = True):
    """A callable (clip, sam, image_size) -> AnomalyEstimate with `uses_clip`, and `encoder` if it does."""
    method = cfg.localizer.method
    if method == "reference":
        return _reference(cfg, sam, progress)
    from ..models.clip import build_clip

    cache = cfg.weights.cache_dir or None
    if method == "clip_zero_shot":
        from .clip_zero_shot import ClipZeroShotLocalizer

        encoder = build_clip(cfg.clip, device, precision=cfg.precision, cache_dir=cache,
                             accel=AccelSettings.from_config(cfg, device))
        return ClipZeroShotLocalizer(encoder, cfg.localizer)
    from .clip_adapter import ClipAdapterLocalizer
    from .umci import UmciLocalizer, checkpoint_method

    # trained heads: say a method / checkpoint mix-up before building a large CLIP
    held = checkpoint_method(cfg.localizer.checkpoint) if cfg.localizer.checkpoint else None
    if held is not None and held != method:
        raise ConfigError(f"localizer.checkpoint={cfg.localizer.checkpoint} holds {held} heads but "
                          f"localizer.method={method}; set localizer.method={held} or use a {method} checkpoint")
    encoder = build_heads_clip(cfg, device)
    if method == "umci":
        return UmciLocalizer.from_checkpoint(encoder, cfg.localizer)
    return ClipAdapterLocalizer.from_checkpoint(encoder, cfg.localizer)
