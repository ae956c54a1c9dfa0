"""Building blocks of ICNet (Zhao et al., ECCV 2018) as the LSTM-ICNet code builds it.

The backbone is PSPNet-50 at half width (conv1: 32-32-64, conv2..conv5: 128, 256, 512, 1024 output
channels with bottlenecks of a quarter of that), dilation 2 in conv4 and 4 in conv5; the stride of
a bottleneck sits in its first 1 x 1 convolution, as in the Caffe models ICNet comes from.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["Bottleneck", "CascadeFeatureFusion", "PyramidPoolingSum", "Tap", "conv_bn", "make_stage"]

NormLayer = Callable[[int], nn.Module]


def conv_bn(
    in_channels: int,
    out_channels: int,
    kernel_size: int = 1,
    *,
    stride: int = 1,
    dilation: int = 1,
    relu: bool = True,
    norm_layer: NormLayer = nn.BatchNorm2d,
) -> nn.Sequential:
    """Convolution without bias (the norm has one), norm, optional ReLU; 'same' padding for odd k."""
    layers: list[nn.Module] = [
        nn.Conv2d(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=dilation * (kernel_size // 2),
            dilation=dilation,
            bias=False,
        ),
        norm_layer(out_channels),
    ]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class Bottleneck(nn.Module):
    """1x1 reduce (carries the stride) -> 3x3 (dilated) -> 1x1 increase, plus a projected shortcut
    where the shape changes; ReLU after the sum."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        stride: int = 1,
        dilation: int = 1,
        norm_layer: NormLayer = nn.BatchNorm2d,
    ) -> None:
        super().__init__()
        mid = out_channels // 4
        self.reduce = conv_bn(in_channels, mid, 1, stride=stride, norm_layer=norm_layer)
        self.conv = conv_bn(mid, mid, 3, dilation=dilation, norm_layer=norm_layer)
        self.increase = conv_bn(mid, out_channels, 1, relu=False, norm_layer=norm_layer)
        self.proj = (
            conv_bn(in_channels, out_channels, 1, stride=stride, relu=False, norm_layer=norm_layer)
            if stride != 1 or in_channels != out_channels
            else None
        )

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x if self.proj is None else self.proj(x)
        return F.relu(shortcut + self.increase(self.conv(self.reduce(x))))


def make_stage(
    in_channels: int,
    out_channels: int,
    blocks: int,
    *,
    stride: int = 1,
    dilation: int = 1,
    norm_layer: NormLayer = nn.BatchNorm2d,
) -> nn.Sequential:
    layers = [Bottleneck(in_channels, out_channels, stride=stride, dilation=dilation, norm_layer=norm_layer)]
    layers += [
        Bottleneck(out_channels, out_channels, dilation=dilation, norm_layer=norm_layer) for _ in range(blocks - 1)
    ]
    return nn.Sequential(*layers)


class PyramidPoolingSum(nn.Module):
    """ICNet's pyramid pooling: average pools into ``bins`` x ``bins`` grids, upsampled back and
    *summed* with the input (PSPNet concatenates; ICNet adds, which keeps the width)."""

    def __init__(self, bins: Sequence[int] = (1, 2, 3, 4)) -> None:
        super().__init__()
        self.bins = tuple(bins)

    def forward(self, x: Tensor) -> Tensor:
        size = x.shape[-2:]
        out = x
        for b in self.bins:
            pooled = F.adaptive_avg_pool2d(x, b)
            out = out + F.interpolate(pooled, size=size, mode="bilinear", align_corners=False)
        return out


Tap = Callable[[Tensor], Tensor]


class CascadeFeatureFusion(nn.Module):
    """CFF: the coarse map upsampled to the fine map's size, a dilated 3x3 conv + norm on it, a
    1x1 conv + norm on the fine map, sum, ReLU.

    ``coarse_tap`` / ``fine_tap`` run between a branch's convolution and its norm: the places where
    the LSTM-ICNet code puts its ConvLSTM cells.
    """

    def __init__(
        self, coarse_channels: int, fine_channels: int, out_channels: int, *, norm_layer: NormLayer = nn.BatchNorm2d
    ) -> None:
        super().__init__()
        self.coarse_conv = nn.Conv2d(coarse_channels, out_channels, 3, padding=2, dilation=2, bias=False)
        self.coarse_norm = norm_layer(out_channels)
        self.fine_conv = nn.Conv2d(fine_channels, out_channels, 1, bias=False)
        self.fine_norm = norm_layer(out_channels)

    def forward(
        self, coarse: Tensor, fine: Tensor, *, coarse_tap: Tap | None = None, fine_tap: Tap | None = None
    ) -> Tensor:
        up = F.interpolate(coarse, size=fine.shape[-2:], mode="bilinear", align_corners=False)
        a = self.coarse_conv(up)
        b = self.fine_conv(fine)
        a = self.coarse_norm(coarse_tap(a) if coarse_tap else a)
        b = self.fine_norm(fine_tap(b) if fine_tap else b)
        return F.relu(a + b)
