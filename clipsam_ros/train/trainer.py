"""Training clip_adapter or UMCI heads on a frozen CLIP (the papers' recipe); `clipsam-ros train` runs it.

`localizer.method` picks the heads (clip_adapter | umci). The recipe
(APRIL-GAN, which ClipSAM follows):

* data: the test split of one dataset (`train.data`), evaluated on another;
* CLIP frozen (built exactly as the localizer builds it, `localize.build_heads_clip`);
  its tokens are computed once per image and cached in memory (`train.data.TokenSource`);
* text: the zero-shot prompt ensemble for "object", as at inference;
* per layer, the normal/abnormal probability grid is upsampled bilinearly to
  the CLIP input (S×S, as `finish_map` does at inference) and scored against
  the mask: focal loss (γ = 2) + dice loss of the abnormal channel; layers summed;
* Adam, `train.lr` (1e-3), `train.batch_size`, `train.epochs`; batch order
  from `train.seed` and the epoch number, so a resumed run sees the batches
  an uninterrupted one would have.

After every epoch the checkpoint is rewritten (atomically): heads + metadata
(CLIP model, image size, layers, method, epochs done, losses) in safetensors,
and Adam's moments beside it in ``<CKPT stem>.adam.safetensors``. `--resume`
loads both (the heads through the localizer's own checks, so a checkpoint of
another CLIP is refused in one line) and continues up to `train.epochs`.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from ..config import Config, ConfigError
from ..localize.clip_adapter import (
    adapter_meta,
    head_probabilities,
    load_adapter,
    make_heads,
    save_adapter,
    write_checkpoint,
)
from ..localize.clip_zero_shot import TEMPLATES, state_text_embeddings
from ..localize.umci import UmciHeads, checkpoint_method, load_umci, make_umci, save_umci, umci_meta
from ..models.clip import ClipEncoder
from .data import TokenSource

log = logging.getLogger(__name__)

HEAD_METHODS = ("clip_adapter", "umci")
ADAM_FORMAT = "clipsam_ros.adam/1"
FOCAL_GAMMA = 2.0


@dataclass
class TrainResult:
    checkpoint: Path
    method: str
    epochs_done: int
    epoch_losses: list[float]     # mean loss of each epoch run by this call
    cached: bool                  # tokens were cached in memory
    images: int
    tokens: TokenSource           # reusable by another run on the same samples


# ------------------------------------------------------------------ loss

def focal_loss(prob: torch.Tensor, target: torch.Tensor, gamma: float = FOCAL_GAMMA) -> torch.Tensor:
    """Mean over pixels of −Σ_c y_c (1 − p_c)^γ log p_c for the two classes (normal, abnormal).

    `prob` is the abnormal probability (B, H, W) and the normal one is 1 − prob (the two
    channels sum to 1, also after bilinear upsampling); `target` is the soft mask.
    """
    p = prob.clamp(1e-5, 1.0 - 1e-5)    # APRIL-GAN's smoothing: log never sees 0
    abnormal = target * (1.0 - p) ** gamma * p.log()
    normal = (1.0 - target) * p ** gamma * (1.0 - p).log()
    return -(abnormal + normal).mean()


def dice_loss(prob: torch.Tensor, target: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """1 − (2|P∩Y| + s) / (|P| + |Y| + s) per image, averaged; a good image pushes P towards 0."""
    inter = (prob * target).flatten(1).sum(1)
    total = prob.flatten(1).sum(1) + target.flatten(1).sum(1)
    return (1.0 - (2.0 * inter + smooth) / (total + smooth)).mean()


def _linear_weights(n_in: int, n_out: int, device: torch.device) -> torch.Tensor:
    """(n_out, n_in): 1-D linear interpolation as a matrix, built by F.interpolate itself (so identical)."""
    eye = torch.eye(n_in, device=device)[:, None, :]
    return F.interpolate(eye, size=n_out, mode="linear", align_corners=False)[:, 0, :].T.contiguous()


def upsample_bilinear(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(..., h, w) → (..., H, W): `F.interpolate(mode="bilinear", align_corners=False)` as two matmuls.

    Bilinear upsampling is separable and linear, so rows @ maps @ cols.T gives the same
    numbers (to float rounding) as `finish_map`'s upsampling at inference; its backward is
    a matmul, ~15x faster on a CPU than interpolate's own backward.
    """
    rows = _linear_weights(maps.shape[-2], size[0], maps.device)
    cols = _linear_weights(maps.shape[-1], size[1], maps.device)
    return rows @ maps @ cols.T


