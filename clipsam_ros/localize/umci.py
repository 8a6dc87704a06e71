"""UMCI: Unified Multi-scale Cross-modal Interaction (ClipSAM, Li et al.) — our open reading.

The paper describes UMCI in words only: text features interact with CLIP's
patch features along rows, columns and pixels, at several scales, to reason
where the anomaly is; trainable heads on a frozen CLIP. No code is public, so
every choice below is ours; docs/CLIPSAM.md has the same list.

Inputs per frame (all from ONE pass of the frozen CLIP, `token_path="residual"`
as for the adapter): the residual-stream patch tokens of each layer in
`clip.layers`, after ``ln_post``, shape (Hp·Wp, width); and the (2, D) normal /
abnormal text embeddings of the zero-shot prompt ensemble (computed once).

One `UmciBlock` per layer ("unified multi-scale": the layers are CLIP's scales,
shallow blocks see texture, deep ones semantics):

1. ``V = proj(tokens)``: a Linear(width, D) into the joint image-text space
   (the adapter's head), reshaped to the (Hp, Wp, D) grid.
2. Cross-attention from visual queries to the text: keys ``K = text·W_k``
   (D → a, a = `attn_dim`, 128), values ``T = text·W_v`` (D → D), one query
   projection (D → a) per path; ``attend(Q) = softmax(Q K^T / √a) T``.
   The paths (the paper's strip path and scale path):

   * row:    Q from V averaged over columns, (Hp, a) — one query per row;
     its answer is broadcast along that row;
   * column: Q from V averaged over rows, (Wp, a) — broadcast down the column.
     Rows and columns catch strip-like defects (scratches, cracks) and give
     each patch the context of its whole row / column;
   * pixel, at each scale s in `scales` (default 1 and 3): Q from V
     average-pooled over an s×s neighbourhood (stride 1, borders averaged
     over the valid cells only), one answer per patch.
3. ``V' = V + Σ_path g_path ⊙ attend_path``, with a learned gate vector g per
   path initialised to ZERO: an untrained UMCI block is exactly an adapter
   head, and training opens the interactions only as far as they help.
4. Per layer, ``softmax(normalise(V') @ text^T / temperature)`` gives the
   normal / abnormal probability per patch (as the adapter); the layers'
   abnormal probabilities are averaged, upsampled bilinearly to the frame,
   blurred (``localizer.sigma``) and clipped: `clip_zero_shot.finish_map`.

Image score: as the adapter (the class-token zero-shot probability blended
with the map maximum, `clip_zero_shot.blend_score`).

Trained with `clipsam-ros train` (focal + dice on the upsampled maps, Adam,
frozen CLIP), exactly like the adapter heads.

Checkpoints: safetensors (no pickle), tensors ``umci.<state_dict key>``, and
string metadata: the adapter's (`clip_adapter.adapter_meta`: clip_model,
image_size, layers, width, embed_dim) plus ``method=umci``, ``attn_dim``,
``scales`` and ``format``. The architecture is rebuilt from the metadata, and
loading into a different CLIP is refused with the adapter's one-line
`AdapterMismatchError` naming the config keys that differ.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import one_line
from ..models.clip import ClipEncoder
from .clip_adapter import (
    ADAPTER_FORMAT,
    META_KEYS,
    AdapterMismatchError,
    ClipAdapterLocalizer,
    _differences,
    adapter_meta,
    meta_strings,
    read_checkpoint,
    write_checkpoint,
)

UMCI_FORMAT = "clipsam_ros.umci/1"
FORMATS = {ADAPTER_FORMAT: "clip_adapter", UMCI_FORMAT: "umci"}
DEFAULT_ATTN_DIM = 128
DEFAULT_SCALES = (1, 3)


class UmciBlock(nn.Module):
    """One layer's interaction: project, attend to the text along rows, columns and pixels, gate."""

    def __init__(self, width: int, dim: int, attn_dim: int = DEFAULT_ATTN_DIM,
                 scales: Sequence[int] = DEFAULT_SCALES):
        super().__init__()
        if not scales or any(s < 1 or s % 2 == 0 for s in scales):
            raise ValueError(f"UMCI scales={list(scales)} must be odd pooling sizes >= 1 (e.g. 1,3)")
        self.scales = tuple(int(s) for s in scales)
        self.attn_dim = int(attn_dim)
        self.proj = nn.Linear(width, dim)
        self.key = nn.Linear(dim, attn_dim, bias=False)
        self.value = nn.Linear(dim, dim, bias=False)
        paths = ["row", "col"] + [f"pixel{s}" for s in self.scales]
        self.queries = nn.ModuleDict({p: nn.Linear(dim, attn_dim, bias=False) for p in paths})
        self.gates = nn.ParameterDict({p: nn.Parameter(torch.zeros(dim)) for p in paths})

    def forward(self, tokens: torch.Tensor, grid: tuple[int, int], text: torch.Tensor) -> torch.Tensor:
        """(B, Hp·Wp, width) tokens, (T, D) text → (B, Hp·Wp, D) text-aware features."""
        b, n, _ = tokens.shape
        hp, wp = grid
        if hp * wp != n:
            raise ValueError(f"{n} patch tokens do not fill the {hp}x{wp} grid")
        v = self.proj(tokens).reshape(b, hp, wp, -1)
        keys, values = self.key(text), self.value(text)

        def attend(path: str, feats: torch.Tensor) -> torch.Tensor:
            weights = (self.queries[path](feats) @ keys.T / math.sqrt(self.attn_dim)).softmax(dim=-1)
            return self.gates[path] * (weights @ values)

        out = v + attend("row", v.mean(dim=2))[:, :, None, :] + attend("col", v.mean(dim=1))[:, None, :, :]
        for s in self.scales:
            pooled = v
            if s > 1:
                pooled = F.avg_pool2d(v.permute(0, 3, 1, 2), s, stride=1, padding=s // 2,
                                      count_include_pad=False).permute(0, 2, 3, 1)
            out = out + attend(f"pixel{s}", pooled)
        return out.reshape(b, n, -1)


