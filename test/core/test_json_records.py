"""The bounded JSON reader behind checkpoint records and export sidecars."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vseg_core.checkpoint import CheckpointError
from vseg_core.json_records import MAX_RECORD_BYTES, read_json_record


class RecordError(ValueError):
    pass


def _read(path: Path) -> dict:
    return read_json_record(path, what="test record", fmt="vseg-test", version=2, error=RecordError)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"{not json", r"x\.json is not valid JSON: Expecting property name"),
        (b'{"format": "vseg-test", "name": "\xff"}', r"x\.json is not valid JSON: 'utf-8' codec"),
        (b"[1, 2]", r'x\.json is not a test record \(no "format": "vseg-test"\)'),
        (b'{"format": "vseg-other", "version": 2}', r'not a test record \(no "format": "vseg-test"\)'),
        (b'{"format": "vseg-test", "version": 3}', r"x\.json has format version 3; this vseg reads 2"),
        (b'{"format": "vseg-test"}', r"has format version None; this vseg reads 2"),
    ],
)
def test_each_way_a_record_is_not_one_is_a_one_line_error_of_the_callers_type(tmp_path, content, message):
    path = tmp_path / "x.json"
    path.write_bytes(content)
    with pytest.raises(RecordError, match=message) as info:
        _read(path)
    assert "\n" not in str(info.value)


def test_a_record_is_returned_as_written(tmp_path):
    path = tmp_path / "x.json"
    record = {"format": "vseg-test", "version": 2, "classes": ["road", "sky"], "size": [360, 480]}
    path.write_text(json.dumps(record))
    assert _read(path) == record


def test_an_oversized_file_is_refused_from_its_size_without_being_read(tmp_path, monkeypatch):
    path = tmp_path / "x.json"
    with path.open("wb") as f:  # sparse: one byte past the limit
        f.truncate(MAX_RECORD_BYTES + 1)

    def never(*args, **kwargs):
        raise AssertionError("an oversized record was read")

    monkeypatch.setattr(Path, "read_text", never)
    with pytest.raises(RecordError, match=rf"x\.json is larger than {MAX_RECORD_BYTES} bytes; not a test record"):
        _read(path)
    # The limit is the caller's to set, and the checkpoint reader raises its own type.
    path.write_bytes(b" " * 100)
    with pytest.raises(CheckpointError, match="larger than 10 bytes"):
        read_json_record(path, what="vseg checkpoint record", fmt="f", version=1, error=CheckpointError, max_bytes=10)
