"""OpenCV's image decoding with the codec libraries' complaints caught instead of printed.

libjpeg and libpng report damaged data (``Corrupt JPEG data: bad Huffman code``, ``libpng
warning: ...``) by writing to the process's stderr, then decode on: the frame comes back full of
garbage and a node under a stream of damaged frames floods its log. OpenCV offers no hook for these
messages, so while a frame decodes, file descriptor 2 points to a private file; afterwards the
codec's lines are handed back to the caller (who refuses the frame with them), and anything else
written to stderr in that window, such as another thread's log line, is passed on to the real
stderr unchanged. Decodes take turns (one lock per process), so the window is one decode long.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
import threading
from collections.abc import Callable
from typing import IO

import cv2
import numpy as np

__all__ = ["decode_quietly"]

# The start of every warning or error libjpeg (jerror.h) or libpng writes about the data it reads.
_CODEC_LINE = re.compile(
    r"^(Corrupt JPEG data|Premature end of JPEG file|Invalid SOS parameters|Inconsistent progression"
    r"|Warning: |Application transferred too few scanlines|Bogus |Not a JPEG file|Unsupported marker"
    r"|libpng (warning|error):)"
)


class _StderrCapture:
    """A private file that fd 2 points to while one decode runs; opened at the first decode."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self._file: IO[bytes] | None = None

    def around(self, decode: Callable[[], np.ndarray | None]) -> tuple[np.ndarray | None, bytes]:
        with self.lock:
            if self._file is None:
                self._file = tempfile.TemporaryFile()  # noqa: SIM115 (open for the life of the process)
            sys.stderr.flush()  # Python's own buffered text goes out before the switch
            saved = os.dup(2)
            os.dup2(self._file.fileno(), 2)
            try:
                image = decode()
            finally:
                os.dup2(saved, 2)
                os.close(saved)
            self._file.seek(0)
            written = self._file.read()
            self._file.seek(0)
            self._file.truncate()
        return image, written


_CAPTURE = _StderrCapture()


def decode_quietly(data: np.ndarray, flags: int) -> tuple[np.ndarray | None, list[str]]:
    """``cv2.imdecode(data, flags)`` and the codec's complaints about ``data`` (empty: clean)."""
    image, written = _CAPTURE.around(lambda: cv2.imdecode(data, flags))
    codec, others = [], []
    for line in written.decode(errors="replace").splitlines(keepends=True):
        (codec if _CODEC_LINE.match(line) else others).append(line)
    if others:
        os.write(2, "".join(others).encode())
    return image, [line.strip() for line in codec]
