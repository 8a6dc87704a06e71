"""Per-stage wall-clock timing for one frame."""
from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Iterator

import numpy as np


def percentile(values, q: float) -> float:
    """The q-th percentile (0..100) of `values`; NaN when there are none (JSON writers say null)."""
    values = list(values)
    return float(np.percentile(np.asarray(values, np.float64), q)) if values else float("nan")


class Stopwatch:
    """Accumulates milliseconds per named stage; `sync` waits for the GPU so stages are honest."""

    def __init__(self, sync_cuda: bool = False):
        self.ms: dict[str, float] = {}
        self._sync = sync_cuda
        if sync_cuda:
            # torch only where the GPU is synchronised: the node and replay import this module
            # for `percentile` and must not pay torch's import on a bad-config exit
            import torch

            self._synchronize = torch.cuda.synchronize

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        if self._sync:
            self._synchronize()
        start = time.perf_counter()
        try:
            yield
        finally:
            if self._sync:
                self._synchronize()
            self.ms[name] = self.ms.get(name, 0.0) + (time.perf_counter() - start) * 1000.0

    def add(self, name: str, ms: float) -> None:
        """Milliseconds measured elsewhere (e.g. CUDA events of an overlapped encoder)."""
        self.ms[name] = self.ms.get(name, 0.0) + float(ms)
