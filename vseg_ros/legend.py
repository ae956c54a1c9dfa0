"""The class legend as a picture (RViz shows images, not vseg/SegmentationClasses): one colour
swatch and name per class, in columns of at most ``ROWS`` classes."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

__all__ = ["ROWS", "ROW_HEIGHT", "render_legend"]

ROW_HEIGHT = 22
ROWS = 40  # per column: 880 px high at most, whatever the label set
_SWATCH_W, _MARGIN = 28, 6
_FONT, _SCALE, _THICKNESS = cv2.FONT_HERSHEY_SIMPLEX, 0.45, 1
_BACKGROUND, _TEXT = (32, 32, 32), (235, 235, 235)


def render_legend(names: Sequence[str], colors: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB legend of ``names[i]`` drawn next to ``colors[i]`` ((N, 3) uint8).

    Class ``i`` sits in column ``i // ROWS``, row ``i % ROWS``; its swatch fills
    ``[top + 3, top + ROW_HEIGHT - 3)`` x ``[left + MARGIN, left + MARGIN + 28)``. Names are drawn with
    OpenCV's ASCII font: other characters become '?'.
    """
    if len(names) == 0 or len(names) != len(colors):
        raise ValueError(f"a legend needs one colour per class name, got {len(names)} names, {len(colors)} colours")
    labels = [f"{i} {n}".encode("ascii", "replace").decode("ascii") for i, n in enumerate(names)]
    text_w = max(cv2.getTextSize(t, _FONT, _SCALE, _THICKNESS)[0][0] for t in labels)
    column_w = _MARGIN + _SWATCH_W + _MARGIN + text_w + _MARGIN
    columns = -(-len(names) // ROWS)
    rows = min(len(names), ROWS)
    legend = np.empty((rows * ROW_HEIGHT, columns * column_w, 3), np.uint8)
    legend[:] = _BACKGROUND
    for i, (label, color) in enumerate(zip(labels, np.asarray(colors, np.uint8), strict=True)):
        top, left = (i % ROWS) * ROW_HEIGHT, (i // ROWS) * column_w
        legend[top + 3 : top + ROW_HEIGHT - 3, left + _MARGIN : left + _MARGIN + _SWATCH_W] = color
        origin = (left + 2 * _MARGIN + _SWATCH_W, top + ROW_HEIGHT - 7)
        cv2.putText(legend, label, origin, _FONT, _SCALE, _TEXT, _THICKNESS, cv2.LINE_AA)
    return legend
