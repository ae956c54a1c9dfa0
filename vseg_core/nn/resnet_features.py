"""ResNet feature nets of the Accel paper: torchvision ResNets at output stride 16, deformable conv5.

The Accel code (SamvitJ/Accel ``dff_deeplab/symbols``) builds two kinds of conv5:

- ResNet-50/101 (``get_resnet_dcn_50``, ``get_resnet_dcn``): conv5 keeps stride 16 (its first block
  does not downsample) and every block's 3x3 convolution is deformable with dilation 2. The offsets
  come from a plain 3x3 convolution: for ResNet-101 (the reference net) 18 channels, one offset
  group, no dilation; for ResNet-50 72 channels, four offset groups, dilation 2.
- ResNet-18/34 (``get_resnet_dcn_18_conv5`` / ``_34_conv5``): conv5 downsamples to stride 32 in its
  first 3x3 convolution, every second 3x3 convolution is deformable with dilation 2 and four offset
  groups, and a learned 4x4 transposed convolution with stride 2 (``18_feat_upsampling``) brings the
  512 channels back to stride 16 and to the 2048 channels the DeepLab head expects.

So every feature net here returns (B, 2048 x width, ~H/16, ~W/16). The blocks are torchvision's
``BasicBlock``/``Bottleneck`` (ResNet v1.5: the stride sits in the 3x3 convolution) and the module
names follow ``torchvision.models.resnet`` (``conv1``, ``bn1``, ``layer1``..``layer4``), so at width
1.0 an ImageNet state dict of torchvision's ``resnetXX`` loads with ``strict=False`` (only ``fc`` is
unexpected; the offset convolutions and the 18/34 upsampling stay at their initialisation).
Offsets are initialised to zero, so a fresh deformable convolution is the dilated convolution.

Where this differs from the MXNet layer lists (the weights those came with are not available here
anyway): the code's ResNet-50/101 are Caffe ResNet v1 (stride in the first 1x1 of a bottleneck,
max pooling in ceil mode without padding), its ResNet-18/34 conv2..conv4 are MXNet's pre-activation
ResNet v2; here all are torchvision's v1.5 blocks. Layer counts, channels, strides, dilations and
the deformable conv5 are the code's. The code freezes batch-norm statistics (``use_global_stats``);
``norm_layer`` lets a caller pass ``torchvision.ops.FrozenBatchNorm2d`` for that.

FLOPs: ``torch.utils.flop_counter`` knows no formula for ``torchvision::deform_conv2d``; this
module registers one (the multiply-adds of the same dense convolution, like aten's conv formula,
without the bilinear sampling of the inputs), so that model costs include conv5.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import conv_flop_count, register_flop_formula
from torchvision.models.resnet import BasicBlock, Bottleneck, conv1x1
from torchvision.ops import DeformConv2d

__all__ = ["DEPTHS", "DeformableConv2d", "ResNetFeatures", "resnet_features"]

NormLayer = Callable[[int], nn.Module]

#: Blocks per stage (conv2..conv5) of the torchvision ResNets.
DEPTHS: dict[int, tuple[type[BasicBlock] | type[Bottleneck], tuple[int, int, int, int]]] = {
    18: (BasicBlock, (2, 2, 2, 2)),
    34: (BasicBlock, (3, 4, 6, 3)),
    50: (Bottleneck, (3, 4, 6, 3)),
    101: (Bottleneck, (3, 4, 23, 3)),
}


@register_flop_formula(torch.ops.torchvision.deform_conv2d)
def _deform_conv2d_flop(x_shape, w_shape, offset_shape, mask_shape, bias_shape, *args, out_shape=None, **kwargs) -> int:
    return conv_flop_count(list(x_shape), list(w_shape), list(out_shape), transposed=False)


class DeformableConv2d(DeformConv2d):
    """A 3x3 deformable convolution that predicts its own offsets (DCNv1, no modulation mask).

    ``offset`` is a plain 3x3 convolution (with bias) producing 2 x 3 x 3 offsets per offset group,
    initialised to zero so that the layer starts as the (dilated) convolution it replaces.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        stride: int = 1,
        dilation: int = 1,
        offset_groups: int = 1,
        offset_dilation: int = 1,
    ) -> None:
        if in_channels % offset_groups:
            raise ValueError(f"in_channels {in_channels} must be divisible by offset_groups {offset_groups}")
        super().__init__(in_channels, out_channels, 3, stride=stride, padding=dilation, dilation=dilation, bias=False)
        self.offset_groups = offset_groups
        self.offset = nn.Conv2d(
            in_channels, 2 * 9 * offset_groups, 3, stride=stride, padding=offset_dilation, dilation=offset_dilation
        )
        nn.init.zeros_(self.offset.weight)
        nn.init.zeros_(self.offset.bias)

    def forward(self, x: Tensor) -> Tensor:  # type: ignore[override]
        offset = self.offset(x)
        if x.device.type == "cpu" and {x.dtype, offset.dtype} & {torch.bfloat16, torch.float16}:
            # torchvision's CPU kernel is float/double only (its CUDA autocast rule runs it in fp32 too).
            with torch.autocast("cpu", enabled=False):
                return super().forward(x.float(), offset.float())
        return super().forward(x, offset)


def _width(channels: int, width: float) -> int:
    return max(4, round(channels * width))


