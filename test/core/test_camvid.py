"""CamVid (SegNet layout): sequences, runs, clips, bad layouts; and the real copy when present."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from vseg_core.data import CamVidClips, ClipAugmentation, DatasetLayoutError, camvid_sequences, create_dataset

REAL = Path(__file__).resolve().parents[3] / "shared" / "data" / "camvid"


def _write(root: Path, split: str, name: str, value: int, size=(12, 16)) -> None:
    (root / split).mkdir(parents=True, exist_ok=True)
    (root / f"{split}annot").mkdir(parents=True, exist_ok=True)
    image = np.full((*size, 3), value, np.uint8)
    image[..., 0] = value  # red channel carries the frame's identity (RGB order on reading)
    image[..., 2] = 0
    cv2.imwrite(str(root / split / name), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(root / f"{split}annot" / name), np.full(size, value % 12, np.uint8))


@pytest.fixture
def fixture_root(tmp_path):
    # Written out of order, with an f-prefixed sequence and a gap that splits 0016E5.
    for i, frame in enumerate([120, 30, 60, 90, 31 * 30 + 900]):
        _write(tmp_path, "train", f"0016E5_{frame:05d}.png", 1 + i)
    for i, frame in enumerate([960, 930, 990]):
        _write(tmp_path, "train", f"0006R0_f{frame:05d}.png", 20 + i)
    (tmp_path / "train" / "README.txt").write_text("not a frame")
    return tmp_path


def test_sequences_are_ordered_by_frame_number_and_split_at_gaps(fixture_root):
    runs = camvid_sequences(fixture_root, "train")
    assert [[(f.sequence, f.frame) for f in run] for run in runs] == [
        [("0006R0", 930), ("0006R0", 960), ("0006R0", 990)],
        [("0016E5", 30), ("0016E5", 60), ("0016E5", 90), ("0016E5", 120)],
        [("0016E5", 1830)],
    ]


def test_clips_end_at_labelled_frames_with_aligned_labels(fixture_root):
    data = CamVidClips(fixture_root, clip_length=3)
    assert len(data) == 1 + 2  # a clip never crosses a gap or a sequence boundary
    assert [f.frame for f in data.clip_frames(2)] == [60, 90, 120]
    sample = data[2]
    assert sample["frames"].shape == (3, 3, 12, 16) and sample["labels"].shape == (3, 12, 16)
    red = (sample["frames"][:, 0, 0, 0] * 255).round().long()
    # Frames 60, 90, 120 were written as values 3, 4, 1: image and label of each frame belong together.
    assert red.tolist() == [3, 4, 1] and sample["labels"][:, 0, 0].tolist() == [3, 4, 1]
    assert sample["info"] == {"sequence": "0016E5", "frames": [60, 90, 120]}


def test_augmentation_is_identical_across_the_clip(fixture_root):
    aug = ClipAugmentation(crop_size=(8, 8), scale_range=(0.5, 2.0), hflip=True, brightness=0.3)
    data = CamVidClips(fixture_root, clip_length=3, augmentation=aug)
    torch.manual_seed(3)
    sample = data[2]
    # Each frame is one flat colour, so an identical crop leaves the same ignore pattern everywhere.
    void = sample["labels"] == 11
    assert sample["frames"].shape == (3, 3, 8, 8) and (void == void[0]).all()


@pytest.mark.parametrize(
    ("damage", "missing"),
    [
        (lambda r: r / "nowhere", "nowhere"),
        (lambda r: (r / "train").rename(r / "images") and r, "train"),
        (lambda r: [p.unlink() for p in (r / "trainannot").glob("0006R0*")] and r, "trainannot/0006R0_f00930.png"),
    ],
)
def test_wrong_layout_names_the_layout_and_the_first_missing_path(fixture_root, damage, missing):
    root = damage(fixture_root)
    with pytest.raises(DatasetLayoutError, match=r"expected layout: ROOT/train/SEQ_FRAME\.png") as info:
        camvid_sequences(root, "train")
    message = str(info.value)
    assert message.startswith((f"missing folder {fixture_root / missing};", f"missing file {fixture_root / missing} "))


def test_colour_labels_are_refused(fixture_root):
    name = "0006R0_f00930.png"
    cv2.imwrite(str(fixture_root / "trainannot" / name), np.zeros((12, 16, 3), np.uint8))
    data = CamVidClips(fixture_root, clip_length=1)
    with pytest.raises(DatasetLayoutError, match="8-bit single-channel"):
        data[0]


def test_clip_longer_than_any_run(fixture_root):
    with pytest.raises(ValueError, match="longest has 4"):
        CamVidClips(fixture_root, clip_length=5)


@pytest.mark.skipif(not REAL.is_dir(), reason=f"no CamVid copy at {REAL}")
def test_real_camvid_copy():
    runs = camvid_sequences(REAL, "train")
    assert sum(len(r) for r in runs) == 367
    assert [(r[0].sequence, r[0].frame, len(r)) for r in runs][:2] == [("0001TP", 6690, 62), ("0006R0", 930, 101)]
    assert all(np.diff([f.frame for f in r]).max(initial=0) <= 45 for r in runs)
    val = create_dataset("camvid", root=REAL, split="val", clip_length=4)
    assert len(val.sequences) == 1 and len(val.sequences[0]) == 101 and len(val) == 98
    sample = val[0]
    assert sample["frames"].shape == (4, 3, 360, 480) and sample["labels"].shape == (4, 360, 480)
    assert int(sample["labels"].max()) <= 11 and sample["info"]["frames"] == [7959, 7961, 7963, 7965]
