"""Inspector: one RGB frame → one InspectionResult.

Per frame the SAM image encoder runs exactly once, the CLIP image encoder at most
once (only when the localizer names one) and an ImageNet backbone at most once
(only when the localizer names one as its `backbone`); the localizer and every refiner
stage work on those cached embeddings. Each result carries the encoder calls
it made and per-stage milliseconds, so the property can be counted from
outside. A frame that fails anywhere gets verdict "error", never "pass".

The two stages are public so that eval runs exactly what a frame runs:
`analyse` (the encoders once, overlapped on CUDA streams where switched on, then
the localizer) and `conclude` (a refiner from the registry, then the verdict).
`inspect` is the two with the fail-safe and the counting around them.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch

from .config import Config, ConfigError, RefinerConfig
from .decision import Defect, Verdict, find_defects, verdict_of
from .errors import ClipsamError, one_line
from .localize.base import AnomalyEstimate, Localizer
from .models.accel import run_encoders
from .models.backbone import BackboneFeatures
from .models.features import ClipFeatures, SamEmbedding
from .models.sam import SamModel, build_sam
from .refine import Refinement, refine
from .timing import Stopwatch

log = logging.getLogger(__name__)

# the warm-up frame's (h, w) when none is given: a VGA camera
WARMUP_SIZE = (480, 640)


@dataclass
class InspectionResult:
    verdict: Verdict
    score: float                          # highest pixel score of the frame
    mask: np.ndarray                      # (H, W) uint8, 255 = defect
    anomaly_map: np.ndarray               # (H, W) float32 0..1, the localizer's S_a
    pixel_scores: np.ndarray              # (H, W) float32 0..1, fused (see refine.fuse)
    defects: list[Defect]
    image_score: float                    # the localizer's own image score
    timings_ms: dict[str, float]
    encoder_calls: dict[str, int]         # {"sam": .., "clip": .., ["backbone": ..]} during this frame
    refinement: Refinement | None = None
    error: str = ""

    @property
    def reject(self) -> bool:
        """What an ejector acts on: anything but a clean pass is rejected."""
        return Verdict(self.verdict).reject

    def to_json(self) -> dict:
        out = {
            "verdict": self.verdict,
            "score": round(float(self.score), 6),
            "defects": [d.to_json() for d in self.defects],
            "timings_ms": {k: round(v, 3) for k, v in self.timings_ms.items()},
            "encoder_calls": dict(self.encoder_calls),
        }
        if self.error:
            out["error"] = self.error
        return out


def error_result(shape: tuple[int, int], message: str, timings_ms: dict[str, float] | None = None,
                 encoder_calls: dict[str, int] | None = None) -> InspectionResult:
    """The fail-safe answer for a frame that could not be inspected."""
    h, w = shape
    return InspectionResult(
        verdict=Verdict.ERROR, score=1.0, mask=np.zeros((h, w), np.uint8),
        anomaly_map=np.zeros((h, w), np.float32), pixel_scores=np.zeros((h, w), np.float32),
        defects=[], image_score=1.0, timings_ms=timings_ms or {},
        encoder_calls=encoder_calls or {"sam": 0, "clip": 0}, error=message)


def check_frame(image_rgb) -> None:
    if not isinstance(image_rgb, np.ndarray) or image_rgb.ndim != 3 or image_rgb.shape[2] != 3 \
            or image_rgb.dtype != np.uint8 or min(image_rgb.shape[:2]) < 1:
        got = f"{image_rgb.dtype} {image_rgb.shape}" if isinstance(image_rgb, np.ndarray) else type(image_rgb).__name__
        raise ValueError(f"expected an RGB uint8 HxWx3 frame, got {got}")


class WarmUpError(ClipsamError, RuntimeError):
    """A warm-up frame got verdict "error": the models do not work as configured."""


def _every(results: list[InspectionResult | None]) -> list[InspectionResult]:
    """The batch's results, one per frame in order: a gap would misplace a camera's verdict."""
    if any(r is None for r in results):
        raise RuntimeError("a frame of the batch has no result")
    return [r for r in results if r is not None]


def resolve_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device=cuda but no CUDA device is available (set device: auto or cpu)")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def warmup_frame(size: tuple[int, int] = WARMUP_SIZE) -> np.ndarray:
    """A deterministic (h, w) RGB test card: shading, stripes and a dark blotch, unlike any
    real part, so every stage (the prompt decoder too) has work to do. Drawn here: the core
    never imports the synthetic-data tooling."""
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    grey = 140 + 40 * np.sin(xx / 7.0) * np.cos(yy / 11.0) + 30 * xx / max(w - 1, 1)
    blotch = ((xx - 0.6 * w) / (0.08 * w + 1)) ** 2 + ((yy - 0.4 * h) / (0.06 * h + 1)) ** 2 < 1.0
    grey[blotch] = 25
    tint = np.array([1.0, 0.95, 0.9], np.float32)
    return np.clip(grey[:, :, None] * tint, 0, 255).astype(np.uint8)


@dataclass
class FrameAnalysis:
    """What `Inspector.analyse` found in one frame: the encoders' outputs and the map."""

    image_size: tuple[int, int]           # (h, w) of the frame
    clip: ClipFeatures | None             # None when the localizer needs no CLIP
    embedding: SamEmbedding
    estimate: AnomalyEstimate
    features: BackboneFeatures | None = None   # the backbone's, when the localizer names one


