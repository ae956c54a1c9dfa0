"""DFF and Accel (Jain, Wang & Gonzalez, CVPR 2019) as the released code (SamvitJ/Accel) builds them.

- Reference branch: DeepLab-101 (deformable conv5, stride 16). On a keyframe it runs on the frame,
  its conv5 features (2048 channels) are cached, and its task head alone gives the logits (the
  code's ``get_key_test_symbol``): a keyframe step *is* DeepLab-101.
- Motion: FlowNetS (or OpenCV DIS) on the pair (current, previous). Warping is incremental: on every
  non-key frame the cached features are warped from the previous frame to this one and cached again
  (the tester feeds ``warping_feat_output`` back as ``feat_key``).
- Update branch (Accel only): a ResNet-18/34/50 feature net with its own DeepLab head on every
  non-key frame; the 1x1 ``correction`` layer fuses concat(reference logits, update logits) (2C) -> C,
  initialised N(0, 0.01) with zero bias. So a fresh Accel-18/34/50 does *not* reproduce the reference
  on non-key frames: the code trains this layer first (phase 1: ``set_trainable(FUSION_ONLY)``).
- Accel-101 fuses features instead: concat(warped reference conv5, update conv5) (4096) -> 2048,
  then the reference head. The update net of Accel-101 in the code *is* the reference ResNet-101
  (same parameter names, so shared weights), and the fusion starts as the identity on the update
  half (weight 1 on channel 2048 + i for output i, zero elsewhere): a fresh Accel-101 equals
  DeepLab-101 on every frame.
- DFF: Accel without the update branch, plus its learned scale field (weight 0, bias 1, so the
  identity at the start) multiplying the warped features before the head. The Accel code carries
  the scale field but has the multiplication commented out; ``dff(scale_field=False)`` is that variant.
  The scale multiplies what goes to the head only; the cache keeps the unscaled warped features, so
  that incremental warping does not compound the factors.

Training (``forward_clip``) follows the code's ``get_train_symbol``: frame 0 of the clip is the
keyframe, its features are warped K-1 times in a chain by the flows of consecutive pairs, and the
update branch and fusion run on the frames whose logits are asked for (the labelled frame, by
default the last). Gradients reach the reference net through the
warps, the flow net through the sampling positions, and the update branch and fusion directly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vseg_core.models.deeplab import LITE_HEAD_CHANNELS
from vseg_core.models.registry import register_model
from vseg_core.models.streaming import StepOutput, StreamingSegmenter, check_clip, check_frame
from vseg_core.models.trainable_parts import TrainableParts
from vseg_core.nn.efficientnet_lite import LiteEncoder
from vseg_core.nn.flownet import ScaleField
from vseg_core.nn.heads import DeepLabHead, upsample_scores
from vseg_core.nn.motion import MotionSource, build_motion
from vseg_core.nn.normalize import ImageNormalize, backbone_normalize
from vseg_core.nn.resnet_features import ResNetFeatures, resnet_features
from vseg_core.nn.warp import warp
from vseg_core.timing import NullTimer, StageTimer

__all__ = [
    "FUSION_ONLY",
    "PARTS",
    "Accel",
    "AccelState",
    "FeatureFusion",
    "ScoreFusion",
    "accel18",
    "accel34",
    "accel50",
    "accel101",
    "accel_lite0",
    "dff",
]

#: Trainable groups for :meth:`Accel.set_trainable`.
PARTS = ("reference", "motion", "scale_field", "update", "fusion")
#: Phase 1 of Accel's training: only the fusion layer learns.
FUSION_ONLY = ("fusion",)

_NULL_TIMER = NullTimer()


@dataclass(frozen=True)
class AccelState:
    """The stream state, all on the frames' device.

    features: (B, 2048, h, w) reference conv5 features warped up to ``previous``; None before the
        first keyframe.
    previous: (B, 3, H, W) the last frame (what the next flow is computed against); None at first.
    since_key: () int64, frames since the last keyframe.
    """

    features: Tensor | None
    previous: Tensor | None
    since_key: Tensor

    @property
    def frame_shape(self) -> tuple[int, ...] | None:
        return None if self.previous is None else tuple(self.previous.shape)


class ScoreFusion(nn.Module):
    """Accel-18/34/50's ``correction``: concat(reference, update) logits (B, 2C, H, W) -> 1x1 -> (B, C, H, W)."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2 * num_classes, num_classes, 1)
        nn.init.normal_(self.conv.weight, 0.0, 0.01)
        nn.init.zeros_(self.conv.bias)

    def forward(self, reference: Tensor, update: Tensor) -> Tensor:
        return self.conv(torch.cat([reference, update], dim=1))


