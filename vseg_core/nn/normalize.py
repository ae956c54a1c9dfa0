"""Input normalisation as a visible module of each network (never hidden in a data loader)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: The TensorFlow EfficientNet-Lite models take (x - 127) / 128 on 0..255 pixels, the same for every
#: channel; their ImageNet weights are wrong by a factor of about 2 under the statistics above.
LITE_MEAN = (127.0 / 255.0,) * 3
LITE_STD = (128.0 / 255.0,) * 3

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "LITE_MEAN", "LITE_STD", "ImageNormalize", "backbone_normalize"]


class ImageNormalize(nn.Module):
    """(x - mean) / std per channel for RGB frames in [0, 1], shape (B, 3, H, W).

    The statistics are buffers, so they follow the module's device and dtype and are saved with it.
    """

    def __init__(self, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> None:
        super().__init__()
        if len(mean) != 3 or len(std) != 3:
            raise ValueError(f"mean and std need 3 values (R, G, B), got {len(mean)} and {len(std)}")
        if min(std) <= 0:
            raise ValueError(f"std must be positive, got {tuple(std)}")
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)


def backbone_normalize(backbone: str) -> ImageNormalize:
    """The input normalisation a backbone's ImageNet weights were trained with ("lite*": TF's
    EfficientNet-Lite; anything else: torchvision's ImageNet statistics)."""
    if backbone.startswith("lite"):
        return ImageNormalize(LITE_MEAN, LITE_STD)
    return ImageNormalize()
