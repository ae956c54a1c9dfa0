"""Checkpoints: weights in safetensors, the model's identity in JSON beside them. Nothing is unpickled.

``NAME.safetensors`` holds the tensors of ``model.state_dict()``; ``NAME.json`` holds the registered
model name, the keyword config it was built with, the classes and colours, and free-form
provenance (dataset, steps, metrics). Loading rebuilds the model with ``create_model`` from the
JSON and then requires the tensors to match it exactly: no partial loads.
"""

from __future__ import annotations

import json
import math
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from vseg_core.json_records import read_json_record
from vseg_core.models.registry import create_model
from vseg_core.palette import ClassPalette, PaletteError

__all__ = ["CheckpointError", "CheckpointRecord", "load_checkpoint", "read_checkpoint_record", "save_checkpoint"]

FORMAT = "vseg-checkpoint"
FORMAT_VERSION = 1
_MAX_HEADER_BYTES = 100 << 20  # safetensors' own limit for the JSON header


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded as asked; the message names the file and the problem."""


@dataclass(frozen=True)
class CheckpointRecord:
    model: str
    config: dict[str, Any]
    palette: ClassPalette | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


def _paths(path: str | Path) -> tuple[Path, Path]:
    path = Path(path)
    stem = path.with_suffix("") if path.suffix in (".safetensors", ".json") else path
    return stem.with_suffix(".safetensors"), stem.with_suffix(".json")


def save_checkpoint(
    model: nn.Module, path: str | Path, *, palette: ClassPalette | None = None, **metadata: Any
) -> Path:
    """Write ``path`` (.safetensors) and its .json; return the .safetensors path.

    ``model`` must come from ``create_model`` (it carries ``model_name`` and ``model_config``).
    ``metadata`` must be JSON-serialisable (training provenance, metrics).
    """
    name, config = getattr(model, "model_name", None), getattr(model, "model_config", None)
    if name is None or config is None:
        raise CheckpointError("only models built by vseg_core.create_model can be saved (they know their name)")
    weights, record = _paths(path)
    if palette is not None and palette.num_classes != getattr(model, "num_classes", palette.num_classes):
        raise CheckpointError(f"palette has {palette.num_classes} classes, the model predicts {model.num_classes}")
    payload = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "model": name,
        "config": config,
        "palette": palette.to_dict() if palette else None,
        "metadata": metadata,
    }
    try:
        text = json.dumps(payload, indent=2, sort_keys=True)
    except TypeError as exc:
        raise CheckpointError(f"metadata and config must be JSON-serialisable: {exc}") from None
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    weights.parent.mkdir(parents=True, exist_ok=True)
    # Write both halves beside their final names, then rename: a run killed mid-save (training
    # saves periodically) leaves the previous checkpoint whole instead of a torn pair.
    tmp_weights, tmp_record = weights.with_name(weights.name + ".tmp"), record.with_name(record.name + ".tmp")
    save_file(tensors, str(tmp_weights), metadata={"format": FORMAT, "model": name})
    tmp_record.write_text(text + "\n", encoding="utf-8")
    os.replace(tmp_weights, weights)
    os.replace(tmp_record, record)
    return weights


def read_checkpoint_record(path: str | Path) -> CheckpointRecord:
    """The JSON half of a checkpoint, validated; cheap (no tensors are read)."""
    _, record = _paths(path)
    if not record.is_file():
        raise CheckpointError(f"no checkpoint record {record} (a checkpoint is NAME.safetensors + NAME.json)")
    data = read_json_record(
        record, what="vseg checkpoint record", fmt=FORMAT, version=FORMAT_VERSION, error=CheckpointError
    )
    if not isinstance(data.get("model"), str) or not isinstance(data.get("config"), dict):
        raise CheckpointError(f"{record} must name a model (string) and its config (object)")
    try:
        palette = ClassPalette.from_dict(data["palette"], source=str(record)) if data.get("palette") else None
    except PaletteError as exc:
        raise CheckpointError(str(exc)) from None
    return CheckpointRecord(data["model"], data["config"], palette, data.get("metadata") or {})


_DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}


def _read_safetensors_header(weights: Path) -> dict[str, Any]:
    """The validated JSON header of a safetensors file, read without touching any tensor data.

    Checks the header length against the file, then every entry's dtype, shape and byte range,
    so that a damaged or hostile file is refused before anything is allocated for it.
    """
    if not weights.is_file():
        raise CheckpointError(f"no checkpoint weights {weights}")
    size = weights.stat().st_size
    with weights.open("rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise CheckpointError(f"{weights} is too short to be a safetensors file ({size} bytes)")
        (header_len,) = struct.unpack("<Q", head)
        if header_len > min(_MAX_HEADER_BYTES, size - 8):
            raise CheckpointError(f"{weights} is not a valid safetensors file (header of {header_len} bytes in {size})")
        raw = f.read(header_len)
    try:
        header = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{weights} is not a valid safetensors file (header is not JSON: {exc})") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{weights} is not a valid safetensors file (header is not a JSON object)")
    data_bytes = size - 8 - header_len
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        ok = isinstance(entry, dict) and entry.get("dtype") in _DTYPE_BYTES
        shape, offsets = (entry.get("shape"), entry.get("data_offsets")) if ok else (None, None)
        ok = ok and isinstance(shape, list) and all(isinstance(d, int) and d >= 0 for d in shape)
        ok = ok and isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) for o in offsets)
        if ok:
            begin, end = offsets
            ok = 0 <= begin <= end <= data_bytes and end - begin == math.prod(shape) * _DTYPE_BYTES[entry["dtype"]]
        if not ok:
            raise CheckpointError(f"{weights} is not a valid safetensors file (bad entry for tensor {name!r})")
    return header


def _describe_mismatch(expected: dict[str, tuple[int, ...]], found: dict[str, tuple[int, ...]]) -> list[str]:
    """'missing: ...', 'unexpected: ...', 'wrong shape: ...' parts (empty when the two agree)."""
    missing = sorted(expected.keys() - found.keys())
    unexpected = sorted(found.keys() - expected.keys())
    wrong = sorted(
        f"{k}: file {found[k]}, model {shape}" for k, shape in expected.items() if k in found and found[k] != shape
    )
    parts = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)):
        if items:
            parts.append(f"{label}: {', '.join(items[:5])}{' ...' if len(items) > 5 else ''} ({len(items)})")
    return parts


def load_checkpoint(
    path: str | Path, *, device: str | torch.device = "cpu", expect_model: str | None = None
) -> nn.Module:
    """Rebuild the model recorded beside ``path`` and load its weights, all or nothing.

    expect_model: refuse a checkpoint of another registered model (names both).
    The returned model carries ``checkpoint_record`` (a :class:`CheckpointRecord`).
    """
    weights, _ = _paths(path)
    record = read_checkpoint_record(path)
    if expect_model is not None and record.model != expect_model:
        raise CheckpointError(f"{weights} holds a {record.model!r} model, not {expect_model!r}")
    header = _read_safetensors_header(weights)
    try:
        model = create_model(record.model, **record.config)
    except ValueError as exc:
        raise CheckpointError(f"{weights}: cannot rebuild {record.model!r} from its record: {exc}") from None
    # Names and shapes are compared from the header first: a foreign file is refused before its
    # tensors are read, and nothing reaches the model unless everything matches.
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    found = {k: tuple(e["shape"]) for k, e in header.items() if k != "__metadata__"}
    parts = _describe_mismatch(expected, found)
    if parts:
        raise CheckpointError(f"{weights} does not match {record.model!r}: " + "; ".join(parts))
    # Same tensors but saved from another model name: a record and weights that were mixed up.
    stored_model = (header.get("__metadata__") or {}).get("model")
    if stored_model is not None and stored_model != record.model:
        raise CheckpointError(f"{weights} holds {stored_model!r} weights but its record names {record.model!r}")
    try:
        tensors = load_file(str(weights), device=str(device))
    except Exception as exc:  # safetensors raises its own error type for damaged files
        raise CheckpointError(f"{weights} could not be read: {type(exc).__name__}: {exc}") from None
    model.load_state_dict(tensors, strict=True)
    model.checkpoint_record = record
    return model.to(device)
