"""Ego-motion clips: video-like training clips synthesised from single labelled stills.

CamVid's labelled training frames are 1 s apart, so clips of consecutive labelled frames move
15-30 times farther between frames than the video a temporal model runs on. An ego-motion clip
instead moves ONE labelled still by a smooth random camera motion: per clip a translation speed and
direction, a zoom rate and a rotation rate (with a slight common acceleration), composed frame to
frame. Image (bilinear) and labels (nearest) are warped alike; pixels that come from outside the
still are black with the ignore label. The clip's last frame is the still itself, so the frame the
loss uses by default is the real, fully labelled image, and every earlier frame is labelled too.

The motion is a 2D similarity of the image plane: it has no parallax, which is what such clips
cannot teach; they teach frame-to-frame consistency at video rate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from vseg_core.data.clips import ClipAugmentation, KeyframeOffset, augmented_clip_sample, check_keyframe_offset

__all__ = ["EgoMotion", "EgoMotionClips", "step_matrix", "warp_still"]


def step_matrix(image_size: tuple[int, int], *, shift: tuple[float, float], zoom: float, angle: float) -> np.ndarray:
    """3x3 map of pixel coordinates from one frame to the next: scale ``1 + zoom`` and rotation
    ``angle`` (radians) about the image centre, then a shift (dx, dy) in pixels."""
    h, w = image_size
    cx, cy = (w - 1) / 2.0, (h - 1) / 2.0
    s = 1.0 + zoom
    cos, sin = s * math.cos(angle), s * math.sin(angle)
    return np.array(
        [
            [cos, -sin, cx + shift[0] - (cos * cx - sin * cy)],
            [sin, cos, cy + shift[1] - (sin * cx + cos * cy)],
            [0.0, 0.0, 1.0],
        ]
    )


@dataclass(frozen=True)
class EgoMotion:
    """Bounds of an ego-motion clip's camera motion between consecutive frames (15-30 Hz video).

    shift: (min, max) speed of the image's translation per frame, as a fraction of the image width.
    zoom: largest relative change of scale per frame (0.02: the image grows or shrinks by 2 %).
    rotation_deg: largest rotation per frame, in degrees.
    acceleration: largest relative change of the speeds from one frame to the next; the speeds
        stay within the bounds above.
    """

    shift: tuple[float, float] = (0.005, 0.03)
    zoom: float = 0.02
    rotation_deg: float = 0.5
    acceleration: float = 0.1

    def __post_init__(self) -> None:
        if not 0.0 <= self.shift[0] <= self.shift[1] < 1.0:
            raise ValueError(f"shift must be (min, max) with 0 <= min <= max < 1 (of the width), got {self.shift}")
        if not 0.0 <= self.zoom < 1.0 or not 0.0 <= self.rotation_deg < 90.0 or not 0.0 <= self.acceleration < 1.0:
            raise ValueError(
                "need 0 <= zoom < 1, 0 <= rotation_deg < 90 and 0 <= acceleration < 1, "
                f"got {self.zoom}, {self.rotation_deg}, {self.acceleration}"
            )

    def steps(self, clip_length: int, image_size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
        """(T-1, 3, 3) step matrices, step t mapping frame t's pixel coordinates to frame t+1's."""
        speed = rng.uniform(*self.shift)
        direction = rng.uniform(0.0, 2.0 * math.pi)
        zoom = rng.uniform(-self.zoom, self.zoom)
        rotation = math.radians(rng.uniform(-self.rotation_deg, self.rotation_deg))
        accel = rng.uniform(-self.acceleration, self.acceleration)
        width = image_size[1]
        out = []
        for t in range(clip_length - 1):
            grow = (1.0 + accel) ** t
            v = float(np.clip(speed * grow, *self.shift)) * width
            out.append(
                step_matrix(
                    image_size,
                    shift=(v * math.cos(direction), v * math.sin(direction)),
                    zoom=float(np.clip(zoom * grow, -self.zoom, self.zoom)),
                    angle=float(
                        np.clip(rotation * grow, -math.radians(self.rotation_deg), math.radians(self.rotation_deg))
                    ),
                )
            )
        return np.stack(out) if out else np.zeros((0, 3, 3))

    def clip_matrices(self, clip_length: int, image_size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
        """(T, 3, 3) maps from the still's pixel coordinates to frame t's; the last is the identity."""
        steps = self.steps(clip_length, image_size, rng)
        matrices = [np.eye(3)]
        for step in steps[::-1]:  # frame t+1 = step_t(frame t), so frame t = step_t^-1(frame t+1)
            matrices.append(np.linalg.solve(step, matrices[-1]))
        return np.stack(matrices[::-1])


def warp_still(
    image: np.ndarray, labels: np.ndarray, matrices: np.ndarray, *, ignore_index: int
) -> tuple[np.ndarray, np.ndarray]:
    """Frames (T, H, W, 3) and labels (T, H, W) of a still moved by ``matrices`` (T, 3, 3), each a
    map from the still's pixel coordinates (pixel centres at integers) to that frame's.

    image: (H, W, 3) uint8, warped bilinearly, black outside the still; labels: (H, W) uint8,
    warped by nearest neighbour, ``ignore_index`` outside the still.
    """
    h, w = labels.shape
    if image.shape[:2] != (h, w):
        raise ValueError(f"image {image.shape[:2]} and labels {labels.shape} differ in size")
    frames, maps = [], []
    for matrix in matrices:
        if np.array_equal(matrix, np.eye(3)):
            frames.append(image.copy())
            maps.append(labels.copy())
            continue
        affine = matrix[:2]
        frames.append(cv2.warpAffine(image, affine, (w, h), flags=cv2.INTER_LINEAR, borderValue=(0, 0, 0)))
        maps.append(cv2.warpAffine(labels, affine, (w, h), flags=cv2.INTER_NEAREST, borderValue=int(ignore_index)))
    return np.stack(frames), np.stack(maps)


class EgoMotionClips(Dataset):
    """Clips of ``clip_length`` frames, each made from one still of ``stills`` by an ego motion.

    stills: a clip dataset of single frames (``clip_length=1``) without augmentation, e.g.
    ``create_dataset("camvid", root=..., clip_length=1)``; item i is made from its still i. The
    motion, then ``augmentation`` and the keyframe offset (:func:`augmented_clip_sample`), are drawn
    from torch's random generator, so ``torch.manual_seed`` makes an item reproducible. Items are
    the dicts of :func:`vseg_core.data.clips.clip_sample` with labels for all T frames.
    """

    def __init__(
        self,
        stills: Dataset,
        *,
        clip_length: int = 4,
        motion: EgoMotion | None = None,
        augmentation: ClipAugmentation | None = None,
        keyframe_offset: KeyframeOffset | None = None,
        ignore_index: int | None = None,
    ) -> None:
        if clip_length < 1:
            raise ValueError(f"clip_length must be at least 1, got {clip_length}")
        check_keyframe_offset(keyframe_offset, clip_length)
        if getattr(stills, "augmentation", None) is not None:
            raise ValueError("stills must come without augmentation: ego-motion clips augment after the motion")
        ignore = ignore_index if ignore_index is not None else getattr(stills, "ignore_index", None)
        if ignore is None or not 0 <= ignore <= 255:
            raise ValueError(f"ego-motion clips need an ignore label in 0..255 for 8-bit label maps, got {ignore}")
        self.stills = stills
        self.clip_length = clip_length
        self.motion = motion or EgoMotion()
        self.augmentation = augmentation
        self.keyframe_offset = keyframe_offset
        self.ignore_index = int(ignore)
        self.palette = getattr(stills, "palette", None)

    def __len__(self) -> int:
        return len(self.stills)

    def still(self, index: int) -> tuple[np.ndarray, np.ndarray, dict | None]:
        """Still ``index`` as (H, W, 3) uint8 image, (H, W) uint8 labels and its provenance."""
        item = self.stills[index]
        if item["frames"].shape[0] != 1:
            raise ValueError(
                f"stills must be a dataset of single frames (clip_length=1), got {item['frames'].shape[0]}"
            )
        # Without augmentation the frames are the image's bytes / 255, so this is exact.
        image = np.round(item["frames"][0].permute(1, 2, 0).numpy() * 255.0).astype(np.uint8)
        return image, item["labels"][-1].numpy().astype(np.uint8), item.get("info")

    def __getitem__(self, index: int) -> dict:
        image, labels, info = self.still(index)
        rng = np.random.default_rng(int(torch.randint(0, 2**62, (1,)).item()))
        matrices = self.motion.clip_matrices(self.clip_length, labels.shape, rng)
        frames, clip_labels = warp_still(image, labels, matrices, ignore_index=self.ignore_index)
        return augmented_clip_sample(
            frames, clip_labels, augmentation=self.augmentation, keyframe_offset=self.keyframe_offset,
            ignore_index=self.ignore_index, info=info,
        )  # fmt: skip
