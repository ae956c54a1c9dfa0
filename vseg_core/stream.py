"""VideoSegmenter: the one streaming runtime that the node, the bag evaluator and the benchmarks use.

Per frame: one upload of the uint8 image, conversion, resize and normalisation on the device, one
model step with the temporal state kept on the device, upsampling and argmax on the device, and one
download of uint8 (or uint16) labels. What is measured offline is what runs on the vehicle.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from vseg_core.keyframes import FixedInterval, KeyframePolicy
from vseg_core.models.streaming import StreamingSegmenter
from vseg_core.resets import RESET_FIRST_FRAME, RESET_NONE, RESET_REQUESTED, RESET_SIZE_CHANGED
from vseg_core.timing import CpuStageTimer, CudaStageTimer, NullTimer

__all__ = ["FrameInfo", "SegmentationResult", "VideoSegmenter", "resolve_device"]

PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass(frozen=True)
class FrameInfo:
    """What the runtime did with one frame (the fields of vseg/msg/SegmentationInfo it owns)."""

    is_keyframe: bool
    frames_since_keyframe: int
    keyframe_interval: int
    state_reset: bool
    reset_reason: str
    timings_ms: dict[str, float] = field(default_factory=dict)  # STAGES + "total"; empty with timing off
    stamp: Any = None


@dataclass(frozen=True)
class SegmentationResult:
    """labels: (H, W) uint8 class ids (uint16 beyond 256 classes) at the input frame's size.
    confidence: (H, W) uint8 max softmax x 255, when asked for; None otherwise."""

    labels: np.ndarray
    confidence: np.ndarray | None
    info: FrameInfo


def resolve_device(device: str | torch.device) -> torch.device:
    """'auto' -> the first CUDA device when there is one, else the CPU; checks CUDA indices."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {device!r}") from None
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r} asked for, but torch sees no CUDA device here")
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise ValueError(f"device {device!r} does not exist: {torch.cuda.device_count()} CUDA device(s)")
    elif resolved.type != "cpu":
        raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {device!r}")
    return resolved


def _argmax_classes(logits: Tensor) -> tuple[Tensor, Tensor]:
    """(C, H, W) -> (argmax (H, W) int64, max (H, W)); the first class wins ties, like torch.argmax.

    On the CPU a running maximum over the classes is several times faster than torch.argmax over
    the channel dimension (which walks memory with a stride of H*W); on GPUs argmax is fast.
    """
    best = logits.amax(dim=0)
    if logits.device.type != "cpu":
        return logits.argmax(dim=0), best
    labels = torch.zeros(logits.shape[1:], dtype=torch.int64, device=logits.device)
    for c in range(logits.shape[0] - 1, -1, -1):  # from the last class down: the first maximum wins
        labels.masked_fill_(logits[c] == best, c)
    return labels, best


