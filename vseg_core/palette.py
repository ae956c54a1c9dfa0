"""Class names and display colours of a label set, and the built-in ones (CamVid, Cityscapes).

config/palettes/*.yaml hold the same sets for users to copy and edit; a test keeps them equal.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass
from pathlib import Path

import yaml

__all__ = ["CAMVID", "CITYSCAPES", "ClassPalette", "PaletteError", "load_palette_file"]

_MAX_PALETTE_FILE_BYTES = 1 << 20
_MAX_CLASSES = 65536  # label images are mono16 at most


class PaletteError(ValueError):
    """A palette file or value that cannot be used; the message says what was expected."""


@dataclass(frozen=True)
class ClassPalette:
    """names[i] and colors[i] (r, g, b in 0..255) describe label value i.

    ignore_index: the label value that marks pixels without a class in ground truth (-1: none).
    """

    names: tuple[str, ...]
    colors: tuple[tuple[int, int, int], ...]
    ignore_index: int = -1

    def __post_init__(self) -> None:
        if not self.names or len(self.names) > _MAX_CLASSES:
            raise PaletteError(f"a palette needs 1..{_MAX_CLASSES} classes, got {len(self.names)}")
        if len(self.colors) != len(self.names):
            raise PaletteError(f"{len(self.names)} class names but {len(self.colors)} colours")
        if len(set(self.names)) != len(self.names):
            raise PaletteError(f"class names must be distinct, got {self.names}")
        for name, color in zip(self.names, self.colors, strict=True):
            if len(color) != 3 or not all(isinstance(c, int) and 0 <= c <= 255 for c in color):
                raise PaletteError(f"colour of class {name!r} must be 3 integers in 0..255, got {color}")
        if self.ignore_index < -1 or 0 <= self.ignore_index < len(self.names):
            raise PaletteError(
                f"ignore_index must be -1 or a value above the {len(self.names)} classes, got {self.ignore_index}"
            )

    @property
    def num_classes(self) -> int:
        return len(self.names)

    @classmethod
    def generic(cls, num_classes: int) -> ClassPalette:
        """Names class_0.. and well-separated colours, for models trained without a label set."""
        golden = 0.618033988749895  # successive hues as far apart as possible for any count
        colors = []
        for i in range(num_classes):
            r, g, b = colorsys.hsv_to_rgb((i * golden) % 1.0, 0.65, 0.95 - 0.3 * ((i // 7) % 2))
            colors.append((round(r * 255), round(g * 255), round(b * 255)))
        return cls(tuple(f"class_{i}" for i in range(num_classes)), tuple(colors))

    def to_dict(self) -> dict:
        return {
            "ignore_index": self.ignore_index,
            "classes": [{"name": n, "color": list(c)} for n, c in zip(self.names, self.colors, strict=True)],
        }

    @classmethod
    def from_dict(cls, data: object, *, source: str = "palette") -> ClassPalette:
        expected = "a mapping with 'classes' (a list of {name, color: [r, g, b]}) and optional 'ignore_index'"
        if not isinstance(data, dict) or not isinstance(data.get("classes"), list):
            raise PaletteError(f"{source}: expected {expected}")
        names, colors = [], []
        for i, entry in enumerate(data["classes"]):
            if not isinstance(entry, dict) or not isinstance(entry.get("name"), str) or "color" not in entry:
                raise PaletteError(f"{source}: class {i} must be {{name: str, color: [r, g, b]}}, got {entry!r}")
            names.append(entry["name"])
            colors.append(tuple(entry["color"]) if isinstance(entry["color"], list) else entry["color"])
        ignore = data.get("ignore_index", -1)
        if not isinstance(ignore, int):
            raise PaletteError(f"{source}: ignore_index must be an integer, got {ignore!r}")
        try:
            return cls(tuple(names), tuple(colors), ignore)
        except PaletteError as exc:
            raise PaletteError(f"{source}: {exc}") from None


def load_palette_file(path: str | Path) -> ClassPalette:
    """Read a palette YAML file (format of config/palettes/camvid.yaml)."""
    path = Path(path)
    if not path.is_file():
        raise PaletteError(f"palette file {path} does not exist")
    if path.stat().st_size > _MAX_PALETTE_FILE_BYTES:
        raise PaletteError(f"palette file {path} is larger than {_MAX_PALETTE_FILE_BYTES} bytes")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise PaletteError(f"palette file {path} is not valid YAML: {exc}") from None
    return ClassPalette.from_dict(data, source=str(path))


CAMVID = ClassPalette(
    names=(
        "sky", "building", "pole", "road", "pavement", "tree",
        "sign_symbol", "fence", "car", "pedestrian", "bicyclist",
    ),
    colors=(
        (128, 128, 128), (128, 0, 0), (192, 192, 128), (128, 64, 128), (60, 40, 222), (128, 128, 0),
        (192, 128, 128), (64, 64, 128), (64, 0, 128), (64, 64, 0), (0, 128, 192),
    ),
    ignore_index=11,
)  # fmt: skip

CITYSCAPES = ClassPalette(
    names=(
        "road", "sidewalk", "building", "wall", "fence", "pole", "traffic_light", "traffic_sign",
        "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train",
        "motorcycle", "bicycle",
    ),
    colors=(
        (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153), (153, 153, 153),
        (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152), (70, 130, 180), (220, 20, 60),
        (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100), (0, 80, 100), (0, 0, 230), (119, 11, 32),
    ),
    ignore_index=255,
)  # fmt: skip
