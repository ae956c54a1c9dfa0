"""Cityscapes snippets and training clips in the official layout, on a tiny generated copy."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from cityscapes_fixture import LABEL_IDS, TEXTURE, make_cityscapes
from torch.utils.data import default_collate

from vseg_core.data import ClipAugmentation, KeyframeOffset, create_dataset, dataset_palette, list_datasets
from vseg_core.data.cityscapes import CityscapesClips, cityscapes_snippets, label_ids_to_train_ids
from vseg_core.data.layout import DatasetLayoutError
from vseg_core.evaluate import evaluation_sequences
from vseg_core.palette import CITYSCAPES


def test_snippets_end_at_the_annotated_frame_and_labels_become_train_ids(tmp_path):
    make_cityscapes(tmp_path)
    snippets = cityscapes_snippets(tmp_path, "val")
    assert [(s.city, s.sequence, len(s.images), s.labelled) for s in snippets] == [
        ("aachen", 1, 20, 19),
        ("bochum", 7, 20, 19),
    ]
    assert snippets[1].images[-1].name == "bochum_000007_000119_leftImg8bit.png"
    sequences, palette = evaluation_sequences("cityscapes", root=tmp_path, split="val", sequences=1)
    (seq,) = sequences
    assert palette.num_classes == 19 and len(seq.frames) == 20
    assert all(g is None for g in seq.labels[:19])
    np.testing.assert_array_equal(np.unique(seq.labels[19]), [0, 13, 18, 255])
    assert int(seq.frames[0][0, 0, 0]) == 0 and int(seq.frames[19][0, 0, 0]) == 19


def test_label_id_table():
    ids = np.array([[7, 8, 11, 26, 33, 0, 1, 255]], np.uint8)
    np.testing.assert_array_equal(label_ids_to_train_ids(ids), [[0, 1, 2, 13, 18, 255, 255, 255]])


def test_wrong_layout_names_the_first_missing_path(tmp_path):
    with pytest.raises(DatasetLayoutError, match=r"missing folder .*leftImg8bit_sequence/val; expected layout"):
        cityscapes_snippets(tmp_path, "val")
    make_cityscapes(tmp_path)
    (tmp_path / "leftImg8bit_sequence/val/aachen/aachen_000001_000005_leftImg8bit.png").unlink()
    with pytest.raises(DatasetLayoutError, match=r"missing file .*aachen_000001_000005_leftImg8bit\.png"):
        cityscapes_snippets(tmp_path, "val")


def _train_ids() -> np.ndarray:
    return label_ids_to_train_ids(LABEL_IDS)


def test_clips_end_at_the_annotated_frame_with_consecutive_frames(tmp_path):
    make_cityscapes(tmp_path, split="train")
    data = CityscapesClips(tmp_path, split="train", clip_length=4)
    assert len(data) == 2 and data.palette is CITYSCAPES
    for index, (name, last) in enumerate([("aachen_000001", 19), ("bochum_000007", 119)]):
        sample = data[index]
        assert sample["frames"].shape == (4, 3, 8, 16) and sample["frames"].dtype == torch.float32
        assert sample["labels"].shape == (1, 8, 16) and sample["labels"].dtype == torch.int64
        # Red carries the frame number: the clip is the 4 frames up to and including the annotated one.
        red = (sample["frames"][:, 0] * 255).round().long()
        assert red[:, 0, 0].tolist() == list(range(last - 3, last + 1)) and (red == red[:, :1, :1]).all()
        np.testing.assert_array_equal(sample["labels"][0].numpy(), _train_ids())
        assert sample["info"] == {"sequence": name, "frames": list(range(last - 3, last + 1))}
        assert sample["keyframe_index"] == 0


def test_clip_length_bounds_and_keyframe_offsets(tmp_path):
    make_cityscapes(tmp_path)
    whole = CityscapesClips(tmp_path, split="val", clip_length=20)[0]
    assert (whole["frames"][:, 0, 0, 0] * 255).round().long().tolist() == list(range(20))
    single = CityscapesClips(tmp_path, split="val", clip_length=1)[1]
    assert single["frames"].shape[0] == 1 and round(float(single["frames"][0, 0, 0, 0]) * 255) == 119
    for bad in (0, 21):
        with pytest.raises(ValueError, match=r"clip_length must be in 1\.\.20"):
            CityscapesClips(tmp_path, split="val", clip_length=bad)
    with pytest.raises(ValueError, match="keyframe offsets up to 4 need clip_length > 4"):
        CityscapesClips(tmp_path, split="val", clip_length=4, keyframe_offset=KeyframeOffset(4, 4))
    fixed = CityscapesClips(tmp_path, split="val", clip_length=5, keyframe_offset=KeyframeOffset(4, 4))
    assert fixed[0]["keyframe_index"] == 0  # offset K-1 = 4 frames before the annotated last one
    drawn = CityscapesClips(tmp_path, split="val", clip_length=5, keyframe_offset=KeyframeOffset(1, 3))
    torch.manual_seed(0)
    assert {drawn[0]["keyframe_index"] for _ in range(30)} == {1, 2, 3}


def test_augmentation_is_identical_across_the_clip_and_its_label(tmp_path):
    make_cityscapes(tmp_path)
    aug = ClipAugmentation(crop_size=(6, 12), scale_range=(0.5, 2.0), hflip=True, brightness=0.3, contrast=0.3)
    data = CityscapesClips(tmp_path, split="val", clip_length=5, augmentation=aug)
    torch.manual_seed(5)
    for _ in range(8):
        frames = data[1]["frames"]
        assert frames.shape == (5, 3, 6, 12)
        # Green and blue are one texture in every frame: one transform for all leaves them equal.
        assert (frames[:, 1:] == frames[:1, 1:]).all()
    # Flips: the label turns with the frames (the texture grows to the right, unflipped).
    flipped = set()
    flips = CityscapesClips(tmp_path, split="val", clip_length=3, augmentation=ClipAugmentation(hflip=True))
    texture = torch.from_numpy(TEXTURE.astype(np.float32) / 255)
    for _ in range(12):
        sample = flips[0]
        green, labels = sample["frames"][:, 1], sample["labels"][0].numpy()
        flip = bool(torch.allclose(green[-1], texture.flip(-1)))
        assert flip or torch.allclose(green[-1], texture)
        np.testing.assert_array_equal(labels, _train_ids()[:, ::-1] if flip else _train_ids())
        flipped.add(flip)
    assert flipped == {True, False}


def test_registered_as_cityscapes_and_batches_collate(tmp_path):
    make_cityscapes(tmp_path, split="train")
    data = create_dataset("cityscapes", root=tmp_path, split="train", clip_length=2)
    assert isinstance(data, CityscapesClips) and dataset_palette("cityscapes") is CITYSCAPES
    assert "cityscapes" in list_datasets()
    batch = default_collate([data[0], data[1]])
    assert batch["frames"].shape == (2, 2, 3, 8, 16) and batch["labels"].shape == (2, 1, 8, 16)
    with pytest.raises(ValueError, match="needs root="):
        create_dataset("cityscapes", split="train")
    with pytest.raises(DatasetLayoutError, match=r"missing folder .*leftImg8bit_sequence/val; expected layout"):
        create_dataset("cityscapes", root=tmp_path, split="val")
