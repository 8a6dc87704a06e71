"""CLIP adapter (APRIL-GAN style): trained linear heads on CLIP patch tokens.

One ``nn.Linear(width, embed_dim)`` per requested layer maps that layer's
residual-stream patch tokens (after ``ln_post``, NOT projected: the encoder's
``token_path="residual"``, see `models.clip`) into the joint image-text space.
Per layer, ``softmax(normalise(head(tokens)) @ text.T / temperature)`` gives
the abnormal probability per patch; layers are averaged, then upsampled,
blurred and clipped exactly like the zero-shot map. The text side is the same
prompt ensemble as the zero-shot localizer, computed once. Image score: the
same blend of the class-token probability and the map maximum.

Checkpoints are safetensors files: tensors ``heads.<i>.weight`` /
``heads.<i>.bias`` and string metadata naming the CLIP they were trained on
(model, image size, layers, width, embed dim). Loading into a different CLIP
is refused with `AdapterMismatchError` rather than producing a silently wrong
map.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Sequence, cast

import torch
from torch import nn

from ..config import LocalizerConfig
from ..errors import ClipsamError, one_line
from ..models.clip import ClipEncoder
from ..models.features import ClipFeatures
from .base import AnomalyEstimate, clip_features
from .clip_zero_shot import TEMPLATES, clip_estimate, state_text_embeddings

ADAPTER_FORMAT = "clipsam_ros.clip_adapter/1"
META_KEYS = ("clip_model", "image_size", "layers", "width", "embed_dim")


class AdapterError(ClipsamError, RuntimeError):
    """Adapter heads that cannot be used; str(exc) is ONE line naming the file and the config key."""


class AdapterMismatchError(AdapterError):
    """The checkpoint was trained for another CLIP (model, input size, layers or shapes)."""


class AdapterMissingError(AdapterError):
    """localizer.checkpoint is empty or names no file."""


def make_heads(encoder: ClipEncoder) -> nn.ModuleList:
    """Fresh (untrained) heads for `encoder`: one Linear(width, embed_dim) per layer, on its device."""
    return nn.ModuleList(nn.Linear(encoder.width, encoder.embed_dim) for _ in encoder.layers).to(encoder.device)


def adapter_meta(encoder: ClipEncoder) -> dict[str, str]:
    """The metadata that ties heads to the CLIP they were trained on."""
    return {
        "clip_model": encoder.model_name,
        "image_size": str(encoder.image_size),
        "layers": ",".join(str(v) for v in encoder.layers),
        "width": str(encoder.width),
        "embed_dim": str(encoder.embed_dim),
    }


def meta_strings(meta: Mapping[str, object]) -> dict[str, str]:
    """Checkpoint metadata as safetensors stores it: strings, lists comma-joined."""
    return {k: (",".join(str(x) for x in v) if isinstance(v, (list, tuple)) else str(v)) for k, v in meta.items()}


def write_checkpoint(path: str | Path, tensors: dict[str, torch.Tensor], meta: dict[str, str]) -> None:
    """Tensors + metadata as safetensors, atomically: a crash never leaves half a file."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.part-{os.getpid()}")
    try:
        save_file(tensors, str(tmp), metadata=meta)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def read_checkpoint(path: str | Path, what: str, method: str) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    """(metadata, tensors) of the heads checkpoint at `localizer.checkpoint`, or a one-line
    AdapterMissingError / AdapterError; `what` names it in messages, `method` is the localizer."""
    from safetensors import safe_open

    if not str(path).strip():
        raise AdapterMissingError(f"localizer.checkpoint is empty: the {method} localizer needs trained heads "
                                  "(train them with `clipsam-ros train`, or use localizer.method=clip_zero_shot)")
    path = Path(path).expanduser()
    if not path.is_file():
        raise AdapterMissingError(f"{what} {path} does not exist (localizer.checkpoint); "
                                  f"train heads with `clipsam-ros train` or fix the path")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            return dict(f.metadata() or {}), {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:
        raise AdapterError(f"{what} {path} is not a readable safetensors file "
                           f"(localizer.checkpoint): {one_line(exc, 120)}") from None


def save_adapter(path: str | Path, heads: nn.ModuleList, meta: Mapping[str, object]) -> None:
    """Write heads + metadata as safetensors (atomically: a crash never leaves half a file)."""
    missing = [k for k in META_KEYS if k not in meta]
    if missing:
        raise ValueError(f"adapter metadata lacks {', '.join(missing)} (build it with adapter_meta(encoder))")
    strings = meta_strings(meta)
    strings["format"] = ADAPTER_FORMAT
    strings["num_heads"] = str(len(heads))
    tensors: dict[str, torch.Tensor] = {}
    for i, head in enumerate(cast(Sequence[nn.Linear], heads)):
        tensors[f"heads.{i}.weight"] = head.weight.detach().float().cpu().contiguous()
        if head.bias is not None:
            tensors[f"heads.{i}.bias"] = head.bias.detach().float().cpu().contiguous()
    write_checkpoint(path, tensors, strings)


def _differences(meta: Mapping[str, str], encoder: ClipEncoder) -> list[str]:
    here = adapter_meta(encoder)
    keys = {"clip_model": "clip.model", "image_size": "clip.image_size", "layers": "clip.layers",
            "width": "clip.model (width)", "embed_dim": "clip.model (embed dim)"}
    out = []
    for name, key in keys.items():
        if meta.get(name) != here[name]:
            out.append(f"{key} is {here[name]} here but {meta.get(name, '?')} in the checkpoint")
    return out


def load_adapter(path: str | Path, encoder: ClipEncoder) -> nn.ModuleList:
    """Heads from a safetensors checkpoint, checked against `encoder`; frozen, eval, on its device."""
    meta, tensors = read_checkpoint(path, "adapter checkpoint", "clip_adapter")
    path = Path(path).expanduser()
    if meta.get("format") != ADAPTER_FORMAT:
        raise AdapterMismatchError(f"adapter checkpoint {path} is not a clip_adapter checkpoint "
                                   f"(format {meta.get('format', 'missing')!r}); fix localizer.checkpoint")
    diffs = _differences(meta, encoder)
    n = len(encoder.layers)
    shapes_ok = all(
        tuple(tensors.get(f"heads.{i}.weight", torch.empty(0)).shape) == (encoder.embed_dim, encoder.width)
        for i in range(n)) and meta.get("num_heads") == str(n)
    if not diffs and not shapes_ok:
        diffs.append(f"head shapes differ from ({encoder.embed_dim}, {encoder.width}) x {n} layers")
    if diffs:
        raise AdapterMismatchError(
            f"adapter checkpoint {path} was trained for another CLIP: {'; '.join(diffs)}; set those keys to "
            f"the checkpoint's values or point localizer.checkpoint at heads trained for this CLIP")
    heads = nn.ModuleList()
    for i in range(n):
        bias = tensors.get(f"heads.{i}.bias")
        head = nn.Linear(encoder.width, encoder.embed_dim, bias=bias is not None)
        with torch.no_grad():
            head.weight.copy_(tensors[f"heads.{i}.weight"])
            if bias is not None:
                head.bias.copy_(bias)
        heads.append(head)
    return heads.to(encoder.device).eval().requires_grad_(False)


def head_probabilities(heads: nn.ModuleList, patch_tokens: Sequence[torch.Tensor], text: torch.Tensor,
                       temperature: float) -> torch.Tensor:
    """(L, ..., 2) per-layer normal/abnormal probabilities; differentiable w.r.t. the heads (for training)."""
    if len(heads) != len(patch_tokens):
        raise ValueError(f"{len(heads)} heads for {len(patch_tokens)} layers of tokens")
    probs = []
    for head, tokens in zip(cast(Sequence[nn.Linear], heads), patch_tokens):
        if tokens.shape[-1] != head.in_features:
            raise ValueError(f"adapter heads take {head.in_features}-dim residual tokens, got {tokens.shape[-1]} "
                             f"(encode frames with the adapter's encoder, token_path='residual')")
        mapped = torch.nn.functional.normalize(head(tokens.to(head.weight.dtype)), dim=-1)
        probs.append((mapped @ text.T / temperature).softmax(dim=-1))
    return torch.stack(probs)


class ClipAdapterLocalizer:
    """Anomaly map from trained linear heads on residual-path CLIP patch tokens.

    The pipeline must encode frames with `self.encoder` (token_path "residual");
    an encoder on the vv path is swapped for a residual view of the same model.
    """

    heads_name = "adapter heads"          # for the mismatch message; subclasses name theirs

    def __init__(self, encoder: ClipEncoder, heads: nn.ModuleList, cfg: LocalizerConfig,
                 object_name: str = "object", *, templates: Sequence[str] = TEMPLATES,
                 score_map_weight: float = 0.5):
        if encoder.token_path != "residual":
            encoder = encoder.with_token_path("residual")
        if len(heads) != len(encoder.layers):
            raise AdapterMismatchError(f"{len(heads)} {self.heads_name} for clip.layers={encoder.layers}; "
                                       f"set clip.layers to the checkpoint's layers (localizer.checkpoint)")
        self.encoder = encoder
        self.backbone = None      # CLIP features only
        self.heads = heads.to(encoder.device).eval().requires_grad_(False)
        self.cfg = cfg
        self.object_name = object_name
        self.score_map_weight = float(score_map_weight)
        self.text = state_text_embeddings(encoder, object_name, templates=templates)   # (2, D), once
        self.text_encodes = 1

    @classmethod
    def from_checkpoint(cls, encoder: ClipEncoder, cfg: LocalizerConfig, object_name: str = "object",
                        **kwargs) -> "ClipAdapterLocalizer":
        """Load `cfg.checkpoint` (localizer.checkpoint) for `encoder` and build the localizer."""
        if encoder.token_path != "residual":
            encoder = encoder.with_token_path("residual")
        return cls(encoder, cls.load_heads(cfg.checkpoint, encoder), cfg, object_name, **kwargs)

    @staticmethod
    def load_heads(path, encoder: ClipEncoder) -> nn.Module:
        return load_adapter(path, encoder)

    def probabilities(self, tokens: list[torch.Tensor], grid: tuple[int, int]) -> torch.Tensor:
        """(layers, Hp*Wp, 2) normal/abnormal probabilities from the heads."""
        return head_probabilities(self.heads, tokens, self.text, self.cfg.temperature)

    @torch.no_grad()
    def grid_map(self, clip: ClipFeatures) -> torch.Tensor:
        """(Hp, Wp) abnormal probability averaged over layers, before upsampling."""
        probs = self.probabilities([t.to(self.text.device) for t in clip.patch_tokens], clip.grid)
        return probs[..., 1].mean(dim=0).reshape(clip.grid)

    @torch.no_grad()
    def close(self) -> None:
        """Nothing is learnt while running: nothing to keep."""

    def __call__(self, clip: ClipFeatures | None, sam, image_size: tuple[int, int], *,
                 features=None, camera: int = 0) -> AnomalyEstimate:
        clip = clip_features(clip)
        return clip_estimate(self.grid_map(clip), clip, self.text, image_size, cfg=self.cfg,
                             score_map_weight=self.score_map_weight)
