"""DeepLabv3+'s decoder (Chen et al., ECCV 2018) as a stride-4 correction of DeepLab's stride-16 logits.

A DeepLab head scores 1/16 of the frame's pixels: a 2-pixel pole in a 480x360 frame is an eighth of a
cell wide and interpolation smears it into the road. DeepLabv3+ brings back the encoder's stride-4
features (reduced to 48 channels, 1x1 + BN + ReLU), concatenates the head's hidden features upsampled
to them, and scores the result with 3x3 convolutions; the MobileNet variants use depthwise-separable
ones, as here (depthwise 3x3 + BN + ReLU, pointwise 1x1 + BN + ReLU, twice).

Here the decoder's scores are added to the head's: logits = up16(head scores) + up4(decoder scores).
The decoder's last convolution starts at zero, so a DeepLab with a fresh decoder computes exactly what
the trained DeepLab it extends does (``vseg train --init base=``), and fine-tuning starts from there.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vseg_core.nn.heads import upsample_scores

__all__ = ["LowLevelDecoder"]

#: DeepLabv3+'s width for the reduced low-level features (paper section 4.1: 48 of 256 channels).
REDUCED_CHANNELS = 48


def _separable(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, in_channels, 3, padding=1, groups=in_channels, bias=False),
        nn.BatchNorm2d(in_channels),
        nn.ReLU(inplace=True),
        nn.Conv2d(in_channels, out_channels, 1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class LowLevelDecoder(nn.Module):
    """``forward(low, hidden, scores, size)``: the logits (B, num_classes, H, W) for a frame of ``size``.

    low: (B, low_channels, h4, w4) encoder features at stride 4; hidden: (B, hidden_channels, h16, w16)
    the head's features before its score layer, at ``stride``; scores: (B, num_classes, h16, w16) the
    head's scores. h4 >= ceil(H / 4) and the head's grid must cover the frame (as :func:`upsample_scores`).
    """

    def __init__(
        self, low_channels: int, hidden_channels: int, num_classes: int, *, channels: int = 96, stride: int = 16
    ) -> None:
        super().__init__()
        if min(low_channels, hidden_channels, num_classes, channels) < 1:
            raise ValueError(
                f"channel counts must be positive, got low={low_channels} hidden={hidden_channels} "
                f"classes={num_classes} channels={channels}"
            )
        if stride % 4 or stride < 8:
            raise ValueError(f"the head's stride must be a multiple of 4 above 4, got {stride}")
        self.low_channels, self.hidden_channels, self.stride = low_channels, hidden_channels, stride
        self.reduce = nn.Sequential(
            nn.Conv2d(low_channels, REDUCED_CHANNELS, 1, bias=False),
            nn.BatchNorm2d(REDUCED_CHANNELS),
            nn.ReLU(inplace=True),
        )
        self.fuse = nn.Sequential(
            _separable(hidden_channels + REDUCED_CHANNELS, channels), _separable(channels, channels)
        )
        self.score = nn.Conv2d(channels, num_classes, 1)
        # Zero: the decoder starts as no correction at all (see the module docstring).
        nn.init.zeros_(self.score.weight)
        nn.init.zeros_(self.score.bias)

    def forward(self, low: Tensor, hidden: Tensor, scores: Tensor, size: tuple[int, int]) -> Tensor:
        for what, tensor, channels in (("stride-4", low, self.low_channels), ("head", hidden, self.hidden_channels)):
            if tensor.ndim != 4 or tensor.shape[1] != channels:
                shape = tuple(tensor.shape)
                raise ValueError(f"the decoder expects (B, {channels}, h, w) {what} features, got {shape}")
        h4, w4 = low.shape[-2:]
        factor = self.stride // 4
        if hidden.shape[-2] * factor < h4 or hidden.shape[-1] * factor < w4:
            raise ValueError(
                f"head features of {tuple(hidden.shape[-2:])} at stride {self.stride} do not cover the "
                f"{h4}x{w4} stride-4 features"
            )
        up = F.interpolate(hidden, scale_factor=float(factor), mode="bilinear", align_corners=False)[..., :h4, :w4]
        correction = self.score(self.fuse(torch.cat([self.reduce(low), up], dim=1)))
        return upsample_scores(scores, size, stride=self.stride) + upsample_scores(correction, size, stride=4)