class ResNetFeatures(nn.Module):
    """A torchvision ResNet without pooling and classifier, at output stride 16.

    block, layers: torchvision's block type and blocks per stage (see :data:`DEPTHS`).
    width: multiplier of every stage's channels (1.0 is the paper's network; 0.25 makes a quick
        CPU model with the same layer list).
    deformable: 3x3 convolutions of conv5 deformable (True, the paper) or plain dilated ones.
    offset_groups, offset_dilation: the offset convolution of the deformable layers (see the module
        docstring for the values the Accel code uses per depth).

    ``forward``: normalised (B, 3, H, W) -> (B, out_channels, h, w) with ``out_channels`` =
    2048 x width and (h, w) = :meth:`feature_size` (H, W).
    """

    def __init__(
        self,
        *,
        block: type[BasicBlock] | type[Bottleneck],
        layers: Sequence[int],
        width: float = 1.0,
        deformable: bool = True,
        offset_groups: int = 1,
        offset_dilation: int = 1,
        norm_layer: NormLayer = nn.BatchNorm2d,
    ) -> None:
        super().__init__()
        if len(layers) != 4 or min(layers) < 1:
            raise ValueError(f"layers needs 4 positive block counts (conv2..conv5), got {tuple(layers)}")
        if not 0 < width <= 4:
            raise ValueError(f"width must be in (0, 4], got {width}")
        self._norm_layer = norm_layer
        self.inplanes = _width(64, width)
        self.conv1 = nn.Conv2d(3, self.inplanes, 7, stride=2, padding=3, bias=False)
        self.bn1 = norm_layer(self.inplanes)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, _width(64, width), layers[0])
        self.layer2 = self._make_layer(block, _width(128, width), layers[1], stride=2)
        self.layer3 = self._make_layer(block, _width(256, width), layers[2], stride=2)
        planes5 = _width(512, width)
        self.out_channels = _width(2048, width)
        if block is Bottleneck:
            # DeepLab's conv5: no downsampling, dilation 2 in every block.
            self.layer4 = self._make_layer(block, planes5, layers[3], stride=1)
            self.upsample: nn.Module = nn.Identity()
        else:
            # The Accel code's ResNet-18/34 conv5: stride 32, then learned x2 back to stride 16.
            self.layer4 = self._make_layer(block, planes5, layers[3], stride=2)
            self.upsample = nn.ConvTranspose2d(planes5, self.out_channels, 4, stride=2, padding=1, bias=False)
        for b in self.layer4:
            b.conv2 = self._conv5_3x3(b.conv2, deformable, offset_groups, offset_dilation)
        self.stride = 16
        self._init_weights()

    def _make_layer(
        self, block: type[BasicBlock] | type[Bottleneck], planes: int, blocks: int, stride: int = 1
    ) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                conv1x1(self.inplanes, planes * block.expansion, stride), self._norm_layer(planes * block.expansion)
            )
        layers = [block(self.inplanes, planes, stride, downsample, norm_layer=self._norm_layer)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes, norm_layer=self._norm_layer) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    @staticmethod
    def _conv5_3x3(conv: nn.Conv2d, deformable: bool, offset_groups: int, offset_dilation: int) -> nn.Module:
        # conv2 of a Bottleneck is its 3x3 (stride 1 here); conv2 of a BasicBlock is the second
        # 3x3 after the (strided) first one. Both become dilation 2 as in the Accel code.
        if deformable:
            groups = offset_groups if conv.in_channels % offset_groups == 0 else 1
            return DeformableConv2d(
                conv.in_channels, conv.out_channels, dilation=2, offset_groups=groups, offset_dilation=offset_dilation
            )
        return nn.Conv2d(conv.in_channels, conv.out_channels, 3, padding=2, dilation=2, bias=False)

    def _init_weights(self) -> None:
        # torchvision's ResNet initialisation; the offset convolutions stay at zero.
        for name, m in self.named_modules():
            if name.endswith(".offset"):
                continue
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, DeformConv2d)):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def feature_size(self, height: int, width: int) -> tuple[int, int]:
        """(h, w) of the features of a (height, width) frame."""

        def down(n: int, times: int) -> int:
            for _ in range(times):
                n = (n - 1) // 2 + 1  # every strided layer here maps n to ceil(n / 2)
            return n

        if isinstance(self.upsample, nn.Identity):
            return down(height, 4), down(width, 4)
        return 2 * down(height, 5), 2 * down(width, 5)

    def forward(self, x: Tensor) -> Tensor:
        """x: normalised (B, 3, H, W) -> (B, out_channels, h, w) at stride 16."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.upsample(x)


def resnet_features(
    depth: int, *, width: float = 1.0, deformable: bool = True, norm_layer: NormLayer = nn.BatchNorm2d
) -> ResNetFeatures:
    """The Accel feature net of ResNet-``depth`` (18, 34, 50 or 101) with the code's offset layout."""
    if depth not in DEPTHS:
        raise ValueError(f"ResNet depth must be one of {sorted(DEPTHS)}, got {depth}")
    block, layers = DEPTHS[depth]
    # The reference ResNet-101 (from Deformable ConvNets) predicts one offset group with a plain 3x3;
    # the update nets the Accel authors added use four groups and dilation 2 for the offsets.
    groups, dilation = (1, 1) if depth == 101 else (4, 2)
    return ResNetFeatures(
        block=block,
        layers=layers,
        width=width,
        deformable=deformable,
        offset_groups=groups,
        offset_dilation=dilation,
        norm_layer=norm_layer,
    )
