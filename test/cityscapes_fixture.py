"""A tiny Cityscapes copy in the official layout, for the tests of the loader and the bag tools.

Frame f of a snippet is 8x16 pixels: red = f % 256 (which frame it is), green and blue one texture
shared by every frame (so that one augmentation applied to a whole clip leaves them equal).
"""

from __future__ import annotations

import cv2
import numpy as np

HEIGHT, WIDTH = 8, 16
_Y, _X = np.mgrid[0:HEIGHT, 0:WIDTH]
TEXTURE = (10 + 12 * _X + 5 * _Y).astype(np.uint8)  # green; blue is its upside-down copy
LABEL_IDS = np.zeros((HEIGHT, WIDTH), np.uint8)
LABEL_IDS[:, :4], LABEL_IDS[:, 4:8], LABEL_IDS[:, 8:12] = 7, 26, 33  # road, car, bicycle; 0 stays unlabelled


def frame_rgb(f: int) -> np.ndarray:
    """The (H, W, 3) uint8 RGB image of frame number ``f``."""
    return np.stack([np.full((HEIGHT, WIDTH), f % 256, np.uint8), TEXTURE, TEXTURE[::-1]], axis=-1)


def make_cityscapes(root, split="val", snippets=(("aachen", 1, 19), ("bochum", 7, 119))):
    for city, seq, labelled in snippets:
        img_dir = root / "leftImg8bit_sequence" / split / city
        gt_dir = root / "gtFine" / split / city
        img_dir.mkdir(parents=True, exist_ok=True)
        gt_dir.mkdir(parents=True, exist_ok=True)
        for f in range(labelled - 19, labelled + 11):
            image = cv2.cvtColor(frame_rgb(f), cv2.COLOR_RGB2BGR)
            cv2.imwrite(str(img_dir / f"{city}_{seq:06d}_{f:06d}_leftImg8bit.png"), image)
        cv2.imwrite(str(gt_dir / f"{city}_{seq:06d}_{labelled:06d}_gtFine_labelIds.png"), LABEL_IDS)