class UmciHeads(nn.Module):
    """One `UmciBlock` per CLIP layer; `forward` gives per-layer normal/abnormal probabilities."""

    def __init__(self, width: int, dim: int, n_layers: int, attn_dim: int = DEFAULT_ATTN_DIM,
                 scales: Sequence[int] = DEFAULT_SCALES):
        super().__init__()
        self.width, self.dim, self.attn_dim, self.scales = int(width), int(dim), int(attn_dim), tuple(scales)
        self.blocks = nn.ModuleList(UmciBlock(width, dim, attn_dim, scales) for _ in range(n_layers))

    def __len__(self) -> int:
        return len(self.blocks)

    def forward(self, patch_tokens: Sequence[torch.Tensor], grid: tuple[int, int], text: torch.Tensor,
                temperature: float) -> torch.Tensor:
        """(L, [B,] N, 2) probabilities for per-layer tokens of shape ([B,] N, width); differentiable."""
        if len(patch_tokens) != len(self.blocks):
            raise ValueError(f"{len(self.blocks)} UMCI blocks for {len(patch_tokens)} layers of tokens")
        probs = []
        for block, tokens in zip(self.blocks, patch_tokens):
            if tokens.shape[-1] != self.width:
                raise ValueError(f"UMCI takes {self.width}-dim residual tokens, got {tokens.shape[-1]} "
                                 f"(encode frames with token_path='residual')")
            single = tokens.dim() == 2
            feats = block(tokens[None] if single else tokens, grid, text)
            p = (F.normalize(feats, dim=-1) @ text.T / temperature).softmax(dim=-1)
            probs.append(p[0] if single else p)
        return torch.stack(probs)


def make_umci(encoder: ClipEncoder, attn_dim: int = DEFAULT_ATTN_DIM,
              scales: Sequence[int] = DEFAULT_SCALES) -> UmciHeads:
    """Fresh (untrained) UMCI heads for `encoder`, on its device."""
    return UmciHeads(encoder.width, encoder.embed_dim, len(encoder.layers), attn_dim, scales).to(encoder.device)