@dataclass
class Inspector:
    cfg: Config
    sam: SamModel
    localizer: Localizer
    device: torch.device
    frames: int = field(default=0)

    @classmethod
    def from_config(cls, cfg: Config, progress: bool = True, sam: SamModel | None = None,
                    references: list[np.ndarray] | None = None) -> "Inspector":
        """Build models and weights; raises one-line errors (ConfigError, WeightError, ...).

        `sam`: an already built SAM to share (the demo, eval and bench build one for several
        inspectors); `references`: normal images for a localizer that learns from them, in
        place of the configured folder or bank (see `localize.build_localizer`)."""
        from .localize import build_localizer

        device = sam.device if sam is not None else resolve_device(cfg.device)
        sam = sam or build_sam(cfg, device)
        localizer = build_localizer(cfg, sam, device, progress=progress, references=references)
        return cls(cfg=cfg, sam=sam, localizer=localizer, device=device)

    @property
    def clip_encoder(self):
        """The CLIP image encoder each frame runs, or None when the localizer needs none."""
        return self.localizer.encoder

    @property
    def backbone(self):
        """The ImageNet backbone each frame runs (a localizer's `backbone`), or None."""
        return self.localizer.backbone

    def _clip_calls(self) -> int:
        encoder = self.clip_encoder
        return int(encoder.calls) if encoder is not None else 0

    def _calls_since(self, sam_before: int, clip_before: int, backbone_before: int) -> dict[str, int]:
        calls = {"sam": self.sam.images_encoded - sam_before, "clip": self._clip_calls() - clip_before}
        if self.backbone is not None:
            calls["backbone"] = self.backbone.images_encoded - backbone_before
        return calls

    def _no_calls(self) -> dict[str, int]:
        """The encoder counts of a frame no encoder ran for: the same keys as an inspected one's."""
        return {"sam": 0, "clip": 0, **({"backbone": 0} if self.backbone is not None else {})}

    def _backbone_images(self) -> int:
        return self.backbone.images_encoded if self.backbone is not None else 0

    # ------------------------------------------------------------ the two stages

    def analyse(self, image_rgb: np.ndarray, watch: Stopwatch | None = None, camera: int = 0) -> FrameAnalysis:
        """Stage 1: the image encoders once each, then the localizer, on a checked frame.
        `camera`: which camera it came from (a stream localizer keeps one memory per camera)."""
        watch = watch or self._stopwatch()
        clip_encoder = self.clip_encoder
        clip, embedding = self._encode(
            None if clip_encoder is None else (lambda: clip_encoder.encode_image(image_rgb)),
            lambda: self.sam.encode(image_rgb), watch)
        features = None
        if self.backbone is not None:
            with watch.stage("backbone"):
                features = self.backbone.encode(image_rgb)
        return self._localize(image_rgb, clip, embedding, watch, features, camera)

    def conclude(self, analysis: FrameAnalysis, refiner: RefinerConfig | None = None,
                 watch: Stopwatch | None = None) -> InspectionResult:
        """Stage 2: the refiner (`refiner`, default the configured one) on the cached embedding
        and map, then defects and the verdict. Timings and encoder calls are `inspect`'s to add."""
        watch = watch or self._stopwatch()
        refinement = refine(refiner or self.cfg.refiner, analysis.estimate.anomaly_map, analysis.embedding,
                            self.sam, watch, analysis.estimate.unclipped, self.cfg.decision.min_defect_area_px)
        # NaN compares False with every threshold: a broken map would find no defect and pass
        for name, values in (("anomaly map", analysis.estimate.anomaly_map), ("pixel scores", refinement.pixel_scores)):
            if not np.isfinite(values).all():
                raise ValueError(f"the {name} holds NaN or inf: the weights or precision={self.cfg.precision} "
                                 "are unusable here (check the checkpoints, or set precision fp32)")
        with watch.stage("decide"):
            defects = find_defects(refinement.mask, refinement.pixel_scores, self.cfg.decision)
        return InspectionResult(
            verdict=verdict_of(defects),
            score=float(refinement.pixel_scores.max()),
            mask=refinement.mask.astype(np.uint8) * 255,
            anomaly_map=analysis.estimate.anomaly_map,
            pixel_scores=refinement.pixel_scores,
            defects=defects,
            image_score=float(analysis.estimate.image_score),
            timings_ms={},
            encoder_calls={},
            refinement=refinement,
        )

    def _localize(self, image_rgb: np.ndarray, clip: ClipFeatures | None, embedding: SamEmbedding,
                  watch: Stopwatch, features: BackboneFeatures | None = None, camera: int = 0) -> FrameAnalysis:
        size = image_rgb.shape[:2]
        with watch.stage("localize"):
            estimate = self.localizer(clip, embedding, size, features=features, camera=camera)
        return FrameAnalysis(size, clip, embedding, estimate, features)

    # ------------------------------------------------------------ frames

    def inspect(self, image_rgb: np.ndarray, watch: Stopwatch | None = None, camera: int = 0) -> InspectionResult:
        """Inspect one RGB uint8 frame. Never raises for a bad frame: returns verdict "error"."""
        watch = watch or self._stopwatch()
        before = self.sam.images_encoded, self._clip_calls(), self._backbone_images()

        def calls() -> dict[str, int]:
            return self._calls_since(*before)

        try:
            check_frame(image_rgb)
            with watch.stage("total"):
                result = self.conclude(self.analyse(image_rgb, watch, camera), watch=watch)
        except Exception as exc:  # one bad frame must not take the line down: fail safe
            return self._failed(image_rgb, exc, watch, calls())
        result.timings_ms = dict(watch.ms)
        result.encoder_calls = calls()
        self.frames += 1
        return result

    def inspect_batch(self, images_rgb: list[np.ndarray],
                      cameras: Sequence[int] | None = None) -> list[InspectionResult]:
        """Frames that arrived together (one per camera), each encoder run once for all of them.

        Encoder milliseconds are the batch's, shared evenly among its frames. A bad
        frame gets its own "error" result and does not hold up the others. `cameras[i]` is
        the camera frame i came from (default: its index); a stream localizer keeps one
        memory per camera, so a silent camera must not shift the others' indices.
        """
        cameras = list(range(len(images_rgb))) if cameras is None else list(cameras)
        if len(cameras) != len(images_rgb):
            raise ValueError(f"{len(images_rgb)} frames but {len(cameras)} camera indices")
        if len(images_rgb) == 1:
            return [self.inspect(images_rgb[0], camera=cameras[0])]
        results: list[InspectionResult | None] = [None] * len(images_rgb)
        good = []
        for i, image in enumerate(images_rgb):
            try:
                check_frame(image)
                good.append(i)
            except ValueError as exc:
                results[i] = self._failed(image, exc, self._stopwatch(), self._no_calls())
        if not good:
            return _every(results)
        batch = self._stopwatch()
        frames = [images_rgb[i] for i in good]
        try:
            clip_encoder = self.clip_encoder
            clips, embeddings = self._encode(
                None if clip_encoder is None else (lambda: clip_encoder.encode_image_batch(frames)),
                lambda: self.sam.encode_batch(frames), batch)
            clips = clips if clips is not None else [None] * len(frames)
            features: list[BackboneFeatures | None] = [None] * len(frames)
            if self.backbone is not None:
                with batch.stage("backbone"):
                    features = list(self.backbone.encode_batch(frames))
        except Exception as exc:
            for i in good:
                results[i] = self._failed(images_rgb[i], exc, batch, self._no_calls())
            return _every(results)
        shared = {stage: ms / len(frames) for stage, ms in batch.ms.items()}
        # overlapped encoders: the frame waited their wall time, not the sum of both
        shared_wall = shared["encoders"] + shared.get("backbone", 0.0) if "encoders" in shared \
            else sum(shared.values())
        calls = {name: 1 for name in self._no_calls()}
        calls["clip"] = int(self.clip_encoder is not None)
        for i, clip, embedding, feats in zip(good, clips, embeddings, features):
            watch = self._stopwatch()
            try:
                with watch.stage("total"):
                    analysis = self._localize(images_rgb[i], clip, embedding, watch, feats, camera=cameras[i])
                    result = self.conclude(analysis, watch=watch)
            except Exception as exc:
                results[i] = self._failed(images_rgb[i], exc, watch, calls)
                continue
            watch.ms.update(shared)
            watch.ms["total"] += shared_wall
            result.timings_ms, result.encoder_calls = dict(watch.ms), dict(calls)
            self.frames += 1
            results[i] = result
        return _every(results)

    def _encode(self, clip_fn: Callable[[], Any] | None, sam_fn: Callable[[], Any],
                watch: Stopwatch) -> tuple[Any, Any]:
        """Both image encoders, once each (CLIP only with a CLIP localizer); overlapped on two
        CUDA streams when `runtime.cuda_streams` is on. Stages `clip_encoder` and `sam_encoder`
        are each encoder's own time; `encoders` (overlapped only) is their wall time."""
        run = run_encoders(clip_fn, sam_fn, self.device, streams=self.sam.accel.cuda_streams)
        if run.clip_ms is not None:
            watch.add("clip_encoder", run.clip_ms)
        watch.add("sam_encoder", run.sam_ms)
        if run.overlapped:
            watch.add("encoders", run.wall_ms)
        return run.clip, run.sam

    def warm_up(self, frames: int | None = None, batch: int = 1, size: tuple[int, int] = WARMUP_SIZE) -> float:
        """Run `frames` whole frames (default `runtime.warmup_frames`) through the pipeline so the
        first real frame does not pay for lazy initialisation, autotuning or torch.compile.

        `batch` > 1 runs `inspect_batch` on that many frames (one per camera), so a compiled
        encoder has seen the batch shape. `size` is the frame's (height, width). The frame is
        `warmup_frame`, unlike any part, so the prompt decoder runs too. Nothing is counted: frame
        and encoder counters are restored, and no component learns from it (a localizer with a
        `learning` switch, the stream's memory, has it off meanwhile; the reference bank only
        moves to the device, as on any first frame). Returns the seconds spent; raises if a warm-up frame fails.
        """
        frames = self.cfg.runtime.warmup_frames if frames is None else int(frames)
        if frames <= 0:
            return 0.0
        image = warmup_frame(size)
        counters = self._counters()
        learning = getattr(self.localizer, "learning", None)
        if learning is not None:
            self.localizer.learning = False  # type: ignore[attr-defined]
        start = time.perf_counter()
        try:
            for _ in range(frames):
                results = self.inspect_batch([image] * batch) if batch > 1 else [self.inspect(image)]
                failed = [r.error for r in results if r.verdict == Verdict.ERROR]
                if failed:
                    raise WarmUpError(f"warm-up frame failed: {failed[0]}")
        finally:
            self._restore(counters)
            if learning is not None:
                self.localizer.learning = learning  # type: ignore[attr-defined]
        return time.perf_counter() - start

    def close(self) -> None:
        """Done with frames: components keep what they learnt (the stream's memory file)."""
        self.localizer.close()

    def _counters(self) -> list[tuple[object, str, int]]:
        """(object, attribute, value) of every counter a frame advances."""
        owners: list[tuple[object, str]] = [(self, "frames"), (self.sam, "encoder_calls"),
                                            (self.sam, "images_encoded")]
        if self.clip_encoder is not None:
            owners += [(self.clip_encoder, "calls"), (self.clip_encoder, "images_encoded")]
        if self.backbone is not None:
            owners += [(self.backbone, "encoder_calls"), (self.backbone, "images_encoded")]
        return [(obj, name, getattr(obj, name)) for obj, name in owners]

    @staticmethod
    def _restore(counters: list[tuple[object, str, int]]) -> None:
        for obj, name, value in counters:
            setattr(obj, name, value)

    def _stopwatch(self) -> Stopwatch:
        return Stopwatch(sync_cuda=self.device.type == "cuda")

    def _failed(self, image_rgb, exc: Exception, watch: Stopwatch, calls: dict[str, int]) -> InspectionResult:
        message = one_line(exc, 300, with_type=True)
        # the caller reports it once per frame in its own way (the node throttles per kind)
        log.debug("frame could not be inspected: %s", message)
        shape = image_rgb.shape[:2] if getattr(image_rgb, "ndim", 0) >= 2 else (1, 1)
        return error_result(shape, message, dict(watch.ms), calls)
