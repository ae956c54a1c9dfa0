"""Cityscapes video snippets in the official layout: 30-frame sequences whose 20th frame is labelled.

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

from vseg_core.data.layout import DatasetLayoutError, require_dir, require_file
from vseg_core.palette import CITYSCAPES

__all__ = [
    "CITYSCAPES_LAYOUT",
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
    """Frames of one snippet in order; ``labelled`` is the index of the annotated frame in ``images``."""

    city: str
    sequence: int
    images: tuple[Path, ...]
    label: Path
    labelled: int


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
            snippets.append(CityscapesSnippet(city, int(seq), paths, label, frames_before))
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
