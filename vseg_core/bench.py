"""Latency of models through the very runtime the node uses, with ratios measured in one run.

Models are interleaved frame by frame, so that whatever else the machine does slows every model
alike and the ratios between them stay meaningful on a noisy machine. Keyframe and non-keyframe
steps are reported apart; "outside the model" is the runtime's share (upload, resize, normalise,
upsample, argmax, download).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from vseg_core.keyframes import FixedInterval
from vseg_core.models.registry import create_model
from vseg_core.stream import VideoSegmenter

__all__ = ["BenchConfig", "BenchResult", "run_benchmark"]

_MODEL_STAGES = ("flow", "features", "fusion")
_RUNTIME_STAGES = ("preprocess", "postprocess")


@dataclass(frozen=True)
class BenchConfig:
    height: int = 512
    width: int = 1024
    device: str = "auto"
    precision: str = "fp32"
    frames: int = 20
    warmup: int = 3
    keyframe_interval: int = 5
    seed: int = 0

    def __post_init__(self) -> None:
        if self.height < 16 or self.width < 16:
            raise ValueError(f"height and width must be at least 16 pixels, got {self.height}x{self.width}")
        if self.frames < 1 or self.warmup < 0 or self.keyframe_interval < 1:
            raise ValueError("frames and keyframe_interval must be >= 1 and warmup >= 0")


@dataclass(frozen=True)
class BenchResult:
    """Milliseconds per frame (medians; p25/p75 for spread) of one model."""

    name: str  # the model and the settings that differ from its defaults, e.g. "lstm_icnet_v2,conv=separable"
    config: dict
    device: str
    frames: int
    total_ms: float
    total_p25_ms: float
    total_p75_ms: float
    keyframe_ms: float | None
    nonkey_ms: float | None
    model_ms: float
    outside_model_ms: float
    outside_share: float  # of the model's own time
    ratio_to_first: float  # total_ms / total_ms of the first model in the run

    def as_dict(self) -> dict:
        return asdict(self)


def run_benchmark(models: list[tuple[str, dict]], config: BenchConfig) -> list[BenchResult]:
    """Time ``models`` ((name, keyword config) pairs) on the same frames, interleaved."""
    if not models:
        raise ValueError("name at least one model to benchmark")
    rng = np.random.default_rng(config.seed)
    # A slowly moving textured frame: flow-based models see motion, not noise.
    base = rng.integers(0, 256, (config.height, config.width + 64, 3), dtype=np.uint8)
    frames = [np.ascontiguousarray(base[:, i * 2 : i * 2 + config.width]) for i in range(32)]
    segmenters = [
        VideoSegmenter(
            create_model(name, **cfg).eval(),
            device=config.device,
            precision=config.precision,
            keyframe_policy=FixedInterval(config.keyframe_interval),
            timing=True,
        )
        for name, cfg in models
    ]
    records: list[list] = [[] for _ in models]
    for i in range(config.warmup + config.frames):
        frame = frames[i % len(frames)]
        for seg, rec in zip(segmenters, records, strict=True):
            info = seg.step(frame).info
            if i >= config.warmup:
                rec.append(info)
    results = []
    first_total = None
    for (name, cfg), seg, rec in zip(models, segmenters, records, strict=True):
        total = np.array([r.timings_ms["total"] for r in rec])
        model = np.array([sum(r.timings_ms[s] for s in _MODEL_STAGES) for r in rec])
        outside = np.array([sum(r.timings_ms[s] for s in _RUNTIME_STAGES) for r in rec])
        key = total[[r.is_keyframe for r in rec]]
        nonkey = total[[not r.is_keyframe for r in rec]]
        median = float(np.median(total))
        first_total = first_total or median
        label = ",".join([name, *(f"{k}={v}" for k, v in cfg.items())])
        results.append(
            BenchResult(
                name=label,
                config=cfg,
                device=str(seg.device),
                frames=len(rec),
                total_ms=median,
                total_p25_ms=float(np.percentile(total, 25)),
                total_p75_ms=float(np.percentile(total, 75)),
                keyframe_ms=float(np.median(key)) if key.size else None,
                nonkey_ms=float(np.median(nonkey)) if nonkey.size else None,
                model_ms=float(np.median(model)),
                outside_model_ms=float(np.median(outside)),
                outside_share=float(np.median(outside / model)),
                ratio_to_first=median / first_total,
            )
        )
    return results
