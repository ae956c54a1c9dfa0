"""Accuracy and temporal-stability metrics of label sequences (numpy; torch tensors are accepted).

- :class:`ConfusionMatrix`: per-class IoU and mIoU.
- :func:`flicker` / :class:`FlickerMeter`: FP and FIP of Pfeuffer & Dietmayer (LSTM-ICNet's
  inference.py). With predictions P_t and ground truth G_t, the error image is
  E_t = [P_t != G_t] * (G_t + 1); FP = sum_t #{E_t != E_{t-1}} / sum_t H*W over consecutive pairs;
  FIP = sum_t #{P_t != P_{t-1}} / sum_t H*W and needs no ground truth.
  Ignore pixels: by default FP counts every pixel, as the reference code does. An ignore-labelled
  pixel has E_t = ignore_index + 1 whatever the prediction (a prediction never equals the ignore
  id), so it adds no change while it stays ignored, yet it sits in the denominator and dilutes FP;
  a pixel whose ground truth switches between ignored and labelled counts as a change. Pass
  ``ignore_index`` to leave out, from numerator and denominator, every pixel ignored in either frame
  of a pair; FIP never looks at ground truth.
- :func:`warped_pair_miou`: the mIoU of one pair, P_t against P_{t+1} warped back to t by optical
  flow. ETC's TC (ECCV 2020) starts from the same comparison but is a different number (it pools
  all pairs of a data set before the class mean); see the function.
- :func:`video_consistency`: VC_n (VSPW, CVPR 2021), among pixels whose ground truth stays constant
  over n frames, the share whose prediction stays constant too, averaged over all windows of all
  sequences together, as VSPW's script does (:func:`video_consistency_windows` gives the shares).
- :class:`KeyframeOffsetMeter`: mIoU by distance from the last keyframe (the Accel evaluation).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

__all__ = [
    "ConfusionMatrix",
    "FlickerMeter",
    "KeyframeOffsetMeter",
    "flicker",
    "video_consistency",
    "video_consistency_windows",
    "warp_labels_back",
    "warped_pair_miou",
]


def _as_labels(x, name: str) -> np.ndarray:
    array = x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)
    if array.ndim != 2 or not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"{name} must be an (H, W) integer label image, got {array.shape} {array.dtype}")
    return array


class ConfusionMatrix:
    """Counts (ground truth, prediction) pairs in int64; ``ignore_index`` pixels are left out.

    Ground truth ids must be class ids 0..num_classes-1 or ``ignore_index``: anything else is
    refused rather than dropped, because it almost always means an unmapped label set (raw
    Cityscapes ids, say) that would otherwise pass as a plausible mIoU.
    """

    def __init__(self, num_classes: int, ignore_index: int | None = None) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be at least 1, got {num_classes}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix = np.zeros((num_classes, num_classes), dtype=np.int64)  # rows: ground truth

    def update(self, pred, gt) -> None:
        """Add one (H, W) prediction and its (H, W) ground truth (numpy or torch integer arrays)."""
        pred, gt = _as_labels(pred, "pred"), _as_labels(gt, "gt")
        if pred.shape != gt.shape:
            raise ValueError(f"pred {pred.shape} and gt {gt.shape} differ in size")
        g, p = gt.astype(np.int64).ravel(), pred.astype(np.int64).ravel()
        if self.ignore_index is not None:
            valid = g != self.ignore_index
            g, p = g[valid], p[valid]
        c = self.num_classes
        if g.size and (g.min() < 0 or g.max() >= c):
            raise ValueError(
                f"ground truth ids must be 0..{c - 1} or the ignore index {self.ignore_index}, got {g.min()}..{g.max()}"
            )
        if p.size and (p.min() < 0 or p.max() >= c):
            raise ValueError(f"predictions must be class ids in 0..{c - 1}, got {p.min()}..{p.max()}")
        self.matrix += np.bincount(g * c + p, minlength=c * c).reshape(c, c)

    def iou(self) -> np.ndarray:
        """(num_classes,) IoU per class; NaN marks a class in neither ground truth nor prediction."""
        tp = np.diag(self.matrix).astype(np.float64)
        union = self.matrix.sum(0) + self.matrix.sum(1) - tp
        return np.where(union > 0, tp / np.maximum(union, 1), np.nan)

    def miou(self) -> float:
        """Mean IoU over the classes that occur in the ground truth or the prediction.

        Classes absent from both are left out (their IoU is 0/0, not 0), so the result is never
        NaN once a pixel was counted; before that it is NaN.
        """
        iou = self.iou()
        return float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan")

    def pixel_accuracy(self) -> float:
        total = self.matrix.sum()
        return float(np.trace(self.matrix) / total) if total else float("nan")


class FlickerMeter:
    """FP and FIP over a stream of frames, one frame at a time (equal to :func:`flicker`).

    ignore_index: None counts every pixel in FP (the reference code); an id leaves out the pixels
    ignored in either frame of a pair (see the module docstring).
    """

    def __init__(self, ignore_index: int | None = None) -> None:
        self.ignore_index = ignore_index
        self._prev_pred: np.ndarray | None = None
        self._prev_error: np.ndarray | None = None
        self._prev_valid: np.ndarray | None = None
        self.pred_changes = 0
        self.error_changes = 0
        self.pixels = 0  # H*W summed over consecutive pairs
        self.error_pixels = 0  # pixels compared for FP, over pairs where both frames have ground truth

    def update(self, pred, gt=None) -> None:
        """Add the next (H, W) prediction, with its (H, W) ground truth where the frame has one."""
        pred = _as_labels(pred, "pred")
        error = valid = None
        if gt is not None:
            gt = _as_labels(gt, "gt")
            if gt.shape != pred.shape:
                raise ValueError(f"pred {pred.shape} and gt {gt.shape} differ in size")
            # int64: G + 1 must not wrap for uint8 ground truth with ignore id 255.
            error = (pred != gt).astype(np.int64) * (gt.astype(np.int64) + 1)
            valid = None if self.ignore_index is None else gt != self.ignore_index
        if self._prev_pred is not None:
            if self._prev_pred.shape != pred.shape:
                raise ValueError(f"frame size changed from {self._prev_pred.shape} to {pred.shape} within a sequence")
            self.pred_changes += int(np.count_nonzero(pred != self._prev_pred))
            self.pixels += pred.size
            if error is not None and self._prev_error is not None:
                changed = error != self._prev_error
                if valid is None:
                    self.error_changes += int(np.count_nonzero(changed))
                    self.error_pixels += pred.size
                else:
                    both = valid & self._prev_valid
                    self.error_changes += int(np.count_nonzero(changed & both))
                    self.error_pixels += int(np.count_nonzero(both))
        self._prev_pred, self._prev_error, self._prev_valid = pred, error, valid

    def reset_sequence(self) -> None:
        """Start a new sequence: the next frame has no predecessor (totals are kept)."""
        self._prev_pred = self._prev_error = self._prev_valid = None

    def result(self) -> dict[str, float | None]:
        """{"fp": FP or None without ground truth pairs, "fip": FIP (NaN with fewer than 2 frames)}."""
        return {
            "fp": self.error_changes / self.error_pixels if self.error_pixels else None,
            "fip": self.pred_changes / self.pixels if self.pixels else float("nan"),
        }


def flicker(
    preds: Sequence, gts: Sequence | None = None, *, ignore_index: int | None = None
) -> dict[str, float | None]:
    """FP and FIP of one sequence of (H, W) label images (``gts`` optional, same length)."""
    if gts is not None and len(gts) != len(preds):
        raise ValueError(f"{len(preds)} predictions but {len(gts)} ground truth frames")
    meter = FlickerMeter(ignore_index)
    for i, pred in enumerate(preds):
        meter.update(pred, None if gts is None else gts[i])
    return meter.result()


def warp_labels_back(labels_next, flow: np.ndarray, fill: int) -> tuple[np.ndarray, np.ndarray]:
    """Bring an (H, W) label image of frame t+1 to frame t by nearest-neighbour lookup.

    flow: (H, W, 2) float, the forward flow t -> t+1 in pixels, (dx, dy) per pixel of frame t.
    Returns the warped (H, W) int64 labels (``fill`` where the lookup leaves frame t+1) and the
    (H, W) bool mask of pixels that stayed inside. Labels are looked up, never interpolated: a
    bilinear mix of class ids is meaningless.
    """
    labels_next = _as_labels(labels_next, "labels_next")
    flow = flow.detach().cpu().numpy() if hasattr(flow, "detach") else np.asarray(flow)
    h, w = labels_next.shape
    if flow.shape != (h, w, 2):
        raise ValueError(f"flow must be (H, W, 2) = {(h, w, 2)} pixels (dx, dy), got {flow.shape}")
    ys, xs = np.mgrid[0:h, 0:w]
    x1 = np.rint(xs + flow[..., 0])
    y1 = np.rint(ys + flow[..., 1])
    inside = (x1 >= 0) & (x1 < w) & (y1 >= 0) & (y1 < h)  # NaN flow compares False: left out
    warped = np.full((h, w), fill, dtype=np.int64)
    warped[inside] = labels_next[y1[inside].astype(np.int64), x1[inside].astype(np.int64)]
    return warped, inside


def warped_pair_miou(pred_t, pred_next, flow: np.ndarray, num_classes: int) -> float:
    """mIoU of one pair of predictions: P_t against P_{t+1} warped back to frame t.

    flow: (H, W, 2) float, the forward flow t -> t+1 in pixels, (dx, dy) per pixel of frame t; the
    label of P_{t+1} at the nearest pixel of that position is read back (:func:`warp_labels_back`).
    Pixels whose position falls outside frame t+1 are left out; the mean runs over the classes in
    either image (:meth:`ConfusionMatrix.miou`).

    Not ETC's TC, though it starts from the same comparison: ETC's ``eval_tc.py`` (and VSPW's
    ``TC_cal.py``) sum intersections and unions over all the pairs they evaluate and take the class
    mean once, with their own flow (FlowNet2, RAFT) and warp (ETC: bilinear resampling of the class
    ids with the border repeated; VSPW: nearest with zero padding). A mean of this value over pairs
    is therefore not comparable with published TC.
    """
    pred_t = _as_labels(pred_t, "pred_t")
    if np.shape(pred_next) != pred_t.shape:
        raise ValueError(f"pred_t {pred_t.shape} and pred_next {np.shape(pred_next)} differ in size")
    # The warped P_{t+1} plays the ground truth; id num_classes marks the pixels left out.
    warped, _ = warp_labels_back(pred_next, flow, fill=num_classes)
    matrix = ConfusionMatrix(num_classes, ignore_index=num_classes)
    matrix.update(pred_t, warped)
    return matrix.miou()


def video_consistency_windows(preds: Sequence, gts: Sequence, n: int) -> list[float]:
    """The shares VC_n is made of, one per window of n consecutive frames of one sequence.

    For the window starting at frame i: among the pixels whose ground truth is the same in frames
    i..i+n-1, the share whose prediction is also the same in all n; NaN where no ground-truth pixel
    is stable. Ground truth is compared as given, so a pixel that stays ignore-labelled counts as
    stable (VSPW's script does the same). All len - n + 1 windows are returned (VSPW's script stops
    one window short); a sequence shorter than n has none.
    """
    if n < 2:
        raise ValueError(f"n must be at least 2, got {n}")
    if len(preds) != len(gts):
        raise ValueError(f"{len(preds)} predictions but {len(gts)} ground truth frames")
    preds = [_as_labels(p, "pred") for p in preds]
    gts = [_as_labels(g, "gt") for g in gts]
    shares = []
    for i in range(len(preds) - n + 1):
        gt_same = np.ones(gts[i].shape, dtype=bool)
        pred_same = np.ones(preds[i].shape, dtype=bool)
        for j in range(i + 1, i + n):
            gt_same &= gts[j] == gts[i]
            pred_same &= preds[j] == preds[i]
        stable = int(gt_same.sum())
        shares.append(int((gt_same & pred_same).sum()) / stable if stable else float("nan"))
    return shares


def video_consistency(sequences: Iterable[tuple[Sequence, Sequence]], n: int) -> float:
    """VC_n (VSPW) of a data set: ``sequences`` yields one (predictions, ground truth) pair of
    equal-length frame sequences per video.

    The mean of :func:`video_consistency_windows` over all windows of all sequences pooled, windows
    without a stable ground-truth pixel left out: VSPW's ``VC_perclip.py`` collects the window
    shares of every video in one list and takes its nanmean, so a long video weighs more than a
    short one (this is not the mean of per-video means). Sequences shorter than n add no window.
    NaN if no window has a stable pixel.
    """
    if n < 2:
        raise ValueError(f"n must be at least 2, got {n}")
    shares: list[float] = []
    longest = 0
    for preds, gts in sequences:
        shares += video_consistency_windows(preds, gts, n)
        longest = max(longest, len(preds))
    if not shares:
        raise ValueError(f"VC_{n} needs a sequence of at least {n} frames, the longest has {longest}")
    counted = [share for share in shares if not np.isnan(share)]
    return float(np.mean(counted)) if counted else float("nan")


class KeyframeOffsetMeter:
    """mIoU by distance from the last keyframe: one confusion matrix per offset 0, 1, 2, ...

    ``offset`` is the runtime's ``frames_since_keyframe`` of the labelled frame.
    """

    def __init__(self, num_classes: int, ignore_index: int | None = None) -> None:
        ConfusionMatrix(num_classes, ignore_index)  # validate the settings now, not at the first update
        self.num_classes, self.ignore_index = num_classes, ignore_index
        self.matrices: dict[int, ConfusionMatrix] = {}

    def update(self, offset: int, pred, gt) -> None:
        if offset < 0:
            raise ValueError(f"keyframe offset must be >= 0, got {offset}")
        if offset not in self.matrices:
            self.matrices[offset] = ConfusionMatrix(self.num_classes, self.ignore_index)
        self.matrices[offset].update(pred, gt)

    def result(self) -> dict[int, float]:
        """{offset: mIoU} in increasing offset."""
        return {offset: self.matrices[offset].miou() for offset in sorted(self.matrices)}

    def total(self) -> ConfusionMatrix:
        """All offsets together: the overall confusion matrix."""
        merged = ConfusionMatrix(self.num_classes, self.ignore_index)
        for matrix in self.matrices.values():
            merged.matrix += matrix.matrix
        return merged
