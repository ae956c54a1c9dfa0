"""EfficientNet-Lite (Tan & Le 2019; the "lite" variants of the TensorFlow TPU models) as an encoder.

Lite differs from EfficientNet-B*: no squeeze-excitation, ReLU6 instead of swish, and the stem (32
channels) and head (1280 channels) as well as the first and last stage's block counts are not
scaled. Those choices make it quantisation- and TensorRT-friendly, which is why it is here.

Stages of the base network (B0 = Lite0), each ``(kernel, blocks, out channels, expansion, stride)``::

    (3, 1, 16, 1, 1) (3, 2, 24, 6, 2) (5, 2, 40, 6, 2) (3, 3, 80, 6, 2)
    (5, 3, 112, 6, 1) (5, 4, 192, 6, 2) (3, 1, 320, 6, 1)

Lite1..Lite4 scale channels by ``width`` (rounded to multiples of 8, never more than 10 % down)
and blocks by ``depth`` (rounded up), stages 1 and 7 excepted. An inverted-residual block is a
1x1 expansion (absent where the expansion is 1), a depthwise k x k, a 1x1 projection without
activation, and the identity shortcut where stride is 1 and the width does not change. Batch norm
uses eps 1e-3 as in the TensorFlow models.

Padding is symmetric (k // 2) where TensorFlow's "same" pads strided layers asymmetrically: the
converted ImageNet weights still classify correctly with it (checked in the tests on real
photographs), and symmetric padding keeps the graph a plain convolution for ONNX and TensorRT.
Feature maps of an H x W input are ceil(H / s) x ceil(W / s) at stride s, like the ResNets here.

``EfficientNetLite`` is the ImageNet classifier (what the packaged weights describe, so loading
can require every tensor); ``LiteEncoder`` is its stem and stages for dense prediction, with the
strided stages after ``output_stride`` turned into dilated ones (DeepLab's trick) and the parts
ICNet's cascade needs (:meth:`LiteEncoder.run`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from torch import Tensor, nn

__all__ = [
    "LITE_STAGES",
    "LITE_VARIANTS",
    "EfficientNetLite",
    "InvertedResidual",
    "LiteEncoder",
    "LiteStage",
    "lite_stages",
]

NormLayer = Callable[[int], nn.Module]


@dataclass(frozen=True)
class LiteStage:
    """One stage: ``blocks`` inverted residuals, the first with ``stride`` and the channel change."""

    kernel: int
    blocks: int
    out_channels: int
    expansion: int
    stride: int


#: The base (Lite0) stages, see the module docstring.
LITE_STAGES = (
    LiteStage(3, 1, 16, 1, 1),
    LiteStage(3, 2, 24, 6, 2),
    LiteStage(5, 2, 40, 6, 2),
    LiteStage(3, 3, 80, 6, 2),
    LiteStage(5, 3, 112, 6, 1),
    LiteStage(5, 4, 192, 6, 2),
    LiteStage(3, 1, 320, 6, 1),
)
#: (width, depth) multipliers of each variant.
LITE_VARIANTS: dict[str, tuple[float, float]] = {
    "lite0": (1.0, 1.0),
    "lite1": (1.0, 1.1),
    "lite2": (1.1, 1.2),
    "lite3": (1.2, 1.4),
    "lite4": (1.4, 1.8),
}
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
_BN_EPS = 1e-3


def _round_channels(channels: int, width: float, divisor: int = 8) -> int:
    scaled = channels * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * scaled else rounded


def lite_stages(variant: str) -> tuple[LiteStage, ...]:
    """The seven stages of ``variant`` ("lite0".."lite4") with its width and depth applied."""
    if variant not in LITE_VARIANTS:
        raise ValueError(f"unknown EfficientNet-Lite variant {variant!r}; variants: {', '.join(LITE_VARIANTS)}")
    width, depth = LITE_VARIANTS[variant]
    last = len(LITE_STAGES) - 1
    return tuple(
        LiteStage(
            s.kernel,
            s.blocks if i in (0, last) else math.ceil(s.blocks * depth),
            _round_channels(s.out_channels, width),
            s.expansion,
            s.stride,
        )
        for i, s in enumerate(LITE_STAGES)
    )


def _conv_bn(
    in_channels: int,
    out_channels: int,
    kernel: int,
    *,
    stride: int = 1,
    dilation: int = 1,
    groups: int = 1,
    act: bool = True,
    norm_layer: NormLayer,
) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(
            in_channels,
            out_channels,
            kernel,
            stride=stride,
            padding=dilation * (kernel // 2),
            dilation=dilation,
            groups=groups,
            bias=False,
        ),
        norm_layer(out_channels),
    ]
    if act:
        layers.append(nn.ReLU6(inplace=True))
    return nn.Sequential(*layers)


def _batch_norm(channels: int) -> nn.Module:
    return nn.BatchNorm2d(channels, eps=_BN_EPS)


class InvertedResidual(nn.Module):
    """MBConv without squeeze-excitation: [1x1 expand] -> depthwise k x k -> 1x1 project (+ x)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        kernel: int,
        expansion: int,
        stride: int = 1,
        dilation: int = 1,
        norm_layer: NormLayer = _batch_norm,
    ) -> None:
        super().__init__()
        mid = in_channels * expansion
        self.expand = _conv_bn(in_channels, mid, 1, norm_layer=norm_layer) if expansion != 1 else None
        self.depthwise = _conv_bn(mid, mid, kernel, stride=stride, dilation=dilation, groups=mid, norm_layer=norm_layer)
        self.project = _conv_bn(mid, out_channels, 1, act=False, norm_layer=norm_layer)
        self.residual = stride == 1 and in_channels == out_channels

    def forward(self, x: Tensor) -> Tensor:
        y = x if self.expand is None else self.expand(x)
        y = self.project(self.depthwise(y))
        return x + y if self.residual else y


