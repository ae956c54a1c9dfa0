"""DeepLab-x, the single-frame networks of the Accel paper: ResNet-x at stride 16 + the DeepLab head.

DeepLab-101 (deformable conv5) is DFF/Accel's reference network; DeepLab-18/34/50 are their update
networks trained alone (paper Table 1: DL-18 57.7 mIoU, DL-101 75.2 on Cityscapes).
DeepLab-Lite0/Lite2 put the same head on an EfficientNet-Lite encoder at output stride 16 (its last
strided stage dilated instead), the backbones that start from ImageNet weights here; ``output_stride=8``
dilates the stage before it too (the same tensors, four times the late stages' work), for thin objects;
``decoder=True`` adds DeepLabv3+'s decoder on the stride-4 features (:mod:`vseg_core.nn.deeplab_decoder`),
which starts as no change to the model it extends.
"""

from __future__ import annotations

from torch import Tensor, nn

from vseg_core.models.registry import register_model
from vseg_core.models.streaming import StatelessSegmenter, check_frame
from vseg_core.nn.deeplab_decoder import LowLevelDecoder
from vseg_core.nn.efficientnet_lite import LiteEncoder
from vseg_core.nn.heads import DeepLabHead
from vseg_core.nn.normalize import ImageNormalize, backbone_normalize
from vseg_core.nn.resnet_features import ResNetFeatures, resnet_features
from vseg_core.timing import StageTimer

__all__ = ["DeepLab", "deeplab18", "deeplab34", "deeplab50", "deeplab101", "deeplab_lite0", "deeplab_lite2"]

#: fc6 width of the head on a Lite encoder: the ResNet heads' 1024 would cost more than Lite0 itself.
LITE_HEAD_CHANNELS = 256


class DeepLab(StatelessSegmenter):
    """``normalize`` (the backbone's ImageNet statistics) -> ``features`` (stride 16) -> ``head`` (x16),
    plus with a ``decoder`` (Lite encoders only) its correction from the encoder's stride-4 features."""

    def __init__(
        self,
        *,
        features: ResNetFeatures | LiteEncoder,
        head: DeepLabHead,
        num_classes: int,
        normalize: nn.Module | None = None,
        decoder: LowLevelDecoder | None = None,
    ) -> None:
        super().__init__(num_classes)
        if head.in_channels != features.out_channels:
            raise ValueError(f"the head takes {head.in_channels} channels, the features have {features.out_channels}")
        if features.stride != head.stride:
            raise ValueError(
                f"the head upsamples from stride {head.stride}, the features have stride {features.stride}"
            )
        self.normalize = normalize or ImageNormalize()
        self.features = features
        self.head = head
        self.decoder = decoder
        self._low_stages = 0  # the encoder stages that run before the decoder's stride-4 tap
        if decoder is not None:
            if not isinstance(features, LiteEncoder):
                raise ValueError("the decoder taps a Lite encoder's stride-4 stage")
            self._low_stages, tap = features.tap(4)
            if (decoder.low_channels, decoder.stride) != (tap, head.stride):
                raise ValueError(
                    f"the decoder takes {decoder.low_channels} channels at stride 4 from a stride-{decoder.stride} "
                    f"head; the encoder gives {tap} channels and the head has stride {head.stride}"
                )

    def segment(self, frame: Tensor, timer: StageTimer) -> Tensor:
        check_frame(frame)
        if self.decoder is None:
            with timer.stage("features"):
                features = self.features(self.normalize(frame))
            with timer.stage("fusion"):
                return self.head(features, frame.shape[-2:])
        with timer.stage("features"):
            low = self.features.run(self.normalize(frame), 0, self._low_stages)
            features = self.features.run(low, self._low_stages)
        with timer.stage("fusion"):
            hidden = self.head.hidden(features)
            return self.decoder(low, hidden, self.head.score(hidden), frame.shape[-2:])


def build_deeplab(depth: int, *, num_classes: int = 19, deformable: bool = True, width: float = 1.0) -> DeepLab:
    """DeepLab on ResNet-``depth``; ``width`` < 1 thins every layer (quick CPU models)."""
    features = resnet_features(depth, width=width, deformable=deformable)
    head = DeepLabHead(features.out_channels, num_classes, hidden_channels=max(4, round(1024 * width)))
    return DeepLab(features=features, head=head, num_classes=num_classes)


@register_model("deeplab18", family="accel", description="DeepLab on ResNet-18 (deformable conv5), single frame")
def deeplab18(*, num_classes: int = 19, deformable: bool = True, width: float = 1.0) -> DeepLab:
    return build_deeplab(18, num_classes=num_classes, deformable=deformable, width=width)


@register_model("deeplab34", family="accel", description="DeepLab on ResNet-34 (deformable conv5), single frame")
def deeplab34(*, num_classes: int = 19, deformable: bool = True, width: float = 1.0) -> DeepLab:
    return build_deeplab(34, num_classes=num_classes, deformable=deformable, width=width)


@register_model("deeplab50", family="accel", description="DeepLab on ResNet-50 (deformable conv5), single frame")
def deeplab50(*, num_classes: int = 19, deformable: bool = True, width: float = 1.0) -> DeepLab:
    return build_deeplab(50, num_classes=num_classes, deformable=deformable, width=width)


@register_model("deeplab101", family="accel", description="DeepLab on ResNet-101 (deformable conv5): the reference net")
def deeplab101(*, num_classes: int = 19, deformable: bool = True, width: float = 1.0) -> DeepLab:
    return build_deeplab(101, num_classes=num_classes, deformable=deformable, width=width)


def build_deeplab_lite(
    variant: str, *, num_classes: int = 19, output_stride: int = 16, decoder: bool = False
) -> DeepLab:
    """DeepLab on EfficientNet-Lite ``variant`` at ``output_stride`` 8 or 16, Lite's input normalisation.
    Both strides hold the same tensors, so a checkpoint of one initialises the other (``--init``);
    ``decoder`` adds the stride-4 decoder (a checkpoint without it initialises the rest: ``--init base=``)."""
    if output_stride not in (8, 16):
        raise ValueError(f"a DeepLab-Lite runs at output_stride 8 or 16, got {output_stride!r}")
    if not isinstance(decoder, bool):
        raise ValueError(f"decoder is true or false, got {decoder!r}")
    features = LiteEncoder(variant, output_stride=output_stride)
    head = DeepLabHead(features.out_channels, num_classes, hidden_channels=LITE_HEAD_CHANNELS, stride=output_stride)
    low_channels = features.tap(4)[1]
    refine = LowLevelDecoder(low_channels, LITE_HEAD_CHANNELS, num_classes, stride=output_stride) if decoder else None
    return DeepLab(
        features=features, head=head, num_classes=num_classes, normalize=backbone_normalize(variant), decoder=refine
    )


@register_model("deeplab_lite0", family="accel", description="DeepLab on EfficientNet-Lite0 (stride 16), single frame")
def deeplab_lite0(*, num_classes: int = 19, output_stride: int = 16, decoder: bool = False) -> DeepLab:
    return build_deeplab_lite("lite0", num_classes=num_classes, output_stride=output_stride, decoder=decoder)


@register_model("deeplab_lite2", family="accel", description="DeepLab on EfficientNet-Lite2 (stride 16), single frame")
def deeplab_lite2(*, num_classes: int = 19, output_stride: int = 16, decoder: bool = False) -> DeepLab:
    return build_deeplab_lite("lite2", num_classes=num_classes, output_stride=output_stride, decoder=decoder)
