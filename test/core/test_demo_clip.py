"""The CamVid clip that ships inside vseg_core for `vseg demo`: complete, small, licensed, true to its source."""

from __future__ import annotations

import ast
from pathlib import Path

import cv2
import numpy as np
import pytest

from vseg_core.data import camvid_sequences
from vseg_core.data.camvid import CAMVID_DEMO_CLIP, read_camvid_frame

REPO = Path(__file__).resolve().parents[2]
REAL = REPO.parent / "shared" / "data" / "camvid"  # as test_camvid.py finds the real copy
NAMES = [f"0016E5_{frame:05d}" for frame in range(7959, 7959 + 2 * 60, 2)]


def test_the_clip_is_sixty_consecutive_val_frames_in_the_camvid_layout_under_8_mb():
    files = [p for p in CAMVID_DEMO_CLIP.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) < 8e6
    assert sorted(p.stem for p in (CAMVID_DEMO_CLIP / "val").iterdir()) == NAMES
    assert {p.suffix for p in (CAMVID_DEMO_CLIP / "val").iterdir()} == {".jpg"}
    assert sorted(p.name for p in (CAMVID_DEMO_CLIP / "valannot").iterdir()) == [f"{n}.png" for n in NAMES]
    # The readers of the full dataset read it: one run of 60 frames, every second one of the 30 fps video.
    (run,) = camvid_sequences(CAMVID_DEMO_CLIP, "val")
    assert [f"{f.sequence}_{f.frame:05d}" for f in run] == NAMES
    for frame in run:
        rgb, labels = read_camvid_frame(frame)
        assert rgb.shape == (360, 480, 3) and rgb.dtype == np.uint8
        assert labels.shape == (360, 480) and labels.dtype == np.uint8 and labels.max() <= 11


def test_the_licence_beside_the_clip_says_research_and_non_commercial_use_and_cites_camvid():
    licence = (CAMVID_DEMO_CLIP / "LICENSE").read_text(encoding="utf-8")
    readme = (CAMVID_DEMO_CLIP / "README.md").read_text(encoding="utf-8")
    for text in (licence, readme):
        assert "non-commercial" in text and "CC BY-NC" in text
        assert "Semantic object classes in video: A high-definition" in text and "Brostow" in text
    assert "Pattern Recognition Letters 30(2), 2009" in licence
    assert "07959 to 08077" in readme and "JPEG quality 90" in readme and "scripts/make_demo_clip.py" in readme


def test_installed_packages_carry_every_file_of_the_clip():
    call = next(
        node
        for node in ast.walk(ast.parse((REPO / "setup.py").read_text(encoding="utf-8")))
        if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "setup"
    )
    package_data = ast.literal_eval(next(k.value for k in call.keywords if k.arg == "package_data"))
    # setuptools globs each pattern inside the package folder, as Path.glob does here.
    shipped = {p for pattern in package_data["vseg_core"] for p in (REPO / "vseg_core").glob(pattern)}
    clip = {p for p in CAMVID_DEMO_CLIP.rglob("*") if p.is_file()}
    assert len(clip) == 2 * 60 + 2 and clip <= shipped


@pytest.mark.skipif(not (REAL / "valannot").is_dir(), reason="no copy of CamVid at ../shared/data/camvid")
def test_labels_are_the_sources_bytes_and_frames_are_the_sources_frames_up_to_jpeg_noise():
    for name in NAMES:
        label = CAMVID_DEMO_CLIP / "valannot" / f"{name}.png"
        assert label.read_bytes() == (REAL / "valannot" / f"{name}.png").read_bytes(), name
        source = cv2.imread(str(REAL / "val" / f"{name}.png")).astype(np.float64)
        frame = cv2.imread(str(CAMVID_DEMO_CLIP / "val" / f"{name}.jpg")).astype(np.float64)
        psnr = 10 * np.log10(255**2 / np.mean((frame - source) ** 2))
        assert psnr > 32, f"{name}: {psnr:.1f} dB"
