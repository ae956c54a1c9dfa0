"""Metrics against cases computed by hand."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from vseg_core.metrics import (
    ConfusionMatrix,
    FlickerMeter,
    KeyframeOffsetMeter,
    flicker,
    video_consistency,
    video_consistency_windows,
    warp_labels_back,
    warped_pair_miou,
)


def test_confusion_matrix_iou_by_hand():
    gt = np.array([[0, 0, 1], [1, 2, 255]])
    pred = np.array([[0, 1, 1], [1, 2, 0]])
    cm = ConfusionMatrix(4, ignore_index=255)
    cm.update(pred, torch.from_numpy(gt))  # torch tensors are accepted
    # class 0: tp 1, gt 2, pred 1 -> 1/2; class 1: tp 2, gt 2, pred 3 -> 2/3; class 2: 1/1; class 3 absent.
    iou = cm.iou()
    np.testing.assert_allclose(iou[:3], [0.5, 2 / 3, 1.0])
    assert np.isnan(iou[3])
    assert cm.miou() == pytest.approx((0.5 + 2 / 3 + 1.0) / 3)
    assert cm.pixel_accuracy() == pytest.approx(4 / 5)


def test_confusion_matrix_refuses_bad_input():
    cm = ConfusionMatrix(3)
    with pytest.raises(ValueError, match="differ in size"):
        cm.update(np.zeros((2, 2), int), np.zeros((2, 3), int))
    with pytest.raises(ValueError, match=r"class ids in 0\.\.2"):
        cm.update(np.full((2, 2), 5), np.zeros((2, 2), int))
    with pytest.raises(ValueError, match="integer label image"):
        cm.update(np.zeros((2, 2), float), np.zeros((2, 2), int))
    # Unmapped ground truth ids (raw dataset ids, negative ids) are refused, not silently dropped.
    with pytest.raises(ValueError, match=r"ground truth ids must be 0\.\.2 or the ignore index None, got 0\.\.7"):
        cm.update(np.zeros((2, 2), int), np.array([[0, 7], [1, 2]]))
    with pytest.raises(ValueError, match="ground truth ids"):
        ConfusionMatrix(3, ignore_index=255).update(np.zeros((1, 2), int), np.array([[-1, 255]]))
    assert cm.matrix.sum() == 0  # a refused update leaves the counts alone


def test_confusion_matrix_counts_in_int64_and_leaves_absent_classes_out_of_miou():
    cm = ConfusionMatrix(3, ignore_index=255)
    gt = np.full((4, 4), 255, np.uint8)
    gt[0] = 1
    cm.update(np.ones((4, 4), np.uint8), gt)  # predictions under ignore pixels are not counted
    cm.update(torch.ones(4, 4, dtype=torch.uint8), torch.from_numpy(gt))
    assert cm.matrix.dtype == np.int64 and cm.matrix[1, 1] == 8 and cm.matrix.sum() == 8
    assert cm.miou() == 1.0  # classes 0 and 2 occur nowhere: left out, not counted as 0
    assert np.isnan(ConfusionMatrix(2).miou())


def test_flicker_fp_and_fip_by_hand():
    gts = [np.array([[0, 1], [1, 1]])] * 3
    preds = [np.array([[0, 1], [1, 1]]), np.array([[0, 0], [1, 1]]), np.array([[1, 0], [1, 1]])]
    # FIP: pair 1 changes 1 pixel, pair 2 changes 1 pixel -> 2 / 8.
    # E_0 = [[0,0],[0,0]], E_1 = [[0,2],[0,0]], E_2 = [[1,2],[0,0]] -> changes 1 and 1 -> 2 / 8.
    result = flicker(preds, gts)
    assert result == {"fp": pytest.approx(2 / 8), "fip": pytest.approx(2 / 8)}
    # An error that stays the same is no flicker: FP counts changes of the error, not errors.
    steady = [np.array([[1, 1], [1, 1]])] * 3
    assert flicker(steady, gts) == {"fp": 0.0, "fip": 0.0}
    assert flicker(preds)["fp"] is None


def test_flicker_ignore_pixels_by_hand():
    p0, g0 = np.array([[0, 1], [1, 0]]), np.array([[0, 255], [1, 1]])
    p1, g1 = np.array([[1, 1], [0, 1]]), np.array([[0, 255], [255, 1]])
    # E_0 = [[0, 256], [0, 2]]; E_1 = [[1, 256], [256, 0]]: changes at (0,0), (1,0), (1,1).
    # Reference form: 3 of 4. With ignore_index, only (0,0) and (1,1) are labelled in both: 2 of 2.
    assert flicker([p0, p1], [g0, g1]) == {"fp": 0.75, "fip": 0.75}
    assert flicker([p0, p1], [g0, g1], ignore_index=255) == {"fp": 1.0, "fip": 0.75}
    # uint8 ground truth: G + 1 must not wrap 255 to 0 (E would then hide an error at that pixel).
    g8 = [g.astype(np.uint8) for g in (g0, g1)]
    assert flicker([p0, p1], g8)["fp"] == 0.75


def test_streaming_flicker_equals_the_batch_form_over_a_long_random_video():
    rng = np.random.default_rng(0)
    preds = [rng.integers(0, 4, (6, 7)) for _ in range(30)]
    gts = [rng.integers(0, 4, (6, 7)) for _ in range(30)]
    meter = FlickerMeter()
    for p, g in zip(preds, gts, strict=True):
        meter.update(p, g)
    batch = flicker(preds, gts)
    expected_fip = sum(int((a != b).sum()) for a, b in itertools.pairwise(preds)) / (29 * 42)
    errors = [np.where(p != g, g + 1, 0) for p, g in zip(preds, gts, strict=True)]
    expected_fp = sum(int((a != b).sum()) for a, b in itertools.pairwise(errors)) / (29 * 42)
    assert meter.result() == batch
    assert batch == {"fp": pytest.approx(expected_fp), "fip": pytest.approx(expected_fip)}


def test_flicker_meter_sequences_do_not_leak_into_each_other():
    meter = FlickerMeter()
    meter.update(np.zeros((2, 2), int))
    meter.update(np.zeros((2, 2), int))
    meter.reset_sequence()
    meter.update(np.ones((2, 2), int))  # a new sequence: no pair with the previous frame
    assert meter.result()["fip"] == 0.0 and meter.pixels == 4


def test_warped_pair_miou_with_a_known_shift():
    pred_t = np.array([[0, 0, 1, 1]] * 2)
    pred_next = np.array([[0, 0, 0, 1]] * 2)  # everything moved one pixel right
    flow = np.zeros((2, 4, 2))
    flow[..., 0] = 1.0
    # Warped back: columns 0..2 read columns 1..3 of pred_next = [0, 0, 1]; column 3 falls outside.
    assert warped_pair_miou(pred_t, pred_next, flow, num_classes=2) == pytest.approx(1.0)
    assert warped_pair_miou(pred_t, pred_next, np.zeros((2, 4, 2)), num_classes=2) == pytest.approx(
        np.mean([2 / 3, 1 / 2])
    )


def test_warp_labels_back_reads_labels_at_the_rounded_flow_target():
    labels = np.array([[0, 1, 2], [3, 4, 5]])
    flow = np.zeros((2, 3, 2), np.float32)
    flow[0, 0] = (1.6, 0.4)  # -> (x 2, y 0)
    flow[1, 2] = (0.0, -1.0)  # -> (x 2, y 0)
    flow[0, 1] = (5.0, 0.0)  # outside
    flow[1, 0] = (np.nan, 0.0)  # unknown flow: left out
    warped, inside = warp_labels_back(labels, torch.from_numpy(flow), fill=-1)
    np.testing.assert_array_equal(warped, [[2, -1, 2], [-1, 4, 2]])
    np.testing.assert_array_equal(inside, [[True, False, True], [False, True, True]])
    with pytest.raises(ValueError, match=r"flow must be \(H, W, 2\)"):
        warp_labels_back(labels, np.zeros((2, 3)), fill=0)


def test_video_consistency_windows_by_hand():
    gts = [np.array([[0, 1, 2]]), np.array([[0, 1, 0]]), np.array([[0, 1, 0]])]
    preds = [np.array([[3, 1, 2]]), np.array([[3, 2, 2]]), np.array([[3, 2, 2]])]
    # n=2: window 0: gt stable at px 0, 1; pred stable at px 0, 2 -> 1 of 2. window 1: gt stable at
    # all 3; pred stable at all 3 -> 3 of 3.
    assert video_consistency_windows(preds, gts, 2) == pytest.approx([1 / 2, 1])
    # n=3: gt stable at px 0, 1; pred stable at px 0 -> 1 / 2.
    assert video_consistency_windows(preds, gts, 3) == pytest.approx([1 / 2])
    assert video_consistency_windows(preds, gts, 4) == []
    # No stable ground-truth pixel: the window has no share (NaN), as 0/0 in VSPW's script.
    shares = video_consistency_windows([np.zeros((1, 2), int)] * 2, [np.array([[0, 1]]), np.array([[1, 0]])], 2)
    assert len(shares) == 1 and np.isnan(shares[0])


def test_video_consistency_pools_the_windows_of_all_sequences_as_vspw_does():
    # Sequence a: 3 frames, windows (n=2) score 1/2 and 1 (see above). Sequence b: 2 frames, one
    # window, gt stable at both pixels, prediction at neither -> 0.
    a = (
        [np.array([[3, 1, 2]]), np.array([[3, 2, 2]]), np.array([[3, 2, 2]])],
        [np.array([[0, 1, 2]]), np.array([[0, 1, 0]]), np.array([[0, 1, 0]])],
    )
    b = ([np.array([[0, 0]]), np.array([[1, 1]])], [np.array([[5, 5]]), np.array([[5, 5]])])
    # VSPW: the nanmean of all window shares pooled, (1/2 + 1 + 0) / 3 = 1/2; the mean of the
    # per-sequence means would be (3/4 + 0) / 2 = 3/8.
    assert video_consistency([a, b], 2) == pytest.approx(1 / 2)
    # A window without a stable ground-truth pixel is left out, not counted as 0 or 1.
    c = ([np.zeros((1, 2), int)] * 2, [np.array([[0, 1]]), np.array([[1, 0]])])
    assert video_consistency([a, b, c], 2) == pytest.approx(1 / 2)
    assert np.isnan(video_consistency([c], 2))
    # A sequence shorter than n adds no window; with none long enough there is no VC_n.
    assert video_consistency([a, b], 3) == pytest.approx(1 / 2)
    with pytest.raises(ValueError, match="at least 4 frames, the longest has 3"):
        video_consistency([a, b], 4)
    with pytest.raises(ValueError, match="n must be at least 2"):
        video_consistency([a], 1)
    with pytest.raises(ValueError, match="3 predictions but 2 ground truth frames"):
        video_consistency([(a[0], a[1][:2])], 2)


def test_miou_by_keyframe_offset():
    meter = KeyframeOffsetMeter(2)
    gt = np.array([[0, 1]])
    meter.update(0, np.array([[0, 1]]), gt)
    meter.update(1, np.array([[0, 0]]), gt)
    assert meter.result() == {0: 1.0, 1: pytest.approx(0.25)}  # class 0: 1/2, class 1: 0/1
    # Overall: class 0: tp 2, union 3; class 1: tp 1, union 2.
    assert meter.total().miou() == pytest.approx((2 / 3 + 1 / 2) / 2)
