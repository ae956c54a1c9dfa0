"""What `vseg demo` shows: the side-by-side video, the contact sheet and the results table.

Pure numpy and OpenCV, no ROS: the demo's ROS half collects each model's label images, this module
turns them into pictures and text. Images are RGB uint8 throughout; only the video writer converts
to OpenCV's BGR at the last moment.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

__all__ = [
    "SHEET_COLUMNS",
    "SHEET_HEADER_HEIGHT",
    "SHEET_TILE_MAX_WIDTH",
    "ModelTrack",
    "OverlayVideoWriter",
    "VideoWriteError",
    "colour_labels",
    "contact_sheet",
    "results_table",
    "sheet_frame_indices",
    "video_frame",
]

SHEET_COLUMNS = 6
SHEET_TILE_MAX_WIDTH = 320  # wider frames are scaled down on the contact sheet (the video keeps full size)
SHEET_HEADER_HEIGHT = 24
_FONT = cv2.FONT_HERSHEY_SIMPLEX
_MISSING_GREY = 48  # panel of a frame a model returned no labels for
_BACKGROUND = 24


class VideoWriteError(OSError):
    """The overlay video could not be written or came out incomplete; the message says which file."""


@dataclass(frozen=True)
class ModelTrack:
    """One model's results over the stream.

    name: shown on the pictures; colors: (N, 3) uint8 RGB palette of its classes;
    labels[i]: (H, W) class ids for frame i, None where no result came back;
    notes[i]: a short per-frame caption for the video (timing, keyframe), "" for none.
    """

    name: str
    colors: np.ndarray
    labels: Sequence[np.ndarray | None]
    notes: Sequence[str] = ()


def colour_labels(labels: np.ndarray, colors: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB of (H, W) class ids; ids without a colour (ignore, 255) come out black."""
    table = np.zeros((max(256, len(colors)), 3), dtype=np.uint8)
    table[: len(colors)] = colors
    return np.take(table, labels, axis=0)


def _font_scale(panel_height: int) -> float:
    return max(0.35, min(1.0, panel_height / 360))


def _caption(image: np.ndarray, text: str, origin: tuple[int, int], scale: float) -> None:
    """White text on a darkened box, readable on any colour, drawn in place; origin: its bottom left."""
    (width, height), baseline = cv2.getTextSize(text, _FONT, scale, 1)
    x, y = origin
    y0, y1 = max(0, y - height - 3), min(image.shape[0], y + baseline)
    x0, x1 = max(0, x - 3), min(image.shape[1], x + width + 3)
    image[y0:y1, x0:x1] //= 3
    cv2.putText(image, text, origin, _FONT, scale, (255, 255, 255), 1, cv2.LINE_AA)


def _labelled(panel: np.ndarray, text: str) -> np.ndarray:
    panel = np.ascontiguousarray(panel)
    if text:
        scale = _font_scale(panel.shape[0])
        height = cv2.getTextSize(text, _FONT, scale, 1)[0][1]
        _caption(panel, text, (4, 5 + height), scale)
    return panel


def _missing(shape: tuple[int, int], text: str) -> np.ndarray:
    return _labelled(np.full((*shape, 3), _MISSING_GREY, dtype=np.uint8), text)


