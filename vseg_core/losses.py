"""Per-pixel loss weighting for training: median frequency class weights and OHEM pixel selection.

Both give each valid pixel of a labelled frame a weight; :func:`vseg_core.train.clip_loss` turns
the weights into a frame's weighted mean of cross-entropy, so a frame still counts once in its clip
whichever loss is chosen.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch
from torch import Tensor

__all__ = ["LOSSES", "median_frequency_weights", "ohem_keep"]

#: Loss names of ``vseg train --loss``: plain cross-entropy, SegNet's median frequency balancing,
#: online hard example mining.
LOSSES = ("ce", "median-frequency", "ohem")


def median_frequency_weights(
    label_maps: Iterable[np.ndarray | Tensor], num_classes: int, ignore_index: int
) -> np.ndarray:
    """Class weights by median frequency balancing (SegNet; Eigen and Fergus 2015).

    ``weight_c = median(freq) / freq_c`` where ``freq_c`` = pixels of class c / all valid pixels of
    the label maps in which c occurs (``ignore_index`` pixels count nowhere), and the median runs
    over the classes that occur. A class that occurs in none of the maps gets weight 1 (the median
    class's weight); no training pixel carries it, so it only matters for data not seen here.

    label_maps: (H, W) integer class maps (any sizes). Returns (num_classes,) float64.
    """
    if num_classes < 1:
        raise ValueError(f"num_classes must be at least 1, got {num_classes}")
    pixels = np.zeros(num_classes, dtype=np.int64)  # pixels of class c
    totals = np.zeros(num_classes, dtype=np.int64)  # valid pixels of the maps where c occurs
    for labels in label_maps:
        flat = np.asarray(labels).reshape(-1).astype(np.int64)
        flat = flat[flat != ignore_index]
        if flat.size and (flat.min() < 0 or flat.max() >= num_classes):
            raise ValueError(
                f"label values must be 0..{num_classes - 1} or the ignore value {ignore_index}, "
                f"found {int(flat.min())}..{int(flat.max())}"
            )
        counts = np.bincount(flat, minlength=num_classes)
        pixels += counts
        totals += (counts > 0) * flat.size
    present = pixels > 0
    if not present.any():
        raise ValueError("no labelled pixel in the label maps: cannot compute class frequencies")
    freq = np.divide(pixels, totals, out=np.zeros(num_classes), where=present)
    median = float(np.median(freq[present]))
    return np.divide(median, freq, out=np.ones(num_classes), where=present)


def ohem_keep(ce: Tensor, valid: Tensor, *, threshold: float, min_kept: int | None) -> Tensor:
    """Online hard example mining: which pixels of each frame the loss keeps.

    Per frame, the valid pixels whose probability of the true class, ``exp(-ce)``, is below
    ``threshold``, but at least the ``min_kept`` hardest valid pixels (lowest probability; ties
    broken by position), or all of them where there are fewer. ``min_kept=None``: 1/16 of the
    frame's valid pixels (at least 1).

    ce: (F, H, W) per-pixel cross-entropy; valid: (F, H, W) bool. Returns (F, H, W) bool.
    """
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"the OHEM threshold is a probability in (0, 1), got {threshold}")
    if min_kept is not None and min_kept < 1:
        raise ValueError(f"OHEM min_kept must be at least 1 pixel, got {min_kept}")
    frames = ce.shape[0]
    with torch.no_grad():
        prob = torch.exp(-ce.detach().float()).reshape(frames, -1)
        flat_valid = valid.reshape(frames, -1)
        prob = torch.where(flat_valid, prob, torch.full_like(prob, float("inf")))  # invalid: never hardest
        order = torch.sort(prob, dim=1, stable=True).indices
        positions = torch.arange(prob.shape[1], device=prob.device).expand(frames, -1)
        rank = torch.empty_like(order).scatter_(1, order, positions)
        counts = flat_valid.sum(dim=1)
        wanted = (counts // 16).clamp(min=1) if min_kept is None else torch.full_like(counts, min_kept)
        hardest = rank < torch.minimum(wanted, counts)[:, None]
        keep = flat_valid & ((prob < threshold) | hardest)
    return keep.reshape(valid.shape)