class LiteEncoder(nn.Module):
    """Stem and the seven stages of EfficientNet-Lite ``variant`` for dense prediction.

    output_stride: 8, 16 or 32. Stages whose stride would take the features beyond it keep stride
        1 and dilate their depthwise convolutions instead (x2 per skipped stride, from the first
        block of that stage on), so the ImageNet weights apply unchanged.
    ``forward``: normalised (B, 3, H, W) -> (B, out_channels, ceil(H/os), ceil(W/os)), the last
    stage's features (``out_channels`` = 320 for Lite0, 352 for Lite2).
    ``stage_channels[i]`` and ``stage_strides[i]`` give each stage's output channels and stride.
    """

    def __init__(self, variant: str = "lite0", *, output_stride: int = 32, norm_layer: NormLayer = _batch_norm):
        super().__init__()
        if output_stride not in (8, 16, 32):
            raise ValueError(f"output_stride must be 8, 16 or 32, got {output_stride}")
        self.variant = variant
        stages = lite_stages(variant)
        self.stem = _conv_bn(3, STEM_CHANNELS, 3, stride=2, norm_layer=norm_layer)
        self.stages = nn.ModuleList()
        channels, stride, dilation = STEM_CHANNELS, 2, 1
        self.stage_channels: list[int] = []
        self.stage_strides: list[int] = []
        for spec in stages:
            step = spec.stride
            first_dilation = dilation
            if stride * step > output_stride:
                # DeepLab: keep the resolution, widen the receptive field the stride would have given.
                dilation *= step
                step = 1
                first_dilation = dilation
            stride *= step
            blocks = [
                InvertedResidual(
                    channels if b == 0 else spec.out_channels,
                    spec.out_channels,
                    kernel=spec.kernel,
                    expansion=spec.expansion,
                    stride=step if b == 0 else 1,
                    dilation=first_dilation if b == 0 else dilation,
                    norm_layer=norm_layer,
                )
                for b in range(spec.blocks)
            ]
            self.stages.append(nn.Sequential(*blocks))
            channels = spec.out_channels
            self.stage_channels.append(channels)
            self.stage_strides.append(stride)
        self.out_channels = channels
        self.stride = output_stride
        for m in self.modules():
            # The TF models' initialisation: normal with variance 2 / fan-out, where a depthwise
            # filter's fan-out is its k x k taps (torch's own fan-out would count every channel and
            # PyTorch's default shrinks activations at each layer: random blocks gave constant maps).
            if isinstance(m, nn.Conv2d):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))

    def tap(self, stride: int) -> tuple[int, int]:
        """(stages, channels): ``run(x, 0, stages)`` ends on the last stage at ``stride``, with ``channels``
        (a decoder's low-level features)."""
        if stride not in self.stage_strides:
            raise ValueError(f"no stage of this encoder outputs stride {stride}: {self.stage_strides}")
        stages = max(i for i, s in enumerate(self.stage_strides) if s == stride) + 1
        return stages, self.stage_channels[stages - 1]

    def run(self, x: Tensor, start: int = 0, stop: int | None = None) -> Tensor:
        """Stages ``start``..``stop - 1`` on ``x``; start 0 includes the stem (x is the frame).

        ICNet runs stages 0..2 on the half-size frame and the rest on those features downsampled.
        """
        if start == 0:
            x = self.stem(x)
        for stage in list(self.stages)[start:stop]:
            x = stage(x)
        return x

    def forward(self, x: Tensor) -> Tensor:
        """x: normalised (B, 3, H, W) -> (B, out_channels, ceil(H/os), ceil(W/os))."""
        return self.run(x)


class EfficientNetLite(nn.Module):
    """The ImageNet classifier: encoder, 1x1 head conv to 1280 channels, global pooling, linear.

    Exists so that loading the packaged ImageNet weights can account for every tensor in the file
    (see :mod:`vseg_core.imagenet`); dense models use :class:`LiteEncoder` alone. Dropout before
    the classifier is left out: it only matters when training the classifier.
    """

    def __init__(self, variant: str = "lite0", *, num_classes: int = 1000) -> None:
        super().__init__()
        self.encoder = LiteEncoder(variant)
        self.head = _conv_bn(self.encoder.out_channels, HEAD_CHANNELS, 1, norm_layer=_batch_norm)
        self.classifier = nn.Linear(HEAD_CHANNELS, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        """x: normalised (B, 3, H, W) -> class logits (B, num_classes)."""
        return self.classifier(self.head(self.encoder(x)).mean(dim=(2, 3)))