class VideoSegmenter:
    """Segment a video stream frame by frame with a registered model.

    model: any :class:`StreamingSegmenter` (stateless, ConvLSTM or keyframe models).
    device: "auto", "cpu", "cuda" or "cuda:N".
    precision: "fp32"; "fp16" (CUDA only) or "bf16" run the model under autocast, weights stay fp32.
    keyframe_policy: for keyframe models; default a keyframe every 5 frames (the Accel evaluation).
    input_size: (height, width) the model sees; None feeds frames at their own size. Labels always
        come back at the frame's own size.
    timing: measure stages (CUDA events on a GPU: one synchronisation per frame; perf_counter on the CPU).
    confidence: also return the max softmax probability per pixel.
    """

    def __init__(
        self,
        model: StreamingSegmenter,
        *,
        device: str | torch.device = "auto",
        precision: str = "fp32",
        keyframe_policy: KeyframePolicy | None = None,
        input_size: tuple[int, int] | None = None,
        timing: bool = True,
        confidence: bool = False,
    ) -> None:
        if not isinstance(model, StreamingSegmenter):
            raise ValueError(f"model must be a vseg_core StreamingSegmenter, got {type(model).__name__}")
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        self.device = resolve_device(device)
        if precision == "fp16" and self.device.type != "cuda":
            raise ValueError("precision fp16 needs a CUDA device; use fp32 or bf16 on the CPU")
        if precision == "bf16" and self.device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise ValueError(f"precision bf16 is not supported by {torch.cuda.get_device_name(self.device)}")
        if input_size is not None and (
            len(input_size) != 2 or min(input_size) < 1 or not all(isinstance(v, int) for v in input_size)
        ):
            raise ValueError(f"input_size must be (height, width) in positive pixels, got {input_size!r}")
        self.model = model.to(self.device).eval()
        self.precision = precision
        self.keyframe_policy: KeyframePolicy = keyframe_policy or FixedInterval(5)
        self.input_size = input_size
        self.timing = timing
        self.confidence = confidence
        self.label_dtype = torch.uint8 if model.num_classes <= 256 else torch.uint16
        self._state: Any = None
        self._frame_shape: tuple[int, ...] | None = None
        self._since_key = 0
        self._pending_reset = RESET_FIRST_FRAME

    # ------------------------------------------------------------------------------ control
    def reset(self, reason: str = RESET_REQUESTED) -> None:
        """Drop the temporal state; the next frame starts a new stream and reports ``reason``."""
        self._state = None
        self._pending_reset = reason or RESET_REQUESTED
        self.keyframe_policy.reset()

    def set_keyframe_policy(self, policy: KeyframePolicy) -> None:
        """Swap the policy between frames (e.g. a ROS parameter change); the state is kept."""
        self.keyframe_policy = policy

    # ------------------------------------------------------------------------------ frames
    @staticmethod
    def _check_frame(frame: object) -> np.ndarray:
        expected = "an (H, W, 3) RGB or (H, W) mono uint8 numpy array"
        if not isinstance(frame, np.ndarray):
            raise ValueError(f"frame must be {expected}, got {type(frame).__name__}")
        if frame.dtype != np.uint8:
            raise ValueError(f"frame must be {expected}, got dtype {frame.dtype}")
        if not (frame.ndim == 2 or (frame.ndim == 3 and frame.shape[2] == 3)):
            raise ValueError(f"frame must be {expected}, got shape {frame.shape}")
        if frame.size == 0:
            raise ValueError(f"frame is empty: shape {frame.shape}")
        return frame

    def _upload(self, frame: np.ndarray) -> Tensor:
        """(H, W[, 3]) uint8 -> (1, 3, h, w) float in [0, 1] on the device, resized to input_size."""
        host = torch.from_numpy(np.ascontiguousarray(frame))
        if self.device.type == "cuda":
            host = host.pin_memory()
        x = host.to(self.device, non_blocking=True)
        x = x.unsqueeze(-1).expand(*x.shape, 3) if x.ndim == 2 else x
        x = x.permute(2, 0, 1).unsqueeze(0).float().div_(255.0)
        if self.input_size is not None and tuple(x.shape[-2:]) != self.input_size:
            x = F.interpolate(x, size=self.input_size, mode="bilinear", align_corners=False, antialias=True)
        return x

    @torch.inference_mode()
    def step(self, frame: np.ndarray, stamp: Any = None, reset_reason: str | None = None) -> SegmentationResult:
        """Segment the next frame of the stream.

        reset_reason: drop the temporal state first, for this reason (a time jump, another camera:
        the caller decides). A change of frame size resets by itself (``size_changed``).
        """
        frame = self._check_frame(frame)
        t_start = time.perf_counter()
        if reset_reason:
            self.reset(reset_reason)
        elif self._frame_shape is not None and frame.shape != self._frame_shape:
            self.reset(RESET_SIZE_CHANGED)
        self._frame_shape = frame.shape
        reason, self._pending_reset = self._pending_reset, RESET_NONE

        if not self.timing:
            timer = NullTimer()
        elif self.device.type == "cuda":
            timer = CudaStageTimer(self.device)
        else:
            timer = CpuStageTimer()
        with timer.stage("preprocess"):
            x = self._upload(frame)
        if self._state is None:
            self._state = self.model.init_state(x)
            is_key = True
        else:
            is_key = not self.model.uses_keyframes or self.keyframe_policy.should_key(self._since_key + 1)
        amp = self.precision != "fp32"
        with torch.autocast(self.device.type, dtype=PRECISIONS[self.precision], enabled=amp):
            out = self.model.step(x, self._state, is_keyframe=is_key, timer=timer)
        self._state = out.state
        if self.model.uses_keyframes:
            self.keyframe_policy.observe(out.extras, is_keyframe=out.is_keyframe)
        self._since_key = 0 if out.is_keyframe else self._since_key + 1

        with timer.stage("postprocess"):
            logits = out.logits.float()
            if tuple(logits.shape[-2:]) != frame.shape[:2]:
                logits = F.interpolate(logits, size=frame.shape[:2], mode="bilinear", align_corners=False)
            labels_dev, best = _argmax_classes(logits[0])
            finite = torch.isfinite(best).all()  # amax propagates NaN and inf from any class
            labels_dev = labels_dev.to(self.label_dtype)
            conf_dev = None
            if self.confidence:
                # max softmax = 1 / sum_c exp(l_c - max): no full softmax tensor needed.
                conf_dev = ((logits[0] - best).exp_().sum(dim=0).reciprocal_() * 255.0).round_().to(torch.uint8)
            labels = labels_dev.cpu().numpy()
            confidence = conf_dev.cpu().numpy() if conf_dev is not None else None
        if not bool(finite):
            self.reset(RESET_REQUESTED)
            raise FloatingPointError(
                f"{getattr(self.model, 'model_name', type(self.model).__name__)} produced NaN or infinite logits "
                "(broken weights, or fp16 overflow: try precision fp32); the temporal state was reset"
            )

        timings: dict[str, float] = {}
        if self.timing:
            timings = timer.result()
            timings["total"] = (time.perf_counter() - t_start) * 1e3
        info = FrameInfo(
            is_keyframe=out.is_keyframe,
            frames_since_keyframe=self._since_key,
            keyframe_interval=self.keyframe_policy.max_interval if self.model.uses_keyframes else 1,
            state_reset=bool(reason),
            reset_reason=reason,
            timings_ms=timings,
            stamp=stamp,
        )
        return SegmentationResult(labels=labels, confidence=confidence, info=info)
