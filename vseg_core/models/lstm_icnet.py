"""LSTM-ICNet (Pfeuffer & Dietmayer, IV 2019 / ITSC 2019): ICNet with ConvLSTM cells inside.

Placements follow ``models/LSTM_ICNet_v{1..6}.py`` of the authors' code (the paper's model is v2):

=====  ===================================================================  =========================
v1     high-resolution branch, after its 1x1 projection (conv3_sub1_proj)    sub1
v2     after the second cascade feature fusion, before the classifier       fused
v3     low-resolution branch, after CFF1's dilated convolution (conv_sub4)   sub4
v4     low- and medium-resolution branches (conv_sub4, conv3_1_sub2_proj)    sub4, sub2
v5     all three branches                                                    sub4, sub2, sub1
v6     all three branches and after the fusion                               sub4, sub2, sub1, fused
=====  ===================================================================  =========================

A branch cell sits between a convolution and the batch norm that follows it in ICNet, so it needs
no norm of its own. The cell after the fusion has one (``convlstm6_cls_bn`` with ReLU in the
authors' code): its output goes straight to the classifier.

``backbone`` is ICNet's (``vseg_core.models.icnet``: the paper's PSPNet-50 or an ImageNet-initialisable
EfficientNet-Lite); placements and cells do not depend on it.

Every cell has 128 input and hidden channels (times ``width``). ``reduce_channels`` is the 2020
"Faster" LSTM-ICNet (``models/Faster_LSTM_ICNet_v*.py``): a bias-free 1x1 convolution gives the
cell R = 64/48/32 input channels, another bias-free 1x1 convolution carries 128 - R channels past
the cell, and the two are concatenated before the norm, so the block keeps its width. (The
authors' code adds the 1x1 input reduction only for depthwise/separable cells and lets a
standard/spatial cell map 128 -> R itself; here every variant gets the 1x1 reduction, as the issue
asks, which also keeps ``conv`` and ``reduce_channels`` independent.)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from vseg_core.models.icnet import TAP_POINTS, ICNetBody, classify
from vseg_core.models.registry import register_model
from vseg_core.models.streaming import StepOutput, StreamingSegmenter, check_frame
from vseg_core.models.trainable_parts import TrainableParts
from vseg_core.nn.convlstm import CONV_VARIANTS, ConvLSTMCell, LSTMState
from vseg_core.nn.normalize import backbone_normalize
from vseg_core.timing import NullTimer, StageTimer

__all__ = ["PLACEMENTS", "REDUCE_CHANNELS", "LSTMICNet", "TemporalBlock"]

PLACEMENTS: dict[str, tuple[str, ...]] = {
    "v1": ("sub1",),
    "v2": ("fused",),
    "v3": ("sub4",),
    "v4": ("sub4", "sub2"),
    "v5": ("sub4", "sub2", "sub1"),
    "v6": ("sub4", "sub2", "sub1", "fused"),
}
REDUCE_CHANNELS = (64, 48, 32)
_NULL_TIMER = NullTimer()


class TemporalBlock(nn.Module):
    """A ConvLSTM cell on (B, C, H, W) features -> (B, C, H, W), optionally on a reduced input.

    reduce_channels=None: the cell maps C -> C. Otherwise a 1x1 conv gives the cell R channels,
    another 1x1 conv carries C - R channels past it, and the two are concatenated (cell first).
    post: what runs on the block's output (``None``: nothing, the caller normalises it).
    """

    def __init__(
        self,
        channels: int,
        *,
        conv: str,
        reduce_channels: int | None = None,
        kernel_size: int = 3,
        post: nn.Module | None = None,
    ) -> None:
        super().__init__()
        if reduce_channels is not None and not 0 < reduce_channels < channels:
            raise ValueError(f"reduce_channels must be between 0 and {channels} (exclusive), got {reduce_channels}")
        self.channels = channels
        cell_channels = reduce_channels or channels
        # Bias-free like the authors' 1x1 convolutions: a batch norm follows the concatenation.
        self.reduce = nn.Conv2d(channels, reduce_channels, 1, bias=False) if reduce_channels else None
        self.skip = nn.Conv2d(channels, channels - reduce_channels, 1, bias=False) if reduce_channels else None
        self.cell = ConvLSTMCell(cell_channels, cell_channels, kernel_size=kernel_size, conv=conv)
        self.post = post

    def forward(self, x: Tensor, state: LSTMState | None) -> tuple[Tensor, LSTMState]:
        """x: (B, C, H, W); state: the cell's (h, c) or None -> ((B, C, H, W), new (h, c))."""
        if self.reduce is None:
            y, state = self.cell(x, state)
        else:
            h, state = self.cell(self.reduce(x), state)
            y = torch.cat([h, self.skip(x)], dim=1)
        return (y if self.post is None else self.post(y)), state


