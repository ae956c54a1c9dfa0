"""Synthetic street video: determinism, exact flow, label alignment, training clips."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from vseg_core.data import (
    SYNTHETIC,
    ClipAugmentation,
    KeyframeOffset,
    SyntheticScene,
    SyntheticVideoConfig,
    SyntheticVideoDataset,
    create_dataset,
    generate_video,
)
from vseg_core.palette import CAMVID

SMALL = SyntheticVideoConfig(height=96, width=192)


@pytest.fixture(scope="module")
def video():
    return generate_video(SMALL, seed=3, num_frames=24)


def test_same_seed_same_video_other_seed_other_video(video):
    again = generate_video(SMALL, seed=3, num_frames=24)
    for name in ("frames", "labels", "flow", "flow_valid", "dropped"):
        assert np.array_equal(getattr(video, name), getattr(again, name)), name
    other = generate_video(SMALL, seed=4, num_frames=2)
    assert not np.array_equal(other.frames, video.frames[:2])


def test_shapes_types_and_classes(video):
    t, h, w = 24, SMALL.height, SMALL.width
    assert video.frames.shape == (t, h, w, 3) and video.frames.dtype == np.uint8
    assert video.labels.shape == (t, h, w) and video.labels.dtype == np.uint8
    assert video.flow.shape == (t - 1, h, w, 2) and video.flow.dtype == np.float32
    assert video.flow_valid.shape == (t - 1, h, w) and video.dropped.shape == (t,)
    assert np.isfinite(video.flow).all()
    present = set(np.unique(video.labels).tolist())
    assert present <= set(range(SYNTHETIC.num_classes))
    assert {0, 1, 3, 4, 5} <= present  # sky, building, road, pavement, car in any street
    # The synthetic classes carry CamVid's names and colours.
    for name, color in zip(SYNTHETIC.names, SYNTHETIC.colors, strict=True):
        assert CAMVID.colors[CAMVID.names.index(name)] == color


def _warp_back(labels_next: np.ndarray, flow: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Frame t+1's labels seen from frame t along the forward flow, and where that lands inside."""
    h, w = labels_next.shape
    u = np.arange(w, dtype=np.float32)[None] + flow[..., 0]
    v = np.arange(h, dtype=np.float32)[:, None] + flow[..., 1]
    warped = cv2.remap(labels_next, u, v, cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT, borderValue=255)
    return warped, (u >= 0) & (u <= w - 1) & (v >= 0) & (v <= h - 1)


def test_ground_truth_flow_carries_labels_to_the_next_frame(video):
    agree, agree_valid, agree_still, valid_share = [], [], [], []
    for t in range(len(video.flow)):
        warped, inside = _warp_back(video.labels[t + 1], video.flow[t])
        same = warped == video.labels[t]
        agree.append(same[inside].mean())
        agree_valid.append(same[video.flow_valid[t]].mean())
        agree_still.append((video.labels[t + 1] == video.labels[t])[inside].mean())
        valid_share.append(video.flow_valid[t].mean())
    # Occlusions and objects leaving the image explain the rest; most pixels stay visible.
    assert np.mean(valid_share) > 0.7
    assert np.mean(agree_valid) > 0.98 and min(agree_valid) > 0.95
    assert np.mean(agree) > 0.95
    # The flow does real work: without it, several times more pixels disagree.
    assert 1 - np.mean(agree) < (1 - np.mean(agree_still)) / 2


def test_flow_is_consistent_with_the_images_too():
    # Appearance follows the geometry: warping frame t+1 back gives frame t where it is visible.
    clip = generate_video(
        SyntheticVideoConfig(height=96, width=192, noise_std=0, dropout_probability=0), seed=5, num_frames=2
    )
    h, w = clip.labels.shape[1:]
    u = np.arange(w, dtype=np.float32)[None] + clip.flow[0, ..., 0]
    v = np.arange(h, dtype=np.float32)[:, None] + clip.flow[0, ..., 1]
    warped = cv2.remap(clip.frames[1], u, v, cv2.INTER_LINEAR).astype(np.float32)
    valid = clip.flow_valid[0]
    error = np.abs(warped - clip.frames[0]).mean(-1)[valid]
    still = np.abs(clip.frames[1].astype(np.float32) - clip.frames[0]).mean(-1)[valid]
    assert np.median(error) < 6 and error.mean() < still.mean() / 2


def test_a_clip_starting_later_renders_the_same_frames(video):
    later = SyntheticScene(SMALL, seed=3).clip(10, 5)
    assert np.array_equal(later.frames, video.frames[10:15])
    assert np.array_equal(later.labels, video.labels[10:15])
    assert np.array_equal(later.flow, video.flow[10:14])


def test_dropouts_are_brief_and_keep_true_labels():
    config = SyntheticVideoConfig(height=48, width=96, dropout_probability=0.2, max_dropout_frames=3)
    clip = generate_video(config, seed=1, num_frames=40)
    assert 0 < clip.dropped.sum() < 40
    runs = np.diff(np.flatnonzero(np.diff(np.r_[0, clip.dropped.astype(int), 0])))[::2]
    assert runs.max() <= 6  # two dropouts may touch, but none lasts long
    clean = generate_video(SyntheticVideoConfig(height=48, width=96, dropout_probability=0.0), seed=1, num_frames=40)
    assert np.array_equal(clip.labels, clean.labels) and not clean.dropped.any()


def test_dataset_clips_are_reproducible_and_jointly_augmented():
    aug = ClipAugmentation(crop_size=(64, 96), scale_range=(0.8, 1.3), hflip=True, brightness=0.2, contrast=0.2)
    data = SyntheticVideoDataset(SMALL, num_clips=4, clip_length=3, seed=7, augmentation=aug, with_flow=True)
    torch.manual_seed(1)
    a = data[2]
    torch.manual_seed(1)
    b = data[2]
    assert all(torch.equal(a[k], b[k]) for k in ("frames", "labels", "flow"))
    assert a["frames"].shape == (3, 3, 64, 96) and a["labels"].shape == (3, 64, 96)
    assert a["flow"].shape == (2, 2, 64, 96) and a["frames"].dtype == torch.float32
    # Identical augmentation across frames: the augmented flow still carries labels forward.
    labels, flow = a["labels"].numpy().astype(np.uint8), a["flow"].numpy().transpose(0, 2, 3, 1)
    warped, inside = _warp_back(labels[1], flow[0])
    keep = inside & (labels[0] != 255) & (warped != 255)
    assert (warped == labels[0])[keep].mean() > 0.9


def test_keyframe_offset_and_dataset_factory():
    data = create_dataset(
        "synthetic", split="val", config=SMALL, num_clips=2, clip_length=5, keyframe_offset=KeyframeOffset(4, 4)
    )
    assert data[0]["keyframe_index"] == 0  # Accel: K-1 = 4 flows from the keyframe to the labelled frame
    with pytest.raises(ValueError, match="clip_length > 4"):
        SyntheticVideoDataset(SMALL, clip_length=4, keyframe_offset=KeyframeOffset(0, 4))
    with pytest.raises(ValueError, match="unknown dataset 'nope'; known datasets: camvid, cityscapes, synthetic"):
        create_dataset("nope")


def test_bad_config_is_refused_at_construction():
    with pytest.raises(ValueError, match="ego_speed"):
        SyntheticVideoConfig(ego_speed=(5.0, 1.0))
    with pytest.raises(ValueError, match="probability"):
        SyntheticVideoConfig(dropout_probability=2.0)
