"""CLIP through `open_clip`: build at any input size, encode once per frame.

`build_clip` makes a frozen open_clip ViT at `clip.image_size` (the positional
embedding is interpolated bicubically on its grid, the class-token position is
kept) and wraps it in a `ClipEncoder`. `ClipEncoder.encode_image` runs the
image tower ONCE per frame and returns, in `ClipFeatures`, the patch tokens of
the requested blocks (`clip.layers`, 1-based) plus the projected class token;
`calls` counts those forward passes so tests can check "CLIP ran once".

Patch tokens come from one of two paths (`token_path`, fixed per encoder):

``"vv"`` (default; the zero-shot localizer) — a training-free value-value
attention path, as in CLIP Surgery / AnomalyCLIP. Our exact reading:

* The original transformer runs unchanged: ``x_b = block_b(x_{b-1})``.
* From block ``s`` on (``vv_start``; default: the first requested layer) a
  parallel path is kept. For every block ``b >= s``::

      V      = ln_1(x_{b-1}) W_v + b_v          # values of the ORIGINAL path's input
      A_vv   = softmax(V_h V_h^T / sqrt(d_h))   # per head h, d_h = head width
      vv_b   = ls_1(out_proj(concat_h(A_vv V_h)))
      p_s    = x_{s-1} + vv_s                   # the path starts from the block input
      p_b    = p_{b-1} + vv_b   (b > s)         # residual, no MLP on this path

  (open_clip's own `Attention` also applies its head_scale / ln_inner and the
  block's ln_attn, when present, in the same places the normal branch does.)
* The patch tokens of requested layer ``b`` are ``ln_post(p_b) @ proj``: they
  live in the joint image-text space, so cosine with text embeddings works
  without any trained projection.

``"residual"`` (the trained adapter) — the normal residual stream after the
requested block, passed through ``ln_post`` only: raw (Hp*Wp, width) tokens,
NOT projected (the adapter's linear heads map width -> embed dim).

The class embedding is always the model's own pooled output of the full
original path (``ln_post`` + ``proj``), i.e. what `model.encode_image` gives.

Weights: `clip.pretrained` is an open_clip tag ("openai"), a local weight file,
or "none" (random init; identical compute, used by tests and benchmarks). A
tag that cannot be fetched (no network / model hub) raises `ClipLoadError`
instead of falling back silently.
"""
from __future__ import annotations

import hashlib
import logging
import os
import re
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..config import ClipConfig, Config
from ..errors import ClipsamError, one_line
from .accel import AccelSettings, HostStager, channels_last_input, encoder_autocast, maybe_compile, to_channels_last
from .backends import TORCH, CompiledNet, load_exported, resolve_backend, run_batched
from .export import ExportSpec, batch_axes
from .features import ClipFeatures

TOKEN_PATHS = ("vv", "residual")

# open_clip's defaults when a model carries no preprocess config
_OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
_OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


class ClipLoadError(ClipsamError, RuntimeError):
    """CLIP could not be built; str(exc) is ONE line naming the value, the config key and what to do."""


@contextmanager
def _quiet_logging() -> Iterator[None]:
    # open_clip / huggingface_hub log failures at ERROR on the root logger; our
    # ClipLoadError already says it in one line, and the CLI promises one line.
    previous = logging.root.manager.disable
    logging.disable(logging.ERROR)
    try:
        yield
    finally:
        logging.disable(previous)


def interpolate_pos_embed(pos_embed: torch.Tensor, old_grid: tuple[int, int],
                          new_grid: tuple[int, int]) -> torch.Tensor:
    """Resize a ViT positional embedding (1 + Gh*Gw, C) to a new patch grid.

    Bicubic on the 2-D grid (antialiased when shrinking, as open_clip's own
    `resize_pos_embed`), the class-token row kept as is. Same grid -> the input
    values unchanged (a copy).
    """
    if tuple(old_grid) == tuple(new_grid):
        return pos_embed.detach().clone()
    n_old = old_grid[0] * old_grid[1]
    extra = pos_embed.shape[0] - n_old
    if extra < 0:
        raise ValueError(f"positional embedding has {pos_embed.shape[0]} rows, fewer than the grid {old_grid}")
    prefix, grid = pos_embed[:extra], pos_embed[extra:]
    dtype = pos_embed.dtype
    grid = grid.float().reshape(1, old_grid[0], old_grid[1], -1).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=tuple(new_grid), mode="bicubic", align_corners=False, antialias=True)
    grid = grid.permute(0, 2, 3, 1).reshape(new_grid[0] * new_grid[1], -1).to(dtype)
    return torch.cat([prefix.detach(), grid], dim=0)


