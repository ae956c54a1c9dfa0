"""Per-camera counters and rolling windows behind ~/info and /diagnostics (pure Python, no ROS)."""

from __future__ import annotations

import threading
from collections import Counter, deque
from dataclasses import dataclass, field

import numpy as np

__all__ = ["StreamSnapshot", "StreamStats"]


@dataclass(frozen=True)
class StreamSnapshot:
    """What happened on one camera stream, totals since start and rates over the last window."""

    frames_received: int
    frames_processed: int
    frames_dropped: int
    frames_rejected: int
    resets: int
    window_s: float
    rate_hz: float  # processed frames per second over the window
    latency_p50_ms: float  # NaN when nothing was processed in the window
    latency_p95_ms: float
    keyframe_share: float  # NaN when nothing was processed in the window
    window_received: int
    window_processed: int
    window_dropped: int
    window_rejected: int
    seconds_since_last_frame: float  # inf before the first frame
    rejected_by_reason: dict[str, int] = field(default_factory=dict)  # totals, e.g. {"truncated": 3}


class StreamStats:
    """Thread-safe: callbacks count arrivals and drops, the worker records processed frames.

    Times are seconds on one monotonic clock chosen by the caller (``now`` arguments).
    """

    def __init__(self, window_s: float = 5.0) -> None:
        if window_s <= 0:
            raise ValueError(f"window_s must be positive, got {window_s}")
        self.window_s = window_s
        self._lock = threading.Lock()
        self.frames_received = self.frames_processed = self.frames_dropped = self.frames_rejected = 0
        self.resets = 0
        self._received: deque[float] = deque()
        self._dropped: deque[float] = deque()
        self._rejected: deque[float] = deque()
        self._processed: deque[tuple[float, float, bool]] = deque()  # (time, latency ms, keyframe)
        self._last_arrival = float("-inf")
        self._reasons: Counter[str] = Counter()

    def received(self, now: float, *, dropped_previous: bool) -> None:
        with self._lock:
            self.frames_received += 1
            self._received.append(now)
            self._last_arrival = now
            if dropped_previous:
                self.frames_dropped += 1
                self._dropped.append(now)

    def rejected(self, now: float, reason: str = "invalid") -> int:
        """Count a refused frame under ``reason``; returns how many frames that reason refused so far."""
        with self._lock:
            self.frames_rejected += 1
            self._rejected.append(now)
            self._reasons[reason] += 1
            return self._reasons[reason]

    def rejected_by_reason(self) -> dict[str, int]:
        """Refused frames so far by reason, sorted by reason (cheap: no windows, no percentiles)."""
        with self._lock:
            return self._reason_counts()

    def _reason_counts(self) -> dict[str, int]:  # with the lock held
        return dict(sorted(self._reasons.items()))

    def processed(self, now: float, *, latency_ms: float, is_keyframe: bool, state_reset: bool) -> None:
        with self._lock:
            self.frames_processed += 1
            self.resets += int(state_reset)
            self._processed.append((now, latency_ms, is_keyframe))

    def snapshot(self, now: float) -> StreamSnapshot:
        with self._lock:
            start = now - self.window_s
            for window in (self._received, self._dropped, self._rejected):
                while window and window[0] < start:
                    window.popleft()
            while self._processed and self._processed[0][0] < start:
                self._processed.popleft()
            latencies = np.array([p[1] for p in self._processed], dtype=np.float64)
            # NaN: a frame processed before the node's clock started (sim time without /clock yet).
            known = latencies[~np.isnan(latencies)]
            keyframes = np.array([p[2] for p in self._processed], dtype=bool)
            has = latencies.size > 0
            return StreamSnapshot(
                frames_received=self.frames_received,
                frames_processed=self.frames_processed,
                frames_dropped=self.frames_dropped,
                frames_rejected=self.frames_rejected,
                resets=self.resets,
                window_s=self.window_s,
                rate_hz=latencies.size / self.window_s,
                latency_p50_ms=float(np.percentile(known, 50)) if known.size else float("nan"),
                latency_p95_ms=float(np.percentile(known, 95)) if known.size else float("nan"),
                keyframe_share=float(keyframes.mean()) if has else float("nan"),
                window_received=len(self._received),
                window_processed=latencies.size,
                window_dropped=len(self._dropped),
                window_rejected=len(self._rejected),
                seconds_since_last_frame=now - self._last_arrival,
                rejected_by_reason=self._reason_counts(),
            )
