"""The streaming protocol every registered model speaks.

Frames enter a model as RGB float tensors in [0, 1], shape (B, 3, H, W), on the model's device.
Each model normalises its input itself, in a visible ``normalize`` submodule, because the two
papers' networks want different inputs (ImageNet statistics for the backbones, x / 255 for
FlowNet). Logits leave at the input resolution, shape (B, num_classes, H, W).

- ``init_state(frame)`` -> the state before the first frame (tensors on the frame's device and dtype,
  or ``None`` for single-frame models).
- ``step(frame, state, is_keyframe=..., timer=...)`` -> :class:`StepOutput`: one frame of video.
  Models with keyframes (Accel, DFF) take the decision from the caller (the runtime's keyframe
  policy); the others ignore it and report every frame as a keyframe.
- ``forward_clip(frames, output_frames=...)`` -> logits of chosen frames of a (B, T, 3, H, W) clip
  from a fresh state, with gradients through time (training). Unrolling ``step`` over the same clip
  gives the same logits.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from vseg_core.timing import NullTimer, StageTimer

__all__ = ["StatelessSegmenter", "StepOutput", "StreamingSegmenter", "check_clip", "check_frame"]

_NULL_TIMER = NullTimer()


@dataclass(frozen=True)
class StepOutput:
    """What one ``step`` returns.

    logits: (B, C, H, W) at the input resolution.
    state: the state to pass to the next ``step`` (device tensors; opaque to callers).
    is_keyframe: whether the expensive branch ran on this frame.
    ran: names of the sub-networks that ran, e.g. {"reference", "task_head"} or {"flow", "update", "fusion"}.
    extras: model-specific signals for keyframe policies, e.g. "flow" (B, 2, h, w) in pixels at the
        flow's own resolution.
    """

    logits: Tensor
    state: Any
    is_keyframe: bool = True
    ran: frozenset[str] = frozenset()
    extras: Mapping[str, Tensor] = field(default_factory=dict)


def check_frame(frame: Tensor, *, name: str = "frame") -> None:
    """Raise ``ValueError`` unless ``frame`` is a float (B, 3, H, W) tensor."""
    if not isinstance(frame, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor of shape (B, 3, H, W), got {type(frame).__name__}")
    if frame.ndim != 4 or frame.shape[1] != 3:
        raise ValueError(f"{name} must have shape (B, 3, H, W) (RGB in [0, 1]), got {tuple(frame.shape)}")
    if not frame.is_floating_point():
        raise ValueError(f"{name} must be a floating point tensor in [0, 1], got dtype {frame.dtype}")
    if frame.shape[0] == 0 or frame.shape[2] == 0 or frame.shape[3] == 0:
        raise ValueError(f"{name} is empty: shape {tuple(frame.shape)}")


def check_clip(frames: Tensor, output_frames: Sequence[int]) -> list[int]:
    """Validate a (B, T, 3, H, W) clip and return ``output_frames`` as non-negative indices."""
    if not isinstance(frames, Tensor) or frames.ndim != 5:
        shape = tuple(frames.shape) if isinstance(frames, Tensor) else type(frames).__name__
        raise ValueError(f"a clip must have shape (B, T, 3, H, W), got {shape}")
    check_frame(frames[:, 0], name="clip frame")
    t = frames.shape[1]
    indices = []
    for i in output_frames:
        if not -t <= i < t:
            raise ValueError(f"output frame {i} is outside a clip of {t} frames")
        indices.append(i % t)
    if not indices:
        raise ValueError("output_frames is empty: name at least one frame to return logits for")
    return indices


class StreamingSegmenter(nn.Module):
    """Base class of every registered model (see the module docstring for the protocol)."""

    #: True for models whose ``step`` honours ``is_keyframe`` (Accel, DFF).
    uses_keyframes: bool = False

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be at least 1, got {num_classes}")
        self.num_classes = num_classes

    def init_state(self, frame: Tensor) -> Any:
        raise NotImplementedError

    def step(
        self, frame: Tensor, state: Any, *, is_keyframe: bool = True, timer: StageTimer = _NULL_TIMER
    ) -> StepOutput:
        raise NotImplementedError

    def forward_clip(self, frames: Tensor, output_frames: Sequence[int] = (-1,)) -> Tensor:
        """Logits (B, len(output_frames), C, H, W) of a clip run from a fresh state."""
        indices = check_clip(frames, output_frames)
        state = self.init_state(frames[:, 0])
        wanted = set(indices)
        out: dict[int, Tensor] = {}
        for t in range(max(indices) + 1):
            result = self.step(frames[:, t], state, is_keyframe=self._clip_keyframe(t))
            state = result.state
            if t in wanted:
                out[t] = result.logits
        return torch.stack([out[i] for i in indices], dim=1)

    def _clip_keyframe(self, t: int) -> bool:
        # A clip starts on a keyframe and, for keyframe models, warps from it for the rest
        # (the Accel training scheme); models without keyframes ignore the flag.
        return t == 0

    def forward(self, frame: Tensor) -> Tensor:
        """Logits (B, C, H, W) of one frame from a fresh state."""
        return self.step(frame, self.init_state(frame)).logits


class StatelessSegmenter(StreamingSegmenter):
    """A single-frame network seen as a video model: no state, every frame is a keyframe."""

    def segment(self, frame: Tensor, timer: StageTimer) -> Tensor:
        """Logits (B, C, H, W) of one frame."""
        raise NotImplementedError

    def init_state(self, frame: Tensor) -> None:
        return None

    def step(
        self, frame: Tensor, state: None = None, *, is_keyframe: bool = True, timer: StageTimer = _NULL_TIMER
    ) -> StepOutput:
        check_frame(frame)
        return StepOutput(logits=self.segment(frame, timer), state=None, is_keyframe=True, ran=frozenset({"segment"}))
