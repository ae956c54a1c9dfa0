"""The JSON half of vseg's files (checkpoint records, export sidecars): read with bounds.

The size is checked before the file is read, the content must be a JSON object of the expected
format and version, and every failure is one line of the caller's error type naming the file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["MAX_RECORD_BYTES", "read_json_record"]

MAX_RECORD_BYTES = 1 << 20  # both kinds are a few kB; a larger file is not one of them


def read_json_record(
    path: Path, *, what: str, fmt: str, version: int, error: type[ValueError], max_bytes: int = MAX_RECORD_BYTES
) -> dict[str, Any]:
    """The object in ``path`` whose ``"format"`` is ``fmt`` and ``"version"`` is ``version``.

    what: the kind of file in messages ("vseg checkpoint record"). Raises ``error`` for a file
    over ``max_bytes``, invalid JSON or UTF-8, another format or version; OSError as open raises it.
    """
    if path.stat().st_size > max_bytes:
        raise error(f"{path} is larger than {max_bytes} bytes; not a {what}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise error(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict) or data.get("format") != fmt:
        raise error(f'{path} is not a {what} (no "format": "{fmt}")')
    if data.get("version") != version:
        raise error(f"{path} has format version {data.get('version')!r}; this vseg reads {version}")
    return data