def _as_rgb(frame: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(frame, cv2.COLOR_GRAY2RGB) if frame.ndim == 2 else frame


def video_frame(
    index: int,
    frame: np.ndarray,
    ground_truth: np.ndarray | None,
    gt_colors: np.ndarray | None,
    tracks: Sequence[ModelTrack],
    *,
    alpha: float = 0.5,
) -> np.ndarray:
    """One picture of the side-by-side video: a row for the input and one per model.

    Row 0: the input frame | its ground truth in colour (a grey panel where there is none).
    Row k: model k's labels blended over the input | its labels in colour, captioned with its name
    and the frame's note; a grey "no result" panel where the model returned nothing for the frame.
    """
    frame = _as_rgb(frame)
    size = frame.shape[:2]
    total = max(len(t.labels) for t in tracks) if tracks else 0
    rows = [
        [
            _labelled(frame.copy(), f"input {index + 1}/{total}" if total else "input"),
            _labelled(colour_labels(ground_truth, gt_colors), "ground truth")
            if ground_truth is not None and gt_colors is not None
            else _missing(size, "no ground truth"),
        ]
    ]
    for track in tracks:
        labels = track.labels[index]
        note = track.notes[index] if index < len(track.notes) else ""
        if labels is None:
            rows.append([_missing(size, f"{track.name}: no result"), _missing(size, "")])
            continue
        colours = colour_labels(labels, track.colors)
        blend = cv2.addWeighted(frame, 1.0 - alpha, colours, alpha, 0.0)
        rows.append([_labelled(blend, track.name), _labelled(colours, note)])
    return np.concatenate([np.concatenate(r, axis=1) for r in rows], axis=0)


class OverlayVideoWriter:
    """Writes RGB frames as an mp4 (OpenCV's 'mp4v'); where that codec cannot be opened, as Motion
    JPEG in an .avi instead, and says so in ``fallback_note``.

    ``path`` is the file actually written. Frames must all have the size given at construction;
    odd sizes are padded by one black row/column because many decoders need even sizes.
    """

    def __init__(self, path: str | Path, fps: float, size: tuple[int, int]) -> None:
        height, width = size
        self._size = (height + height % 2, width + width % 2)
        self._input_size = (height, width)
        self.fallback_note = ""
        self.frames_written = 0
        fps = fps if math.isfinite(fps) and fps > 0 else 15.0
        path = Path(path).with_suffix(".mp4")
        frame_size = (self._size[1], self._size[0])
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, frame_size)
        if not writer.isOpened():
            writer.release()
            path.unlink(missing_ok=True)
            fallback = path.with_suffix(".avi")
            writer = cv2.VideoWriter(str(fallback), cv2.VideoWriter_fourcc(*"MJPG"), fps, frame_size)
            if not writer.isOpened():
                writer.release()
                raise VideoWriteError(
                    f"OpenCV can open neither an mp4v writer for {path} nor an MJPG one for {fallback}"
                )
            self.fallback_note = f"this OpenCV cannot write mp4 ('mp4v'): wrote Motion JPEG to {fallback.name} instead"
            path = fallback
        self.path = path
        self._writer: cv2.VideoWriter | None = writer

    def write(self, rgb: np.ndarray) -> None:
        if self._writer is None:
            raise VideoWriteError(f"{self.path} is closed")
        if rgb.shape[:2] != self._input_size:
            raise ValueError(f"video frames are {self._input_size}, got {rgb.shape[:2]}")
        pad_h, pad_w = self._size[0] - rgb.shape[0], self._size[1] - rgb.shape[1]
        if pad_h or pad_w:
            rgb = cv2.copyMakeBorder(rgb, 0, pad_h, 0, pad_w, cv2.BORDER_CONSTANT, value=(0, 0, 0))
        self._writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        self.frames_written += 1

    def close(self) -> None:
        """Finish the file and read it back: OpenCV's writer reports no errors (a full disk leaves a
        short or empty file without a word), so the frame count of the result is the check."""
        if self._writer is None:
            return
        self._writer.release()
        self._writer = None
        readable = _count_frames(self.path)
        if readable != self.frames_written:
            raise VideoWriteError(
                f"the video {self.path} came out incomplete: {readable} of {self.frames_written} frames can be "
                "read back (is the disk full?)"
            )

    def __enter__(self) -> OverlayVideoWriter:
        return self

    def __exit__(self, exc_type, *_: object) -> None:
        if exc_type is None:
            self.close()
        elif self._writer is not None:
            self._writer.release()
            self._writer = None


def _count_frames(path: Path) -> int:
    if not path.is_file() or path.stat().st_size == 0:
        return 0
    capture = cv2.VideoCapture(str(path))
    try:
        count = 0
        while capture.grab():
            count += 1
        return count
    finally:
        capture.release()


def sheet_frame_indices(num_frames: int, columns: int = SHEET_COLUMNS) -> list[int]:
    """The frames a contact sheet shows: ``columns`` of them spread evenly, first and last included."""
    if num_frames < 1:
        return []
    count = min(columns, num_frames)
    return sorted({round(i * (num_frames - 1) / max(count - 1, 1)) for i in range(count)})


