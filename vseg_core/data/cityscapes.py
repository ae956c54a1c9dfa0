"""Cityscapes video snippets in the official layout: 30-frame sequences whose 20th frame is labelled.

Snippets for evaluation (:func:`cityscapes_snippets`) and training clips that end at the labelled
frame (:class:`CityscapesClips`).

Layout (the official download, unzipped side by side):
  ROOT/leftImg8bit_sequence/{split}/{city}/{city}_{seq:06d}_{frame:06d}_leftImg8bit.png
  ROOT/gtFine/{split}/{city}/{city}_{seq:06d}_{frame:06d}_gtFine_labelIds.png
Ground truth is converted from label ids to the 19 train ids (255 = ignore) with the table of the
Cityscapes scripts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from torch.utils.data import Dataset

from vseg_core.data.clips import ClipAugmentation, KeyframeOffset, augmented_clip_sample, check_keyframe_offset
from vseg_core.data.layout import DatasetLayoutError, require_dir, require_file
from vseg_core.palette import CITYSCAPES

__all__ = [
    "CITYSCAPES_LAYOUT",
    "CityscapesClips",
    "CityscapesSnippet",
    "cityscapes_snippets",
    "label_ids_to_train_ids",
    "read_image",
    "read_labels",
]

CITYSCAPES_LAYOUT = (
    "ROOT/leftImg8bit_sequence/{split}/CITY/CITY_SEQ_FRAME_leftImg8bit.png and "
    "ROOT/gtFine/{split}/CITY/CITY_SEQ_FRAME_gtFine_labelIds.png (the official layout)"
)
LABELLED_INDEX = 19  # the 20th frame of each 30-frame snippet carries the fine annotation
SNIPPET_LENGTH = 30
IGNORE_INDEX = CITYSCAPES.ignore_index

# label id -> train id (Cityscapes scripts, labels.py); every other id is ignored.
_TRAIN_IDS = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11, 25: 12,
              26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}  # fmt: skip
_LUT = np.full(256, IGNORE_INDEX, dtype=np.uint8)
for _label_id, _train_id in _TRAIN_IDS.items():
    _LUT[_label_id] = _train_id
_GT_NAME = re.compile(r"^(?P<city>[a-z_]+)_(?P<seq>\d{6})_(?P<frame>\d{6})_gtFine_labelIds\.png$")


def label_ids_to_train_ids(label_ids: np.ndarray) -> np.ndarray:
    """(H, W) uint8 Cityscapes label ids -> (H, W) uint8 train ids 0..18, 255 elsewhere."""
    return _LUT[label_ids]


@dataclass(frozen=True)
class CityscapesSnippet:
    """Frames of one snippet in order; ``labelled`` is the index of the annotated frame in ``images``,
    ``frame`` its number in the sequence (the file names' last field)."""

    city: str
    sequence: int
    images: tuple[Path, ...]
    label: Path
    labelled: int
    frame: int


def cityscapes_snippets(
    root: str | Path, split: str = "val", *, frames_before: int = LABELLED_INDEX, frames_after: int = 0
) -> list[CityscapesSnippet]:
    """One snippet per annotated frame: ``frames_before`` frames before it, itself, ``frames_after`` after."""
    if not 0 <= frames_before <= LABELLED_INDEX or not 0 <= frames_after < SNIPPET_LENGTH - LABELLED_INDEX:
        raise ValueError(f"frames_before must be in 0..{LABELLED_INDEX}, frames_after in 0..{SNIPPET_LENGTH - 20}")
    root = Path(root)
    layout = CITYSCAPES_LAYOUT.format(split=split)
    images = require_dir(root / "leftImg8bit_sequence" / split, layout)
    gt = require_dir(root / "gtFine" / split, layout)
    snippets = []
    for city_dir in sorted(p for p in gt.iterdir() if p.is_dir()):
        for label in sorted(city_dir.glob("*_gtFine_labelIds.png")):
            match = _GT_NAME.match(label.name)
            if match is None:
                raise DatasetLayoutError(f"unexpected file name {label}; expected layout: {layout}")
            city, seq, frame = match["city"], match["seq"], int(match["frame"])
            paths = tuple(
                require_file(images / city / f"{city}_{seq}_{f:06d}_leftImg8bit.png", layout)
                for f in range(frame - frames_before, frame + frames_after + 1)
            )
            snippets.append(CityscapesSnippet(city, int(seq), paths, label, frames_before, frame))
    if not snippets:
        raise DatasetLayoutError(f"no *_gtFine_labelIds.png under {gt}; expected layout: {layout}")
    return snippets


def read_image(path: Path) -> np.ndarray:
    """(H, W, 3) uint8 RGB."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise DatasetLayoutError(f"cannot read {path} as an image; expected layout: {CITYSCAPES_LAYOUT}")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def read_labels(path: Path) -> np.ndarray:
    """(H, W) uint8 train ids of a *_gtFine_labelIds.png."""
    ids = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if ids is None or ids.ndim != 2 or ids.dtype != np.uint8:
        raise DatasetLayoutError(f"{path} must be an 8-bit single-channel label-id image")
    return label_ids_to_train_ids(ids)


class CityscapesClips(Dataset):
    """Clips of ``clip_length`` consecutive frames that end at the annotated 20th frame of a snippet.

    One clip per annotated frame of ``split``. Item = the dict of
    :func:`vseg_core.data.clips.clip_sample` with labels (1, H, W): train ids of the last frame
    only, 255 = ignore. ``clip_length`` is 1..20 (the annotated frame has 19 frames before it).
    Augmentation parameters come from torch's random generator, so ``torch.manual_seed`` makes them
    reproducible.
    """

    palette = CITYSCAPES
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
        if not 1 <= clip_length <= LABELLED_INDEX + 1:
            raise ValueError(
                f"clip_length must be in 1..{LABELLED_INDEX + 1} (a Cityscapes snippet has {LABELLED_INDEX} "
                f"frames before its annotated one), got {clip_length}"
            )
        check_keyframe_offset(keyframe_offset, clip_length)
        self.root = Path(root)
        self.split = split
        self.clip_length = clip_length
        self.augmentation = augmentation
        self.keyframe_offset = keyframe_offset
        self.snippets = cityscapes_snippets(root, split, frames_before=clip_length - 1)

    def __len__(self) -> int:
        return len(self.snippets)

    def __getitem__(self, index: int) -> dict:
        snippet = self.snippets[index]
        images = np.stack([read_image(p) for p in snippet.images])
        labels = read_labels(snippet.label)[None]
        if labels.shape[1:] != images.shape[1:3]:
            raise DatasetLayoutError(
                f"{snippet.label} is {labels.shape[1:]} but its frames are {images.shape[1:3]} (height, width)"
            )
        info = {
            "sequence": f"{snippet.city}_{snippet.sequence:06d}",
            "frames": list(range(snippet.frame - self.clip_length + 1, snippet.frame + 1)),
        }
        return augmented_clip_sample(
            images, labels, augmentation=self.augmentation, keyframe_offset=self.keyframe_offset,
            ignore_index=IGNORE_INDEX, info=info,
        )  # fmt: skip
