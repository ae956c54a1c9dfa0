from pathlib import Path

import pytest

from vseg_core.palette import CAMVID, CITYSCAPES, ClassPalette, PaletteError, load_palette_file

CONFIG = Path(__file__).resolve().parents[2] / "config" / "palettes"


@pytest.mark.parametrize(("file", "builtin"), [("camvid.yaml", CAMVID), ("cityscapes.yaml", CITYSCAPES)])
def test_shipped_palette_files_equal_the_builtin_sets(file, builtin):
    assert load_palette_file(CONFIG / file) == builtin


def test_dict_round_trip_and_generic_palette():
    assert ClassPalette.from_dict(CAMVID.to_dict()) == CAMVID
    generic = ClassPalette.generic(40)
    assert generic.names[39] == "class_39"
    assert len(set(generic.colors)) == 40  # distinguishable colours


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[1, 2]", "expected a mapping"),
        ("classes: [{name: a}]", "class 0 must be"),
        ("classes: [{name: a, color: [1, 2, 300]}]", "0..255"),
        ("classes: [{name: a, color: [1, 2, 3]}, {name: a, color: [1, 2, 3]}]", "distinct"),
        ("classes: [{name: a, color: [1, 2, 3]}]\nignore_index: 0", "ignore_index"),
        ("classes: [: bad", "not valid YAML"),
    ],
)
def test_bad_palette_files_say_what_was_expected(tmp_path, text, message):
    path = tmp_path / "p.yaml"
    path.write_text(text)
    with pytest.raises(PaletteError, match=message):
        load_palette_file(path)


def test_missing_palette_file(tmp_path):
    with pytest.raises(PaletteError, match="does not exist"):
        load_palette_file(tmp_path / "nope.yaml")
