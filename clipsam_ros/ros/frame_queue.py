"""Frames waiting for the inference thread, under the config's `input.queue_policy`.

`latest` (continuous video) holds one frame: a newer frame replaces a waiting one,
and the replaced frame is handed back so it can be counted as dropped.
`all` (triggered cameras) holds up to `size` frames in arrival order: a frame that
does not fit is refused, so the caller can answer it with an "error" verdict at
once instead of letting it vanish. No rclpy in here.
"""
from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

POLICIES = ("latest", "all")


@dataclass
class Frame:
    msg: Any               # sensor_msgs/Image or CompressedImage, as received
    received: float        # time.monotonic() when the subscription callback ran
    seq: int               # arrival number, 1-based
    answered: bool = False # its one verdict has been counted


@dataclass
class Offer:
    accepted: bool                 # the new frame is waiting for inference
    dropped: Frame | None = None   # an older frame it pushed out (latest policy)


class FrameQueue:
    def __init__(self, policy: str, size: int):
        if policy not in POLICIES:
            raise ValueError(f"queue policy {policy!r} is not one of: {', '.join(POLICIES)}")
        if size < 1:
            raise ValueError(f"queue size {size} must be at least 1")
        self.policy = policy
        self.capacity = 1 if policy == "latest" else size
        self._items: deque[Frame] = deque()
        self._cond = threading.Condition()
        self._closed = False

    def offer(self, frame: Frame) -> Offer:
        """Queue `frame`; never blocks. A closed queue refuses everything."""
        with self._cond:
            if self._closed:
                return Offer(accepted=False)
            dropped = None
            if len(self._items) >= self.capacity:
                if self.policy == "all":
                    return Offer(accepted=False)
                dropped = self._items.popleft()
            self._items.append(frame)
            self._cond.notify()
            return Offer(accepted=True, dropped=dropped)

    def get(self, timeout: float | None = None) -> Frame | None:
        """The oldest waiting frame; None when closed, or when `timeout` seconds pass."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not self._items:
                if self._closed:
                    return None
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return None
                self._cond.wait(remaining)
            return self._items.popleft()

    def close(self) -> list[Frame]:
        """Refuse new frames, wake the consumer, and hand back the frames still waiting."""
        with self._cond:
            self._closed = True
            pending = list(self._items)
            self._items.clear()
            self._cond.notify_all()
            return pending

    @property
    def closed(self) -> bool:
        return self._closed

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)
