"""CLIP zero-shot anomaly map (training-free, WinCLIP / APRIL-GAN prompt ensemble).

Text side, once per localizer: every normal state word ("flawless {}",
"{} without defect", ...) and every abnormal one ("damaged {}", "{} with
flaw", ...) is put into every template ("a photo of a {}.", ...); each prompt
embedding is L2-normalised, averaged per state (normal / abnormal) and
normalised again -> a (2, D) text matrix.

Image side, per frame: the vv-path patch tokens of each requested layer (see
`models.clip`) are normalised; ``softmax(tokens @ text.T / temperature)``
gives the abnormal probability per patch; the layers are averaged, the grid is
bilinearly upsampled to the frame (h, w), blurred with a Gaussian of
``localizer.sigma`` pixels and clipped to 0..1.

Image score: ``(1 - w) * p_cls + w * max(map)`` with ``w = score_map_weight``
(default 0.5). ``p_cls`` is the abnormal probability of the projected class
token against the same two text embeddings (WinCLIP / APRIL-GAN's zero-shot
image score); the class token is global and misses small defects, which the
map's maximum (after the blur, so one noisy patch does not decide) catches.
Set ``score_map_weight=0`` for the pure class-token score, 1 for the map max.
"""
from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from ..config import LocalizerConfig
from ..models.clip import ClipEncoder
from ..models.features import ClipFeatures
from .base import AnomalyEstimate, clip_features

# WinCLIP's state words (APRIL-GAN uses the same lists)
NORMAL_STATES: tuple[str, ...] = (
    "{}", "flawless {}", "perfect {}", "unblemished {}",
    "{} without flaw", "{} without defect", "{} without damage",
)
ABNORMAL_STATES: tuple[str, ...] = (
    "damaged {}", "broken {}", "{} with flaw", "{} with defect", "{} with damage",
)
# APRIL-GAN's template list (WinCLIP's ImageNet-style templates)
TEMPLATES: tuple[str, ...] = (
    "a bad photo of a {}.", "a low resolution photo of the {}.", "a bad photo of the {}.",
    "a cropped photo of the {}.", "a bright photo of a {}.", "a dark photo of the {}.",
    "a photo of my {}.", "a photo of the cool {}.", "a close-up photo of a {}.",
    "a black and white photo of the {}.", "a bright photo of the {}.", "a cropped photo of a {}.",
    "a jpeg corrupted photo of a {}.", "a blurry photo of the {}.", "a photo of the {}.",
    "a good photo of the {}.", "a photo of one {}.", "a close-up photo of the {}.",
    "a photo of a {}.", "a low resolution photo of a {}.", "a photo of a large {}.",
    "a blurry photo of a {}.", "a jpeg corrupted photo of the {}.", "a good photo of a {}.",
    "a photo of the small {}.", "a photo of the large {}.", "a black and white photo of a {}.",
    "a dark photo of a {}.", "a photo of a cool {}.", "a photo of a small {}.",
    "there is a {} in the scene.", "there is the {} in the scene.", "this is a {} in the scene.",
    "this is the {} in the scene.", "this is one {} in the scene.",
)


def prompt_texts(object_name: str, states: Sequence[str], templates: Sequence[str]) -> list[str]:
    """Every state word (filled with the object name) in every template."""
    return [t.format(s.format(object_name)) for s in states for t in templates]


def state_text_embeddings(encoder: ClipEncoder, object_name: str = "object", *,
                          templates: Sequence[str] = TEMPLATES,
                          normal_states: Sequence[str] = NORMAL_STATES,
                          abnormal_states: Sequence[str] = ABNORMAL_STATES) -> torch.Tensor:
    """(2, D) normalised text embeddings, row 0 normal, row 1 abnormal; ONE encode_text call."""
    normal = prompt_texts(object_name, normal_states, templates)
    abnormal = prompt_texts(object_name, abnormal_states, templates)
    emb = encoder.encode_text(normal + abnormal)     # rows already normalised
    rows = [emb[:len(normal)].mean(dim=0), emb[len(normal):].mean(dim=0)]
    return F.normalize(torch.stack(rows), dim=-1)