def umci_meta(encoder: ClipEncoder, heads: UmciHeads) -> dict[str, str]:
    """The adapter's CLIP metadata plus what rebuilds the UMCI architecture."""
    return adapter_meta(encoder) | {"method": "umci", "attn_dim": str(heads.attn_dim),
                                    "scales": ",".join(str(s) for s in heads.scales)}


def checkpoint_method(path: str | Path) -> str | None:
    """"clip_adapter" / "umci" from a checkpoint's format, None if unreadable or neither."""
    from safetensors import safe_open

    try:
        with safe_open(str(Path(path).expanduser()), framework="pt", device="cpu") as f:
            return FORMATS.get((f.metadata() or {}).get("format", ""))
    except Exception:
        return None


def save_umci(path: str | Path, heads: UmciHeads, meta: Mapping[str, object]) -> None:
    """Write UMCI heads + metadata as safetensors, atomically (a crash never leaves half a file)."""
    missing = [k for k in META_KEYS if k not in meta]
    if missing:
        raise ValueError(f"UMCI metadata lacks {', '.join(missing)} (build it with umci_meta(encoder, heads))")
    strings = meta_strings(meta)
    strings.update(format=UMCI_FORMAT, method="umci", attn_dim=str(heads.attn_dim),
                   scales=",".join(str(s) for s in heads.scales), num_heads=str(len(heads)))
    tensors = {f"umci.{k}": v.detach().float().cpu().contiguous() for k, v in heads.state_dict().items()}
    write_checkpoint(path, tensors, strings)


def load_umci(path: str | Path, encoder: ClipEncoder) -> UmciHeads:
    """UMCI heads from a safetensors checkpoint, checked against `encoder`; frozen, eval, on its device."""
    meta, tensors = read_checkpoint(path, "UMCI checkpoint", "umci")
    path = Path(path).expanduser()
    fmt = meta.get("format")
    if fmt != UMCI_FORMAT:
        other = FORMATS.get(fmt or "")
        hint = f"it holds {other} heads: set localizer.method={other}" if other else "fix localizer.checkpoint"
        raise AdapterMismatchError(f"checkpoint {path} is not a umci checkpoint (format {fmt or 'missing'!r}); "
                                   f"{hint}")
    diffs = _differences(meta, encoder)
    if diffs:
        raise AdapterMismatchError(
            f"UMCI checkpoint {path} was trained for another CLIP: {'; '.join(diffs)}; set those keys to "
            f"the checkpoint's values or point localizer.checkpoint at heads trained for this CLIP")
    try:
        heads = UmciHeads(encoder.width, encoder.embed_dim, len(encoder.layers), int(meta["attn_dim"]),
                          [int(s) for s in meta["scales"].split(",")])
        state = {k[len("umci."):]: v for k, v in tensors.items() if k.startswith("umci.")}
        heads.load_state_dict(state, strict=True)
    except (KeyError, ValueError, RuntimeError) as exc:
        raise AdapterMismatchError(f"UMCI checkpoint {path} does not fit this CLIP's heads "
                                   f"({one_line(exc, 120)}); point localizer.checkpoint at "
                                   f"heads trained for clip.model={encoder.model_name}") from None
    return heads.to(encoder.device).eval().requires_grad_(False)


class UmciLocalizer(ClipAdapterLocalizer):
    """Anomaly map from trained UMCI heads on residual-path CLIP patch tokens.

    Everything but the heads is the adapter localizer's: the same encoder
    handling, text embeddings (once), map finishing and image score.
    """

    heads_name = "UMCI blocks"

    @staticmethod
    def load_heads(path, encoder: ClipEncoder) -> nn.Module:
        return load_umci(path, encoder)

    def probabilities(self, tokens: list[torch.Tensor], grid: tuple[int, int]) -> torch.Tensor:
        return self.heads(tokens, grid, self.text, self.cfg.temperature)
