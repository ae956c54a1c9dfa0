"""Checkpoints shipped inside the package, found by name.

The files live in ``vseg_core/weights/`` as ``NAME.safetensors`` + ``NAME.json`` (see
:mod:`vseg_core.checkpoint`); each record's metadata says what data trained it and under which
licence the weights may be used (weights trained on CamVid inherit its non-commercial licence).
"""

from __future__ import annotations

from pathlib import Path

from vseg_core.checkpoint import CheckpointRecord, read_checkpoint_record

__all__ = ["WEIGHTS_DIR", "checkpoint_path", "shipped_checkpoint", "shipped_checkpoints", "shipped_record"]

WEIGHTS_DIR = Path(__file__).with_name("weights")


def shipped_checkpoints(directory: Path = WEIGHTS_DIR) -> dict[str, Path]:
    """Name -> .safetensors path of every complete checkpoint (both halves present) in ``directory``."""
    if not directory.is_dir():
        return {}
    return {p.stem: p for p in sorted(directory.glob("*.safetensors")) if p.with_suffix(".json").is_file()}


def shipped_checkpoint(name: str, directory: Path = WEIGHTS_DIR) -> Path:
    """The .safetensors path of the shipped checkpoint ``name``; ValueError lists the names there are."""
    found = shipped_checkpoints(directory)
    if name not in found:
        known = ", ".join(found) or "none"
        raise ValueError(f"no shipped checkpoint {name!r} in {directory}; shipped: {known}")
    return found[name]


def shipped_record(name: str, directory: Path = WEIGHTS_DIR) -> CheckpointRecord:
    """The JSON record (model, config, palette, provenance) of the shipped checkpoint ``name``."""
    return read_checkpoint_record(shipped_checkpoint(name, directory))


def checkpoint_path(spec: str | Path, directory: Path = WEIGHTS_DIR) -> Path:
    """The .safetensors path that ``spec`` names: a shipped checkpoint's name, or a checkpoint path
    (.safetensors or .json). Anything else is a ValueError that lists the shipped names."""
    found = shipped_checkpoints(directory)
    if str(spec) in found:
        return found[str(spec)]
    path = Path(spec)
    if path.suffix not in (".safetensors", ".json"):
        known = ", ".join(found) or "none"
        raise ValueError(
            f"{str(spec)!r} is neither a checkpoint path (.safetensors) nor a shipped checkpoint; shipped: {known}"
        )
    return path.with_suffix(".safetensors")