def abnormal_probability(tokens: torch.Tensor, text: torch.Tensor, temperature: float) -> torch.Tensor:
    """softmax(normalised tokens @ text.T / temperature)[..., 1] for (..., D) tokens."""
    logits = F.normalize(tokens.float(), dim=-1) @ text.T / temperature
    return logits.softmax(dim=-1)[..., 1]


def finish_map(grid_prob: torch.Tensor, image_size: tuple[int, int], sigma: float) -> np.ndarray:
    """(Hp, Wp) probabilities -> float32 (h, w) map in 0..1: bilinear upsample, Gaussian blur, clip."""
    h, w = int(image_size[0]), int(image_size[1])
    up = F.interpolate(grid_prob[None, None].float(), size=(h, w), mode="bilinear", align_corners=False)
    out: np.ndarray = up[0, 0].cpu().numpy().astype(np.float32, copy=False)
    if sigma > 0:
        # ksize (0, 0): OpenCV picks the kernel from sigma (about 8 sigma wide for float32)
        out = cv2.GaussianBlur(out, (0, 0), sigmaX=float(sigma), sigmaY=float(sigma),
                               borderType=cv2.BORDER_REFLECT_101)
    return np.clip(out, 0.0, 1.0).astype(np.float32, copy=False)


def blend_score(class_prob: float, anomaly_map: np.ndarray, score_map_weight: float) -> float:
    """The image score: class-token probability blended with the map maximum (see module docstring)."""
    peak = float(anomaly_map.max()) if anomaly_map.size else 0.0
    score = (1.0 - score_map_weight) * float(class_prob) + score_map_weight * peak
    return float(min(max(score, 0.0), 1.0))


def clip_estimate(grid_prob: torch.Tensor, clip: ClipFeatures, text: torch.Tensor, image_size: tuple[int, int],
                  *, cfg: LocalizerConfig, score_map_weight: float) -> AnomalyEstimate:
    """A CLIP localizer's answer from its (Hp, Wp) grid of abnormal probabilities: the finished map,
    and the image score blending the class token's probability with the map's peak."""
    anomaly_map = finish_map(grid_prob, image_size, cfg.sigma)
    p_cls = abnormal_probability(clip.image_embedding.to(text.device), text, cfg.temperature)
    return AnomalyEstimate(anomaly_map=anomaly_map,
                           image_score=blend_score(float(p_cls), anomaly_map, score_map_weight))


class ClipZeroShotLocalizer:
    """Training-free CLIP anomaly map from vv-path patch tokens and a prompt ensemble.

    The pipeline must encode frames with `self.encoder` (vv token path).
    """

    def __init__(self, encoder: ClipEncoder, cfg: LocalizerConfig, object_name: str = "object", *,
                 templates: Sequence[str] = TEMPLATES, score_map_weight: float = 0.5):
        if encoder.token_path != "vv":
            # residual tokens are not in the text space; zero-shot needs the vv path
            encoder = encoder.with_token_path("vv")
        self.encoder = encoder
        self.backbone = None      # CLIP features only
        self.cfg = cfg
        self.object_name = object_name
        self.score_map_weight = float(score_map_weight)
        self.text_encodes = 0
        self.text = self._encode_text(templates)     # (2, D), once

    def _encode_text(self, templates: Sequence[str]) -> torch.Tensor:
        self.text_encodes += 1
        return state_text_embeddings(self.encoder, self.object_name, templates=templates)

    @torch.no_grad()
    def grid_map(self, clip: ClipFeatures) -> torch.Tensor:
        """(Hp, Wp) abnormal probability averaged over layers, before upsampling."""
        probs = [abnormal_probability(t.to(self.text.device), self.text, self.cfg.temperature)
                 for t in clip.patch_tokens]
        return torch.stack(probs).mean(dim=0).reshape(clip.grid)

    @torch.no_grad()
    def close(self) -> None:
        """Nothing is learnt while running: nothing to keep."""

    def __call__(self, clip: ClipFeatures | None, sam, image_size: tuple[int, int], *,
                 features=None, camera: int = 0) -> AnomalyEstimate:
        clip = clip_features(clip)
        return clip_estimate(self.grid_map(clip), clip, self.text, image_size, cfg=self.cfg,
                             score_map_weight=self.score_map_weight)
