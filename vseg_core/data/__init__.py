"""Datasets by name, with their classes and palettes.

``create_dataset(name, root=..., split=..., **options)`` builds a training/evaluation dataset of
clips; every dataset's items are the dicts of :func:`vseg_core.data.clips.clip_sample`.

============  ===================================================  ==========================
name          what                                                 classes (palette)
============  ===================================================  ==========================
synthetic     procedural street video, exact labels and flow       7, :data:`SYNTHETIC`
camvid        CamVid, SegNet layout (11 classes + void = 11)       11, ``palette.CAMVID``
cityscapes    Cityscapes sequences, clips ending at the annotated  19, ``palette.CITYSCAPES``
              20th frame of each snippet (train ids, 255 ignored)
============  ===================================================  ==========================

Unlabelled video, for flicker without ground truth (FIP) and latency, is read by
:class:`ImageFolderVideo` (a folder of images) and :class:`VideoFileFrames` (a video file); having
no labels and no classes, they are frame sources, not datasets of this table.

:class:`EgoMotionClips` turns a dataset of single labelled frames into video-like clips by a
synthetic camera motion (for CamVid, whose labelled training frames are 1 s apart).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from vseg_core.data.camvid import CAMVID_LAYOUT, CamVidClips, CamVidFrame, camvid_sequences
from vseg_core.data.cityscapes import CITYSCAPES_LAYOUT, CityscapesClips, CityscapesSnippet, cityscapes_snippets
from vseg_core.data.clips import AugmentParams, ClipAugmentation, KeyframeOffset, apply_augmentation
from vseg_core.data.ego_motion import EgoMotion, EgoMotionClips
from vseg_core.data.folders import ImageFolderVideo, VideoFileFrames
from vseg_core.data.layout import DatasetLayoutError
from vseg_core.data.synthetic import (
    SYNTHETIC,
    SYNTHETIC_TO_CAMVID,
    SyntheticClip,
    SyntheticScene,
    SyntheticVideoConfig,
    SyntheticVideoDataset,
    generate_video,
)
from vseg_core.palette import CAMVID, CITYSCAPES, ClassPalette

__all__ = [
    "CAMVID",
    "CAMVID_LAYOUT",
    "CITYSCAPES",
    "CITYSCAPES_LAYOUT",
    "SYNTHETIC",
    "SYNTHETIC_TO_CAMVID",
    "AugmentParams",
    "CamVidClips",
    "CamVidFrame",
    "CityscapesClips",
    "CityscapesSnippet",
    "ClipAugmentation",
    "DatasetEntry",
    "DatasetLayoutError",
    "EgoMotion",
    "EgoMotionClips",
    "ImageFolderVideo",
    "KeyframeOffset",
    "SyntheticClip",
    "SyntheticScene",
    "SyntheticVideoConfig",
    "SyntheticVideoDataset",
    "VideoFileFrames",
    "apply_augmentation",
    "camvid_sequences",
    "cityscapes_snippets",
    "create_dataset",
    "dataset_palette",
    "generate_video",
    "list_datasets",
]


@dataclass(frozen=True)
class DatasetEntry:
    """builder(root, split, **options) -> Dataset; ``needs_root``: False for generated data."""

    name: str
    builder: Callable[..., Dataset]
    palette: ClassPalette
    needs_root: bool
    description: str


def _synthetic(root: Path | None, split: str, *, seed: int = 0, **options: Any) -> Dataset:
    if split not in ("train", "val", "test"):
        raise ValueError(f"synthetic splits are train, val and test, got {split!r}")
    # Splits are disjoint seed streams: a held-out clip never shares a scene with training.
    offset = {"train": 0, "val": 1_000_003, "test": 2_000_003}[split]
    return SyntheticVideoDataset(seed=seed + offset, **options)


def _camvid(root: Path | None, split: str, **options: Any) -> Dataset:
    return CamVidClips(root, split=split, **options)


def _cityscapes(root: Path | None, split: str, **options: Any) -> Dataset:
    return CityscapesClips(root, split=split, **options)


_DATASETS: dict[str, DatasetEntry] = {
    entry.name: entry
    for entry in (
        DatasetEntry("synthetic", _synthetic, SYNTHETIC, False, "procedural street video with exact labels and flow"),
        DatasetEntry("camvid", _camvid, CAMVID, True, "CamVid, 11-class SegNet layout (train/, trainannot/, ...)"),
        DatasetEntry(
            "cityscapes",
            _cityscapes,
            CITYSCAPES,
            True,
            "Cityscapes sequences, 19 train ids (leftImg8bit_sequence/, gtFine/); clips end at the annotated frame",
        ),
    )
}


def list_datasets() -> list[str]:
    return sorted(_DATASETS)


def _entry(name: str) -> DatasetEntry:
    try:
        return _DATASETS[name]
    except KeyError:
        raise ValueError(f"unknown dataset {name!r}; known datasets: {', '.join(list_datasets())}") from None


def dataset_palette(name: str) -> ClassPalette:
    """Class names, colours and ignore value of the dataset ``name``."""
    return _entry(name).palette


def create_dataset(name: str, *, root: str | Path | None = None, split: str = "train", **options: Any) -> Dataset:
    """The dataset ``name`` of ``split``; ``options`` go to its class (clip_length, augmentation, ...)."""
    entry = _entry(name)
    if entry.needs_root and root is None:
        raise ValueError(f"dataset {name!r} needs root= (the folder that holds it)")
    try:
        return entry.builder(Path(root) if root is not None else None, split, **options)
    except TypeError as exc:
        raise ValueError(f"dataset {name!r} does not accept these options {sorted(options)}: {exc}") from exc