def set_input_size(visual: nn.Module, image_size: int) -> None:
    """Make an open_clip VisionTransformer run at image_size x image_size."""
    patch = tuple(visual.patch_size) if isinstance(visual.patch_size, (tuple, list)) else (visual.patch_size,) * 2
    old_grid = tuple(visual.grid_size)
    new_grid = (image_size // patch[0], image_size // patch[1])
    pos = interpolate_pos_embed(visual.positional_embedding.data, old_grid, new_grid)
    visual.positional_embedding = nn.Parameter(pos, requires_grad=False)
    visual.image_size = (image_size, image_size)
    visual.grid_size = new_grid
    # open_clip reads preprocess_cfg["size"] when it builds transforms; keep it honest
    if isinstance(getattr(visual, "preprocess_cfg", None), dict):
        visual.preprocess_cfg["size"] = (image_size, image_size)


def _resolve_pretrained(cfg: ClipConfig, pretrained_file: Path | None) -> tuple[str | None, bool]:
    """(value for open_clip's `pretrained`, whether it is a tag)."""
    if pretrained_file is not None:
        path = Path(pretrained_file).expanduser()
        if not path.is_file():
            raise ClipLoadError(f"CLIP weight file {path} does not exist (clip.pretrained); "
                                f"give an existing file, an open_clip tag, or none")
        return str(path), False
    value = (cfg.pretrained or "").strip()
    if value.lower() in ("", "none", "null", "random"):
        return None, False
    if value.startswith("file://"):
        value = value[len("file://"):]
    path = Path(value).expanduser()
    looks_like_path = (os.sep in value or value.startswith("~")
                       or path.suffix in (".pt", ".pth", ".bin", ".safetensors", ".npz", ".ckpt"))
    if path.is_file():
        return str(path), False
    if looks_like_path:
        raise ClipLoadError(f"clip.pretrained={cfg.pretrained!r}: no such file; give an existing weight file, "
                            f"an open_clip tag (e.g. openai), or none (random init)")
    return value, True


def build_clip(cfg: ClipConfig, device: torch.device, *, pretrained_file: Path | None = None,
               precision: str = "fp32", token_path: str = "vv", vv_start: int | None = None,
               cache_dir: str | None = None, accel: AccelSettings = AccelSettings()) -> "ClipEncoder":
    """Build a frozen CLIP for `cfg` on `device`.

    `pretrained_file` (a resolved local file, e.g. from `models.weights`)
    overrides `cfg.pretrained`. `precision` fp16/bf16 runs the encoders under
    autocast on CUDA (weights stay fp32). `token_path` / `vv_start`: see the
    module docstring. `cache_dir` is where open_clip keeps downloaded tags.
    `accel`: channels-last, pinned copies, torch.compile (see `models.accel`);
    open_clip's attention already runs through sdpa.
    """
    import open_clip  # heavy import; only when CLIP is really built
    from open_clip.pretrained import get_pretrained_cfg, list_pretrained_tags_by_model

    if token_path not in TOKEN_PATHS:
        raise ValueError(f"token_path={token_path!r} (choose one of: {', '.join(TOKEN_PATHS)})")
    # schema names (hf-hub:, local-dir:) carry their own config; built-in names must exist
    if ":" not in cfg.model and cfg.model not in open_clip.list_models():
        raise ClipLoadError(f"clip.model={cfg.model!r} is not an open_clip model (e.g. ViT-L-14-336, ViT-B-16)")
    pretrained, is_tag = _resolve_pretrained(cfg, pretrained_file)

    kwargs: dict = {}
    if is_tag:
        tag_cfg = get_pretrained_cfg(cfg.model, pretrained)
        if not tag_cfg:
            tags = ", ".join(list_pretrained_tags_by_model(cfg.model)) or "none known"
            raise ClipLoadError(f"clip.pretrained={pretrained!r} is not a tag of {cfg.model} (tags: {tags}); "
                                f"give a tag, a local weight file, or none")
        # OpenAI weights were trained with QuickGELU; the plain model name uses GELU,
        # which silently degrades every feature. Follow the tag.
        if tag_cfg.get("quick_gelu", False) and "quickgelu" not in cfg.model.lower():
            kwargs["force_quick_gelu"] = True
    if cache_dir:
        kwargs["cache_dir"] = cache_dir

    try:
        with _quiet_logging():
            model, _, _ = open_clip.create_model_and_transforms(cfg.model, pretrained=pretrained, **kwargs)
    except Exception as exc:  # open_clip raises RuntimeError / OSError / hub errors alike
        if is_tag:
            raise ClipLoadError(
                f"clip.pretrained={pretrained!r}: the weights for {cfg.model} could not be obtained "
                f"(no network or model hub? {one_line(exc, 100)}); set clip.pretrained to a local "
                f"weight file or none") from None
        if pretrained is not None:
            raise ClipLoadError(f"clip.pretrained={pretrained}: not loadable as {cfg.model} weights "
                                f"({one_line(exc, 100)}); check clip.model matches the file") from None
        raise ClipLoadError(f"clip.model={cfg.model!r} could not be built: {one_line(exc, 160)}") from None

    visual = model.visual
    if not hasattr(visual, "transformer") or not hasattr(visual, "positional_embedding"):
        raise ClipLoadError(f"clip.model={cfg.model!r} has no open_clip ViT image tower (timm / ResNet towers "
                            f"are not supported); use a ViT model such as ViT-L-14-336")
    if getattr(visual, "attn_pool", None) is not None or getattr(visual, "proj", None) is None:
        raise ClipLoadError(f"clip.model={cfg.model!r} pools with attention or has no projection; "
                            f"use a plain CLIP ViT such as ViT-L-14-336")
    depth = len(visual.transformer.resblocks)
    layers = [int(v) for v in cfg.layers]
    if not layers or min(layers) < 1 or max(layers) > depth:
        raise ClipLoadError(f"clip.layers={layers} does not fit {cfg.model}, which has blocks 1..{depth}")
    patch = visual.patch_size[0] if isinstance(visual.patch_size, (tuple, list)) else visual.patch_size
    if cfg.image_size < patch:
        raise ClipLoadError(f"clip.image_size={cfg.image_size} is smaller than one {patch} px patch")

    set_input_size(visual, int(cfg.image_size))
    model.eval().requires_grad_(False).to(device)

    pp = getattr(visual, "preprocess_cfg", None) or {}
    mean = tuple(pp.get("mean", _OPENAI_MEAN))
    std = tuple(pp.get("std", _OPENAI_STD))
    tokenizer = open_clip.get_tokenizer(cfg.model)
    return ClipEncoder(model, tokenizer, model_name=cfg.model, image_size=int(cfg.image_size), layers=layers,
                       mean=mean, std=std, device=device, precision=precision,
                       token_path=token_path, vv_start=vv_start, accel=accel)


class ClipEncoder:
    """A frozen open_clip model with a counted, one-pass image encoder."""

    def __init__(self, model: nn.Module, tokenizer, *, model_name: str, image_size: int, layers: Sequence[int],
                 mean: Sequence[float], std: Sequence[float], device: torch.device, precision: str = "fp32",
                 token_path: str = "vv", vv_start: int | None = None, accel: AccelSettings = AccelSettings()):
        if token_path not in TOKEN_PATHS:
            raise ValueError(f"token_path={token_path!r} (choose one of: {', '.join(TOKEN_PATHS)})")
        self.model = model
        self.tokenizer = tokenizer
        self.model_name = model_name
        self.image_size = int(image_size)
        self.layers = [int(v) for v in layers]
        self.device = torch.device(device)
        self.precision = precision
        self.token_path = token_path
        self.vv_start = int(vv_start) if vv_start is not None else min(self.layers)
        if not 1 <= self.vv_start <= min(self.layers):
            raise ValueError(f"vv_start={self.vv_start} must be 1..{min(self.layers)} (the first requested layer)")
        self.mean = torch.tensor(mean, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        self.calls = 0           # image-encoder forward passes (a batch is one pass)
        self.images_encoded = 0  # frames through the image encoder
        self.text_calls = 0      # encode_text calls
        self.accel = accel
        if accel.channels_last:
            to_channels_last(self.visual)      # the patch-embedding convolution
        self._stager = HostStager(self.device, accel.pinned_memory)
        self._compiled_forward = maybe_compile(self._forward, accel.compile)
        # the image tower exported for runtime.backend (see `on_backend`); None = torch, as built.
        # Not shared by `with_token_path`: the other path is another graph
        self.encoder_net: CompiledNet | None = None

    # ------------------------------------------------------------------ geometry
    @property
    def visual(self) -> nn.Module:
        return self.model.visual

    @property
    def grid(self) -> tuple[int, int]:
        return tuple(int(g) for g in self.visual.grid_size)

    @property
    def width(self) -> int:
        """Transformer width: the size of residual-path tokens."""
        return int(self.visual.positional_embedding.shape[-1])

    @property
    def embed_dim(self) -> int:
        """Joint image-text space: the size of vv-path tokens and text embeddings."""
        return int(self.visual.proj.shape[-1])

    @property
    def encoder_calls(self) -> int:
        """Alias of `calls`, named like `SamModel.encoder_calls`."""
        return self.calls

    def with_token_path(self, token_path: str) -> "ClipEncoder":
        """Another encoder on the SAME model (no copy) that returns the other token path; own counters."""
        return ClipEncoder(self.model, self.tokenizer, model_name=self.model_name, image_size=self.image_size,
                           layers=self.layers, mean=self.mean.flatten().tolist(), std=self.std.flatten().tolist(),
                           device=self.device, precision=self.precision, token_path=token_path,
                           vv_start=self.vv_start, accel=self.accel)

    # ------------------------------------------------------------------ text
    @torch.no_grad()
    def encode_text(self, texts: list[str], batch_size: int = 128) -> torch.Tensor:
        """L2-normalised text embeddings, (N, embed_dim) float32."""
        self.text_calls += 1
        out = []
        for i in range(0, len(texts), batch_size):
            tokens = self.tokenizer(list(texts[i:i + batch_size])).to(self.device)
            with encoder_autocast(self.precision, self.device):
                emb = _encode_text_trimmed(self.model, tokens)
            out.append(F.normalize(emb.float(), dim=-1))
        return torch.cat(out, dim=0)

    # ------------------------------------------------------------------ image
    def preprocess(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        """RGB uint8 frames -> (B, 3, S, S) normalised; the whole frame is resized (no crop)."""
        batch = []
        for image in images:
            image = np.asarray(image)
            if image.ndim == 2:
                image = np.repeat(image[..., None], 3, axis=2)
            if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
                raise ValueError(f"CLIP expects an RGB uint8 HxWx3 image, got {image.dtype} {image.shape}")
            x = self._stager.to_device(image).permute(2, 0, 1)[None].float()
            x = F.interpolate(x / 255.0, size=(self.image_size, self.image_size), mode="bicubic",
                              align_corners=False, antialias=True).clamp_(0.0, 1.0)
            batch.append(x)
        return (torch.cat(batch, dim=0) - self.mean) / self.std

    def encode_image(self, image_rgb: np.ndarray) -> ClipFeatures:
        """One forward pass on one frame: patch tokens of `layers` and the class embedding."""
        return self.encode_image_batch([image_rgb])[0]

    @torch.no_grad()
    def encode_image_batch(self, images: Sequence[np.ndarray]) -> list[ClipFeatures]:
        """One forward pass for a batch of frames (counts as ONE call)."""
        if len(images) == 0:
            return []
        pixels = channels_last_input(self.preprocess(images), self.accel.channels_last)
        passes = 1
        if self.encoder_net is not None:
            outs, passes = run_batched(self.encoder_net, pixels)
            tokens, pooled = list(outs[:-1]), outs[-1]
        else:
            with encoder_autocast(self.precision, self.device):
                tokens, pooled = self._compiled_forward(pixels)
        self.calls += passes
        self.images_encoded += len(images)
        grid = self.grid
        return [ClipFeatures(patch_tokens=[t[i].float() for t in tokens], grid=grid,
                             image_embedding=pooled[i].float())
                for i in range(len(images))]

    def _forward(self, pixels: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """(per requested layer (B, Hp*Wp, C), pooled (B, embed_dim)); ONE pass of the image tower."""
        visual = self.visual
        x = self._embed(pixels)
        wanted = {layer - 1: k for k, layer in enumerate(self.layers)}
        collected: list[torch.Tensor | None] = [None] * len(self.layers)
        start = self.vv_start - 1
        path: torch.Tensor | None = None
        for i, block in enumerate(visual.transformer.resblocks):
            if self.token_path == "vv" and i >= start:
                branch = _vv_branch(block, x)
                path = (x if path is None else path) + branch
            x = _run_block(block, x)
            if i in wanted:
                source = path if self.token_path == "vv" else x
                collected[wanted[i]] = source[:, 1:]
        out = []
        for t in collected:
            t = visual.ln_post(t)
            out.append(t @ visual.proj if self.token_path == "vv" else t)
        if hasattr(visual, "_pool"):
            pooled, _ = visual._pool(x)
        else:
            pooled = visual.ln_post(x[:, 0])
        return out, pooled @ visual.proj

    def export_spec(self) -> ExportSpec:
        """The image tower as exported: (B, 3, S, S) normalised -> each requested layer's patch
        tokens (B, Hp*Wp, C), then the pooled embedding (B, D); B free. Its source is a digest
        of the tower's weights (a tag's file, a local file and a seeded random init alike)."""
        outputs = (*(f"layer{layer}" for layer in self.layers), "pooled")
        name = re.sub(r"[^A-Za-z0-9_.-]", "_", self.model_name)
        return ExportSpec(network=f"clip_image_encoder_{name}_{self.token_path}", module=ClipTower(self),
                          sample=torch.zeros(2, 3, self.image_size, self.image_size, device=self.device),
                          source_sha256=state_digest(self.visual),
                          config={"clip.model": self.model_name, "clip.image_size": self.image_size,
                                  "clip.layers": list(self.layers), "token_path": self.token_path,
                                  "vv_start": self.vv_start},
                          output_names=outputs, dynamic_axes=batch_axes(("pixels",), outputs))

    def _embed(self, pixels: torch.Tensor) -> torch.Tensor:
        # open_clip's VisionTransformer._embeds, spelled out (patch dropout is off in eval)
        visual = self.visual
        pixels = pixels.to(visual.conv1.weight.dtype)
        x = visual.conv1(pixels)
        x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)
        cls = visual.class_embedding.to(x.dtype).view(1, 1, -1).expand(x.shape[0], -1, -1)
        x = torch.cat([cls, x], dim=1) + visual.positional_embedding.to(x.dtype)
        return visual.ln_pre(x)


class ClipTower(nn.Module):
    """`ClipEncoder._forward` as a module a graph exporter takes: pixels -> (tokens..., pooled)."""

    def __init__(self, encoder: ClipEncoder):
        super().__init__()
        self.visual = encoder.visual          # registers the weights the graph folds in
        self._encoder = encoder

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, ...]:
        tokens, pooled = self._encoder._forward(pixels)
        return (*tokens, pooled)


def state_digest(module: nn.Module) -> str:
    """sha256 over a module's parameters and buffers (names, shapes, bytes), in order."""
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        digest.update(f"{name}{tuple(tensor.shape)}{tensor.dtype}".encode())
        digest.update(tensor.detach().to("cpu").contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def on_backend(encoder: ClipEncoder, cfg: Config) -> ClipEncoder:
    """`encoder` with its image tower on `runtime.backend`, exported and cached like SAM's networks
    (the text tower stays in torch: it runs once per process). Returns `encoder`."""
    choice = resolve_backend(cfg.runtime.backend, cfg.precision, encoder.device)
    if choice.backend != TORCH:
        encoder.encoder_net = load_exported(encoder.export_spec(), choice, cfg, encoder.device)
    return encoder


def _encode_text_trimmed(model: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """`model.encode_text`, but only over the used context (exact for causal text towers).

    With a causal mask, the pooled end-of-text token never sees the padding
    after it, so cutting the 77-token context to the longest prompt gives the
    same embedding at a fraction of the cost (~4x for CLIP prompt ensembles,
    which matters on a CPU at start-up). Anything else takes open_clip's path.
    """
    mask = getattr(model, "attn_mask", None)
    fast = (all(hasattr(model, n) for n in ("token_embedding", "positional_embedding", "transformer", "ln_final"))
            and getattr(model, "text_pool_type", None) in ("argmax", "eos")
            and isinstance(mask, torch.Tensor) and mask.dim() == 2)
    if fast:
        upper = torch.triu(torch.ones_like(mask, dtype=torch.bool), diagonal=1)
        fast = bool(torch.isinf(mask[upper]).all()) and bool((mask[~upper] == 0).all())
    if not fast:
        return model.encode_text(tokens)
    used = int((tokens != 0).nonzero()[:, 1].max().item()) + 1 if bool((tokens != 0).any()) else 1
    tokens = tokens[:, :used]
    cast_dtype = model.transformer.get_cast_dtype()
    x = model.token_embedding(tokens).to(cast_dtype) + model.positional_embedding[:used].to(cast_dtype)
    x = model.transformer(x, attn_mask=model.attn_mask[:used, :used])
    x = model.ln_final(x)
    if model.text_pool_type == "argmax":
        idx = tokens.argmax(dim=-1)
    else:
        idx = (tokens == model.text_eos_id).int().argmax(dim=-1)
    x = x[torch.arange(x.shape[0], device=x.device), idx]
    proj = model.text_projection
    if proj is None:
        return x
    return proj(x) if isinstance(proj, nn.Linear) else x @ proj


def _run_block(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The unchanged original block on batch-first x (transposing for seq-first MHA)."""
    attn = block.attn
    if isinstance(attn, nn.MultiheadAttention) and not attn.batch_first:
        return block(x.transpose(0, 1)).transpose(0, 1)
    return block(x)


def _vv_branch(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """ls_1(out_proj(softmax(scale V V^T) V)) with V from ln_1(x) of the original path; batch-first."""
    attn = block.attn
    h = block.ln_1(x)
    if isinstance(attn, nn.MultiheadAttention):
        dim, heads = attn.embed_dim, attn.num_heads
        weight = attn.in_proj_weight[2 * dim:] if attn.in_proj_weight is not None else attn.v_proj_weight
        bias = attn.in_proj_bias[2 * dim:] if attn.in_proj_bias is not None else None
        out = attn.out_proj(_vv_attend(F.linear(h, weight, bias), heads))
    elif hasattr(attn, "in_proj_weight") and hasattr(attn, "num_heads"):  # open_clip Attention
        dim, heads = attn.in_proj_weight.shape[1], attn.num_heads
        bias = attn.in_proj_bias[2 * dim:] if attn.in_proj_bias is not None else None
        out = _vv_attend(F.linear(h, attn.in_proj_weight[2 * dim:], bias), heads,
                         head_scale=getattr(attn, "head_scale", None))
        out = attn.out_proj(attn.ln_inner(out))
        if hasattr(block, "ln_attn"):
            out = block.ln_attn(out)
    else:
        raise TypeError(f"unsupported attention module {type(attn).__name__} for the vv path")
    return block.ls_1(out)


def _vv_attend(v: torch.Tensor, heads: int, head_scale: torch.Tensor | None = None) -> torch.Tensor:
    """Per-head softmax(V V^T / sqrt(d_h)) V on (B, L, C) -> (B, L, C)."""
    b, n, c = v.shape
    v = v.reshape(b, n, heads, c // heads).transpose(1, 2)        # (B, h, L, d_h)
    # sdpa's default scale is 1/sqrt(d_h): exactly the block's own attention scale
    out = F.scaled_dot_product_attention(v, v, v)
    if head_scale is not None:
        out = out * head_scale
    return out.transpose(1, 2).reshape(b, n, c)


__all__ = ["ClipLoadError", "ClipEncoder", "ClipTower", "build_clip", "interpolate_pos_embed", "on_backend",
           "set_input_size", "state_digest", "TOKEN_PATHS"]
