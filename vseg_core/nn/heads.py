"""The DeepLab task head of DFF/Accel and its x16 upsampling to the frame.

In the Accel code (``fc6``, ``score``, ``upsampling``, ``croped_score``): a 1x1 convolution from the
2048 conv5 channels to 1024 with ReLU, a 1x1 score convolution to C classes, then a fixed
(``lr_mult`` 0) bilinear 32x32 transposed convolution with stride 16, cropped at offset 8 to the
frame. That fixed kernel places score cell i at frame pixel 16 i + 7.5, as bilinear interpolation
by 16 with ``align_corners=False`` does; :func:`upsample_scores` interpolates and crops the top-left
(H, W), so the frame/feature geometry is the code's also when H or W is not a multiple of 16.

The two agree (to rounding) only between the outermost cell centres: along each axis on frame
pixels 8 .. 16 n - 9 for n cells. In the 8 pixels outside them, at distance d = 0..7 from the grid's
edge (pixel 0 or 16 n - 1), the deconvolution's missing neighbour is zero padding and the edge cell
enters with weight (8.5 + d) / 16, while interpolation clamps and repeats it. On those bands (the first 8
rows and columns of every frame; the last 8 only where H > 16 n - 8) the code's logits are the
edge values scaled by 17/32 .. 31/32 (their product at corners): the same factor for every class,
so the head's argmax agrees everywhere, but not its logits, softmax or loss.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["DeepLabHead", "upsample_scores"]


def upsample_scores(scores: Tensor, size: tuple[int, int], *, stride: int = 16) -> Tensor:
    """(B, C, h, w) scores at ``stride`` -> (B, C, H, W) logits for a frame of ``size`` = (H, W)."""
    h, w = scores.shape[-2:]
    height, width = int(size[0]), int(size[1])
    if h * stride < height or w * stride < width:
        raise ValueError(
            f"scores of {h}x{w} at stride {stride} cover {h * stride}x{w * stride} pixels, "
            f"less than the {height}x{width} frame"
        )
    up = F.interpolate(scores, scale_factor=float(stride), mode="bilinear", align_corners=False)
    return up[..., :height, :width]


class DeepLabHead(nn.Module):
    """``fc6`` (1x1, in_channels -> hidden_channels) + ReLU, ``score`` (1x1 -> num_classes), x16.

    ``forward(features, size)``: (B, in_channels, h, w) -> logits (B, num_classes, H, W) (size None:
    the scores before upsampling).
    Weights start N(0, 0.01) with zero bias, the initialisation the DFF/Accel code gives new
    1x1 layers.
    """

    def __init__(self, in_channels: int, num_classes: int, *, hidden_channels: int = 1024, stride: int = 16) -> None:
        super().__init__()
        if in_channels < 1 or hidden_channels < 1 or num_classes < 1:
            raise ValueError(
                f"channel counts must be positive, got in={in_channels} hidden={hidden_channels} classes={num_classes}"
            )
        self.in_channels = in_channels
        self.stride = stride
        self.fc6 = nn.Conv2d(in_channels, hidden_channels, 1)
        self.relu = nn.ReLU(inplace=True)
        self.score = nn.Conv2d(hidden_channels, num_classes, 1)
        for conv in (self.fc6, self.score):
            nn.init.normal_(conv.weight, 0.0, 0.01)
            nn.init.zeros_(conv.bias)

    def hidden(self, features: Tensor) -> Tensor:
        """(B, in_channels, h, w) features -> (B, hidden_channels, h, w), what ``score`` scores."""
        if features.ndim != 4 or features.shape[1] != self.in_channels:
            raise ValueError(f"the head expects (B, {self.in_channels}, h, w) features, got {tuple(features.shape)}")
        return self.relu(self.fc6(features))

    def forward(self, features: Tensor, size: tuple[int, int] | None) -> Tensor:
        """(B, in_channels, h, w) features -> logits (B, num_classes, H, W) for a frame of ``size``,
        or with ``size`` None the scores (B, num_classes, h, w) at the features' stride."""
        scores = self.score(self.hidden(features))
        return scores if size is None else upsample_scores(scores, size, stride=self.stride)
