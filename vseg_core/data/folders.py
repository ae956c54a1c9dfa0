"""Unlabelled video from disk: a folder of images, or a video file, as frames in order.

Both read lazily (one frame in memory at a time) and give (H, W, 3) uint8 RGB frames, the input of
``VideoSegmenter.step``; they carry no labels, so they serve FIP and latency, not mIoU.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from pathlib import Path, PurePath

import cv2
import numpy as np

from vseg_core.data.layout import DatasetLayoutError

__all__ = ["IMAGE_SUFFIXES", "ImageFolderVideo", "VideoFileFrames", "natural_key"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
_DIGITS = re.compile(r"(\d+)")


def natural_key(name: str) -> tuple:
    """Sort key that orders digit runs by value (frame_2 < frame_10), ignoring case, stem first."""
    # re.split alternates text and digit runs, always text first, so the runs compare str to str
    # and int to int. The stem goes first so that frame.png < frame1.png; the suffix and then the
    # name itself break ties such as frame_01 and frame_1.
    path = PurePath(name)
    runs = tuple(int(p) if i % 2 else p.casefold() for i, p in enumerate(_DIGITS.split(path.stem)))
    return runs, path.suffix.casefold(), name


class ImageFolderVideo:
    """The images of one folder as one video: (H, W, 3) uint8 RGB frames in natural name order.

    ``pattern`` (a glob, not recursive) selects files; only those ending in one of
    :data:`IMAGE_SUFFIXES` (any case) count. The first image is read at construction to fix the
    frame size; every other one when it is asked for. Raises :class:`DatasetLayoutError` naming the
    folder when it is missing or holds no image, and naming the file when an image cannot be read or
    its size differs from the first one's.
    """

    def __init__(self, root: str | Path, *, pattern: str = "*") -> None:
        self.root = Path(root)
        self.pattern = pattern
        kinds = ", ".join(IMAGE_SUFFIXES)
        if not self.root.is_dir():
            raise DatasetLayoutError(f"missing folder {self.root}; expected a folder of images ({kinds})")
        paths = [p for p in self.root.glob(pattern) if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()]
        if not paths:
            raise DatasetLayoutError(f"no images ({kinds}) matching {pattern!r} in {self.root}")
        self.paths: tuple[Path, ...] = tuple(sorted(paths, key=lambda p: natural_key(p.name)))
        first = self._read(self.paths[0])
        self.size: tuple[int, int] = first.shape[:2]  # (height, width) every frame must have

    def _read(self, path: Path) -> np.ndarray:
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise DatasetLayoutError(f"cannot read {path} as an image (a corrupt or unsupported file)")
        return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> np.ndarray:
        path = self.paths[index]  # IndexError and negative indices as for a tuple
        image = self._read(path)
        if image.shape[:2] != self.size:
            (h, w), (h0, w0) = image.shape[:2], self.size
            raise DatasetLayoutError(
                f"{path} is {w}x{h} pixels but the first image {self.paths[0].name} is {w0}x{h0}: "
                "all frames of a video must have one size"
            )
        return image

    def __iter__(self) -> Iterator[np.ndarray]:
        for index in range(len(self.paths)):
            yield self[index]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.root)!r}, pattern={self.pattern!r}, frames={len(self)})"


class VideoFileFrames:
    """Frames of a video file through OpenCV's decoder: (H, W, 3) uint8 RGB, in order.

    Yields every ``stride``-th frame, at most ``max_frames`` of them; each iteration decodes the
    file afresh. ``fps`` is the rate of the yielded frames (the file's ``source_fps`` / stride),
    None where the file does not state one. The file is opened and its first frame decoded at
    construction, so a missing, undecodable or empty file fails here with a
    :class:`DatasetLayoutError` naming it.

    There is no ``len``: containers state a frame count that is sometimes an estimate from the
    duration, so ``frame_count`` and ``operator.length_hint`` give that count, not a promise.
    """

    def __init__(self, path: str | Path, *, max_frames: int | None = None, stride: int = 1) -> None:
        if max_frames is not None and max_frames < 1:
            raise ValueError(f"max_frames must be at least 1 or None (all frames), got {max_frames}")
        if stride < 1:
            raise ValueError(f"stride must be at least 1 (1 = every frame), got {stride}")
        self.path = Path(path)
        self.max_frames = max_frames
        self.stride = stride
        if not self.path.is_file():
            raise DatasetLayoutError(f"missing video file {self.path}")
        capture = self._open()
        try:
            fps = capture.get(cv2.CAP_PROP_FPS)
            count = capture.get(cv2.CAP_PROP_FRAME_COUNT)
            ok, first = capture.read()
        finally:
            capture.release()
        if not ok:
            raise DatasetLayoutError(f"video file {self.path} holds no frames that OpenCV can decode")
        self.source_fps: float | None = float(fps) if math.isfinite(fps) and fps > 0 else None
        self.fps: float | None = self.source_fps / stride if self.source_fps else None
        self.size: tuple[int, int] = first.shape[:2]  # (height, width)
        # The container's count, where it states one; frames yielded after stride and max_frames.
        self.source_frame_count: int | None = int(count) if math.isfinite(count) and count > 0 else None
        self.frame_count: int | None = None
        if self.source_frame_count is not None:
            self.frame_count = math.ceil(self.source_frame_count / stride)
            if max_frames is not None:
                self.frame_count = min(self.frame_count, max_frames)

    def _open(self) -> cv2.VideoCapture:
        capture = cv2.VideoCapture(str(self.path))
        if not capture.isOpened():
            capture.release()
            raise DatasetLayoutError(
                f"OpenCV cannot decode the video file {self.path} (not a video, damaged, or a codec "
                "this OpenCV build lacks)"
            )
        return capture

    def __iter__(self) -> Iterator[np.ndarray]:
        capture = self._open()
        try:
            yielded = 0
            while self.max_frames is None or yielded < self.max_frames:
                # grab() skips a frame without converting it to an image.
                if yielded and not all(capture.grab() for _ in range(self.stride - 1)):
                    return
                ok, frame = capture.read()
                if not ok:
                    return
                yield cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
                yielded += 1
        finally:
            capture.release()

    def __length_hint__(self) -> int:
        return self.frame_count or 0

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({str(self.path)!r}, max_frames={self.max_frames}, stride={self.stride}, "
            f"fps={self.fps}, frame_count={self.frame_count})"
        )
