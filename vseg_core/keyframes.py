"""Keyframe policies: when a keyframe model (Accel, DFF) runs its expensive reference branch.

The runtime asks ``should_key(distance)`` before each frame (``distance``: how many frames this frame
comes after the last keyframe, 1 for the next one) and hands the model's
``StepOutput.extras`` to ``observe`` after it. The first frame after a reset is always a keyframe
(the runtime enforces that; there is nothing to warp yet).

- :class:`FixedInterval` is the papers' schedule: a keyframe every ``interval`` frames.
- :class:`AdaptiveKeyframes` (not in either paper) adds a keyframe early when the scene moved:
  the motion accumulated since the keyframe, measured on the model's own flow, passes a share of
  the image width, or the update branch disagrees too much with the warped reference. A maximum
  interval bounds how stale the reference can get.

Signals a keyframe model may put in ``StepOutput.extras`` on non-keyframes (all optional; a policy
uses what is there):

- ``"flow"``: (B, 2, h, w) motion from the previous frame in pixels of the flow map itself.
- ``"disagreement"``: scalar or (B,) share in [0, 1] of pixels where the update branch's class
  differs from the warped reference's.
- ``"reference_scores"`` and ``"update_scores"``: (B, C, h, w) score maps of the two branches at
  the same size; the policy takes the disagreement of their argmax itself.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from torch import Tensor

__all__ = [
    "AdaptiveConfig",
    "AdaptiveKeyframes",
    "FixedInterval",
    "KeyframePolicy",
    "make_keyframe_policy",
]


def _check_count(name: str, value: object) -> int:
    # ROS parameters and YAML give ints, numpy gives np.int64; bools and floats are mistakes.
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1 (frames), got {value!r}")
    return int(value)


class KeyframePolicy(Protocol):
    """What the runtime asks, per frame of a keyframe model."""

    #: The largest number of frames between keyframes (reported in SegmentationInfo).
    max_interval: int

    def should_key(self, distance: int) -> bool:
        """Before a frame: make it a keyframe? ``distance``: frames after the last keyframe (>= 1)."""
        ...

    def observe(self, extras: Mapping[str, Tensor], *, is_keyframe: bool) -> None:
        """After that frame's step: the model's ``extras`` (device tensors; do not synchronise)."""
        ...

    def reset(self) -> None:
        """The stream starts over (the runtime makes its next frame a keyframe)."""
        ...


class FixedInterval:
    """A keyframe every ``interval`` frames (interval 1: every frame)."""

    def __init__(self, interval: int = 5) -> None:
        self.max_interval = _check_count("keyframe interval", interval)

    def should_key(self, distance: int) -> bool:
        return distance >= self.max_interval

    def observe(self, extras: Mapping[str, Tensor], *, is_keyframe: bool) -> None:
        pass

    def reset(self) -> None:
        pass

    def __repr__(self) -> str:
        return f"FixedInterval({self.max_interval})"


@dataclass(frozen=True)
class AdaptiveConfig:
    """max_interval: keyframe at the latest after this many frames.
    min_interval: never two keyframes closer than this.
    motion_threshold: keyframe once the mean flow magnitude summed since the last keyframe exceeds
        this share of the flow map's width (0.04: the scene moved 4 % of the image width on average).
    disagreement_threshold: keyframe once the share of pixels where the update branch's class differs
        from the warped reference's exceeds this (models that report ``extras["disagreement"]``)."""

    max_interval: int = 10
    min_interval: int = 1
    motion_threshold: float = 0.04
    disagreement_threshold: float = 0.15

    def __post_init__(self) -> None:
        _check_count("max_interval", self.max_interval)
        _check_count("min_interval", self.min_interval)
        if not 1 <= self.min_interval <= self.max_interval:
            raise ValueError(
                f"need 1 <= min_interval <= max_interval, got min {self.min_interval}, max {self.max_interval}"
            )
        if not self.motion_threshold > 0 or not 0 < self.disagreement_threshold <= 1:
            raise ValueError(
                "motion_threshold must be > 0 and disagreement_threshold in (0, 1], got "
                f"{self.motion_threshold} and {self.disagreement_threshold}"
            )


