"""A mailbox that keeps only the newest frame per camera, so latency stays bounded.

When inference is slower than the cameras, the subscription callbacks keep replacing the waiting
frame and count each replaced one as dropped; the worker always takes the newest. With several
cameras the worker serves the camera that has waited longest first, so no camera starves.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from typing import Generic, TypeVar

K = TypeVar("K")
T = TypeVar("T")

__all__ = ["LatestFrameMailbox"]


class LatestFrameMailbox(Generic[K, T]):
    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._waiting: OrderedDict[K, T] = OrderedDict()  # insertion order = order of first arrival
        self._closed = False

    def put(self, key: K, item: T) -> bool:
        """Leave ``item`` for ``key``; return True when it replaced an item nobody had taken (a drop)."""
        with self._cond:
            replaced = key in self._waiting
            self._waiting[key] = item  # an existing key keeps its place in the queue
            self._cond.notify()
            return replaced

    def take(self, timeout: float | None = None) -> tuple[K, T] | None:
        """The newest item of the camera that waited longest, or None after ``timeout`` s or ``close``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not self._waiting and not self._closed:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return None
                self._cond.wait(remaining)
            if self._closed:
                return None
            return self._waiting.popitem(last=False)

    def close(self) -> None:
        """Wake every waiting ``take`` and make it return None from now on."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
