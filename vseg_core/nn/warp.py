"""Backward warping of feature maps by a flow field in pixels (DFF/Accel's ``BilinearSampler``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["warp"]


def _check(features: Tensor, flow: Tensor) -> None:
    if not isinstance(features, Tensor) or features.ndim != 4:
        got = tuple(features.shape) if isinstance(features, Tensor) else type(features).__name__
        raise ValueError(f"features must have shape (B, C, h, w), got {got}")
    b, _, h, w = features.shape
    if not isinstance(flow, Tensor) or tuple(flow.shape) != (b, 2, h, w):
        got = tuple(flow.shape) if isinstance(flow, Tensor) else type(flow).__name__
        raise ValueError(
            f"flow must have shape (B, 2, h, w) = ({b}, 2, {h}, {w}) to warp features of that size, got {got}"
        )
    if not features.is_floating_point() or not flow.is_floating_point():
        raise ValueError(f"features and flow must be floating point, got {features.dtype} and {flow.dtype}")
    if features.device != flow.device:
        raise ValueError(f"features ({features.device}) and flow ({flow.device}) must be on one device")


def warp(features: Tensor, flow: Tensor) -> Tensor:
    """``out[:, :, y, x] = features[:, :, y + flow[:, 1, y, x], x + flow[:, 0, y, x]]``, bilinear.

    features: (B, C, h, w). flow: (B, 2, h, w) in pixels of the feature map, channel 0 = x (to the
    right), channel 1 = y (down): for every output position, where its content sits in ``features``.
    Samples outside the map read zeros (MXNet's ``BilinearSampler`` as DFF/Accel use it), so zero
    flow is the identity and an integer flow moves features by whole pixels exactly.
    Returns (B, C, h, w) in the dtype of ``features``; differentiable in both inputs.
    """
    _check(features, flow)
    _, _, h, w = features.shape
    # Build the grid in float32 at least: in half precision, pixel indices beyond 2048 round.
    dtype = torch.promote_types(torch.promote_types(features.dtype, flow.dtype), torch.float32)
    ys = torch.arange(h, device=flow.device, dtype=dtype).view(1, h, 1)
    xs = torch.arange(w, device=flow.device, dtype=dtype).view(1, 1, w)
    x = xs + flow[:, 0].to(dtype)
    y = ys + flow[:, 1].to(dtype)
    # Normalise pixel i to (2 i + 1) / n - 1, the convention of align_corners=False, which grid_sample
    # inverts exactly for every size (with align_corners=True a map one pixel wide cannot be left).
    # The sampling is MXNet's: pixel centres at integers, bilinear weights, zeros outside.
    gx = (2.0 * x + 1.0) / w - 1.0
    gy = (2.0 * y + 1.0) / h - 1.0
    grid = torch.stack([gx, gy], dim=-1)
    # Sample in (at least) float32 too: a half-precision grid is off by up to 1/16 of a pixel at
    # 128 columns, which would blur warps that should be exact (autocast does the same for grid_sample).
    out = F.grid_sample(features.to(dtype), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out.to(features.dtype)
