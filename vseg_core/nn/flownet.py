"""FlowNetSimple with the layer list of DFF/Accel's ``get_flownet``, and DFF's scale field.

The Accel code (SamvitJ/Accel ``resnet_v1_101_flownet_deeplab.get_flownet(img_cur, img_ref)``):

- input: the current and the reference frame stacked (6 channels, current first), x / 255, halved
  by 2x2 average pooling (ceil mode) -> the network sees the pair at half resolution;
- encoder: conv1 7x7/2 64, conv2 5x5/2 128, conv3 5x5/2 256, conv3_1 256, conv4 3x3/2 512,
  conv4_1 512, conv5 3x3/2 512, conv5_1 512, conv6 3x3/2 1024, conv6_1 1024; LeakyReLU 0.1 after each;
- refinement up to the conv2 level: at each level a 3x3 flow prediction from the previous level's
  concat, a learned 4x4/2 transposed convolution of the features (LeakyReLU) and of the flow, cropped
  to the skip connection and concatenated with it (conv5_1, conv4_1, conv3_1, conv2);
- the conv2-level concat (194 channels, stride 8 of the frame) is average-pooled 2x2 to stride 16
  and a 3x3 convolution predicts the flow there, multiplied by 2.5.

Why 2.5: FlowNet's training targets are flow / 20, in pixels of its (half-resolution) input; one
pixel of the stride-16 feature map is 8 such pixels, so 20 / 8 = 2.5 gives the flow in pixels of
the feature map, which is what ``warp`` takes. The network also returns the pooled concat, from which
DFF's scale field is predicted (``Convolution5_scale``).

The frames here are RGB in [0, 1] as the streaming protocol passes them, i.e. already "x / 255"
(the MXNet code divides mean-subtracted BGR pixels by 255; weights converted from it would need
that preprocessing, which the ``normalize`` submodule of a model is the place for).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["FLOW_SCALE", "FlowNetS", "ScaleField"]

#: FlowNet predicts flow / 20 at stride 8 of its half-resolution input: x 20 / 8 = feature pixels.
FLOW_SCALE = 2.5


def _conv(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2),
        nn.LeakyReLU(0.1, inplace=True),
    )


def _up(in_channels: int, out_channels: int) -> nn.ConvTranspose2d:
    # MXNet's 4x4/2 deconvolution without padding, cropped at offset 1, is this one with padding 1.
    return nn.ConvTranspose2d(in_channels, out_channels, 4, stride=2, padding=1)


def _crop_to(x: Tensor, like: Tensor) -> Tensor:
    """A 4x4/2 transposed convolution gives 2n; an odd skip map has 2n - 1 rows: crop to it."""
    return x[..., : like.shape[-2], : like.shape[-1]]


def _pool2(x: Tensor) -> Tensor:
    # MXNet's pooling_convention="full" is ceil mode; border windows average their valid pixels.
    return F.avg_pool2d(x, 2, stride=2, ceil_mode=True)


class _Refine(nn.Module):
    """One refinement level: predict flow from ``x``, upsample features and flow, join the skip."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.predict_flow = nn.Conv2d(in_channels, 2, 3, padding=1)
        self.deconv = _up(in_channels, out_channels)
        self.relu = nn.LeakyReLU(0.1, inplace=True)
        self.upsample_flow = _up(2, 2)

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        flow = self.predict_flow(x)
        features = self.relu(_crop_to(self.deconv(x), skip))
        return torch.cat([skip, features, _crop_to(self.upsample_flow(flow), skip)], dim=1)


class FlowNetS(nn.Module):
    """``forward(current, previous)``: two (B, 3, H, W) frames in [0, 1] -> (flow, features).

    flow: (B, 2, ceil(H/16), ceil(W/16)) in pixels of the stride-16 feature map, channel 0 = x:
    for each position of the current frame, where it was in ``previous`` (what ``warp`` needs to
    bring features of ``previous`` to the current frame).
    features: (B, ``out_channels``, ceil(H/16), ceil(W/16)), the pooled conv2-level concat.
    width: channel multiplier (1.0 is the paper's network).
    """

    def __init__(self, *, width: float = 1.0) -> None:
        super().__init__()
        if not 0 < width <= 4:
            raise ValueError(f"width must be in (0, 4], got {width}")

        def c(channels: int) -> int:
            return max(4, round(channels * width))

        self.conv1 = _conv(6, c(64), 7, 2)
        self.conv2 = _conv(c(64), c(128), 5, 2)
        self.conv3 = _conv(c(128), c(256), 5, 2)
        self.conv3_1 = _conv(c(256), c(256), 3)
        self.conv4 = _conv(c(256), c(512), 3, 2)
        self.conv4_1 = _conv(c(512), c(512), 3)
        self.conv5 = _conv(c(512), c(512), 3, 2)
        self.conv5_1 = _conv(c(512), c(512), 3)
        self.conv6 = _conv(c(512), c(1024), 3, 2)
        self.conv6_1 = _conv(c(1024), c(1024), 3)
        cat5 = c(512) + c(512) + 2
        cat4 = c(512) + c(256) + 2
        cat3 = c(256) + c(128) + 2
        cat2 = c(128) + c(64) + 2
        self.refine5 = _Refine(c(1024), c(512))
        self.refine4 = _Refine(cat5, c(256))
        self.refine3 = _Refine(cat4, c(128))
        self.refine2 = _Refine(cat3, c(64))
        self.predict_flow = nn.Conv2d(cat2, 2, 3, padding=1)
        self.out_channels = cat2

    def forward(self, current: Tensor, previous: Tensor) -> tuple[Tensor, Tensor]:
        if current.ndim != 4 or current.shape[1] != 3 or current.shape != previous.shape:
            raise ValueError(
                f"FlowNetS takes two (B, 3, H, W) frames of one shape, got {tuple(current.shape)} "
                f"and {tuple(previous.shape)}"
            )
        pair = _pool2(torch.cat([current, previous], dim=1))  # half resolution
        c2 = self.conv2(self.conv1(pair))  # stride 4 of the pair, 8 of the frame
        c3 = self.conv3_1(self.conv3(c2))
        c4 = self.conv4_1(self.conv4(c3))
        c5 = self.conv5_1(self.conv5(c4))
        c6 = self.conv6_1(self.conv6(c5))
        x = self.refine5(c6, c5)
        x = self.refine4(x, c4)
        x = self.refine3(x, c3)
        x = _pool2(self.refine2(x, c2))  # stride 16 of the frame
        return self.predict_flow(x) * FLOW_SCALE, x


class ScaleField(nn.Module):
    """DFF's scale field: a 1x1 convolution of FlowNet's features, one factor per feature channel.

    The code initialises the weight to 0 and the bias to 1 and never trains the bias
    (``lr_mult`` 0), so the field is ``1 + conv(features)`` with a bias-free convolution: the
    identity at the start, and nothing frozen that an optimiser has to be told about.
    (B, in_channels, h, w) -> (B, out_channels, h, w).
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        nn.init.zeros_(self.conv.weight)

    def forward(self, features: Tensor) -> Tensor:
        return self.conv(features) + 1.0
