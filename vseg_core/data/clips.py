"""Training clips: which frames form a clip, and augmentation applied identically to all of them.

A training clip is T consecutive frames of one sequence that ends at a labelled frame (the
LSTM-ICNet recipe: unroll T frames from a zero state, loss on the last). Keyframe models (Accel,
DFF) additionally need to know which frame of the clip the reference branch ran on: the
keyframe sits ``offset`` frames before the labelled one (Accel chains K-1 flows from the keyframe,
so offset = K-1; DFF samples the offset uniformly from a range).

Augmentation draws its parameters once per clip and applies the same geometric and photometric
transform to every frame, its labels and its flow, so that motion between frames stays real.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch
from torch import Tensor

__all__ = [
    "AugmentParams",
    "ClipAugmentation",
    "KeyframeOffset",
    "apply_augmentation",
    "augmented_clip_sample",
    "check_keyframe_offset",
    "clip_sample",
    "sample_keyframe_offset",
]


@dataclass(frozen=True)
class KeyframeOffset:
    """Frames between a clip's keyframe and its labelled last frame, drawn from [low, high].

    Accel trains with a fixed offset K-1 (low = high); DFF draws it uniformly from a range.
    A clip must hold at least high + 1 frames.
    """

    low: int
    high: int

    def __post_init__(self) -> None:
        if not 0 <= self.low <= self.high:
            raise ValueError(f"keyframe offsets need 0 <= low <= high, got low={self.low}, high={self.high}")


def check_keyframe_offset(offset: KeyframeOffset | None, clip_length: int) -> None:
    """A dataset's constructor check: ``offset`` (if any) fits clips of ``clip_length`` frames."""
    if offset is not None and offset.high >= clip_length:
        raise ValueError(f"keyframe offsets up to {offset.high} need clip_length > {offset.high}")


def sample_keyframe_offset(offset: KeyframeOffset | None, clip_length: int, rng: np.random.Generator) -> int:
    """Index (0..T-1) of the keyframe in a clip of ``clip_length`` frames; 0 without an offset rule."""
    if offset is None:
        return 0
    if offset.high >= clip_length:
        raise ValueError(f"a keyframe offset up to {offset.high} needs clips of at least {offset.high + 1} frames")
    return clip_length - 1 - int(rng.integers(offset.low, offset.high + 1))


@dataclass(frozen=True)
class ClipAugmentation:
    """Random joint augmentation of a clip; every field's neutral value switches that part off.

    crop_size: output (height, width) in pixels; None keeps the input size. Regions outside the
        scaled image are filled with black and the ignore label.
    scale_range: zoom factor drawn uniformly (1.0: none); applied before cropping.
    hflip: mirror left-right with probability 0.5.
    brightness, contrast, saturation: maximal relative change, e.g. 0.2 draws a factor in [0.8, 1.2].
    """

    crop_size: tuple[int, int] | None = None
    scale_range: tuple[float, float] = (1.0, 1.0)
    hflip: bool = False
    brightness: float = 0.0
    contrast: float = 0.0
    saturation: float = 0.0

    def __post_init__(self) -> None:
        if self.crop_size is not None and (len(self.crop_size) != 2 or min(self.crop_size) < 1):
            raise ValueError(f"crop_size must be (height, width) of positive pixels or None, got {self.crop_size}")
        lo, hi = self.scale_range
        if not 0 < lo <= hi:
            raise ValueError(f"scale_range must be (low, high) with 0 < low <= high, got {self.scale_range}")
        for name in ("brightness", "contrast", "saturation"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1) (a relative change), got {getattr(self, name)}")

    def sample(self, image_size: tuple[int, int], rng: np.random.Generator) -> AugmentParams:
        """Draw one clip's parameters for frames of ``image_size`` (height, width)."""
        h, w = image_size
        out_h, out_w = self.crop_size or (h, w)
        scale = float(rng.uniform(*self.scale_range))
        # Crop origin in the scaled image; when the scaled image is smaller than the crop, the
        # origin is negative and the image lands at a random place inside the padded crop.
        span_y, span_x = h * scale - out_h, w * scale - out_w
        top = float(rng.uniform(min(0.0, span_y), max(0.0, span_y)))
        left = float(rng.uniform(min(0.0, span_x), max(0.0, span_x)))
        flip = bool(self.hflip and rng.random() < 0.5)

        def factor(amount: float) -> float:
            return float(rng.uniform(1.0 - amount, 1.0 + amount)) if amount else 1.0

        return AugmentParams(
            output_size=(out_h, out_w),
            scale=scale,
            top=top,
            left=left,
            flip=flip,
            brightness=factor(self.brightness),
            contrast=factor(self.contrast),
            saturation=factor(self.saturation),
        )


