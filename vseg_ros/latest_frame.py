"""A mailbox that keeps only the newest frames per camera, so latency stays bounded.

When inference is slower than the cameras, the subscription callbacks keep replacing the waiting
frame and count each replaced one as dropped; the worker always takes the newest. With several
cameras the worker serves the camera that has waited longest first, so no camera starves.

With ``depth`` above 1 each camera keeps up to that many frames, oldest first: a replayed bag whose
frames come a little faster than the model for a moment loses none of them (the node's
``queue_depth`` parameter; the replay launch file sets it).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from typing import Generic, TypeVar

K = TypeVar("K")
T = TypeVar("T")

__all__ = ["LatestFrameMailbox"]


class LatestFrameMailbox(Generic[K, T]):
    def __init__(self, depth: int = 1) -> None:
        if depth < 1:
            raise ValueError(f"depth must be at least 1, got {depth}")
        self.depth = depth
        self._cond = threading.Condition()
        # Cameras in the order their oldest waiting frame arrived; each with its frames, oldest first.
        self._waiting: OrderedDict[K, deque[T]] = OrderedDict()
        self._closed = False

    def put(self, key: K, item: T) -> bool:
        """Leave ``item`` for ``key``; return True when that pushed out an item nobody had taken (a drop)."""
        with self._cond:
            frames = self._waiting.get(key)
            if frames is None:
                frames = self._waiting[key] = deque()
            dropped = len(frames) == self.depth
            frames.append(item)  # an existing key keeps its place in the queue
            if dropped:
                frames.popleft()
            self._cond.notify()
            return dropped

    def take(self, timeout: float | None = None) -> tuple[K, T] | None:
        """The oldest kept item of the camera that waited longest (with depth 1: its newest), or None
        after ``timeout`` s or ``close``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not self._waiting and not self._closed:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return None
                self._cond.wait(remaining)
            if self._closed:
                return None
            key, frames = next(iter(self._waiting.items()))
            item = frames.popleft()
            if frames:
                self._waiting.move_to_end(key)  # its next frame waits behind the other cameras' oldest
            else:
                del self._waiting[key]
            return key, item

    def close(self) -> None:
        """Wake every waiting ``take`` and make it return None from now on."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
