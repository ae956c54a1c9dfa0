"""A tiny Cityscapes copy in the official layout, for the tests of the loader and the bag tools."""

from __future__ import annotations

import cv2
import numpy as np


def make_cityscapes(root, split="val", snippets=(("aachen", 1, 19), ("bochum", 7, 119))):
    for city, seq, labelled in snippets:
        img_dir = root / "leftImg8bit_sequence" / split / city
        gt_dir = root / "gtFine" / split / city
        img_dir.mkdir(parents=True, exist_ok=True)
        gt_dir.mkdir(parents=True, exist_ok=True)
        for f in range(labelled - 19, labelled + 11):
            image = np.full((8, 16, 3), f % 256, np.uint8)
            cv2.imwrite(str(img_dir / f"{city}_{seq:06d}_{f:06d}_leftImg8bit.png"), image)
        ids = np.zeros((8, 16), np.uint8)
        ids[:, :4], ids[:, 4:8], ids[:, 8:12] = 7, 26, 33  # road, car, bicycle; 0 stays unlabelled
        cv2.imwrite(str(gt_dir / f"{city}_{seq:06d}_{labelled:06d}_gtFine_labelIds.png"), ids)
