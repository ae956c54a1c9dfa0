"""Training a model part by part (``vseg train --phase PARTS:STEPS``): the parts a model names, frozen or not.

A model that mixes in :class:`TrainableParts` names its parts in ``PARTS`` and maps each to its
modules in ``_part_modules``. Accel trains its score fusion alone on frozen branches (the released
code's phase 1); LSTM-ICNet can train its ConvLSTM cells and classifier on a frozen, trained ICNet
before everything is fine-tuned.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar

from torch import nn

__all__ = ["TrainableParts"]


class TrainableParts(nn.Module):
    """Mixin: ``set_trainable(parts)`` trains ``parts`` and freezes the rest.

    Frozen parts stop requiring gradients and keep their batch-norm statistics: they stay in eval
    mode through ``train()``. ``set_trainable(PARTS)`` unfreezes everything the model has.
    """

    #: The names ``set_trainable`` takes, in the order the model documents them.
    PARTS: ClassVar[tuple[str, ...]] = ()

    def _part_modules(self) -> dict[str, list[nn.Module]]:
        """Each part's modules; a part this instance lacks maps to an empty list."""
        raise NotImplementedError

    def _present_parts(self) -> set[str]:
        return {name for name, modules in self._part_modules().items() if modules}

    def _check_trainable(self, wanted: set[str]) -> None:
        """Refuse a combination of present parts this model cannot train (none by default)."""

    def set_trainable(self, parts: Iterable[str]) -> None:
        """Train only ``parts`` (names from ``PARTS``); freeze the rest."""
        wanted = set(parts)
        if unknown := wanted - set(self.PARTS):
            raise ValueError(f"unknown parts {sorted(unknown)}; parts are {', '.join(self.PARTS)}")
        present = self._present_parts()
        wanted &= present
        self._check_trainable(wanted)
        if not wanted:
            raise ValueError(f"nothing left to train; this model has the parts {', '.join(sorted(present))}")
        for name, modules in self._part_modules().items():
            for module in modules:
                module.requires_grad_(name in wanted)
        self._frozen_parts = frozenset(present - wanted)
        self.train(self.training)

    def train(self, mode: bool = True):
        super().train(mode)
        for name in getattr(self, "_frozen_parts", ()):
            for module in self._part_modules()[name]:
                module.eval()
        return self
