"""Latency of models through the very runtime the node uses, with ratios measured in one run.

Models are interleaved frame by frame, so that whatever else the machine does slows every model
alike and the ratios between them stay meaningful on a noisy machine. Keyframe and non-keyframe
steps are reported apart; "outside the model" is the runtime's share (upload, resize, normalise,
upsample, argmax, download). With several backends each model runs once per backend (onnxruntime
runs an export written at the benchmark's size first), interleaved too, and every backend's labels
are compared pixel by pixel with the first backend's on the same frames.
"""

from __future__ import annotations

import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from vseg_core.keyframes import FixedInterval
from vseg_core.models.registry import create_model
from vseg_core.runtime_onnx import BACKENDS
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
    backends: tuple[str, ...] = ("torch",)
    providers: tuple[str, ...] | None = None  # onnxruntime's, e.g. ("cuda", "cpu"); None: the CPU

    def __post_init__(self) -> None:
        if not self.backends or any(b not in BACKENDS for b in self.backends):
            raise ValueError(f"backends must be some of {', '.join(BACKENDS)}, got {self.backends!r}")
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
    backend: str = "torch"
    label_agreement: float | None = None  # share of pixels labelled as the model's first backend labels them

    def as_dict(self) -> dict:
        return asdict(self)


def _build(name: str, cfg: dict):
    """A registered model with random weights, or a checkpoint (a shipped name or a .safetensors path)."""
    from vseg_core.checkpoint import load_checkpoint
    from vseg_core.pretrained import checkpoint_path, shipped_checkpoints

    if name.endswith(".safetensors") or name in shipped_checkpoints():
        if cfg:
            raise ValueError(f"{name} is a checkpoint: its settings are its own, got {sorted(cfg)}")
        return load_checkpoint(checkpoint_path(name))
    return create_model(name, **cfg)


def run_benchmark(models: list[tuple[str, dict]], config: BenchConfig) -> list[BenchResult]:
    """Time ``models`` ((name or checkpoint, keyword config) pairs) with every backend of ``config``
    on the same frames, interleaved."""
    if not models:
        raise ValueError("name at least one model to benchmark")
    rng = np.random.default_rng(config.seed)
    # A slowly moving textured frame: flow-based models see motion, not noise.
    base = rng.integers(0, 256, (config.height, config.width + 64, 3), dtype=np.uint8)
    frames = [np.ascontiguousarray(base[:, i * 2 : i * 2 + config.width]) for i in range(32)]
    with tempfile.TemporaryDirectory(prefix="vseg-bench-") as exports:
        runs = []  # (name, cfg, backend, segmenter, index of the model's first run)
        for m, (name, cfg) in enumerate(models):
            model = _build(name, cfg).eval()
            first = len(runs)
            for backend in config.backends:
                runs.append((name, cfg, backend, _segmenter(model, backend, config, Path(exports) / str(m)), first))
        return _timed(runs, frames, config)


def _segmenter(model, backend: str, config: BenchConfig, export_dir: Path) -> VideoSegmenter:
    common = {"keyframe_policy": FixedInterval(config.keyframe_interval), "timing": True}
    if backend == "torch":
        return VideoSegmenter(model, device=config.device, precision=config.precision, **common)
    from vseg_core.export import ExportConfig, export_model

    export_model(model, export_dir, ExportConfig(height=config.height, width=config.width))
    return VideoSegmenter(
        export_dir, backend="onnxruntime", providers=config.providers, device=config.device,
        precision=config.precision, **common,
    )  # fmt: skip


def _timed(runs: list[tuple], frames: list[np.ndarray], config: BenchConfig) -> list[BenchResult]:
    records: list[list] = [[] for _ in runs]
    same = [[0, 0] for _ in runs]  # pixels equal to the model's first backend, pixels compared
    for i in range(config.warmup + config.frames):
        frame = frames[i % len(frames)]
        labels = []
        for (_, _, _, seg, first), rec, agree in zip(runs, records, same, strict=True):
            result = seg.step(frame)
            labels.append(result.labels)
            if i >= config.warmup:
                rec.append(result.info)
                agree[0] += int((result.labels == labels[first]).sum())
                agree[1] += result.labels.size
    results = []
    first_total = None
    several = len(config.backends) > 1
    for (name, cfg, backend, seg, first), rec, agree, idx in zip(runs, records, same, range(len(runs)), strict=True):
        total = np.array([r.timings_ms["total"] for r in rec])
        model = np.array([sum(r.timings_ms[s] for s in _MODEL_STAGES) for r in rec])
        outside = np.array([sum(r.timings_ms[s] for s in _RUNTIME_STAGES) for r in rec])
        key = total[[r.is_keyframe for r in rec]]
        nonkey = total[[not r.is_keyframe for r in rec]]
        median = float(np.median(total))
        first_total = first_total or median
        label = ",".join([name, *(f"{k}={v}" for k, v in cfg.items())])
        if several or backend != "torch":
            label = f"{label} [{backend}]"
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
                backend=backend,
                label_agreement=agree[0] / agree[1] if idx != first else None,
            )
        )
    return results
