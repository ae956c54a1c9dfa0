"""VideoSegmenter: the one streaming runtime that the node, the bag evaluator and the benchmarks use.

Per frame: one upload of the uint8 image, conversion, resize and normalisation on the device, one
model step with the temporal state kept on the device, upsampling and argmax on the device, and one
download of uint8 (or uint16) labels, the optional confidence and the finite-logits flag packed into
one buffer. What is measured offline is what runs on the vehicle.
"""

from __future__ import annotations

import numbers
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from vseg_core.keyframes import FixedInterval, KeyframePolicy
from vseg_core.models.streaming import StreamingSegmenter
from vseg_core.resets import (
    RESET_FIRST_FRAME,
    RESET_FRAME_ID_CHANGED,
    RESET_NONE,
    RESET_REQUESTED,
    RESET_SERVICE,
    RESET_SIZE_CHANGED,
    RESET_STAMP_BACKWARDS,
    RESET_STAMP_GAP,
)
from vseg_core.runtime_onnx import BACKENDS, OnnxSegmenter
from vseg_core.timing import CpuStageTimer, CudaStageTimer, NullTimer

__all__ = ["RESET_REASONS", "FrameInfo", "SegmentationResult", "VideoSegmenter", "resolve_device"]

PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
RESET_REASONS = frozenset(
    {
        RESET_FIRST_FRAME,
        RESET_SIZE_CHANGED,
        RESET_FRAME_ID_CHANGED,
        RESET_STAMP_BACKWARDS,
        RESET_STAMP_GAP,
        RESET_SERVICE,
        RESET_REQUESTED,
    }
)


@dataclass(frozen=True)
class FrameInfo:
    """What the runtime did with one frame (the fields of vseg/msg/SegmentationInfo it owns).

    is_keyframe: the model's expensive branch ran (always True for models without keyframes).
    frames_since_keyframe: 0 on a keyframe.
    keyframe_interval: the policy's (maximum) interval; 1 for models without keyframes.
    state_reset / reset_reason: the temporal state was cleared before this frame, and why (one of
        the RESET_* values of vseg/msg/SegmentationInfo, "" when not).
    timings_ms: milliseconds per stage, keys ``timing.STAGES`` + "total"; empty with timing off.
    stamp: whatever the caller passed to ``step``, unchanged.
    """

    is_keyframe: bool
    frames_since_keyframe: int
    keyframe_interval: int
    state_reset: bool
    reset_reason: str
    timings_ms: dict[str, float] = field(default_factory=dict)
    stamp: Any = None


@dataclass(frozen=True)
class SegmentationResult:
    """labels: (H, W) uint8 class ids (uint16 beyond 256 classes) at the input frame's size.
    confidence: (H, W) uint8 max softmax x 255 (rounded), when asked for; None otherwise."""

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


