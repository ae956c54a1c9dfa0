"""When a stream's temporal state must be dropped, decided from frame stamps and sources.

The node and the rosbag evaluator both ask :class:`StreamResetDetector` before each frame, so a bag
evaluated offline resets exactly where the live node would. Frame size changes are detected by the
runtime itself (``VideoSegmenter``), which owns the state.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# Values of vseg/msg/SegmentationInfo's reset_reason (the msg file documents each).
RESET_NONE = ""
RESET_FIRST_FRAME = "first_frame"
RESET_SIZE_CHANGED = "size_changed"
RESET_FRAME_ID_CHANGED = "frame_id_changed"
RESET_STAMP_BACKWARDS = "stamp_backwards"
RESET_STAMP_GAP = "stamp_gap"
RESET_SERVICE = "service"
RESET_REQUESTED = "requested"

__all__ = [
    "RESET_FIRST_FRAME",
    "RESET_FRAME_ID_CHANGED",
    "RESET_NONE",
    "RESET_REQUESTED",
    "RESET_SERVICE",
    "RESET_SIZE_CHANGED",
    "RESET_STAMP_BACKWARDS",
    "RESET_STAMP_GAP",
    "ResetConfig",
    "StreamResetDetector",
]


@dataclass(frozen=True)
class ResetConfig:
    """max_gap_s: a forward stamp jump larger than this (seconds) ends the temporal context;
    ``math.inf`` never resets on gaps. Stamps going backwards always reset (a bag loop)."""

    max_gap_s: float = 1.0

    def __post_init__(self) -> None:
        if not (self.max_gap_s > 0):  # also rejects NaN
            raise ValueError(f"max_gap_s must be a positive number of seconds (or inf), got {self.max_gap_s}")


class StreamResetDetector:
    """Remembers the previous frame's stamp and source and says whether the next frame continues it."""

    def __init__(self, config: ResetConfig = ResetConfig()) -> None:
        self.config = config
        self._last_stamp_ns: int | None = None
        self._last_frame_id: str | None = None

    def check(self, stamp_ns: int, frame_id: str = "") -> str:
        """Return the reset reason for a frame stamped ``stamp_ns`` (nanoseconds) from ``frame_id``,
        or ``RESET_NONE`` when it continues the previous frame. Updates the remembered frame."""
        reason = self.peek(stamp_ns, frame_id)
        self.accept(stamp_ns, frame_id)
        return reason

    def accept(self, stamp_ns: int, frame_id: str = "") -> None:
        """Remember this frame as the stream's last (after it went through; see :meth:`peek`)."""
        self._last_stamp_ns, self._last_frame_id = stamp_ns, frame_id

    def peek(self, stamp_ns: int, frame_id: str = "") -> str:
        """:meth:`check` without remembering the frame: for a caller that remembers it with
        :meth:`accept` only once the frame went through, so that a frame that failed cannot hide
        the reset the next one needs."""
        last_stamp, last_frame = self._last_stamp_ns, self._last_frame_id
        if last_stamp is None:
            return RESET_FIRST_FRAME
        if frame_id != last_frame:
            return RESET_FRAME_ID_CHANGED
        if stamp_ns < last_stamp:
            return RESET_STAMP_BACKWARDS
        if not math.isinf(self.config.max_gap_s) and stamp_ns - last_stamp > self.config.max_gap_s * 1e9:
            return RESET_STAMP_GAP
        return RESET_NONE

    def forget(self) -> None:
        """Treat the next frame as the first of a new stream."""
        self._last_stamp_ns = self._last_frame_id = None