class FeatureFusion(nn.Module):
    """Accel-101's ``correction``: concat(reference, update) features (B, 2C, h, w) -> 1x1 -> (B, C, h, w).

    Initialised as in the code: zero bias and the identity on the update half, so that the fused
    features start as the update net's own.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2 * channels, channels, 1)
        with torch.no_grad():
            self.conv.weight.zero_()
            self.conv.weight[:, channels:, 0, 0].copy_(torch.eye(channels))
            self.conv.bias.zero_()

    def forward(self, reference: Tensor, update: Tensor) -> Tensor:
        return self.conv(torch.cat([reference, update], dim=1))


class Accel(TrainableParts, StreamingSegmenter):
    """DFF / Accel from its parts (see the module docstring).

    reference, reference_head: the keyframe network (DeepLab-101) and its task head.
    motion: where flow comes from (:func:`vseg_core.nn.motion.build_motion`).
    scale_field: DFF's scale field on the motion source's features, or None.
    update, update_head, fusion: the update branch. ``ScoreFusion`` needs ``update_head``;
        ``FeatureFusion`` fuses features and scores them with ``reference_head`` (no update head).
        ``update`` may be ``reference`` itself (Accel-101's shared weights). All None: DFF.
    reference_scale: the keyframe network sees the frame enlarged this much (1 to 4; not in the
        paper): its features, warped on that finer grid (DIS flow only), see small objects better,
        while the update branch stays at the frame's size. Logits always come at the frame's size.
    normalize: the input normalisation both branches share (default torchvision's ImageNet
        statistics; EfficientNet-Lite branches need theirs, see ``backbone_normalize``).
    """

    uses_keyframes = True
    PARTS = PARTS  # set_trainable's names; set_trainable(FUSION_ONLY) is the code's phase 1

    def __init__(
        self,
        *,
        num_classes: int,
        reference: ResNetFeatures | LiteEncoder,
        reference_head: DeepLabHead,
        motion: MotionSource,
        scale_field: ScaleField | None = None,
        update: nn.Module | None = None,
        update_head: DeepLabHead | None = None,
        fusion: ScoreFusion | FeatureFusion | None = None,
        normalize: nn.Module | None = None,
        reference_scale: float = 1.0,
    ) -> None:
        super().__init__(num_classes)
        if not 1.0 <= reference_scale <= 4.0:
            raise ValueError(f"reference_scale must be from 1 to 4 (times the frame's size), got {reference_scale}")
        if reference_scale != 1.0 and isinstance(fusion, FeatureFusion):
            raise ValueError("feature fusion needs both branches on one grid: reference_scale must be 1")
        if reference_scale != 1.0 and motion.feature_channels:
            # FlowNetS gives its flow on the frame's stride-16 grid, not on the larger reference grid.
            raise ValueError(f"reference_scale {reference_scale} needs flow on the reference's grid: use motion='dis'")
        if reference_head.in_channels != reference.out_channels:
            raise ValueError(
                f"reference_head takes {reference_head.in_channels} channels, reference gives {reference.out_channels}"
            )
        if (update is None) != (fusion is None):
            raise ValueError("update and fusion come together: pass both (Accel) or neither (DFF)")
        if isinstance(fusion, ScoreFusion) and update_head is None:
            raise ValueError("score fusion needs update_head to score the update branch's features")
        if isinstance(fusion, FeatureFusion) and update_head is not None:
            raise ValueError("feature fusion scores the fused features with reference_head; pass no update_head")
        if update is None and update_head is not None:
            raise ValueError("update_head without an update branch")
        if scale_field is not None and motion.feature_channels == 0:
            raise ValueError(f"{type(motion).__name__} gives no features for a scale field: use motion='flownet'")
        self.normalize = normalize or ImageNormalize()
        self.reference = reference
        self.reference_head = reference_head
        self.motion = motion
        self.scale_field = scale_field
        # A shared update net is not registered twice: its weights live under ``reference`` only.
        self.shares_reference = update is reference
        self.update = None if self.shares_reference else update
        self.update_head = update_head
        self.fusion = fusion
        self.reference_scale = float(reference_scale)

    # ----------------------------------------------------------------------------- parts
    @property
    def update_net(self) -> nn.Module | None:
        return self.reference if self.shares_reference else self.update

    def _part_modules(self) -> dict[str, list[nn.Module]]:
        parts = {
            "reference": [self.reference, self.reference_head],
            "motion": [self.motion],
            "scale_field": [self.scale_field],
            "update": [self.update, self.update_head],
            "fusion": [self.fusion],
        }
        return {name: [m for m in modules if m is not None] for name, modules in parts.items()}

    def _present_parts(self) -> set[str]:
        # A shared update net is the reference net, so "update" names it too.
        return super()._present_parts() | ({"update"} if self.shares_reference else set())

    def _check_trainable(self, wanted: set[str]) -> None:
        if self.shares_reference and ("update" in wanted) != ("reference" in wanted):
            raise ValueError("this model's update net is the reference net: train or freeze both together")

    # ----------------------------------------------------------------------------- streaming
    def init_state(self, frame: Tensor) -> AccelState:
        check_frame(frame)
        return AccelState(None, None, torch.zeros((), dtype=torch.int64, device=frame.device))

    def _check_continues(self, frame: Tensor, state: AccelState) -> None:
        if state.frame_shape != tuple(frame.shape):
            raise ValueError(
                f"frame of shape {tuple(frame.shape)} does not continue a stream of {state.frame_shape} frames: "
                "frames of one state must share batch and size; start a new state (init_state) for the new size"
            )

    def step(
        self, frame: Tensor, state: AccelState | None, *, is_keyframe: bool = True, timer: StageTimer = _NULL_TIMER
    ) -> StepOutput:
        """One frame. A keyframe (or the first frame of a state) runs the reference branch; any
        other frame warps the cached features by flow(previous -> current) and runs the update
        branch and the fusion. ``ran`` names what ran; ``extras["flow"]`` is the flow (B, 2, h, w)
        in feature pixels on non-key frames."""
        check_frame(frame)
        if state is None:
            state = self.init_state(frame)
        if not isinstance(state, AccelState):
            raise ValueError(f"state must be the AccelState of init_state/step, got {type(state).__name__}")
        if state.features is not None:
            self._check_continues(frame, state)
        if is_keyframe or state.features is None:
            logits, features = self.keyframe(frame, timer)
            new_state = AccelState(features, frame, torch.zeros_like(state.since_key))
            return StepOutput(logits, new_state, is_keyframe=True, ran=frozenset({"reference", "task_head"}))
        with timer.stage("flow"):
            motion = self.motion(frame, state.previous, grid=tuple(state.features.shape[-2:]))
            warped = warp(state.features, motion.flow)
        logits, ran, extras = self._nonkey_logits(frame, warped, motion.features, timer)
        extras["flow"] = motion.flow
        new_state = AccelState(warped, frame, state.since_key + 1)
        return StepOutput(logits, new_state, is_keyframe=False, ran=frozenset({"flow", *ran}), extras=extras)

    def keyframe(self, frame: Tensor, timer: StageTimer = _NULL_TIMER) -> tuple[Tensor, Tensor]:
        """The reference branch on a (B, 3, H, W) frame: logits (B, C, H, W) and the features to cache
        (on the grid of the frame enlarged by ``reference_scale``)."""
        features = self.keyframe_features(frame, timer)
        with timer.stage("fusion"):
            logits = self._reference_logits(self.reference_head(features, None), (frame.shape[-2], frame.shape[-1]))
        return logits, features

    def keyframe_features(self, frame: Tensor, timer: StageTimer = _NULL_TIMER) -> Tensor:
        """The reference branch's features of a (B, 3, H, W) frame, without its logits (a training clip
        whose keyframe is not scored needs only these)."""
        with timer.stage("features"):
            if self.reference_scale != 1.0:
                size = self._reference_size((frame.shape[-2], frame.shape[-1]))
                frame = F.interpolate(frame, size=size, mode="bilinear", align_corners=False)
            return self.reference(self.normalize(frame))

    def _reference_size(self, size: tuple[int, int]) -> tuple[int, int]:
        return (round(size[0] * self.reference_scale), round(size[1] * self.reference_scale))

    def _reference_logits(self, scores: Tensor, size: tuple[int, int]) -> Tensor:
        """The reference head's scores -> logits at the frame's ``size``: upsampled to the frame the
        reference saw, then (reference_scale > 1) resized to the frame."""
        if self.reference_scale == 1.0:
            return upsample_scores(scores, size, stride=self.reference_head.stride)
        logits = upsample_scores(scores, self._reference_size(size), stride=self.reference_head.stride)
        return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)

    def _nonkey_logits(
        self, frame: Tensor, warped: Tensor, motion_features: Tensor | None, timer: StageTimer
    ) -> tuple[Tensor, set[str], dict[str, Tensor]]:
        """Logits of a non-key frame from the reference features warped to it."""
        size = (frame.shape[-2], frame.shape[-1])
        ran = {"task_head"}
        reference = warped
        if self.scale_field is not None:
            with timer.stage("flow"):
                reference = warped * self.scale_field(motion_features)
            ran.add("scale_field")
        if self.fusion is None:
            with timer.stage("fusion"):
                return self._reference_logits(self.reference_head(reference, None), size), ran, {}
        ran |= {"update", "fusion"}
        with timer.stage("features"):
            update = self.update_net(self.normalize(frame))
        if isinstance(self.fusion, FeatureFusion):
            with timer.stage("fusion"):
                return self.reference_head(self.fusion(reference, update), size), ran, {}
        with timer.stage("fusion"):
            # The code fuses the two score maps after upsampling them to the frame. The 1x1 fusion and
            # ``upsample_scores`` are both linear and its weights sum to 1 (interpolation clamps at the
            # border), so where the two branches give score grids of one size, fusing them there and
            # upsampling once gives the same logits at 1/256 of the pixels. The code's zero-padded
            # deconvolution matches that upsampling only away from the frame's outer 8 pixels (see
            # nn/heads.py); there it scales the scores but not the fusion's bias, so even the labels
            # can differ from the code's in those bands. ResNets of different depth can round odd sizes
            # differently (360x480: 23x30 and 24x30 cells), and a reference_scale > 1 puts the
            # reference on a finer grid; then the maps meet at the frame's size.
            reference_scores = self.reference_head(reference, None)
            update_scores = self.update_head(update, None)
            if reference_scores.shape == update_scores.shape and self.reference_scale == 1.0:
                fused = self.fusion(reference_scores, update_scores)
                logits = upsample_scores(fused, size, stride=self.reference_head.stride)
            else:
                reference_scores = self._reference_logits(reference_scores, size)
                update_scores = upsample_scores(update_scores, size, stride=self.update_head.stride)
                logits = self.fusion(reference_scores, update_scores)
        return logits, ran, {"reference_scores": reference_scores, "update_scores": update_scores}

    def forward_clip(self, frames: Tensor, output_frames: Sequence[int] = (-1,)) -> Tensor:
        """Logits (B, len(output_frames), C, H, W) of a (B, T, 3, H, W) clip whose frame 0 is the keyframe.

        Equal to stepping through the clip with a keyframe at 0 only, except that the update branch
        and the fusion run only on the wanted frames (the intermediate ones only need the flow).
        """
        indices = check_clip(frames, output_frames)
        last = max(indices)
        out: dict[int, Tensor] = {}
        if 0 in indices:
            out[0], features = self.keyframe(frames[:, 0])
        else:
            features = self.keyframe_features(frames[:, 0])
        for t in range(1, last + 1):
            # One flow per pair, as ``step`` computes it: batching the pairs (as the MXNet code does)
            # changes convolution algorithms and so the logits in the last bits, and the clip
            # forward is meant to be the unrolled stream exactly.
            motion = self.motion(frames[:, t], frames[:, t - 1], grid=tuple(features.shape[-2:]))
            features = warp(features, motion.flow)
            if t in indices:
                out[t] = self._nonkey_logits(frames[:, t], features, motion.features, _NULL_TIMER)[0]
        return torch.stack([out[i] for i in indices], dim=1)


# --------------------------------------------------------------------------------- builders
def _hidden(width: float) -> int:
    return max(4, round(1024 * width))


def _reference(num_classes: int, deformable: bool, width: float) -> tuple[ResNetFeatures, DeepLabHead]:
    features = resnet_features(101, width=width, deformable=deformable)
    return features, DeepLabHead(features.out_channels, num_classes, hidden_channels=_hidden(width))


@register_model("dff", family="accel", description="DFF: DeepLab-101 keyframes, flow-warped features, scale field")
def dff(
    *,
    num_classes: int = 19,
    motion: str = "flownet",
    deformable: bool = True,
    scale_field: bool | None = None,
    width: float = 1.0,
) -> Accel:
    """DFF. ``scale_field`` defaults to True with FlowNetS and False with DIS (which has no features)."""
    reference, head = _reference(num_classes, deformable, width)
    source = build_motion(motion, width=width)
    use_scale = source.feature_channels > 0 if scale_field is None else scale_field
    if use_scale and source.feature_channels == 0:
        raise ValueError(f"motion={motion!r} gives no features for a scale field: use motion='flownet'")
    field = ScaleField(source.feature_channels, reference.out_channels) if use_scale else None
    return Accel(num_classes=num_classes, reference=reference, reference_head=head, motion=source, scale_field=field)


def _accel_score(depth: int, *, num_classes: int, motion: str, deformable: bool, width: float) -> Accel:
    reference, head = _reference(num_classes, deformable, width)
    update = resnet_features(depth, width=width, deformable=deformable)
    return Accel(
        num_classes=num_classes,
        reference=reference,
        reference_head=head,
        motion=build_motion(motion, width=width),
        update=update,
        update_head=DeepLabHead(update.out_channels, num_classes, hidden_channels=_hidden(width)),
        fusion=ScoreFusion(num_classes),
    )


@register_model(
    "accel18", family="accel", description="Accel-18: DeepLab-101 keyframes + ResNet-18 update, score fusion"
)
def accel18(*, num_classes: int = 19, motion: str = "flownet", deformable: bool = True, width: float = 1.0) -> Accel:
    return _accel_score(18, num_classes=num_classes, motion=motion, deformable=deformable, width=width)


@register_model(
    "accel34", family="accel", description="Accel-34: DeepLab-101 keyframes + ResNet-34 update, score fusion"
)
def accel34(*, num_classes: int = 19, motion: str = "flownet", deformable: bool = True, width: float = 1.0) -> Accel:
    return _accel_score(34, num_classes=num_classes, motion=motion, deformable=deformable, width=width)


@register_model(
    "accel50", family="accel", description="Accel-50: DeepLab-101 keyframes + ResNet-50 update, score fusion"
)
def accel50(*, num_classes: int = 19, motion: str = "flownet", deformable: bool = True, width: float = 1.0) -> Accel:
    return _accel_score(50, num_classes=num_classes, motion=motion, deformable=deformable, width=width)


@register_model(
    "accel101", family="accel", description="Accel-101: DeepLab-101 keyframes + ResNet-101 update, feature fusion"
)
def accel101(
    *,
    num_classes: int = 19,
    motion: str = "flownet",
    deformable: bool = True,
    width: float = 1.0,
    shared_update: bool = True,
) -> Accel:
    """Accel-101. ``shared_update`` (the code's choice): the update net is the reference ResNet-101."""
    reference, head = _reference(num_classes, deformable, width)
    update = reference if shared_update else resnet_features(101, width=width, deformable=deformable)
    return Accel(
        num_classes=num_classes,
        reference=reference,
        reference_head=head,
        motion=build_motion(motion, width=width),
        update=update,
        fusion=FeatureFusion(reference.out_channels),
    )


@register_model(
    "accel_lite0",
    family="accel",
    description="Accel-Lite0: DeepLab-Lite2 keyframes + EfficientNet-Lite0 update, score fusion",
)
def accel_lite0(
    *, num_classes: int = 19, motion: str = "dis", reference: str = "lite2", reference_scale: float = 1.0
) -> Accel:
    """Accel on ImageNet-initialisable branches: a DeepLab-Lite2 (or ``reference="lite0"``)
    reference and a DeepLab-Lite0 update branch, both at stride 16 with Lite's normalisation.

    ``motion`` defaults to OpenCV DIS: it needs no weights, while FlowNetS would start from random
    ones here (``motion="flownet"`` trains it with the rest). ``reference_scale`` (DIS only): the
    reference runs on the frame enlarged this much (see :class:`Accel`). Lite2 costs only 1.5x Lite0
    at one size, so a reference at the frame's size leaves Accel little to save; on a 1.5x frame
    it is the more accurate network (DeepLab-Lite0 on CamVid val: 0.642 at 360x480, 0.662 at 540x720)
    and an update branch at the frame's size is a third of its cost.
    """
    if reference not in ("lite0", "lite2"):
        raise ValueError(f"accel_lite0's reference is 'lite2' or 'lite0', got {reference!r}")
    ref = LiteEncoder(reference, output_stride=16)
    update = LiteEncoder("lite0", output_stride=16)
    return Accel(
        num_classes=num_classes,
        reference=ref,
        reference_head=DeepLabHead(ref.out_channels, num_classes, hidden_channels=LITE_HEAD_CHANNELS),
        motion=build_motion(motion),
        update=update,
        update_head=DeepLabHead(update.out_channels, num_classes, hidden_channels=LITE_HEAD_CHANNELS),
        fusion=ScoreFusion(num_classes),
        normalize=backbone_normalize(reference),
        reference_scale=reference_scale,
    )
