"""CamVid in the 11-class SegNet layout: frames, their labels, sequences and training clips.

Layout under ``root`` (the SegNet tutorial's CamVid/ folder)::

    train/SEQ_FRAME.png       RGB frames (480x360); SEQ_FRAME.jpg is read too
    trainannot/SEQ_FRAME.png  8-bit class ids 0..10, 11 = void (ignored); always PNG (lossless)
    val/, valannot/, test/, testannot/   the same for the other splits

``FRAME`` counts frames of the 30 fps source video, sometimes written with an ``f`` prefix
(``0006R0_f00930.png``). Only labelled frames exist in this form: 1 Hz in train (frame step 30),
15 Hz in the densely labelled val clip (step 2). Frames of one sequence are ordered by frame number
and split into runs wherever the step exceeds 1.5 times the sequence's usual (median) step (train
0016E5 has gaps of 270 and 1950 frames); a clip never crosses such a gap. Every frame is labelled, so a clip of T
frames ends at a labelled frame by construction.

:data:`CAMVID_DEMO_CLIP` is a miniature root in this layout that ships inside the package: the first
60 frames of the val clip (JPEG frames, the source's label PNGs), for ``vseg demo``. Its README and
LICENSE say where it comes from; like all of CamVid it is for research and non-commercial use only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from torch.utils.data import Dataset

from vseg_core.data.clips import ClipAugmentation, KeyframeOffset, augmented_clip_sample, check_keyframe_offset
from vseg_core.data.layout import DatasetLayoutError, require_dir
from vseg_core.palette import CAMVID

__all__ = ["CAMVID_DEMO_CLIP", "CAMVID_LAYOUT", "CamVidClips", "CamVidFrame", "camvid_sequences"]

CAMVID_LAYOUT = (
    "ROOT/{split}/SEQ_FRAME.png (RGB, or .jpg) and ROOT/{split}annot/SEQ_FRAME.png (8-bit class ids 0..10, "
    "11 void), the SegNet CamVid layout"
)
CAMVID_DEMO_CLIP = Path(__file__).with_name("demo_clips") / "camvid_0016E5"
IGNORE_INDEX = CAMVID.ignore_index
_NAME = re.compile(r"^(?P<sequence>[0-9A-Za-z]+)_f?(?P<frame>\d+)\.(?:png|jpg)$")


@dataclass(frozen=True)
class CamVidFrame:
    """One labelled frame: its sequence, frame number in the 30 fps source video, and files."""

    sequence: str
    frame: int
    image: Path
    label: Path


def camvid_sequences(root: str | Path, split: str = "train") -> list[list[CamVidFrame]]:
    """Runs of consecutive labelled frames of ``split``, each ordered by frame number.

    Raises :class:`DatasetLayoutError` naming the expected layout and the first missing path.
    """
    root = Path(root)
    layout = CAMVID_LAYOUT.format(split=split)
    require_dir(root, layout)
    images = require_dir(root / split, layout)
    labels = require_dir(root / f"{split}annot", layout)
    by_sequence: dict[str, list[CamVidFrame]] = {}
    for path in sorted(images.iterdir()):
        match = _NAME.match(path.name)
        if match is None:
            continue  # README files and the like live beside the frames
        label = labels / f"{path.stem}.png"  # labels stay lossless beside JPEG frames
        if not label.is_file():
            raise DatasetLayoutError(f"missing file {label} (the label of {path}); expected layout: {layout}")
        frame = CamVidFrame(match["sequence"], int(match["frame"]), path, label)
        by_sequence.setdefault(frame.sequence, []).append(frame)
    if not by_sequence:
        raise DatasetLayoutError(f"no frames named SEQ_FRAME.png in {images}; expected layout: {layout}")
    runs = []
    for name in sorted(by_sequence):
        frames = sorted(by_sequence[name], key=lambda f: f.frame)
        steps = np.diff([f.frame for f in frames])
        if (steps == 0).any():
            raise DatasetLayoutError(f"sequence {name} in {images} names one frame twice; expected layout: {layout}")
        usual = int(np.median(steps)) if len(steps) else 1
        start = 0
        for i, step in enumerate(steps, start=1):
            # Source frame numbers jitter by a frame or two (0016E5 has 870 -> 901), gaps are
            # hundreds: half a step of slack tells them apart.
            if step > 1.5 * usual:
                runs.append(frames[start:i])
                start = i
        runs.append(frames[start:])
    return runs


def read_camvid_frame(frame: CamVidFrame) -> tuple[np.ndarray, np.ndarray]:
    """(H, W, 3) uint8 RGB image and (H, W) uint8 labels of one frame."""
    image = cv2.imread(str(frame.image), cv2.IMREAD_COLOR)
    label = cv2.imread(str(frame.label), cv2.IMREAD_UNCHANGED)
    if image is None or label is None:
        bad = frame.image if image is None else frame.label
        raise DatasetLayoutError(f"cannot read {bad} as an image; expected layout: {CAMVID_LAYOUT}")
    if label.ndim != 2 or label.dtype != np.uint8:
        raise DatasetLayoutError(
            f"{frame.label} must be an 8-bit single-channel image of class ids, got shape {label.shape} "
            f"{label.dtype} (colour-coded labels are not the SegNet layout)"
        )
    if label.shape != image.shape[:2]:
        raise DatasetLayoutError(f"{frame.label} is {label.shape} but its image {frame.image} is {image.shape[:2]}")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB), label


class CamVidClips(Dataset):
    """Clips of ``clip_length`` consecutive labelled frames from the runs of one split.

    Item = the dict of :func:`vseg_core.data.clips.clip_sample` with labels (T, H, W) for every
    frame (void = 11). ``clip_length=1`` gives single frames. Augmentation parameters come from
    torch's random generator, so ``torch.manual_seed`` makes them reproducible.
    """

    palette = CAMVID
    ignore_index = IGNORE_INDEX

    def __init__(
        self,
        root: str | Path,
        *,
        split: str = "train",
        clip_length: int = 4,
        augmentation: ClipAugmentation | None = None,
        keyframe_offset: KeyframeOffset | None = None,
    ) -> None:
        if clip_length < 1:
            raise ValueError(f"clip_length must be at least 1, got {clip_length}")
        check_keyframe_offset(keyframe_offset, clip_length)
        self.root = Path(root)
        self.split = split
        self.sequences = camvid_sequences(root, split)
        self.clip_length = clip_length
        self.augmentation = augmentation
        self.keyframe_offset = keyframe_offset
        # (run, index of the clip's last frame): every frame with clip_length - 1 frames before it.
        self.clips = [(r, end) for r, run in enumerate(self.sequences) for end in range(clip_length - 1, len(run))]
        if not self.clips:
            longest = max(len(run) for run in self.sequences)
            raise ValueError(f"no run of {split} has {clip_length} consecutive frames (the longest has {longest})")

    def __len__(self) -> int:
        return len(self.clips)

    def clip_frames(self, index: int) -> list[CamVidFrame]:
        run, end = self.clips[index]
        return self.sequences[run][end - self.clip_length + 1 : end + 1]

    def __getitem__(self, index: int) -> dict:
        frames = self.clip_frames(index)
        images, labels = zip(*(read_camvid_frame(f) for f in frames), strict=True)
        images, labels = np.stack(images), np.stack(labels)
        info = {"sequence": frames[-1].sequence, "frames": [f.frame for f in frames]}
        return augmented_clip_sample(
            images, labels, augmentation=self.augmentation, keyframe_offset=self.keyframe_offset,
            ignore_index=IGNORE_INDEX, info=info,
        )  # fmt: skip