def segmentation_loss(layer_probs: torch.Tensor, targets: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Σ over layers of focal + dice on the maps upsampled to the targets' S×S; layer_probs (L, B, N, 2).

    Only the abnormal channel is upsampled: bilinear interpolation is linear, so the normal
    channel is exactly 1 minus it (half the work of upsampling both).
    """
    n_layers, b = layer_probs.shape[:2]
    maps = layer_probs[..., 1].reshape(n_layers, b, grid[0], grid[1])
    up = upsample_bilinear(maps, tuple(targets.shape[-2:]))
    return sum(focal_loss(up[k], targets) + dice_loss(up[k], targets) for k in range(n_layers))


def layer_probabilities(heads: nn.Module, tokens: Sequence[torch.Tensor], grid: tuple[int, int],
                        text: torch.Tensor, temperature: float) -> torch.Tensor:
    """(L, B, N, 2) probabilities from either kind of heads, differentiable."""
    if isinstance(heads, UmciHeads):
        return heads(tokens, grid, text, temperature)
    return head_probabilities(heads, tokens, text, temperature)


# ------------------------------------------------------------------ checkpoints

def adam_path(checkpoint: str | Path) -> Path:
    """Where Adam's state for `checkpoint` lives: ``<stem>.adam.safetensors`` beside it."""
    checkpoint = Path(checkpoint)
    return checkpoint.with_name(f"{checkpoint.stem}.adam.safetensors")


def read_metadata(path: str | Path) -> dict[str, str]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt", device="cpu") as f:
        return dict(f.metadata() or {})


def save_heads(path: Path, heads: nn.Module, encoder: ClipEncoder, extra: dict[str, str]) -> None:
    """The inference checkpoint: heads + the localizer's metadata + training facts."""
    if isinstance(heads, UmciHeads):
        save_umci(path, heads, umci_meta(encoder, heads) | extra)
    else:
        save_adapter(path, heads, adapter_meta(encoder) | {"method": "clip_adapter"} | extra)


def load_heads(path: str | Path, method: str, encoder: ClipEncoder) -> nn.Module:
    """Trainable heads from a checkpoint, through the localizer's own loader and checks."""
    held = checkpoint_method(path)
    if held is not None and held != method:
        raise ConfigError(f"--resume {path} holds {held} heads but localizer.method={method}; "
                          f"set localizer.method={held} or start without --resume")
    heads = load_umci(path, encoder) if method == "umci" else load_adapter(path, encoder)
    return heads.train().requires_grad_(True)


def save_adam(path: Path, optimizer: torch.optim.Adam, epochs_done: int) -> None:
    params = optimizer.param_groups[0]["params"]
    tensors = {}
    for i, p in enumerate(params):
        for name, value in optimizer.state.get(p, {}).items():
            tensors[f"state.{i}.{name}"] = value.detach().float().cpu().reshape(-1).contiguous()
    write_checkpoint(path, tensors, {"format": ADAM_FORMAT, "num_params": str(len(params)),
                                 "epochs_done": str(epochs_done)})


def load_adam(path: Path, optimizer: torch.optim.Adam) -> bool:
    """Restore Adam's moments saved by `save_adam`; False (nothing changed) when absent or not matching."""
    from safetensors.torch import load_file

    if not path.is_file():
        return False
    meta = read_metadata(path)
    params = optimizer.param_groups[0]["params"]
    if meta.get("format") != ADAM_FORMAT or meta.get("num_params") != str(len(params)):
        return False
    tensors = load_file(str(path))
    state = {}
    for i, p in enumerate(params):
        entry = {}
        for name in ("step", "exp_avg", "exp_avg_sq"):
            value = tensors.get(f"state.{i}.{name}")
            if value is None:
                return False
            shape = () if name == "step" else p.shape
            if value.numel() != (1 if name == "step" else p.numel()):
                return False
            entry[name] = value.reshape(shape)
        state[i] = entry
    optimizer.load_state_dict({"state": state, "param_groups": optimizer.state_dict()["param_groups"]})
    return True


# ------------------------------------------------------------------ training

def fresh_heads(method: str, encoder: ClipEncoder, seed: int) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        heads = make_umci(encoder) if method == "umci" else make_heads(encoder)
    return heads.train().requires_grad_(True)


def epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    """The batch order of one epoch: a function of (seed, epoch) only, so resuming repeats it."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=generator).tolist()


def train(cfg: Config, samples: list, out: str | Path, *, resume: str | Path | None = None,
          encoder: ClipEncoder | None = None, tokens: TokenSource | None = None,
          templates: Sequence[str] = TEMPLATES, progress: bool = True) -> TrainResult:
    """Train `cfg.localizer.method` heads on `samples` (`train.data.training_samples`); write `out`.

    `encoder` (a frozen residual-path CLIP matching cfg.clip), `tokens` (the
    TokenSource of an earlier run on the same samples and encoder) and
    `templates` let tests reuse one CLIP, its tokens and a short prompt list;
    the CLI uses the defaults.
    """
    from ..inspector import resolve_device
    from ..localize import build_heads_clip

    method = cfg.localizer.method
    if method not in HEAD_METHODS:
        raise ConfigError(f"train needs localizer.method=clip_adapter or umci, not {method!r} "
                          f"(e.g. --set localizer.method=umci)")
    if not samples:
        raise ConfigError("train got no images (check --root and --layout)")
    out = Path(out)
    t = cfg.train
    done, history = 0, []
    if resume:                     # what the checkpoint has done, before building anything
        if not Path(resume).is_file():
            raise ConfigError(f"--resume {resume} does not exist (give a checkpoint written by train --out)")
        try:
            meta = read_metadata(resume)
        except Exception:
            raise ConfigError(f"--resume {resume} is not a readable safetensors checkpoint "
                              f"(give one written by train --out)") from None
        held = checkpoint_method(resume)
        if held is not None and held != method:
            raise ConfigError(f"--resume {resume} holds {held} heads but localizer.method={method}; "
                              f"set localizer.method={held} or start without --resume")
        done = int(meta.get("epochs_done", "0"))
        history = [float(v) for v in meta.get("losses", "").split(",") if v]
        if done >= t.epochs:
            raise ConfigError(f"--resume {resume} has trained {done} epochs already; raise train.epochs "
                              f"(e.g. --set train.epochs={done + 5})")
    device = resolve_device(cfg.device)
    if encoder is None:
        encoder = build_heads_clip(cfg, device)
    elif encoder.token_path != "residual":
        encoder = encoder.with_token_path("residual")
    text = state_text_embeddings(encoder, "object", templates=templates)
    heads = (load_heads(resume, method, encoder) if resume else fresh_heads(method, encoder, t.seed)).to(device)
    optimizer = torch.optim.Adam(heads.parameters(), lr=t.lr)
    if resume and not load_adam(adam_path(resume), optimizer):
        log.warning("no matching Adam state beside %s: its moments start from zero", resume)

    source = tokens or TokenSource(encoder, samples, t.cache_gb, t.batch_size, progress)
    if len(source) != len(samples):
        raise ValueError(f"the given tokens cover {len(source)} images, not the {len(samples)} samples")
    losses: list[float] = []
    for epoch in range(done, t.epochs):
        order = epoch_order(len(source), t.seed, epoch)
        batches = [order[i:i + t.batch_size] for i in range(0, len(order), t.batch_size)]
        total = 0.0
        bar = tqdm(batches, desc=f"train {method} epoch {epoch + 1}/{t.epochs}", unit="batch",
                   disable=not progress)
        for indices in bar:
            batch_tokens, targets = source.batch(indices, device)
            probs = layer_probabilities(heads, batch_tokens, encoder.grid, text, cfg.localizer.temperature)
            loss = segmentation_loss(probs, targets, encoder.grid)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            value = float(loss.detach())
            total += value * len(indices)
            bar.set_postfix(loss=f"{value:.4f}")
        losses.append(total / len(source))
        history.append(losses[-1])
        extra = {"epochs_done": str(epoch + 1), "losses": ",".join(f"{v:.6f}" for v in history),
                 "lr": repr(t.lr), "batch_size": str(t.batch_size), "seed": str(t.seed),
                 "object_name": "object", "templates": str(len(templates)), "images": str(len(source))}
        save_heads(out, heads, encoder, extra)
        save_adam(adam_path(out), optimizer, epoch + 1)
    return TrainResult(out, method, t.epochs, losses, source.cached, len(source), source)
