"""Joint clip augmentation: one draw per clip, applied alike to frames, labels and flow."""

from __future__ import annotations

import numpy as np
import pytest

from vseg_core.data.clips import (
    AugmentParams,
    ClipAugmentation,
    KeyframeOffset,
    apply_augmentation,
    sample_keyframe_offset,
)


def test_every_frame_of_a_clip_gets_the_same_transform():
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 255, (40, 60, 3), dtype=np.uint8)
    label = rng.integers(0, 5, (40, 60), dtype=np.uint8)
    aug = ClipAugmentation(
        crop_size=(32, 48), scale_range=(0.6, 1.5), hflip=True, brightness=0.3, contrast=0.3, saturation=0.3
    )
    for seed in range(5):
        params = aug.sample((40, 60), np.random.default_rng(seed))
        frames, labels, _ = apply_augmentation(np.stack([frame] * 3), np.stack([label] * 3), params, ignore_index=255)
        assert frames.shape == (3, 32, 48, 3) and labels.shape == (3, 32, 48)
        assert (frames == frames[0]).all() and (labels == labels[0]).all()


def test_flip_scale_and_padding_move_pixels_where_the_matrix_says():
    label = np.arange(20, dtype=np.uint8).reshape(4, 5)
    flip = AugmentParams(output_size=(4, 5), flip=True)
    _, out, _ = apply_augmentation(np.zeros((1, 4, 5, 3), np.uint8), label[None], flip, ignore_index=255)
    assert np.array_equal(out[0], label[:, ::-1])
    # Zoom out by 2 into a larger canvas: the rest is ignore, never a class.
    small = AugmentParams(output_size=(8, 10), scale=0.5)
    _, out, _ = apply_augmentation(np.zeros((1, 4, 5, 3), np.uint8), label[None], small, ignore_index=255)
    assert (out[0, 3:] == 255).all() and out[0, 0, 0] == 0


def test_flow_vectors_follow_scale_and_flip():
    flow = np.zeros((1, 10, 10, 2), np.float32)
    flow[..., 0], flow[..., 1] = 2.0, -1.0
    params = AugmentParams(output_size=(10, 10), scale=1.5, flip=True)
    _, _, out = apply_augmentation(np.zeros((2, 10, 10, 3), np.uint8), None, params, ignore_index=255, flow=flow)
    assert np.allclose(out[0, 2:6, 2:6], [-3.0, -1.5])


def test_keyframe_offsets():
    rng = np.random.default_rng(0)
    assert sample_keyframe_offset(None, 4, rng) == 0
    assert sample_keyframe_offset(KeyframeOffset(3, 3), 4, rng) == 0
    assert {sample_keyframe_offset(KeyframeOffset(0, 2), 5, rng) for _ in range(50)} == {2, 3, 4}
    with pytest.raises(ValueError, match="at least 5 frames"):
        sample_keyframe_offset(KeyframeOffset(0, 4), 4, rng)
    with pytest.raises(ValueError, match="low <= high"):
        KeyframeOffset(3, 1)


def test_bad_augmentation_settings():
    with pytest.raises(ValueError, match="scale_range"):
        ClipAugmentation(scale_range=(0.0, 1.0))
    with pytest.raises(ValueError, match="brightness"):
        ClipAugmentation(brightness=1.5)
