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
    temporal_consistency,
    video_consistency,
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


def test_streaming_flicker_equals_the_batch_form_over_a_long_random_video():
    rng = np.random.default_rng(0)
    preds = [rng.integers(0, 4, (6, 7)) for _ in range(30)]
    gts = [rng.integers(0, 4, (6, 7)) for _ in range(30)]
    meter = FlickerMeter()
    for p, g in zip(preds, gts, strict=True):
        meter.update(p, g)
    batch = flicker(preds, gts)
    expected_fip = sum(int((a != b).sum()) for a, b in itertools.pairwise(preds)) / (29 * 42)
    assert meter.result() == batch and batch["fip"] == pytest.approx(expected_fip)


def test_flicker_meter_sequences_do_not_leak_into_each_other():
    meter = FlickerMeter()
    meter.update(np.zeros((2, 2), int))
    meter.update(np.zeros((2, 2), int))
    meter.reset_sequence()
    meter.update(np.ones((2, 2), int))  # a new sequence: no pair with the previous frame
    assert meter.result()["fip"] == 0.0 and meter.pixels == 4


def test_temporal_consistency_with_a_known_shift():
    pred_t = np.array([[0, 0, 1, 1]] * 2)
    pred_next = np.array([[0, 0, 0, 1]] * 2)  # everything moved one pixel right
    flow = np.zeros((2, 4, 2))
    flow[..., 0] = 1.0
    # Warped back: columns 0..2 read columns 1..3 of pred_next = [0, 0, 1]; column 3 falls outside.
    assert temporal_consistency(pred_t, pred_next, flow, num_classes=2) == pytest.approx(1.0)
    assert temporal_consistency(pred_t, pred_next, np.zeros((2, 4, 2)), num_classes=2) == pytest.approx(
        np.mean([2 / 3, 1 / 2])
    )


def test_video_consistency_by_hand():
    gts = [np.array([[0, 1, 2]]), np.array([[0, 1, 0]]), np.array([[0, 1, 0]])]
    preds = [np.array([[3, 1, 2]]), np.array([[3, 2, 2]]), np.array([[3, 2, 2]])]
    # n=2: window 0: gt stable at px 0, 1; pred stable at px 0, 2 -> 1 of 2. window 1: gt stable at
    # all 3; pred stable at all 3 -> 3 of 3. VC_2 = 4 / 5.
    assert video_consistency(preds, gts, 2) == pytest.approx(4 / 5)
    # n=3: gt stable at px 0, 1; pred stable at px 0 -> 1 / 2.
    assert video_consistency(preds, gts, 3) == pytest.approx(1 / 2)
    with pytest.raises(ValueError, match="at least 4 frames"):
        video_consistency(preds, gts, 4)


def test_miou_by_keyframe_offset():
    meter = KeyframeOffsetMeter(2)
    gt = np.array([[0, 1]])
    meter.update(0, np.array([[0, 1]]), gt)
    meter.update(1, np.array([[0, 0]]), gt)
    assert meter.result() == {0: 1.0, 1: pytest.approx(0.25)}  # class 0: 1/2, class 1: 0/1
