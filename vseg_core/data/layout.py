"""The one error type for dataset folders that do not look as expected."""

from __future__ import annotations

from pathlib import Path

__all__ = ["DatasetLayoutError", "require_dir", "require_file"]


class DatasetLayoutError(ValueError):
    """A dataset root that does not have the expected layout; the message names the layout and
    the first path that is missing or wrong."""


def require_dir(path: Path, layout: str) -> Path:
    if not path.is_dir():
        raise DatasetLayoutError(f"missing folder {path}; expected layout: {layout}")
    return path


def require_file(path: Path, layout: str) -> Path:
    if not path.is_file():
        raise DatasetLayoutError(f"missing file {path}; expected layout: {layout}")
    return path
