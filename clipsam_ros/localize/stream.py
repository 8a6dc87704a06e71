"""Stream localizer (zero-shot, beyond the papers): "normal" learnt from the parts going by.

No reference folder, no text, no training. Each camera keeps a rolling memory of the
patch grids (`localizer.backbone` features, as the reference bank uses) of its last
`localizer.window` frames. A frame's patch is compared with each remembered frame
(nearest patch, position-restricted by `localizer.spatial_radius` as for the bank),
giving one distance per frame; its score is the `localizer.stream_quantile` quantile
of those (about the 30 % smallest), so a defect that went by in a few recent parts
still finds no close match in most frames and stays anomalous (MuSc's mutual scoring,
made causal for a stream).

Calibration on the fly: every frame that enters the memory carries its own 99.5th
percentile score; the median of those over the memory is `normal_distance`, and the
map is score / (normal_distance · `localizer.distance_scale`), clipped to 0..1, so
θ = 0.5 means the same as for the reference bank whatever the product.

Until a camera's memory holds `localizer.warmup_frames` frames its frames raise
`StreamWarmUp` (the Inspector answers verdict "error", reject true), unless
`localizer.reference_dir` seeded the memory. With `localizer.stream_skip_defective`
a frame whose map reaches `refiner.threshold` stays out of the memory. With
`localizer.memory` the memories are restored from that file at start and saved to it
every `warmup_frames` learnt frames and on `save()`. While `learning` is off (the
Inspector's warm-up) nothing enters the memory.
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from ..config import LocalizerConfig, RefinerConfig
from ..errors import ClipsamError
from ..models.backbone import PADDING, BackboneFeatures, BackboneModel
from ..models.features import ClipFeatures, SamEmbedding
from .base import AnomalyEstimate
from .reference import estimate_of, grid_positions, patch_grid, stale_padding

_QUANTILE = 0.995


class StreamWarmUp(ClipsamError, RuntimeError):
    """A frame the stream memory is too young to judge (fail-safe: verdict error)."""


class MemoryFileError(ClipsamError, RuntimeError):
    """A stream memory file that cannot be used; the message is one line."""


@dataclass
class Remembered:
    grid: torch.Tensor        # (rows, cols, C) normalised patch features
    level: float              # the frame's own 99.5th percentile score when it entered (nan: not yet)


def per_frame_distances(query: torch.Tensor, frames: torch.Tensor, radius: int, chunk: int = 512) -> torch.Tensor:
    """(W, rows, cols): each query patch's cosine distance to its nearest patch in each of the
    W frames (rows, cols, C) — within `radius` cells when the grids line up (-1: anywhere)."""
    n, rows, cols, channels = frames.shape
    flat = query.reshape(-1, channels)
    bank = frames.reshape(n, -1, channels)
    far = None
    if radius >= 0 and tuple(query.shape[:2]) == (rows, cols):
        where = grid_positions(rows, cols, query.device)
        far = (where[:, None, :] - where[None, :, :]).abs().amax(-1) > radius
    out = []
    for start in range(0, len(flat), chunk):
        sim = torch.einsum("qc,nmc->qnm", flat[start:start + chunk], bank)
        if far is not None:
            sim = sim.masked_fill(far[start:start + chunk, None, :], -2.0)
        out.append(1.0 - sim.amax(dim=2))
    return torch.cat(out).T.reshape(n, *query.shape[:2])


def robust_score(distances: torch.Tensor, quantile: float) -> torch.Tensor:
    """The k-th smallest per-frame distance, k = ceil(quantile · W) (at least 1)."""
    k = min(len(distances), max(1, math.ceil(quantile * len(distances))))
    return distances.kthvalue(k, dim=0).values


class StreamLocalizer:
    encoder = None       # no CLIP

    def __init__(self, cfg: LocalizerConfig, backbone: BackboneModel | None, refiner: RefinerConfig,
                 source: str, seed: list[torch.Tensor] | None = None):
        self.cfg = cfg
        self.backbone = backbone          # run once per frame by the Inspector; None: SAM cells
        # a frame whose map reaches refiner.threshold is defective; the object, not its value, so a
        # live `ros2 param set refiner.threshold` reaches the memory's rule too
        self.refiner = refiner
        self.source = source              # what made the features (a memory file records it)
        self.learning = True
        self.seed = [Remembered(g.cpu(), float("nan")) for g in seed or []]
        self.memories: dict[int, deque[Remembered]] = {}
        self._learnt = 0
        if self.seed:
            calibrate(self.seed, cfg)
        if cfg.memory and Path(cfg.memory).expanduser().exists():
            self.memories = load_memory(cfg.memory, source, cfg.window)

    def memory(self, camera: int) -> deque[Remembered]:
        if camera not in self.memories:
            self.memories[camera] = deque(self.seed, maxlen=self.cfg.window)
        return self.memories[camera]

    def __call__(self, clip: ClipFeatures | None, sam: SamEmbedding, image_size: tuple[int, int],
                 features: BackboneFeatures | None = None, camera: int = 0) -> AnomalyEstimate:
        query = patch_grid(features, sam)
        memory = self.memory(camera)
        if len(memory) < self.cfg.warmup_frames:
            if not self.learning:           # the Inspector's warm-up: no memory yet, nothing to learn
                return AnomalyEstimate(np.zeros(image_size, np.float32), 0.0)
            self._remember(memory, query, float("nan"))
            if len(memory) == self.cfg.warmup_frames:
                calibrate(list(memory), self.cfg)
            raise StreamWarmUp(f"stream warm-up: camera {camera} has {len(memory)} of "
                               f"localizer.warmup_frames={self.cfg.warmup_frames} frames in its memory; "
                               "set localizer.reference_dir to seed it")
        frames = torch.stack([m.grid for m in memory]).to(query.device)
        raw = robust_score(per_frame_distances(query, frames, self.cfg.spatial_radius), self.cfg.stream_quantile)
        normal = normal_distance(memory)
        if normal is None:                  # a restored memory saved before its calibration
            calibrate(list(memory), self.cfg)
            normal = normal_distance(memory)
        if normal is None:
            raise StreamWarmUp(f"stream warm-up: camera {camera}'s memory has no calibrated frame; "
                               "set localizer.reference_dir to seed it, or delete localizer.memory")
        ratio = raw / (normal * self.cfg.distance_scale)
        score = ratio.clamp(0, 1)
        # the map's verdict, not the image score's squashing, decides what is defective
        if self.learning and not (self.cfg.stream_skip_defective and float(score.max()) >= self.refiner.threshold):
            self._remember(memory, query, float(torch.quantile(raw.flatten(), _QUANTILE)))
        return estimate_of(ratio, features, sam, self.cfg.sigma, image_size)

    def _remember(self, memory: deque[Remembered], grid: torch.Tensor, level: float) -> None:
        memory.append(Remembered(grid.cpu(), level))
        self._learnt += 1
        if self.cfg.memory and self._learnt % self.cfg.warmup_frames == 0:
            self.save()

    def close(self) -> None:
        """The frames learnt since the last periodic save go to localizer.memory too."""
        self.save()

    def save(self, path: str | Path | None = None) -> None:
        target = path or self.cfg.memory
        if target:
            save_memory(self.memories, target, self.source)


def calibrate(frames: list[Remembered], cfg: LocalizerConfig) -> None:
    """The levels of frames that entered without one: each scored against the others (leave-one-out)."""
    grids = torch.stack([f.grid for f in frames])
    for i, frame in enumerate(frames):
        if math.isnan(frame.level) and len(frames) > 1:
            others = torch.cat([grids[:i], grids[i + 1:]])
            raw = robust_score(per_frame_distances(frame.grid, others, cfg.spatial_radius), cfg.stream_quantile)
            frame.level = float(torch.quantile(raw.flatten(), _QUANTILE))


def normal_distance(memory: deque[Remembered]) -> float | None:
    """The median calibration level of the memory's frames; None while no frame has one."""
    levels = [m.level for m in memory if not math.isnan(m.level)]
    return max(float(np.median(levels)), 1e-6) if levels else None