@dataclass(frozen=True)
class AugmentParams:
    """One clip's drawn augmentation: output pixel (x', y') = scale * (x, y) - (left, top), then flipped."""

    output_size: tuple[int, int]
    scale: float = 1.0
    top: float = 0.0
    left: float = 0.0
    flip: bool = False
    brightness: float = 1.0
    contrast: float = 1.0
    saturation: float = 1.0

    def matrix(self) -> np.ndarray:
        """The 2x3 affine map from input to output pixel coordinates (pixel centres at integers)."""
        # A flip mirrors the cropped image about its centre column: x' = (W_out - 1) - (s x - left).
        mirrored = [-self.scale, 0.0, (self.output_size[1] - 1) + self.left]
        row_x = mirrored if self.flip else [self.scale, 0.0, -self.left]
        return np.array([row_x, [0.0, self.scale, -self.top]])

    @property
    def is_identity(self) -> bool:
        return self.scale == 1.0 and self.top == 0.0 and self.left == 0.0 and not self.flip


def _warp(image: np.ndarray, params: AugmentParams, interpolation: int, fill: float | tuple) -> np.ndarray:
    out_h, out_w = params.output_size
    if params.is_identity and image.shape[:2] == (out_h, out_w):
        return image
    return cv2.warpAffine(
        image,
        params.matrix(),
        (out_w, out_h),
        flags=interpolation,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=fill,
    )


def apply_augmentation(
    frames: np.ndarray,
    labels: np.ndarray | None,
    params: AugmentParams,
    *,
    ignore_index: int,
    flow: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Apply ``params`` to every frame of a clip.

    frames: (T, H, W, 3) uint8 RGB. labels: (L, H, W) integer class ids or None.
    flow: (F, H, W, 2) float32 forward flow in pixels, or None; its vectors are scaled and mirrored
    with the images so that it still maps frame t to frame t+1 of the augmented clip.
    Returns the same triple, with frames as float32 in [0, 1].
    """
    warped = np.stack([_warp(f, params, cv2.INTER_LINEAR, (0, 0, 0)) for f in frames])
    images = warped.astype(np.float32) * (1.0 / 255.0)
    if params.brightness != 1.0 or params.contrast != 1.0 or params.saturation != 1.0:
        images *= params.brightness
        # Contrast and saturation pivot on the whole clip's statistics, not each frame's, so that
        # frames of one clip keep their relative brightness (a dropout stays a dropout).
        gray = images @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
        images = (images - gray.mean()) * params.contrast + gray.mean()
        gray = gray[..., None] * params.contrast + gray.mean() * (1 - params.contrast)
        images = gray + (images - gray) * params.saturation
        np.clip(images, 0.0, 1.0, out=images)
    out_labels = None
    if labels is not None:
        out_labels = np.stack([_warp(lab, params, cv2.INTER_NEAREST, int(ignore_index)) for lab in labels])
    out_flow = None
    if flow is not None:
        out_flow = np.stack([_warp(f, params, cv2.INTER_LINEAR, (0.0, 0.0)) for f in flow]).astype(np.float32)
        out_flow *= params.scale
        if params.flip:
            out_flow[..., 0] *= -1.0
    return images, out_labels, out_flow


def clip_sample(
    frames: np.ndarray,
    labels: np.ndarray,
    *,
    keyframe_index: int = 0,
    flow: np.ndarray | None = None,
    info: dict | None = None,
) -> dict[str, Tensor | int | dict]:
    """The dict every clip dataset returns (collates with torch's default collate).

    frames: (T, 3, H, W) float32 RGB in [0, 1]; labels: (L, H, W) int64 with the dataset's
    ignore index, L labelled frames ending at the clip's last frame (the one the loss uses is
    ``labels[-1]``); keyframe_index: where the keyframe model's reference branch runs.
    """
    sample: dict[str, Tensor | int | dict] = {
        "frames": torch.from_numpy(np.ascontiguousarray(frames.transpose(0, 3, 1, 2))),
        "labels": torch.from_numpy(labels.astype(np.int64)),
        "keyframe_index": int(keyframe_index),
    }
    if flow is not None:
        sample["flow"] = torch.from_numpy(np.ascontiguousarray(flow.transpose(0, 3, 1, 2)))
    if info is not None:
        sample["info"] = info
    return sample


def augmented_clip_sample(
    frames: np.ndarray,
    labels: np.ndarray,
    *,
    augmentation: ClipAugmentation | None,
    keyframe_offset: KeyframeOffset | None,
    ignore_index: int,
    flow: np.ndarray | None = None,
    info: dict | None = None,
) -> dict[str, Tensor | int | dict]:
    """A dataset item from a raw clip: one augmentation drawn for all its frames (none: identity),
    then its keyframe index, packed by :func:`clip_sample`. Inputs as for :func:`apply_augmentation`.

    Both draws come from torch's random generator, like any torchvision transform, so
    ``torch.manual_seed`` (or a loader worker's seed) makes them reproducible.
    """
    rng = np.random.default_rng(int(torch.randint(0, 2**62, (1,)).item()))
    params = (augmentation or ClipAugmentation()).sample(labels.shape[1:], rng)
    frames, labels, flow = apply_augmentation(frames, labels, params, ignore_index=ignore_index, flow=flow)
    keyframe = sample_keyframe_offset(keyframe_offset, len(frames), rng)
    return clip_sample(frames, labels, keyframe_index=keyframe, flow=flow, info=info)
