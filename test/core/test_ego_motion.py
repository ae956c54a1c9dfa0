"""Ego-motion clips from labelled stills: the warp, the ignore border, smooth bounded motion,
determinism, and a ConvLSTM run on such clips."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from vseg_core import create_model, load_checkpoint
from vseg_core.data import (
    SYNTHETIC,
    CamVidClips,
    ClipAugmentation,
    EgoMotion,
    EgoMotionClips,
    KeyframeOffset,
    SyntheticVideoConfig,
    create_dataset,
)
from vseg_core.data.ego_motion import step_matrix, warp_still
from vseg_core.train import TrainConfig, clip_loss, train

IGNORE = 255


def _still(h: int = 12, w: int = 16) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(5)
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8), rng.integers(0, 7, (h, w), dtype=np.uint8)


def _stills(n: int = 3, clip_length: int = 1) -> object:
    return create_dataset("synthetic", clip_length=clip_length, num_clips=n, config=SyntheticVideoConfig(32, 64))


@pytest.mark.parametrize(("dx", "dy"), [(3, -2), (-5, 4), (0, 0), (16, 0)])
def test_an_integer_shift_moves_labels_and_image_by_index_arithmetic(dx, dy):
    image, labels = _still()
    h, w = labels.shape
    matrix = step_matrix((h, w), shift=(dx, dy), zoom=0.0, angle=0.0)
    frames, maps = warp_still(image, labels, matrix[None], ignore_index=IGNORE)
    expected_labels = np.full((h, w), IGNORE, np.uint8)
    expected_image = np.zeros((h, w, 3), np.uint8)
    for y in range(h):
        for x in range(w):
            sy, sx = y - dy, x - dx  # the still's pixel that lands at (x, y)
            if 0 <= sy < h and 0 <= sx < w:
                expected_labels[y, x] = labels[sy, sx]
                expected_image[y, x] = image[sy, sx]
    assert np.array_equal(maps[0], expected_labels)
    assert np.array_equal(frames[0], expected_image)


def test_pixels_from_outside_the_still_are_ignored_and_the_inside_keeps_its_labels():
    image, labels = _still(40, 60)  # no ignore value in the still itself
    motion = EgoMotion(shift=(0.03, 0.03), zoom=0.02, rotation_deg=2.0)
    for seed in range(5):
        matrices = motion.clip_matrices(6, labels.shape, np.random.default_rng(seed))
        _, maps = warp_still(image, labels, matrices, ignore_index=IGNORE)
        assert not (maps[-1] == IGNORE).any()  # the last frame is the still
        ys, xs = np.mgrid[0:40, 0:60]
        for matrix, frame in zip(matrices, maps, strict=True):
            # Where in the still each output pixel comes from; a pixel's margin of 1 avoids rounding edges.
            inverse = np.linalg.inv(matrix)
            sx = inverse[0, 0] * xs + inverse[0, 1] * ys + inverse[0, 2]
            sy = inverse[1, 0] * xs + inverse[1, 1] * ys + inverse[1, 2]
            outside = (sx < -1.5) | (sx > 60.5) | (sy < -1.5) | (sy > 40.5)
            inside = (sx > 0.5) & (sx < 58.5) & (sy > 0.5) & (sy < 38.5)
            assert (frame[outside] == IGNORE).all() and not (frame[inside] == IGNORE).any()


def _decompose(step: np.ndarray, image_size: tuple[int, int]) -> tuple[np.ndarray, float, float]:
    """Shift of the image centre (pixels), zoom and rotation (radians) of one frame-to-frame step."""
    h, w = image_size
    centre = np.array([(w - 1) / 2, (h - 1) / 2, 1.0])
    shift = (step @ centre)[:2] - centre[:2]
    return shift, math.sqrt(np.linalg.det(step[:2, :2])) - 1.0, math.atan2(step[1, 0], step[0, 0])


def test_motion_is_smooth_and_within_its_bounds_from_frame_to_frame():
    motion = EgoMotion()  # 0.5-3 % of the width per frame, zoom up to 2 %, 0.5 degrees, 10 % acceleration
    size = (360, 480)
    for seed in range(20):
        matrices = motion.clip_matrices(8, size, np.random.default_rng(seed))
        assert matrices.shape == (8, 3, 3) and np.allclose(matrices[-1], np.eye(3))
        steps = [matrices[t + 1] @ np.linalg.inv(matrices[t]) for t in range(7)]
        shifts, zooms, angles = zip(*(_decompose(s, size) for s in steps), strict=True)
        speeds = np.linalg.norm(shifts, axis=1) / size[1]
        assert ((speeds >= 0.005 - 1e-9) & (speeds <= 0.03 + 1e-9)).all(), speeds
        assert np.abs(zooms).max() <= 0.02 + 1e-9 and np.abs(angles).max() <= math.radians(0.5) + 1e-9
        # Smooth: one direction per clip, and speeds change by at most the acceleration per frame.
        directions = np.array(shifts) / np.linalg.norm(shifts, axis=1, keepdims=True)
        assert np.allclose(directions, directions[0], atol=1e-6)
        for series in (speeds, np.abs(zooms), np.abs(angles)):
            ratios = np.array(series[1:]) / np.maximum(np.array(series[:-1]), 1e-12)
            assert ((ratios >= 0.9 - 1e-6) & (ratios <= 1.1 + 1e-6)).all(), ratios
    still = _still()
    for bad in ({"shift": (0.03, 0.01)}, {"zoom": -0.1}, {"acceleration": 1.0}):
        with pytest.raises(ValueError):
            EgoMotion(**bad)
    assert warp_still(*still, np.eye(3)[None], ignore_index=IGNORE)[0].shape == (1, 12, 16, 3)


def test_clips_are_deterministic_for_a_seed_and_end_at_the_still():
    augmentation = ClipAugmentation(crop_size=(24, 48), scale_range=(0.9, 1.1), hflip=True, brightness=0.2)
    clips = EgoMotionClips(_stills(), clip_length=4, augmentation=augmentation, keyframe_offset=KeyframeOffset(1, 3))

    def draw(seed: int) -> dict:
        torch.manual_seed(seed)
        return clips[1]

    a, b, c = draw(0), draw(0), draw(1)
    assert a["frames"].shape == (4, 3, 24, 48) and a["labels"].shape == (4, 24, 48)
    assert torch.equal(a["frames"], b["frames"]) and torch.equal(a["labels"], b["labels"])
    assert a["keyframe_index"] == b["keyframe_index"] and a["info"] == b["info"]
    assert not torch.equal(a["frames"], c["frames"])
    # Without augmentation, the last frame is the still itself; the frames before it move.
    plain = EgoMotionClips(_stills(), clip_length=3)
    torch.manual_seed(0)
    item = plain[1]
    image, labels, _ = plain.still(1)
    assert torch.equal(item["labels"][-1], torch.from_numpy(labels).long())
    assert torch.equal((item["frames"][-1].permute(1, 2, 0) * 255).round().byte(), torch.from_numpy(image))
    assert not torch.equal(item["labels"][0], item["labels"][-1])


def test_camvid_stills_become_clips(tmp_path):
    for frame, value in ((30, 1), (60, 2)):
        image, labels = np.full((12, 16, 3), value * 40, np.uint8), np.full((12, 16), value, np.uint8)
        for folder, data in (("train", image), ("trainannot", labels)):
            (tmp_path / folder).mkdir(exist_ok=True)
            cv2.imwrite(str(tmp_path / folder / f"0016E5_{frame:05d}.png"), data)
    clips = EgoMotionClips(CamVidClips(tmp_path, clip_length=1), clip_length=5)
    assert len(clips) == 2 and clips.ignore_index == 11
    torch.manual_seed(0)
    item = clips[1]
    assert item["frames"].shape == (5, 3, 12, 16) and set(item["labels"].unique().tolist()) <= {2, 11}
    assert (item["labels"][-1] == 2).all()


def test_stills_must_be_single_unaugmented_frames():
    with pytest.raises(ValueError, match="stills must come without augmentation"):
        EgoMotionClips(create_dataset("synthetic", clip_length=1, num_clips=2, augmentation=ClipAugmentation()))
    with pytest.raises(ValueError, match=r"single frames \(clip_length=1\), got 2"):
        EgoMotionClips(_stills(clip_length=2), clip_length=3)[0]
    with pytest.raises(ValueError, match="keyframe offsets up to 3 need clip_length > 3"):
        EgoMotionClips(_stills(), clip_length=3, keyframe_offset=KeyframeOffset(0, 3))


def test_a_convlstm_trains_on_ego_motion_clips_and_the_run_is_a_function_of_its_seed(tmp_path):
    settings = {
        "model": "lstm_icnet_v2", "model_config": {"width": 0.125}, "dataset": "synthetic", "height": 32,
        "width": 64, "num_clips": 2, "clip_length": 3, "batch_size": 2, "warmup_steps": 0, "val_split": None,
        "progress": False, "device": "cpu", "optimizer": "adam", "lr": 2e-3, "clip_source": "ego-motion",
    }  # fmt: skip
    config = TrainConfig(out_dir=str(tmp_path / "a"), steps=6, **settings)
    clips = EgoMotionClips(_stills(2), clip_length=3)
    torch.manual_seed(123)  # a fixed set of ego-motion clips to score the model on
    items = [clips[i % 2] for i in range(4)]
    frames, labels = torch.stack([x["frames"] for x in items]), torch.stack([x["labels"] for x in items])

    def loss_of(model: torch.nn.Module) -> float:
        model.train()
        with torch.no_grad():
            return float(clip_loss(model.forward_clip(frames, [2]), labels[:, -1:], SYNTHETIC.ignore_index))

    torch.manual_seed(0)
    before = loss_of(create_model("lstm_icnet_v2", num_classes=SYNTHETIC.num_classes, width=0.125))
    result = train(config)
    after = loss_of(load_checkpoint(Path(config.out_dir) / "checkpoint.safetensors"))
    assert after < before - 0.05, (before, result.losses, after)
    # The same seed with a loader worker draws the same clips (data order = f(seed, draw)).
    again = train(TrainConfig(out_dir=str(tmp_path / "b"), steps=2, workers=1, **settings))
    assert again.losses == result.losses[:2]
