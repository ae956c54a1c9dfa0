"""The model registry: one name per network family member, builders that take keyword config.

``register_model`` refuses duplicate names; ``create_model`` raises ``ValueError`` on unknown
names and lists the valid ones. Every model that ``create_model`` returns remembers the name and
the keyword arguments it was built from (``model.model_name``, ``model.model_config``), which is
what checkpoints store so that loading can rebuild the same network. The built-in models
register themselves when ``vseg_core.models`` is imported, which importing this module implies.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

__all__ = ["ModelEntry", "create_model", "get_model_entry", "list_models", "register_model"]


@dataclass(frozen=True)
class ModelEntry:
    """A registered builder. ``family`` groups models for tables ("convlstm", "accel", ...)."""

    name: str
    builder: Callable[..., nn.Module]
    family: str
    description: str


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(
    name: str, *, family: str, description: str = ""
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator that registers ``builder(**config) -> nn.Module`` under ``name``."""
    if not name or name != name.strip() or name.lower() != name:
        raise ValueError(f"model names are lower case without surrounding spaces, got {name!r}")

    def decorator(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is already registered (by {_REGISTRY[name].builder.__module__})")
        summary = description or next(iter((builder.__doc__ or "").strip().splitlines()), "")
        _REGISTRY[name] = ModelEntry(name=name, builder=builder, family=family, description=summary)
        return builder

    return decorator


def list_models(family: str | None = None) -> list[str]:
    """Sorted names of the registered models (optionally only one family)."""
    return sorted(n for n, e in _REGISTRY.items() if family is None or e.family == family)


def get_model_entry(name: str) -> ModelEntry:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; registered models: {', '.join(sorted(_REGISTRY))}") from None


def create_model(name: str, **config: Any) -> nn.Module:
    """Build the registered model ``name`` with keyword ``config``.

    Raises ``ValueError`` for unknown names and for settings the builder rejects.
    """
    entry = get_model_entry(name)
    try:
        model = entry.builder(**config)
    except TypeError as exc:
        # An unknown keyword reaches the builder as a TypeError; say which model refused it.
        raise ValueError(f"model {name!r} does not accept these settings {sorted(config)}: {exc}") from exc
    model.model_name = name
    model.model_config = dict(config)
    return model