# The adaptive policy needs shares and means, not every pixel: a regular grid of about this many
# points estimates them to well under a percent, and keeps the two full-resolution argmaxes and the
# flow norm (about 55 ms per frame at 360x480 on two CPU cores) out of the frame's time.
_SAMPLE_POINTS = 8192


def _sample(maps: Tensor) -> Tensor:
    """(B, C, H, W) -> the same maps on a regular grid of at most about ``_SAMPLE_POINTS`` pixels."""
    stride = max(1, math.ceil(math.sqrt(maps.shape[-2] * maps.shape[-1] / _SAMPLE_POINTS)))
    return maps[..., ::stride, ::stride]


class AdaptiveKeyframes:
    """Keyframes on motion and disagreement, between ``min_interval`` and ``max_interval`` frames."""

    def __init__(self, config: AdaptiveConfig = AdaptiveConfig()) -> None:
        self.config = config
        self.max_interval = config.max_interval
        self.motion = 0.0  # accumulated since the last keyframe, share of the flow map's width
        self.disagreement = 0.0  # of the latest frame
        self._pending: list[tuple[str, Tensor]] = []

    def observe(self, extras: Mapping[str, Tensor], *, is_keyframe: bool) -> None:
        if is_keyframe:
            self.reset()
            return
        # Keep device scalars; they are read at the next decision, after the runtime's download has
        # synchronised anyway, so observing adds no synchronisation of its own.
        flow = extras.get("flow")
        if flow is not None:
            if flow.ndim != 4 or flow.shape[1] != 2:
                raise ValueError(f"extras['flow'] must be (B, 2, h, w) pixels, got {tuple(flow.shape)}")
            self._pending.append(("motion", _sample(flow).float().norm(dim=1).mean() / flow.shape[-1]))
        if "disagreement" in extras:
            self._pending.append(("disagreement", extras["disagreement"].float().mean()))
        elif "reference_scores" in extras and "update_scores" in extras:
            ref, upd = extras["reference_scores"], extras["update_scores"]
            if ref.shape != upd.shape or ref.ndim != 4:
                raise ValueError(
                    "extras['reference_scores'] and ['update_scores'] must be (B, C, h, w) of one shape, got "
                    f"{tuple(ref.shape)} and {tuple(upd.shape)}"
                )
            ref, upd = _sample(ref), _sample(upd)
            differs = ref.argmax(dim=1) != upd.argmax(dim=1)
            self._pending.append(("disagreement", differs.float().mean()))

    def _settle(self) -> None:
        for name, value in self._pending:
            if name == "motion":
                self.motion += float(value)
            else:
                self.disagreement = float(value)
        self._pending.clear()

    def should_key(self, distance: int) -> bool:
        self._settle()
        if distance >= self.config.max_interval:
            return True
        if distance < self.config.min_interval:
            return False
        return self.motion > self.config.motion_threshold or self.disagreement > self.config.disagreement_threshold

    def reset(self) -> None:
        self.motion = self.disagreement = 0.0
        self._pending.clear()

    def __repr__(self) -> str:
        return f"AdaptiveKeyframes({self.config})"


_POLICY_SETTINGS = {"fixed": ("interval",), "adaptive": tuple(AdaptiveConfig.__dataclass_fields__)}


def make_keyframe_policy(name: str, **config) -> FixedInterval | AdaptiveKeyframes:
    """``fixed`` (interval=N) or ``adaptive`` (the fields of :class:`AdaptiveConfig`), for the CLI
    and ROS parameters. Unknown names and settings raise ``ValueError``."""
    if name not in _POLICY_SETTINGS:
        raise ValueError(f"unknown keyframe policy {name!r}; policies: {', '.join(_POLICY_SETTINGS)}")
    unknown = sorted(set(config) - set(_POLICY_SETTINGS[name]))
    if unknown:
        raise ValueError(f"keyframe policy {name!r} takes {', '.join(_POLICY_SETTINGS[name])}; got {unknown}")
    if name == "fixed":
        return FixedInterval(**config)
    return AdaptiveKeyframes(AdaptiveConfig(**config))
