"""What a model costs per frame: parameters and FLOPs, counted by torch's FLOP counter.

FLOPs are counted with ``torch.utils.flop_counter.FlopCounterMode`` on a copy of the model on the
``meta`` device, so counting at 1024x2048 allocates nothing and takes milliseconds. Keyframe models
are counted twice: a keyframe step from a fresh state, and a non-keyframe step after it (so the
state it reads is the one a keyframe left). FLOPs count a multiply-add as 2 (torch's convention;
the counter counts convolutions and matrix products, not element-wise ops); GFLOPs = 1e9 FLOPs.

Besides the totals, the cost is broken down into parts: the model's top-level submodules (the
entries of a ModuleDict or ModuleList one by one) and, listed on their own, every ConvLSTM cell
wherever it sits. Each FLOP is charged to the innermost
part whose ``forward`` is running, each parameter to the innermost part that owns it, so the parts
add up to the totals; "(other)" holds what runs outside every part's ``forward`` and the
parameters registered on the model itself.
"""

from __future__ import annotations

import copy
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from vseg_core.models.registry import create_model
from vseg_core.models.streaming import StepOutput, StreamingSegmenter
from vseg_core.nn.convlstm import ConvLSTMCell

__all__ = ["OTHER", "ModelCost", "PartCost", "count_cost", "model_cost"]

#: The part that holds FLOPs outside every listed submodule's forward and the model's own parameters.
OTHER = "(other)"


@dataclass(frozen=True)
class PartCost:
    """One part of a model: a top-level submodule (less the cells inside it) or a ConvLSTM cell."""

    name: str
    params: int
    keyframe_gflops: float
    nonkey_gflops: float
    is_cell: bool = False


@dataclass(frozen=True)
class ModelCost:
    """Per-frame cost of one model at one input size.

    keyframe_gflops / nonkey_gflops: a step with / without the expensive branch (equal for models
    without keyframes). cell_*: the ConvLSTM cells alone (0 for other models). parts: the
    breakdown (see the module docstring); its params and GFLOPs add up to the totals.
    """

    name: str
    height: int
    width: int
    num_classes: int
    params: int
    keyframe_gflops: float
    nonkey_gflops: float
    uses_keyframes: bool
    cell_params: int = 0
    cell_keyframe_gflops: float = 0.0
    cell_nonkey_gflops: float = 0.0
    parts: tuple[PartCost, ...] = ()

    def amortised_gflops(self, interval: int) -> float:
        """Mean per frame with one keyframe every ``interval`` frames."""
        if interval < 1:
            raise ValueError(f"interval must be >= 1, got {interval}")
        if not self.uses_keyframes:
            return self.keyframe_gflops
        return (self.keyframe_gflops + (interval - 1) * self.nonkey_gflops) / interval


def _children(module: nn.Module, prefix: str = "") -> Iterator[tuple[str, nn.Module]]:
    """Named children, with containers that are never called (ModuleDict, ModuleList) opened up,
    because forward hooks on them would never fire."""
    for name, child in module.named_children():
        if isinstance(child, (nn.ModuleDict, nn.ModuleList)):
            yield from _children(child, f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}", child


def _parts(model: nn.Module) -> dict[str, tuple[nn.Module, bool]]:
    """name -> (module, is_cell): the top-level submodules and every ConvLSTM cell."""
    parts = {name: (m, isinstance(m, ConvLSTMCell)) for name, m in _children(model)}
    parts.update({name: (m, True) for name, m in model.named_modules() if isinstance(m, ConvLSTMCell)})
    return parts


def _part_params(model: nn.Module, parts: dict[str, tuple[nn.Module, bool]]) -> dict[str, int]:
    """Parameters per part, each charged to the innermost part that contains it."""
    counts: dict[str, int] = dict.fromkeys([*parts, OTHER], 0)
    for pname, p in model.named_parameters():
        owner = max((n for n in parts if pname.startswith(n + ".")), key=len, default=OTHER)
        counts[owner] += p.numel()
    return counts


@contextmanager
def _charge_flops(counter: FlopCounterMode, parts: dict[str, tuple[nn.Module, bool]]) -> Iterator[dict[str, int]]:
    """Charge the counter's running total to the innermost part whose forward is running."""
    flops: dict[str, int] = defaultdict(int)
    running: list[str] = []
    last = [0]

    def settle() -> None:
        now = counter.get_total_flops()
        flops[running[-1] if running else OTHER] += now - last[0]
        last[0] = now

    def enter(name: str):
        def hook(*_: Any) -> None:
            settle()
            running.append(name)

        return hook

    def leave(*_: Any) -> None:
        settle()
        running.pop()

    hooks = []
    for name, (module, _) in parts.items():
        hooks.append(module.register_forward_pre_hook(enter(name)))
        hooks.append(module.register_forward_hook(leave))
    try:
        yield flops
        settle()
    finally:
        for hook in hooks:
            hook.remove()


def _count(
    model: StreamingSegmenter, parts: dict[str, tuple[nn.Module, bool]], frame: torch.Tensor, state: Any, key: bool
) -> tuple[int, dict[str, int], StepOutput]:
    """(total FLOPs, FLOPs per part, step output) of one step."""
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad(), _charge_flops(counter, parts) as flops:
        out = model.step(frame, state, is_keyframe=key)
    return counter.get_total_flops(), dict(flops), out


def count_cost(model: StreamingSegmenter, *, height: int, width: int, name: str | None = None) -> ModelCost:
    """Count ``model``'s cost on one (1, 3, height, width) frame (the model itself is not run)."""
    if height < 1 or width < 1:
        raise ValueError(f"height and width must be positive, got {height}x{width}")
    meta = copy.deepcopy(model).to("meta").eval()
    parts = _parts(meta)
    params = _part_params(meta, parts)
    frame = torch.zeros(1, 3, height, width, device="meta")
    key_total, key_parts, out = _count(meta, parts, frame, meta.init_state(frame), True)
    nonkey_total, nonkey_parts = key_total, key_parts
    if model.uses_keyframes:
        nonkey_total, nonkey_parts, _ = _count(meta, parts, frame, out.state, False)
    rows = tuple(
        PartCost(
            name=part,
            params=params[part],
            keyframe_gflops=key_parts.get(part, 0) / 1e9,
            nonkey_gflops=nonkey_parts.get(part, 0) / 1e9,
            is_cell=parts[part][1] if part in parts else False,
        )
        for part in params
        if part in parts or params[part] or key_parts.get(part) or nonkey_parts.get(part)
    )
    cells = [r for r in rows if r.is_cell]
    return ModelCost(
        name=name or getattr(model, "model_name", type(model).__name__),
        height=height,
        width=width,
        num_classes=model.num_classes,
        params=sum(p.numel() for p in model.parameters()),
        keyframe_gflops=key_total / 1e9,
        nonkey_gflops=nonkey_total / 1e9,
        uses_keyframes=model.uses_keyframes,
        cell_params=sum(c.params for c in cells),
        cell_keyframe_gflops=sum(c.keyframe_gflops for c in cells),
        cell_nonkey_gflops=sum(c.nonkey_gflops for c in cells),
        parts=rows,
    )


def model_cost(name: str, *, height: int = 1024, width: int = 2048, **config: Any) -> ModelCost:
    """Build the registered model ``name`` with ``config`` and count it."""
    return count_cost(create_model(name, **config), height=height, width=width, name=name)
