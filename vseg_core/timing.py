"""Stage timers: models mark their stages, the runtime decides whether and how they are timed.

Stage names are the fields of ``vseg/msg/SegmentationInfo`` (``preprocess``, ``flow``,
``features``, ``fusion``, ``postprocess``). A model calls ``with timer.stage("flow"): ...``; the
default :class:`NullTimer` costs nothing, so models need no timing code paths of their own.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol

import torch

STAGES = ("preprocess", "flow", "features", "fusion", "postprocess")

__all__ = ["STAGES", "CpuStageTimer", "CudaStageTimer", "NullTimer", "StageTimer"]


class StageTimer(Protocol):
    def stage(self, name: str) -> Iterator[None]: ...


def _check_stage(name: str) -> None:
    if name not in STAGES:
        raise ValueError(f"unknown stage {name!r}; stages are {', '.join(STAGES)}")


class NullTimer:
    """Times nothing."""

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        yield


class CpuStageTimer:
    """Wall-clock time per stage with ``time.perf_counter``; stages may repeat and nest-free add up."""

    def __init__(self) -> None:
        self.ms: dict[str, float] = dict.fromkeys(STAGES, 0.0)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        _check_stage(name)
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.ms[name] += (time.perf_counter() - t0) * 1e3

    def result(self) -> dict[str, float]:
        return dict(self.ms)


class CudaStageTimer:
    """Per-stage GPU time from CUDA events recorded on the current stream.

    Recording events does not synchronise; :meth:`result` waits for the last event only, so the
    device is synchronised once per frame, and only while timing is on.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._pairs: list[tuple[str, torch.cuda.Event, torch.cuda.Event]] = []

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        _check_stage(name)
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        start.record()
        try:
            yield
        finally:
            end.record()
            self._pairs.append((name, start, end))

    def result(self) -> dict[str, float]:
        ms = dict.fromkeys(STAGES, 0.0)
        if self._pairs:
            self._pairs[-1][2].synchronize()
        for name, start, end in self._pairs:
            ms[name] += start.elapsed_time(end)
        return ms
