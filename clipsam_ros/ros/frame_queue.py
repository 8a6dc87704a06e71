"""Frames waiting for the inference thread, under the config's `input.queue_policy`.

`latest` (continuous video) holds one frame: a newer frame replaces a waiting one,
and the replaced frame is handed back so it can be counted as dropped.
`all` (triggered cameras) holds up to `size` frames in arrival order: a frame that
does not fit is refused, but still takes its place in the line (`Frame.refused`), so
the consumer answers it with an "error" verdict in its turn: a camera's answers leave
in the order its frames came, and `~/reject`, which has no stamp, pairs with parts by
order. A refused frame costs no inference and keeps nothing but its header.

With several cameras each has its own line of that kind, so a fast camera never
pushes out a slow one's frame; `get_batch` hands the consumer the oldest frame of
every camera that has one, waiting a short window for the cameras still missing
so frames that arrive together are encoded together. No rclpy in here.
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
    camera: int = 0        # index into input.image_topics (0 with a single camera)
    answered: bool = False # its one verdict has been counted
    refused: str = ""      # why it waits only to be answered "error" in its turn (queue full)


@dataclass
class Offer:
    accepted: bool                 # the new frame is waiting for inference
    dropped: Frame | None = None   # an older frame it pushed out (latest policy)
    refused: bool = False          # it waits to be answered "error" in its turn (all policy, full)


@dataclass
class HeaderOnly:
    """What a refused frame keeps of its message: the header its answer carries."""

    header: Any


class FrameQueue:
    def __init__(self, policy: str, size: int, cameras: int = 1):
        if policy not in POLICIES:
            raise ValueError(f"queue policy {policy!r} is not one of: {', '.join(POLICIES)}")
        if size < 1:
            raise ValueError(f"queue size {size} must be at least 1")
        if cameras < 1:
            raise ValueError(f"cameras {cameras} must be at least 1")
        self.policy = policy
        self.capacity = 1 if policy == "latest" else size     # per camera
        self._lines: list[deque[Frame]] = [deque() for _ in range(cameras)]
        self._cond = threading.Condition()
        self._closed = False

    def offer(self, frame: Frame) -> Offer:
        """Queue `frame` on its camera's line; never blocks. A closed queue refuses everything."""
        with self._cond:
            if self._closed:
                return Offer(accepted=False)
            line = self._lines[frame.camera]
            dropped = None
            if sum(not f.refused for f in line) >= self.capacity:
                if self.policy == "all":
                    frame.refused = f"queue full ({self.capacity} frames waiting, queue_policy all)"
                    frame.msg = HeaderOnly(frame.msg.header) if frame.msg is not None else None
                    line.append(frame)
                    self._cond.notify()
                    return Offer(accepted=False, refused=True)
                dropped = line.popleft()
            line.append(frame)
            self._cond.notify()
            return Offer(accepted=True, dropped=dropped)

    def get_batch(self, window_s: float, timeout: float | None = None) -> list[Frame] | None:
        """The oldest waiting frame of each camera that has one, in camera order.

        Once a first frame waits, the other cameras get up to `window_s` seconds to
        deliver theirs. None when closed, or when `timeout` passes with nothing.
        """
        with self._cond:
            if not self._wait_any(timeout):
                return None
            deadline = time.monotonic() + window_s
            # frames only to be answered (refused) need no batch partner: never wait for one
            while not all(self._lines) and not self._closed and not all(line[0].refused for line in self._lines
                                                                        if line):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            batch = [line.popleft() for line in self._lines if line]
            return batch or None        # closed during the window: close() handed them back

    def _wait_any(self, timeout: float | None) -> bool:
        """Under the lock: wait until a frame waits (True) or the queue closes or times out."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not any(self._lines):
            if self._closed:
                return False
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return False
            self._cond.wait(remaining)
        return True

    def close(self) -> list[Frame]:
        """Refuse new frames, wake the consumer, and hand back the frames still waiting."""
        with self._cond:
            self._closed = True
            pending = sorted((f for line in self._lines for f in line), key=lambda f: f.seq)
            for line in self._lines:
                line.clear()
            self._cond.notify_all()
            return pending

    @property
    def closed(self) -> bool:
        return self._closed

    def __len__(self) -> int:
        """Frames waiting for inference (what `capacity` bounds); refused ones, which wait only
        for their answer and hold a header, are not counted."""
        with self._cond:
            return sum(not f.refused for line in self._lines for f in line)
