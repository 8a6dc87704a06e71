"""What `clipsam-ros train` feeds on: (image, mask) samples and frozen-CLIP tokens with soft targets.

Samples: like the papers (APRIL-GAN, AnomalyCLIP, ClipSAM), heads are trained
on the TEST split of one dataset — the split with defect masks, good images
included with empty masks — and evaluated on another dataset. The dataset
layouts (mvtec, visa, synth) are read by `eval.datasets`, the same reader
`clipsam-ros eval` uses.

Tokens: CLIP is frozen, so its patch tokens of an image never change during
training. `TokenSource` computes them ONCE per image and keeps them in memory
(float16, on the CPU) for all epochs when they fit in ``train.cache_gb``;
otherwise it re-encodes the images of every batch, every epoch (slower, no
memory). ViT-L-14-336 at 518 px with 4 layers needs about 11 MB per image,
so MVTec-AD's 1725 test images take ~19 GB: raise `train.cache_gb` or accept
re-encoding. Targets are the masks resized to the CLIP input (the whole frame
resized to S×S, as CLIP sees it), kept as pixel coverage in 0..1.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm import tqdm

from ..data.datasets import Sample, load_dataset, read_mask
from ..imaging.files import read_rgb
from ..models.clip import ClipEncoder


def training_samples(root: str | Path, layout: str) -> list[Sample]:
    """Every test image (with its mask; None for good ones) of every class under `root`."""
    return [s for data in load_dataset(root, layout) for s in data.test]


def soft_target(mask: np.ndarray, size: int) -> np.ndarray:
    """The (H, W) bool mask as CLIP sees the frame, size×size float32 pixel coverage 0..1.

    Area resizing keeps thin defects (2-px scratches) as partial coverage instead of dropping them.
    """
    return cv2.resize(mask.astype(np.float32), (size, size), interpolation=cv2.INTER_AREA)


def cache_bytes(encoder: ClipEncoder, n_images: int) -> int:
    """Memory the token cache needs: float16 tokens of every layer plus float16 targets."""
    tokens = encoder.grid[0] * encoder.grid[1] * encoder.width * len(encoder.layers)
    return 2 * n_images * (tokens + encoder.image_size ** 2)


class TokenSource:
    """Residual-path CLIP tokens and soft targets for batches of sample indices (see module docstring)."""

    def __init__(self, encoder: ClipEncoder, samples: list[Sample], cache_gb: float, batch_size: int = 8,
                 progress: bool = True):
        if encoder.token_path != "residual":
            encoder = encoder.with_token_path("residual")
        self.encoder = encoder
        self.samples = samples
        self.cached = cache_bytes(encoder, len(samples)) <= cache_gb * 2 ** 30
        self.tokens: list[torch.Tensor] = []      # per layer (n, N, width) float16, when cached
        self.targets: torch.Tensor | None = None  # (n, S, S) float16, when cached
        if self.cached:
            self._fill(batch_size, progress)

    def __len__(self) -> int:
        return len(self.samples)

    def _load(self, indices: list[int]) -> tuple[list[torch.Tensor], torch.Tensor]:
        """CLIP (one pass for the batch) on the images; tokens per layer (B, N, width), targets (B, S, S)."""
        images, targets = [], []
        for i in indices:
            image = read_rgb(self.samples[i].image)
            images.append(image)
            targets.append(soft_target(read_mask(self.samples[i], image.shape[:2]), self.encoder.image_size))
        feats = self.encoder.encode_image_batch(images)
        tokens = [torch.stack([f.patch_tokens[k] for f in feats]) for k in range(len(self.encoder.layers))]
        return tokens, torch.from_numpy(np.stack(targets))

    def _fill(self, batch_size: int, progress: bool) -> None:
        chunks = [list(range(i, min(i + batch_size, len(self))))
                  for i in range(0, len(self), batch_size)]
        per_layer: list[list[torch.Tensor]] = [[] for _ in self.encoder.layers]
        targets = []
        for chunk in tqdm(chunks, desc="CLIP tokens (once, cached for all epochs)", unit="batch",
                          disable=not progress):
            tokens, target = self._load(chunk)
            for k, t in enumerate(tokens):
                per_layer[k].append(t.to("cpu", torch.float16))
            targets.append(target.to(torch.float16))
        self.tokens = [torch.cat(t) for t in per_layer]
        self.targets = torch.cat(targets)

    def batch(self, indices: list[int], device: torch.device) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Float32 tokens per layer (B, N, width) and targets (B, S, S) on `device`."""
        if self.cached:
            idx = torch.as_tensor(indices)
            tokens, targets = [t[idx] for t in self.tokens], self.targets[idx]
        else:
            tokens, targets = self._load(indices)
        return [t.to(device, torch.float32) for t in tokens], targets.to(device, torch.float32)
