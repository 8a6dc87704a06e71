"""Frame accounting, rates and latencies: what /diagnostics reports. No rclpy in here.

The accounting is exact: every received frame is, at any moment, either waiting or
being inspected (`in_flight`), answered with exactly one verdict, or dropped by the
`latest` policy, so `received == in_flight + dropped + pass + fail + error`.
Frames lost in transport are not counted: DDS reports only some of them (a
best-effort frame lost in fragments goes unreported), and a count that is wrong
looks like a healthy line. Frames that arrive while the lifecycle node is
inactive get no verdict and are counted apart (`inactive`), as are verdicts
published after `decision.deadline_ms` (`late`; they are also in the verdicts).
Rates are counted over the last `window_s` seconds; latencies and stage times are
percentiles over the last `keep` frames.
"""
from __future__ import annotations

import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field

from ..decision import Verdict
from ..timing import percentile

VERDICTS = tuple(v.value for v in Verdict)
# why a frame got an "error" verdict
ERROR_KINDS = ("overflow", "decode", "inference", "publish", "shutdown")
STAGES = ("decode", "inference", "publish")


@dataclass
class Snapshot:
    received: int
    dropped: int
    inactive: int                  # arrived while the node was inactive: not inspected, no verdict
    late: int                      # verdicts published after decision.deadline_ms
    verdicts: dict[str, int]
    errors: dict[str, int]
    in_flight: int
    input_rate_hz: float
    processed_rate_hz: float
    latency_p50_ms: float          # subscription callback -> verdict published
    latency_p95_ms: float
    stage_p50_ms: dict[str, float]
    last_error: str
    since_last_frame_s: float = 0.0  # since the last frame arrived, or since start when none has
    # per camera (input.image_topics order): frames received, and seconds since its last one
    camera_received: tuple[int, ...] = ()
    camera_silence_s: tuple[float, ...] = ()

    @property
    def answered(self) -> int:
        return sum(self.verdicts.values())


@dataclass
class FrameStats:
    window_s: float = 5.0
    keep: int = 500
    started: float = field(default_factory=time.monotonic)
    cameras: int = 1

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._received = 0
        self._camera_received = [0] * self.cameras
        self._camera_last = [self.started] * self.cameras
        self._dropped = 0
        self._inactive = 0
        self._late = 0
        self._verdicts: Counter[str] = Counter()
        self._errors: Counter[str] = Counter()
        self._last_error = ""
        self._last_arrival = self.started
        self._arrivals: deque[float] = deque()
        self._answers: deque[float] = deque()
        self._latency_ms: deque[float] = deque(maxlen=self.keep)
        self._stage_ms = {s: deque(maxlen=self.keep) for s in STAGES}

    def listening(self, now: float) -> None:
        """The node starts taking frames (activate): the cameras' silence counts from now, not from
        configure, so a node activated long after configure is not reported stalled at once."""
        with self._lock:
            self._camera_last = [max(last, now) for last in self._camera_last]
            self._last_arrival = max(self._last_arrival, now)

    def received(self, now: float, camera: int = 0) -> int:
        """Count one arriving frame; returns its 1-based arrival number."""
        with self._lock:
            self._received += 1
            self._arrivals.append(now)
            self._last_arrival = now
            self._camera_received[camera] += 1
            self._camera_last[camera] = now
            return self._received

    def dropped(self, count: int = 1) -> None:
        with self._lock:
            self._dropped += count

    def inactive(self, count: int = 1) -> None:
        """A frame that arrived while the node was inactive (it gets no verdict)."""
        with self._lock:
            self._inactive += count

    def late(self, count: int = 1) -> None:
        """A verdict published after decision.deadline_ms from its frame's stamp."""
        with self._lock:
            self._late += count

    def answered(self, verdict: str, received_at: float, now: float, error_kind: str = "",
                 error: str = "") -> None:
        """Count the one verdict a frame gets."""
        if verdict not in VERDICTS:
            raise ValueError(f"verdict {verdict!r} is not one of {VERDICTS}")
        with self._lock:
            self._verdicts[verdict] += 1
            if verdict == Verdict.ERROR:
                self._errors[error_kind or "inference"] += 1
                self._last_error = f"{error_kind}: {error}" if error else error_kind
            self._answers.append(now)
            self._latency_ms.append((now - received_at) * 1000.0)

    def stage(self, name: str, ms: float) -> None:
        with self._lock:
            self._stage_ms[name].append(ms)

    def recent(self, stage: str) -> list[float]:
        """The kept milliseconds of one stage, oldest first (for benchmarks)."""
        with self._lock:
            return list(self._stage_ms[stage])

    def snapshot(self, now: float | None = None) -> Snapshot:
        now = time.monotonic() if now is None else now
        with self._lock:
            for times in (self._arrivals, self._answers):
                while times and times[0] < now - self.window_s:
                    times.popleft()
            span = max(min(self.window_s, now - self.started), 1e-3)
            answered = sum(self._verdicts.values())
            return Snapshot(
                received=self._received,
                dropped=self._dropped,
                inactive=self._inactive,
                late=self._late,
                verdicts={v: self._verdicts[v] for v in VERDICTS},
                errors={k: self._errors[k] for k in ERROR_KINDS},
                in_flight=self._received - self._dropped - answered,
                input_rate_hz=len(self._arrivals) / span,
                processed_rate_hz=len(self._answers) / span,
                latency_p50_ms=percentile(self._latency_ms, 50),
                latency_p95_ms=percentile(self._latency_ms, 95),
                stage_p50_ms={s: percentile(v, 50) for s, v in self._stage_ms.items()},
                last_error=self._last_error,
                since_last_frame_s=max(now - self._last_arrival, 0.0),
                camera_received=tuple(self._camera_received),
                camera_silence_s=tuple(max(now - last, 0.0) for last in self._camera_last),
            )