def _nearest(image: Tensor, size: tuple[int, int], *, wide: bool = False) -> Tensor:
    """(h, w) class ids or confidences -> (H, W) by F.interpolate's nearest neighbour.

    wide: ids above 255, gathered as int32 at the source indices F.interpolate's kernels compute
    (floor of dst * float32(src / dst)), since they resize no integer type but uint8; else uint8
    through F.interpolate itself."""
    if not wide:
        return F.interpolate(image.to(torch.uint8)[None, None], size=size, mode="nearest")[0, 0]
    index = []
    for src, dst in zip(image.shape, size, strict=True):
        scale = torch.tensor(src, dtype=torch.float32) / torch.tensor(dst, dtype=torch.float32)
        positions = torch.arange(dst, dtype=torch.float32) * scale
        index.append(positions.floor_().long().clamp_(max=src - 1).to(image.device))
    return image.to(torch.int32)[index[0]][:, index[1]]


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

    model: with ``backend="torch"`` any :class:`StreamingSegmenter` (stateless, ConvLSTM or keyframe
        models); it is moved to ``device`` and put in eval mode. With ``backend="onnxruntime"`` an
        export (its folder or ``export.json``, written by ``vseg export``) or an
        :class:`~vseg_core.runtime_onnx.OnnxSegmenter`.
    backend: "torch" or "onnxruntime". The reset rules, keyframe policy, timings and postprocessing
        are this class's whichever runs; the backend only runs one step with explicit state.
    providers: onnxruntime only: execution providers in order of preference ("tensorrt", "cuda",
        "cpu"); None: the CPU. Providers the installed onnxruntime lacks are refused.
    device: "auto", "cpu", "cuda" or "cuda:N" (onnxruntime: where postprocessing runs, the CPU;
        the providers choose where the graphs run).
    precision: "fp32"; "fp16" (CUDA only) or "bf16" (CPU, and GPUs that support it) run the model
        under autocast. Autocast rather than casting the model: weights stay fp32, so one model
        object serves every precision, numerically touchy ops (softmax, norms, the interpolation of
        logits) stay fp32, and checkpoints are unaffected. A precision the device lacks raises
        ``ValueError`` at construction; there is no silent fallback.
    keyframe_policy: for keyframe models; default a keyframe every 5 frames (the Accel evaluation).
        Ignored by models without keyframes (every frame is a keyframe).
    input_size: (height, width) the model sees; None feeds frames at their own size. Labels always
        come back at the frame's own size.
    timing: measure stages (CUDA events on a GPU, read once per frame after the download has
        synchronised anyway; perf_counter on the CPU). Off: no timer, no extra work.
    confidence: also return the max softmax probability per pixel.
    """

    def __init__(
        self,
        model: StreamingSegmenter | OnnxSegmenter | str | Path,
        *,
        backend: str = "torch",
        providers: Sequence[str] | None = None,
        device: str | torch.device = "auto",
        precision: str = "fp32",
        keyframe_policy: KeyframePolicy | None = None,
        input_size: tuple[int, int] | None = None,
        timing: bool = True,
        confidence: bool = False,
    ) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        if backend == "onnxruntime":
            model = self._onnx_model(model, providers, device, precision)
        elif providers is not None:
            raise ValueError("providers are onnxruntime's; backend 'torch' takes device= instead")
        elif not isinstance(model, StreamingSegmenter):
            raise ValueError(f"model must be a vseg_core StreamingSegmenter, got {type(model).__name__}")
        self.backend = backend
        self.device = resolve_device("cpu" if backend == "onnxruntime" else device)
        if precision == "fp16" and self.device.type != "cuda":
            raise ValueError("precision fp16 needs a CUDA device; use fp32 or bf16 on the CPU")
        if precision == "bf16" and self.device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise ValueError(f"precision bf16 is not supported by {torch.cuda.get_device_name(self.device)}; use fp16")
        if input_size is not None:
            if (
                len(input_size) != 2
                or not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in input_size)
                or min(input_size) < 1
            ):
                raise ValueError(f"input_size must be (height, width) in positive pixels, got {input_size!r}")
            input_size = (int(input_size[0]), int(input_size[1]))
        if isinstance(model, OnnxSegmenter) and model.input_size is not None:
            if input_size not in (None, model.input_size):
                raise ValueError(
                    f"the export takes {model.input_size[0]}x{model.input_size[1]} frames, not input_size "
                    f"{input_size}: export at that size or with --dynamic"
                )
            input_size = model.input_size  # frames of another size are resized to the graph's
        self.model = model.to(self.device).eval() if backend == "torch" else model
        self.precision = precision
        self.keyframe_policy: KeyframePolicy = keyframe_policy or FixedInterval(5)
        self.input_size = input_size
        self.timing = timing
        self.confidence = confidence
        self.label_dtype = torch.uint8 if model.num_classes <= 256 else torch.uint16
        self._label_np = np.uint8 if model.num_classes <= 256 else np.uint16
        self._state: Any = None
        self._fresh = True  # no state yet: the next frame starts the stream (and is a keyframe)
        self._frame_size: tuple[int, int] | None = None
        self._since_key = 0
        self._pending_reset = RESET_FIRST_FRAME
        # The host side of the upload, reused while the frame shape stays: pinned on CUDA so the copy
        # runs asynchronously; the event says when the device has read it and it may be overwritten.
        self._staging: Tensor | None = None
        self._staging_free: torch.cuda.Event | None = None

    @staticmethod
    def _onnx_model(model: object, providers: Sequence[str] | None, device: object, precision: str) -> OnnxSegmenter:
        if str(device) not in ("auto", "cpu"):
            raise ValueError(
                f"backend 'onnxruntime' postprocesses on the CPU; choose the GPU with providers=['cuda'], not "
                f"device {str(device)!r}"
            )
        if precision != "fp32":
            raise ValueError("backend 'onnxruntime' runs the precision of the export (fp32 graphs); use fp32")
        if isinstance(model, OnnxSegmenter):
            if providers is not None:
                raise ValueError("this OnnxSegmenter already has its providers; pass a path to choose them here")
            return model
        if isinstance(model, (str, Path)):
            return OnnxSegmenter(model, providers=providers)
        raise ValueError(
            f"backend 'onnxruntime' runs an export (vseg export, or vseg_core.export.export_model), not a "
            f"{type(model).__name__}: pass the export's folder"
        )

    # ------------------------------------------------------------------------------ control
    def reset(self, reason: str = RESET_REQUESTED) -> None:
        """Drop the temporal state; the next frame starts a new stream and reports ``reason``.

        reason: normally one of the RESET_* values of vseg/msg/SegmentationInfo (``RESET_REASONS``);
        other strings pass through unchanged (a caller's own tag, e.g. an evaluator's sequence
        name), "" means ``requested``.
        """
        if not isinstance(reason, str):
            raise ValueError(f"reset reason must be a string (a RESET_* value), got {type(reason).__name__}")
        reason = reason or RESET_REQUESTED
        self._state = None
        self._fresh = True
        self._pending_reset = reason
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

    def _stage(self, frame: np.ndarray) -> Tensor:
        """The frame as a host tensor. For GPUs, and for frames torch cannot wrap (negative strides,
        read-only message buffers), a copy into the reusable host buffer (pinned for GPUs); a CPU
        reads any other frame where it lies, since everything after this reads it only (a 16 MP frame:
        48 MB and a 10 ms copy saved)."""
        cuda = self.device.type == "cuda"
        if not cuda and frame.flags.writeable and all(stride >= 0 for stride in frame.strides):
            self._staging = self._staging_free = None
            return torch.from_numpy(frame)
        if self._staging is None or tuple(self._staging.shape) != frame.shape:
            self._staging = torch.empty(frame.shape, dtype=torch.uint8, pin_memory=cuda)
            self._staging_free = torch.cuda.Event() if cuda else None
        elif self._staging_free is not None:
            self._staging_free.synchronize()  # the previous frame's upload has finished reading it
        self._staging.numpy()[...] = frame
        return self._staging

    def _upload(self, frame: np.ndarray) -> Tensor:
        """(H, W[, 3]) uint8 -> (1, 3, h, w) float in [0, 1] on the device, resized to input_size."""
        x = self._stage(frame).to(self.device, non_blocking=True)
        if self._staging_free is not None:
            self._staging_free.record()
        x = (x.unsqueeze(-1) if x.ndim == 2 else x).permute(2, 0, 1).unsqueeze(0)  # (1, C, H, W) uint8
        size = tuple(x.shape[-2:])
        if self.input_size is not None and size != self.input_size and self._shrink_as_bytes(size):
            # On the CPU torch shrinks uint8 images (antialiased bilinear, channels-last) 15x faster than
            # floats, without the frame-sized float copy (a 16 MP frame: 7 ms instead of 100 ms and
            # 190 MB); the result differs from the float path only by rounding to bytes.
            x = F.interpolate(x, size=self.input_size, mode="bilinear", align_corners=False, antialias=True)
        # Mono is widened on the device: a third of the bytes cross the bus.
        x = x.expand(1, 3, *x.shape[-2:]).float().div_(255.0)
        if self.input_size is not None and tuple(x.shape[-2:]) != self.input_size:
            # Antialiasing matters when shrinking a camera image several times; it is a no-op upwards.
            x = F.interpolate(x, size=self.input_size, mode="bilinear", align_corners=False, antialias=True)
        return x

    def _shrink_as_bytes(self, size: tuple[int, ...]) -> bool:
        """Resize before the conversion to floats: on the CPU, when the frame shrinks on both sides
        (upwards, bytes would round away what bilinear interpolation adds)."""
        return self.device.type == "cpu" and size[0] >= self.input_size[0] and size[1] >= self.input_size[1]

    def _postprocess(self, logits: Tensor, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray | None, bool]:
        """(1, C, h, w) logits -> labels (H, W), confidence (H, W) or None, all logits finite.

        On a GPU everything the host needs is written into one uint8 buffer (labels, then the
        confidence, then a finite flag) so that a frame costs a single download and synchronisation.
        """
        h, w = size
        logits = logits.float()  # fp16/bf16 logits: interpolate and compare in fp32
        # Bilinear up to twice the logits' own size per side at most; beyond, labels and confidence
        # are repeated nearest-neighbour from there. A camera frame far larger than the model's input
        # then costs what a small one does (a 16 MP frame's full-size logits would be ~0.7 GB), and
        # the labels differ only in how finely class borders are placed between logit pixels.
        lh, lw = logits.shape[-2:]
        fine = (min(h, 2 * lh), min(w, 2 * lw))
        if (lh, lw) != fine:
            logits = F.interpolate(logits, size=fine, mode="bilinear", align_corners=False)
        labels_dev, best = _argmax_classes(logits[0])
        # max softmax = 1 / sum_c exp(l_c - max): no full softmax tensor needed.
        conf = (logits[0] - best).exp_().sum(dim=0).reciprocal_().mul_(255.0).round_() if self.confidence else None
        finite = torch.isfinite(best).all()  # amax propagates NaN and inf from any class
        if fine != size:
            # Nearest neighbour on the bytes that go out (not int64 or float): 8x and 4x less to
            # move, and torch's uint8 kernel is 3x faster than gathering rows and columns.
            labels_dev = _nearest(labels_dev, size, wide=self.label_dtype != torch.uint8)
            conf = _nearest(conf, size) if conf is not None else None
        if logits.device.type == "cpu":  # nothing to download: no packing copy (32 MB for a 16 MP frame)
            labels = labels_dev.numpy().astype(self._label_np, copy=False)
            confidence = conf.to(torch.uint8).numpy() if conf is not None else None
            return labels, confidence, bool(finite)
        label_bytes = h * w * self.label_dtype.itemsize
        packed = torch.empty(
            label_bytes + (h * w if self.confidence else 0) + 1, dtype=torch.uint8, device=logits.device
        )
        packed[:label_bytes].view(self.label_dtype).view(h, w).copy_(labels_dev)
        if conf is not None:
            packed[label_bytes:-1].view(h, w).copy_(conf)
        packed[-1:].copy_(finite)
        host = packed.cpu().numpy()
        labels = host[:label_bytes].view(self._label_np).reshape(h, w)
        confidence = host[label_bytes:-1].reshape(h, w) if self.confidence else None
        return labels, confidence, bool(host[-1])

    def _host_frame(self, frame: np.ndarray) -> np.ndarray:
        """onnxruntime: (H, W[, 3]) uint8 -> (h, w, 3) uint8 at the graph's size; the graph preprocesses.

        A frame of the graph's size goes as it is (bytes); another size is resized as the torch path
        does (antialiased bilinear on floats) and rounded back to bytes."""
        size = (frame.shape[0], frame.shape[1])
        if self.input_size is None or size == self.input_size:
            return np.repeat(frame[..., None], 3, axis=2) if frame.ndim == 2 else frame
        x = self._upload(frame)[0].permute(1, 2, 0)
        return x.mul(255.0).round_().clamp_(0, 255).to(torch.uint8).numpy()

    @torch.inference_mode()
    def step(self, frame: np.ndarray, stamp: Any = None, reset_reason: str | None = None) -> SegmentationResult:
        """Segment the next frame of the stream.

        frame: (H, W, 3) RGB or (H, W) mono uint8 array (any strides).
        stamp: passed through to ``info.stamp``.
        reset_reason: drop the temporal state first, for this reason (a time jump, another camera:
            the caller decides; one of the RESET_* values). A change of the frame's height or width
            resets by itself (``size_changed``).
        Raises ``ValueError`` for a bad frame and whatever the model raises (a frame too small for
        it, out of memory): the stream is then left exactly as it was, reset included (a reset asked
        for, or implied by a new size, is applied by the first frame that goes through).
        ``FloatingPointError`` when the model produced NaN or infinite logits (the state is dropped).
        """
        frame = self._check_frame(frame)
        if reset_reason is not None and not isinstance(reset_reason, str):
            raise ValueError(f"reset reason must be a string (a RESET_* value), got {type(reset_reason).__name__}")
        t_start = time.perf_counter()
        size = (frame.shape[0], frame.shape[1])
        if reset_reason:
            starting = reset_reason
        elif self._frame_size is not None and size != self._frame_size:
            starting = RESET_SIZE_CHANGED
        else:
            starting = None

        if not self.timing:
            timer = NullTimer()
        elif self.device.type == "cuda":
            timer = CudaStageTimer(self.device)
        else:
            timer = CpuStageTimer()
        with timer.stage("preprocess"):
            x = self._upload(frame) if self.backend == "torch" else self._host_frame(frame)
        if self._fresh or starting:
            state, is_key = self.model.init_state(x), True  # nothing to warp or remember yet
        else:
            state = self._state
            is_key = not self.model.uses_keyframes or self.keyframe_policy.should_key(self._since_key + 1)
        with torch.autocast(self.device.type, dtype=PRECISIONS[self.precision], enabled=self.precision != "fp32"):
            out = self.model.step(x, state, is_keyframe=is_key, timer=timer)
        with timer.stage("postprocess"):
            labels, confidence, finite = self._postprocess(out.logits, size)
        if not finite:
            self.reset(RESET_REQUESTED)
            raise FloatingPointError(
                f"{getattr(self.model, 'model_name', type(self.model).__name__)} produced NaN or infinite logits "
                "(broken weights, or fp16 overflow: try precision fp32); the temporal state was reset"
            )

        # Only a frame that went through commits: a failing step leaves the stream where it was.
        if starting:
            self.reset(starting)
        self._state, self._fresh, self._frame_size = out.state, False, size
        reason, self._pending_reset = self._pending_reset, RESET_NONE
        if self.model.uses_keyframes:
            self.keyframe_policy.observe(out.extras, is_keyframe=out.is_keyframe)
        self._since_key = 0 if out.is_keyframe else self._since_key + 1

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