def save_memory(memories: dict[int, deque[Remembered]], path: str | Path, source: str) -> None:
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for camera, memory in memories.items():
        if memory:
            tensors[f"camera{camera}.grids"] = torch.stack([m.grid for m in memory]).contiguous()
            tensors[f"camera{camera}.levels"] = torch.tensor([m.level for m in memory], dtype=torch.float64)
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata={"source": source, "padding": PADDING})
    tmp.replace(path)


def load_memory(path: str | Path, source: str, window: int) -> dict[int, deque[Remembered]]:
    path = Path(path).expanduser()
    try:
        tensors = load_file(str(path))
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            meta = handle.metadata() or {}
            held = meta["source"]
    except Exception as exc:
        raise MemoryFileError(f"localizer.memory={str(path)!r} is not a readable stream memory "
                              f"({type(exc).__name__}); delete it to start afresh") from None
    if held != source:
        raise MemoryFileError(f"localizer.memory={str(path)!r} holds {held} features, not {source}; "
                              "delete it or set localizer.backbone to match")
    stale = stale_padding(meta.get("padding"), source, f"localizer.memory={str(path)!r}", "delete it to start afresh")
    if stale:
        raise MemoryFileError(stale)
    memories: dict[int, deque[Remembered]] = {}
    for name, grids in tensors.items():
        if name.endswith(".grids"):
            camera = int(name[len("camera"):-len(".grids")])
            levels = tensors[f"camera{camera}.levels"].tolist()
            memories[camera] = deque((Remembered(g, lv) for g, lv in zip(grids, levels)), maxlen=window)
    return memories