def _norm_relu(channels: int, norm_layer: Callable[[int], nn.Module]) -> nn.Sequential:
    return nn.Sequential(norm_layer(channels), nn.ReLU(inplace=True))


class LSTMICNet(TrainableParts, StreamingSegmenter):
    """ICNet with temporal blocks at ``placement``; state = one (h, c) per block, on the device.

    Input (B, 3, H, W) RGB in [0, 1]; logits (B, num_classes, H, W).

    Parts for ``set_trainable`` (``vseg train --phase``): ``body`` (ICNet's encoder, branches and
    fusions), ``temporal`` (the ConvLSTM blocks) and ``classifier``, so fresh cells can learn on a
    frozen, trained ICNet (``--phase temporal+classifier:N``) before everything is fine-tuned.
    """

    PARTS = ("body", "temporal", "classifier")

    def __init__(
        self,
        *,
        placement: str = "v2",
        num_classes: int = 19,
        conv: str = "standard",
        reduce_channels: int | None = None,
        width: float = 1.0,
        backbone: str = "pspnet50",
        norm_layer: Callable[[int], nn.Module] = nn.BatchNorm2d,
    ) -> None:
        super().__init__(num_classes)
        if placement not in PLACEMENTS:
            raise ValueError(f"unknown placement {placement!r}; placements: {', '.join(PLACEMENTS)}")
        if conv not in CONV_VARIANTS:
            raise ValueError(f"unknown conv {conv!r}; LSTM-ICNet convs: {', '.join(CONV_VARIANTS)}")
        if reduce_channels is not None and reduce_channels not in REDUCE_CHANNELS:
            raise ValueError(
                f"reduce_channels must be None or one of {', '.join(map(str, REDUCE_CHANNELS))}, got {reduce_channels}"
            )
        if reduce_channels is not None:
            reduce_channels = max(4, round(reduce_channels * width))
        self.placement = placement
        self.body = ICNetBody(width=width, backbone=backbone, norm_layer=norm_layer)
        self.normalize = backbone_normalize(backbone)
        channels = self.body.fused_channels  # 128 x width at every tap point
        self.temporal = nn.ModuleDict(
            {
                tap: TemporalBlock(
                    channels,
                    conv=conv,
                    reduce_channels=reduce_channels,
                    post=_norm_relu(channels, norm_layer) if tap == "fused" else None,
                )
                for tap in TAP_POINTS
                if tap in PLACEMENTS[placement]
            }
        )
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def _part_modules(self) -> dict[str, list[nn.Module]]:
        return {"body": [self.body], "temporal": [self.temporal], "classifier": [self.classifier]}

    def init_state(self, frame: Tensor) -> dict[str, LSTMState | None]:
        """Zero state, created lazily by each cell on the first frame's device and dtype."""
        return dict.fromkeys(self.temporal)

    def step(
        self, frame: Tensor, state: dict[str, Any], *, is_keyframe: bool = True, timer: StageTimer = _NULL_TIMER
    ) -> StepOutput:
        """One frame (B, 3, H, W) -> logits (B, num_classes, H, W) and the cells' new (h, c)."""
        check_frame(frame)
        if not isinstance(state, dict) or set(state) != set(self.temporal):
            raise ValueError(f"state must map {sorted(self.temporal)} to (h, c) or None; use init_state(frame)")
        new_state: dict[str, LSTMState] = {}

        def tap_for(name: str) -> Callable[[Tensor], Tensor]:
            def run(x: Tensor) -> Tensor:
                y, new_state[name] = self.temporal[name](x, state[name])
                return y

            return run

        with timer.stage("features"):
            features = self.body(self.normalize(frame), {name: tap_for(name) for name in self.temporal})
        with timer.stage("fusion"):
            logits = classify(self.classifier, features, frame.shape[-2:])
        return StepOutput(logits=logits, state=new_state, ran=frozenset({"icnet", *self.temporal}))


def _register(placement: str) -> None:
    def build(
        *,
        num_classes: int = 19,
        conv: str = "standard",
        reduce_channels: int | None = None,
        width: float = 1.0,
        backbone: str = "pspnet50",
    ) -> LSTMICNet:
        return LSTMICNet(
            placement=placement,
            num_classes=num_classes,
            conv=conv,
            reduce_channels=reduce_channels,
            width=width,
            backbone=backbone,
        )

    taps = ", ".join(PLACEMENTS[placement])
    register_model(
        f"lstm_icnet_{placement}", family="convlstm", description=f"LSTM-ICNet {placement}: ConvLSTM at {taps}"
    )(build)


for _placement in PLACEMENTS:
    _register(_placement)