def _tile(image: np.ndarray, width: int, height: int, *, nearest: bool) -> np.ndarray:
    if image.shape[1] == width and image.shape[0] == height:
        return image
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_NEAREST if nearest else cv2.INTER_AREA)


def contact_sheet(
    frames: Sequence[np.ndarray],
    ground_truth: Sequence[np.ndarray | None] | None,
    gt_colors: np.ndarray | None,
    tracks: Sequence[ModelTrack],
    *,
    columns: int = SHEET_COLUMNS,
) -> np.ndarray:
    """A PNG-ready RGB grid: rows input, ground truth (when any frame has it), then each model's labels
    in colour; columns a few frames across the stream (:func:`sheet_frame_indices`), headed by their
    numbers; the rows named on the left. Tiles keep the frame size up to ``SHEET_TILE_MAX_WIDTH``."""
    indices = sheet_frame_indices(len(frames), columns)
    if not indices:
        raise ValueError("a contact sheet needs at least one frame")
    h, w = frames[0].shape[:2]
    tile_w = min(w, SHEET_TILE_MAX_WIDTH)
    tile_h = max(1, round(h * tile_w / w))
    size = (tile_h, tile_w)
    rows: list[tuple[str, list[np.ndarray]]] = [
        ("input", [_tile(_as_rgb(frames[i]), tile_w, tile_h, nearest=False) for i in indices])
    ]
    if ground_truth is not None and gt_colors is not None and any(g is not None for g in ground_truth):
        tiles = [
            _tile(colour_labels(ground_truth[i], gt_colors), tile_w, tile_h, nearest=True)
            if ground_truth[i] is not None
            else _missing(size, "none")
            for i in indices
        ]
        rows.append(("ground truth", tiles))
    for track in tracks:
        tiles = [
            _tile(colour_labels(track.labels[i], track.colors), tile_w, tile_h, nearest=True)
            if track.labels[i] is not None
            else _missing(size, "no result")
            for i in indices
        ]
        rows.append((track.name, tiles))

    scale = _font_scale(max(tile_h, 120))
    label_w = 12 + max(cv2.getTextSize(name, _FONT, scale, 1)[0][0] for name, _ in rows)
    sheet = np.full(
        (SHEET_HEADER_HEIGHT + len(rows) * tile_h, label_w + len(indices) * tile_w, 3), _BACKGROUND, np.uint8
    )
    for c, index in enumerate(indices):
        _caption(sheet, f"frame {index + 1}", (label_w + c * tile_w + 4, SHEET_HEADER_HEIGHT - 7), scale)
    for r, (name, tiles) in enumerate(rows):
        top = SHEET_HEADER_HEIGHT + r * tile_h
        text_h = cv2.getTextSize(name, _FONT, scale, 1)[0][1]
        _caption(sheet, name, (4, top + (tile_h + text_h) // 2), scale)
        for c, tile in enumerate(tiles):
            sheet[top : top + tile_h, label_w + c * tile_w : label_w + (c + 1) * tile_w] = tile
    return sheet


def _number(value: float | None, fmt: str) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, fmt)


def results_table(rows: Sequence[dict]) -> str:
    """The demo's results, one line per model with the stream it ran on (keys as in results.json's
    "models" entries)."""
    name_w = max([len("model"), *(len(r["name"]) for r in rows)])
    stream_w = max([len("stream"), *(len(r["stream"]) for r in rows)])
    head = (
        f"{'model':<{name_w}} {'stream':<{stream_w}} {'mIoU':>6} {'FP':>7} {'FIP':>7} {'ms/frame':>8} "
        f"{'keyframes':>9} {'sent':>5} {'received':>8} {'processed':>9} {'dropped':>7} {'no result':>9}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r['name']:<{name_w}} {r['stream']:<{stream_w}} {_number(r['miou'], '.3f'):>6} "
            f"{_number(r['fp'], '.4f'):>7} {_number(r['fip'], '.4f'):>7} {_number(r['ms_per_frame'], '.1f'):>8} "
            f"{_number(r['keyframe_share'], '.0%'):>9} {r['frames_sent']:>5} {r['frames_received']:>8} "
            f"{r['frames_processed']:>9} {r['frames_dropped']:>7} {r['frames_without_result']:>9}"
        )
    return "\n".join(lines)
