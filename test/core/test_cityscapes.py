"""Cityscapes snippets in the official layout, on a tiny generated copy."""

from __future__ import annotations

import numpy as np
import pytest
from cityscapes_fixture import make_cityscapes

from vseg_core.data.cityscapes import cityscapes_snippets, label_ids_to_train_ids
from vseg_core.data.layout import DatasetLayoutError
from vseg_core.evaluate import evaluation_sequences


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
