"""ICNet (Zhao et al., ECCV 2018): three resolutions, cascade feature fusion, one classifier.

- low branch: the frame at 1/4 size through PSPNet-50 (half width, dilated conv4/conv5) and
  pyramid pooling -> 1/32 of the frame;
- medium branch: the frame at 1/2 size through the same network's first stages up to conv3_1,
  whose features the low branch continues from (the branches share those weights) -> 1/16;
- high branch: the full frame through three strided 3x3 convolutions -> 1/8.
Two cascade feature fusions merge them at 1/16 and 1/8; the classifier runs at 1/4 and the
scores are upsampled to the frame. The network is built from its own layers (``vseg_core.nn.icnet_parts``),
not from torchvision's ResNet: ICNet's backbone is the Caffe PSPNet-50 at half width (three-conv stem,
stride in the first 1x1 of a bottleneck), which torchvision does not have. The layer list follows the
ICNet model used by LSTM-ICNet; its auxiliary classifiers for cascade label guidance (training-only
losses) are not built. Pyramid pooling uses adaptive average pooling, which equals the code's
fixed-window pooling where the map size divides by the bins (32 x 64 at 1024 x 2048, except bin 3).

``backbone`` chooses the network shared by the medium and low branches: "pspnet50" (the paper's,
trained from scratch here) or an ImageNet-initialisable EfficientNet-Lite ("lite0", "lite2"). A
Lite encoder splits where PSPNet does: its stem and stages 1-3 (stride 8) run on the half-size
frame and give the medium branch (1/16 of the frame); stages 4-7, with their strides turned into
dilations 2 and 4 as ICNet dilates conv4 and conv5, continue on those features downsampled once
more (1/32). The high branch, pyramid pooling, both CFF units and the tap points stay as they are.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch.nn.functional as F
from torch import Tensor, nn

from vseg_core.models.registry import register_model
from vseg_core.models.streaming import StatelessSegmenter, check_frame
from vseg_core.nn.efficientnet_lite import LiteEncoder
from vseg_core.nn.icnet_parts import CascadeFeatureFusion, PyramidPoolingSum, Tap, conv_bn, make_stage
from vseg_core.nn.normalize import backbone_normalize
from vseg_core.timing import StageTimer

__all__ = ["BACKBONES", "TAP_POINTS", "ICNet", "ICNetBody", "icnet"]

#: Where a temporal module can sit (the places the LSTM-ICNet code puts its cells), in the order the
#: forward pass reaches them: "sub4" the low branch after CFF1's dilated convolution (conv_sub4),
#: "sub2" the medium branch after its 1x1 projection (conv3_1_sub2_proj), "sub1" the high branch
#: after its 1x1 projection (conv3_sub1_proj), each before that convolution's norm; "fused" after
#: CFF2's ReLU (sub12_sum), before the classifier.
TAP_POINTS = ("sub4", "sub2", "sub1", "fused")
#: Networks the medium and low branches can share (see the module docstring).
BACKBONES = ("pspnet50", "lite0", "lite2")
#: Lite stages (0-based) that run on the half-size frame; the rest run on the low branch.
_LITE_MEDIUM_STAGES = 3


def _width(channels: int, width: float) -> int:
    """Scale a channel count; multiples of 4 so that bottlenecks keep a whole quarter."""
    return max(4, round(channels * width / 4) * 4)


class ICNetBody(nn.Module):
    """ICNet from normalised frame to fused features; ``taps`` insert modules at ``TAP_POINTS``.

    width: channel multiplier of ICNet's own layers (1.0 is the paper's network; small values make
        quick CPU models). A Lite backbone keeps its ImageNet widths whatever ``width`` is.
    backbone: one of :data:`BACKBONES`.
    Output of ``forward``: (B, fused_channels, ceil(H/8), ceil(W/8)) features after CFF2 (and the
    "fused" tap).
    """

    def __init__(
        self,
        *,
        width: float = 1.0,
        backbone: str = "pspnet50",
        norm_layer: Callable[[int], nn.Module] = nn.BatchNorm2d,
    ) -> None:
        super().__init__()
        if not 0 < width <= 4:
            raise ValueError(f"width must be in (0, 4], got {width}")
        if backbone not in BACKBONES:
            raise ValueError(f"unknown ICNet backbone {backbone!r}; backbones: {', '.join(BACKBONES)}")

        def c(channels: int) -> int:
            return _width(channels, width)

        self.backbone = backbone
        self.fused_channels = c(128)
        self.encoder: LiteEncoder | None = None
        if backbone == "pspnet50":
            # Medium branch (1/2 input): stem, pool, conv2, conv3_1.
            self.stem = nn.Sequential(
                conv_bn(3, c(32), 3, stride=2, norm_layer=norm_layer),
                conv_bn(c(32), c(32), 3, norm_layer=norm_layer),
                conv_bn(c(32), c(64), 3, norm_layer=norm_layer),
                nn.MaxPool2d(3, stride=2, padding=1),
            )
            self.conv2 = make_stage(c(64), c(128), 3, norm_layer=norm_layer)
            self.conv3_1 = make_stage(c(128), c(256), 1, stride=2, norm_layer=norm_layer)
            # Low branch (conv3_1 features at half size): rest of conv3, dilated conv4 and conv5.
            self.conv3_rest = make_stage(c(256), c(256), 3, norm_layer=norm_layer)
            self.conv4 = make_stage(c(256), c(512), 6, dilation=2, norm_layer=norm_layer)
            self.conv5 = make_stage(c(512), c(1024), 3, dilation=4, norm_layer=norm_layer)
            medium_channels, low_channels = c(256), c(1024)
        else:
            # Stride 8 on the half-size frame; dilation instead of stride in the low branch.
            self.encoder = LiteEncoder(backbone, output_stride=8)
            medium_channels = self.encoder.stage_channels[_LITE_MEDIUM_STAGES - 1]
            low_channels = self.encoder.out_channels
        self.pyramid = PyramidPoolingSum((1, 2, 3, 4))
        self.conv5_4 = conv_bn(low_channels, c(256), 1, norm_layer=norm_layer)
        # High branch (full input).
        self.sub1 = nn.Sequential(
            conv_bn(3, c(32), 3, stride=2, norm_layer=norm_layer),
            conv_bn(c(32), c(32), 3, stride=2, norm_layer=norm_layer),
            conv_bn(c(32), c(64), 3, stride=2, norm_layer=norm_layer),
        )
        self.cff1 = CascadeFeatureFusion(c(256), medium_channels, c(128), norm_layer=norm_layer)
        self.cff2 = CascadeFeatureFusion(c(128), c(64), c(128), norm_layer=norm_layer)

    def _medium(self, half: Tensor) -> Tensor:
        if self.encoder is not None:
            return self.encoder.run(half, 0, _LITE_MEDIUM_STAGES)
        return self.conv3_1(self.conv2(self.stem(half)))

    def _low(self, quarter: Tensor) -> Tensor:
        if self.encoder is not None:
            return self.encoder.run(quarter, _LITE_MEDIUM_STAGES)
        return self.conv5(self.conv4(self.conv3_rest(quarter)))

    def forward(self, x: Tensor, taps: Mapping[str, Tap] | None = None) -> Tensor:
        """x: normalised (B, 3, H, W) -> fused features (B, fused_channels, ~H/8, ~W/8)."""
        taps = taps or {}
        half = F.interpolate(x, scale_factor=0.5, mode="bilinear", align_corners=False, recompute_scale_factor=True)
        sub2 = self._medium(half)  # 1/16
        quarter = F.interpolate(
            sub2, scale_factor=0.5, mode="bilinear", align_corners=False, recompute_scale_factor=True
        )
        sub4 = self.conv5_4(self.pyramid(self._low(quarter)))  # 1/32
        sub24 = self.cff1(sub4, sub2, coarse_tap=taps.get("sub4"), fine_tap=taps.get("sub2"))  # 1/16
        sub1 = self.sub1(x)  # 1/8
        fused = self.cff2(sub24, sub1, fine_tap=taps.get("sub1"))
        tap = taps.get("fused")
        return tap(fused) if tap else fused


class ICNet(StatelessSegmenter):
    """ICNet as a single-frame video model: classifier at 1/4, bilinear to the frame size."""

    def __init__(self, *, num_classes: int = 19, width: float = 1.0, backbone: str = "pspnet50") -> None:
        super().__init__(num_classes)
        self.body = ICNetBody(width=width, backbone=backbone)
        self.normalize = backbone_normalize(backbone)
        self.classifier = nn.Conv2d(self.body.fused_channels, num_classes, 1)

    def segment(self, frame: Tensor, timer: StageTimer) -> Tensor:
        check_frame(frame)
        with timer.stage("features"):
            features = self.body(self.normalize(frame))
        with timer.stage("fusion"):
            return classify(self.classifier, features, frame.shape[-2:])


def classify(classifier: nn.Module, features: Tensor, size: tuple[int, int]) -> Tensor:
    """ICNet's head: x2 upsampling to 1/4, the 1x1 classifier, bilinear to ``size``."""
    up = F.interpolate(features, scale_factor=2.0, mode="bilinear", align_corners=False)
    return F.interpolate(classifier(up), size=size, mode="bilinear", align_corners=False)


@register_model("icnet", family="convlstm", description="ICNet, the single-frame base of LSTM-ICNet")
def icnet(*, num_classes: int = 19, width: float = 1.0, backbone: str = "pspnet50") -> ICNet:
    return ICNet(num_classes=num_classes, width=width, backbone=backbone)
