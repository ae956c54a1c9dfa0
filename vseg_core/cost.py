"""What a model costs per frame: parameters and FLOPs, counted by torch's FLOP counter.

FLOPs are counted with ``torch.utils.flop_counter.FlopCounterMode`` on a copy of the model on the
``meta`` device, so counting at 1024x2048 allocates nothing and takes milliseconds. Keyframe models
are counted twice: a keyframe step from a fresh state, and a non-keyframe step after it. FLOPs count
a multiply-add as 2 (torch's convention); GFLOPs = 1e9 FLOPs.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from vseg_core.models.registry import create_model
from vseg_core.models.streaming import StreamingSegmenter
from vseg_core.nn.convlstm import ConvLSTMCell

__all__ = ["ModelCost", "count_cost", "model_cost"]


@dataclass(frozen=True)
class ModelCost:
    """Per-frame cost of one model at one input size.

    keyframe_gflops / nonkey_gflops: a step with / without the expensive branch (equal for models
    without keyframes). cell_params / cell_gflops: the ConvLSTM cells alone (0 for other models).
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

    def amortised_gflops(self, interval: int) -> float:
        """Mean per frame with one keyframe every ``interval`` frames."""
        if interval < 1:
            raise ValueError(f"interval must be >= 1, got {interval}")
        if not self.uses_keyframes:
            return self.keyframe_gflops
        return (self.keyframe_gflops + (interval - 1) * self.nonkey_gflops) / interval


def _cells(model: nn.Module) -> dict[str, ConvLSTMCell]:
    return {name: m for name, m in model.named_modules() if isinstance(m, ConvLSTMCell)}


def _count(model: StreamingSegmenter, frame: torch.Tensor, state, is_keyframe: bool):
    """(total FLOPs, FLOPs inside ConvLSTM cells, step output) of one step."""
    counter = FlopCounterMode(display=False)
    inside_cells = [0]
    starts: list[int] = []
    # The counter's running total read before and after each cell call gives the cell's share,
    # wherever in the network the cell is called from.
    hooks = []
    for cell in _cells(model).values():
        hooks.append(cell.register_forward_pre_hook(lambda *_: starts.append(counter.get_total_flops())))
        hooks.append(
            cell.register_forward_hook(
                lambda *_: inside_cells.__setitem__(0, inside_cells[0] + counter.get_total_flops() - starts.pop())
            )
        )
    try:
        with counter, torch.no_grad():
            out = model.step(frame, state, is_keyframe=is_keyframe)
    finally:
        for hook in hooks:
            hook.remove()
    return counter.get_total_flops(), inside_cells[0], out


def count_cost(model: StreamingSegmenter, *, height: int, width: int, name: str | None = None) -> ModelCost:
    """Count ``model``'s cost on one (1, 3, height, width) frame."""
    if height < 1 or width < 1:
        raise ValueError(f"height and width must be positive, got {height}x{width}")
    params = sum(p.numel() for p in model.parameters())
    cells = _cells(model)
    cell_params = sum(p.numel() for c in cells.values() for p in c.parameters())
    meta = copy.deepcopy(model).to("meta").eval()
    frame = torch.zeros(1, 3, height, width, device="meta")
    key, cell_flops, out = _count(meta, frame, meta.init_state(frame), is_keyframe=True)
    nonkey = key
    if model.uses_keyframes:
        nonkey, _, _ = _count(meta, frame, out.state, is_keyframe=False)
    return ModelCost(
        name=name or getattr(model, "model_name", type(model).__name__),
        height=height,
        width=width,
        num_classes=model.num_classes,
        params=params,
        keyframe_gflops=key / 1e9,
        nonkey_gflops=nonkey / 1e9,
        uses_keyframes=model.uses_keyframes,
        cell_params=cell_params,
        cell_keyframe_gflops=cell_flops / 1e9,
    )


def model_cost(name: str, *, height: int = 1024, width: int = 2048, **config) -> ModelCost:
    """Build the registered model ``name`` with ``config`` and count it."""
    return count_cost(create_model(name, **config), height=height, width=width, name=name)
