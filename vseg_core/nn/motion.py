"""Motion sources for feature warping: the learned FlowNetS, or OpenCV's DIS flow (no weights).

One interface: ``source(current, previous, grid=(h, w))`` -> :class:`Motion` with ``flow``
(B, 2, h, w) in pixels of the stride-16 feature map (channel 0 = x), for each position of the
current frame where it was in ``previous``, and ``features`` for DFF's scale field (FlowNetS only).
The Accel paper treats the motion input as modular; DIS lets users without trained flow weights
run DFF/Accel with classical flow (about 10 ms at 640x480 on one CPU core).
"""

from __future__ import annotations

from typing import NamedTuple

import cv2
import numpy as np
import torch
from torch import Tensor, nn

from vseg_core.nn.flownet import FlowNetS

__all__ = ["MOTION_SOURCES", "DISFlow", "LearnedFlow", "Motion", "MotionSource", "build_motion"]

MOTION_SOURCES = ("flownet", "dis")


class Motion(NamedTuple):
    flow: Tensor
    features: Tensor | None = None


class MotionSource(nn.Module):
    """Base of the motion sources. ``stride`` is the feature map's, ``feature_channels`` the number
    of channels of ``Motion.features`` (0 when the source has none)."""

    stride = 16
    feature_channels = 0

    def forward(self, current: Tensor, previous: Tensor, *, grid: tuple[int, int]) -> Motion:
        raise NotImplementedError


def _check_pair(current: Tensor, previous: Tensor) -> None:
    if current.ndim != 4 or current.shape[1] != 3 or current.shape != previous.shape:
        raise ValueError(
            f"motion needs two (B, 3, H, W) frames of one shape, got {tuple(current.shape)} and {tuple(previous.shape)}"
        )


def _check_flow(flow: Tensor, batch: int, grid: tuple[int, int], source: str) -> None:
    if tuple(flow.shape) != (batch, 2, *grid):
        raise ValueError(
            f"{source} produced flow of shape {tuple(flow.shape)}, expected (B, 2, h, w) = ({batch}, 2, {grid[0]}, "
            f"{grid[1]}): the feature map and the flow must share the stride-16 grid"
        )


class LearnedFlow(MotionSource):
    """FlowNetS (see :mod:`vseg_core.nn.flownet`); differentiable, so training reaches it."""

    def __init__(self, *, width: float = 1.0) -> None:
        super().__init__()
        self.flownet = FlowNetS(width=width)
        self.feature_channels = self.flownet.out_channels

    def forward(self, current: Tensor, previous: Tensor, *, grid: tuple[int, int]) -> Motion:
        _check_pair(current, previous)
        flow, features = self.flownet(current, previous)
        _check_flow(flow, current.shape[0], grid, "FlowNetS")
        return Motion(flow, features)


_DIS_PRESETS = {
    "ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
    "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
    "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
}


class DISFlow(MotionSource):
    """OpenCV DIS optical flow on the CPU, on grey frames resized to 8 pixels per feature cell.

    The frames go to the host once (grey uint8), the flow is computed at half resolution like
    FlowNetS's input (precisely: at 8 x the feature grid, so that averaging 8x8 blocks lands on the
    grid exactly) and comes back in feature pixels. Not differentiable and has no weights; on the
    ``meta`` device (FLOP counting) it returns zero flow of the right shape and costs nothing.
    """

    def __init__(self, *, preset: str = "fast") -> None:
        super().__init__()
        if preset not in _DIS_PRESETS:
            raise ValueError(f"unknown DIS preset {preset!r}; presets: {', '.join(_DIS_PRESETS)}")
        self.preset = preset

    @staticmethod
    def _grey(frame: Tensor, size: tuple[int, int]) -> np.ndarray:
        rgb = (frame.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
        grey = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY)
        return cv2.resize(grey, (size[1], size[0]), interpolation=cv2.INTER_AREA)

    def forward(self, current: Tensor, previous: Tensor, *, grid: tuple[int, int]) -> Motion:
        _check_pair(current, previous)
        b = current.shape[0]
        h, w = grid
        if current.device.type == "meta":
            return Motion(torch.zeros(b, 2, h, w, device=current.device, dtype=current.dtype))
        cell = self.stride // 2  # half-resolution pixels per feature cell
        size = (h * cell, w * cell)
        # A fresh OpenCV object per call (microseconds): the module stays copyable and picklable.
        dis = cv2.DISOpticalFlow_create(_DIS_PRESETS[self.preset])
        flows = []
        for i in range(b):
            # calc(I0, I1) gives I0(p) ~ I1(p + flow(p)): current first, so the flow points from
            # each current pixel to where it was in the previous frame.
            flow = dis.calc(self._grey(current[i], size), self._grey(previous[i], size), None)
            flow = cv2.resize(flow, (w, h), interpolation=cv2.INTER_AREA) / cell
            flows.append(torch.from_numpy(np.ascontiguousarray(flow.transpose(2, 0, 1))))
        flow = torch.stack(flows).to(device=current.device, dtype=current.dtype)
        _check_flow(flow, b, grid, "DIS")
        return Motion(flow)


def build_motion(name: str, *, width: float = 1.0) -> MotionSource:
    """The motion source ``name`` ("flownet" or "dis"); ``width`` scales FlowNetS's channels."""
    if name == "flownet":
        return LearnedFlow(width=width)
    if name == "dis":
        return DISFlow()
    raise ValueError(f"unknown motion source {name!r}; valid motion sources: {', '.join(MOTION_SOURCES)}")
