"""Accuracy and temporal-stability metrics of label sequences (numpy; torch tensors are accepted).

- :class:`ConfusionMatrix`: per-class IoU and mIoU.
- :func:`flicker` / :class:`FlickerMeter`: FP and FIP of Pfeuffer & Dietmayer (LSTM-ICNet's
  inference.py). With predictions P_t and ground truth G_t, the error image is
  E_t = [P_t != G_t] * (G_t + 1); FP = sum_t #{E_t != E_{t-1}} / sum_t H*W over consecutive pairs;
  FIP = sum_t #{P_t != P_{t-1}} / sum_t H*W and needs no ground truth. Like the reference code, FP
  counts every pixel, ignore-labelled ones included.
- :func:`temporal_consistency`: TC (ETC, ECCV 2020), the mIoU between P_t and P_{t+1} warped back
  to t by optical flow.
- :func:`video_consistency`: VC_n (VSPW, CVPR 2021), among pixels whose ground truth stays constant
  over n frames, the share whose prediction stays constant too.
- :class:`KeyframeOffsetMeter`: mIoU by distance from the last keyframe (the Accel evaluation).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = [
    "ConfusionMatrix",
    "FlickerMeter",
    "KeyframeOffsetMeter",
    "flicker",
    "temporal_consistency",
    "video_consistency",
]


def _as_labels(x, name: str) -> np.ndarray:
    array = x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)
    if array.ndim != 2 or not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"{name} must be an (H, W) integer label image, got {array.shape} {array.dtype}")
    return array


class ConfusionMatrix:
    """Counts (ground truth, prediction) pairs; ``ignore_index`` pixels (and ids >= num_classes in
    the ground truth) are left out."""

    def __init__(self, num_classes: int, ignore_index: int | None = None) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be at least 1, got {num_classes}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix = np.zeros((num_classes, num_classes), dtype=np.int64)  # rows: ground truth

    def update(self, pred, gt) -> None:
        pred, gt = _as_labels(pred, "pred"), _as_labels(gt, "gt")
        if pred.shape != gt.shape:
            raise ValueError(f"pred {pred.shape} and gt {gt.shape} differ in size")
        valid = gt < self.num_classes
        if self.ignore_index is not None:
            valid &= gt != self.ignore_index
        p = pred[valid].astype(np.int64)
        if p.size and (p.min() < 0 or p.max() >= self.num_classes):
            raise ValueError(f"predictions must be class ids in 0..{self.num_classes - 1}, got {p.min()}..{p.max()}")
        index = gt[valid].astype(np.int64) * self.num_classes + p
        self.matrix += np.bincount(index, minlength=self.num_classes**2).reshape(self.num_classes, self.num_classes)

    def iou(self) -> np.ndarray:
        """(num_classes,) IoU per class; NaN for classes in neither ground truth nor prediction."""
        tp = np.diag(self.matrix).astype(np.float64)
        union = self.matrix.sum(0) + self.matrix.sum(1) - tp
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(union > 0, tp / np.maximum(union, 1), np.nan)

    def miou(self) -> float:
        """Mean IoU over the classes that occur (in ground truth or prediction); NaN before any update."""
        iou = self.iou()
        return float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan")

    def pixel_accuracy(self) -> float:
        total = self.matrix.sum()
        return float(np.trace(self.matrix) / total) if total else float("nan")


class FlickerMeter:
    """FP and FIP over a stream of frames, one frame at a time (equal to :func:`flicker`)."""

    def __init__(self) -> None:
        self._prev_pred: np.ndarray | None = None
        self._prev_error: np.ndarray | None = None
        self.pred_changes = 0
        self.error_changes = 0
        self.pixels = 0  # H*W summed over consecutive pairs
        self.error_pixels = 0  # the same, over pairs where both frames have ground truth

    def update(self, pred, gt=None) -> None:
        pred = _as_labels(pred, "pred")
        error = None
        if gt is not None:
            gt = _as_labels(gt, "gt")
            if gt.shape != pred.shape:
                raise ValueError(f"pred {pred.shape} and gt {gt.shape} differ in size")
            error = (pred != gt).astype(np.int64) * (gt.astype(np.int64) + 1)
        if self._prev_pred is not None:
            if self._prev_pred.shape != pred.shape:
                raise ValueError(f"frame size changed from {self._prev_pred.shape} to {pred.shape} within a sequence")
            self.pred_changes += int(np.count_nonzero(pred != self._prev_pred))
            self.pixels += pred.size
            if error is not None and self._prev_error is not None:
                self.error_changes += int(np.count_nonzero(error != self._prev_error))
                self.error_pixels += pred.size
        self._prev_pred, self._prev_error = pred, error

    def reset_sequence(self) -> None:
        """Start a new sequence: the next frame has no predecessor (totals are kept)."""
        self._prev_pred = self._prev_error = None

    def result(self) -> dict[str, float | None]:
        """{"fp": FP or None without ground truth pairs, "fip": FIP (NaN with fewer than 2 frames)}."""
        return {
            "fp": self.error_changes / self.error_pixels if self.error_pixels else None,
            "fip": self.pred_changes / self.pixels if self.pixels else float("nan"),
        }


def flicker(preds: Sequence, gts: Sequence | None = None) -> dict[str, float | None]:
    """FP and FIP of one sequence of (H, W) label images (``gts`` optional, same length)."""
    if gts is not None and len(gts) != len(preds):
        raise ValueError(f"{len(preds)} predictions but {len(gts)} ground truth frames")
    meter = FlickerMeter()
    for i, pred in enumerate(preds):
        meter.update(pred, None if gts is None else gts[i])
    return meter.result()


def temporal_consistency(pred_t, pred_next, flow_back: np.ndarray, num_classes: int) -> float:
    """TC of one pair: mIoU between P_t and P_{t+1} warped to frame t.

    flow_back: (H, W, 2) float, for each pixel of frame t the (dx, dy) in pixels to where it is in
    frame t+1; P_{t+1} is sampled there (nearest pixel). Pixels that land outside frame t+1 are
    left out.
    """
    pred_t, pred_next = _as_labels(pred_t, "pred_t"), _as_labels(pred_next, "pred_next")
    h, w = pred_t.shape
    if pred_next.shape != (h, w) or flow_back.shape != (h, w, 2):
        raise ValueError(
            f"pred_t {pred_t.shape}, pred_next {pred_next.shape} and flow_back {flow_back.shape} must be "
            "(H, W), (H, W) and (H, W, 2)"
        )
    ys, xs = np.mgrid[0:h, 0:w]
    x1 = np.rint(xs + flow_back[..., 0]).astype(np.int64)
    y1 = np.rint(ys + flow_back[..., 1]).astype(np.int64)
    inside = (x1 >= 0) & (x1 < w) & (y1 >= 0) & (y1 < h)
    warped = np.full((h, w), num_classes, dtype=np.int64)  # num_classes = left out
    warped[inside] = pred_next[y1[inside], x1[inside]]
    # The warped P_{t+1} plays the ground truth; id num_classes marks the pixels left out.
    matrix = ConfusionMatrix(num_classes)
    matrix.update(np.where(inside, pred_t, 0), warped)
    return matrix.miou()


def video_consistency(preds: Sequence, gts: Sequence, n: int) -> float:
    """VC_n of one sequence: over every window of n consecutive frames, the pixels whose ground truth
    is the same in all n frames; the share of them whose prediction is also the same in all n."""
    if n < 2:
        raise ValueError(f"n must be at least 2, got {n}")
    if len(preds) != len(gts):
        raise ValueError(f"{len(preds)} predictions but {len(gts)} ground truth frames")
    if len(preds) < n:
        raise ValueError(f"VC_{n} needs at least {n} frames, got {len(preds)}")
    preds = [_as_labels(p, "pred") for p in preds]
    gts = [_as_labels(g, "gt") for g in gts]
    stable_gt = stable_both = 0
    for i in range(len(preds) - n + 1):
        gt_same = np.ones(gts[i].shape, dtype=bool)
        pred_same = np.ones(preds[i].shape, dtype=bool)
        for j in range(i + 1, i + n):
            gt_same &= gts[j] == gts[i]
            pred_same &= preds[j] == preds[i]
        stable_gt += int(gt_same.sum())
        stable_both += int((gt_same & pred_same).sum())
    return stable_both / stable_gt if stable_gt else float("nan")


class KeyframeOffsetMeter:
    """mIoU by distance from the last keyframe: one confusion matrix per offset 0, 1, 2, ..."""

    def __init__(self, num_classes: int, ignore_index: int | None = None) -> None:
        self.num_classes, self.ignore_index = num_classes, ignore_index
        self.matrices: dict[int, ConfusionMatrix] = {}

    def update(self, offset: int, pred, gt) -> None:
        if offset < 0:
            raise ValueError(f"keyframe offset must be >= 0, got {offset}")
        if offset not in self.matrices:
            self.matrices[offset] = ConfusionMatrix(self.num_classes, self.ignore_index)
        self.matrices[offset].update(pred, gt)

    def result(self) -> dict[int, float]:
        return {offset: self.matrices[offset].miou() for offset in sorted(self.matrices)}
