"""ResNet feature nets (stride 16, deformable conv5), the DeepLab head and the deeplabXX models."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode
from torchvision.models import resnet18
from torchvision.ops import deform_conv2d

from vseg_core.models.registry import create_model
from vseg_core.nn.heads import DeepLabHead, upsample_scores
from vseg_core.nn.resnet_features import DeformableConv2d, resnet_features

H, W = 65, 97


@pytest.mark.parametrize("depth", [18, 34, 50, 101])
def test_features_have_2048_channels_at_stride_16(depth):
    net = resnet_features(depth, width=0.25).eval()
    with torch.no_grad():
        out = net(torch.rand(1, 3, H, W))
    assert out.shape == (1, net.out_channels, *net.feature_size(H, W))
    assert net.out_channels == 512  # 2048 x 0.25
    # Stride 16 covers the frame; ResNet-18/34 come from stride 32 x 2, so they may pad one more cell.
    h, w = out.shape[-2:]
    assert h * 16 >= H and w * 16 >= W and (h - 2) * 16 < H and (w - 2) * 16 < W
    assert all(isinstance(block.conv2, DeformableConv2d) and block.conv2.dilation == (2, 2) for block in net.layer4)


def test_offset_layout_follows_the_code():
    assert resnet_features(101, width=0.25).layer4[0].conv2.offset.out_channels == 18  # 1 group, plain 3x3
    offset = resnet_features(50, width=0.25).layer4[0].conv2.offset
    assert offset.out_channels == 72 and offset.dilation == (2, 2)  # 4 groups, dilation 2


def test_zero_offsets_make_the_deformable_net_its_dilated_twin():
    deformable = resnet_features(50, width=0.25).eval()
    plain = resnet_features(50, width=0.25, deformable=False).eval()
    missing, unexpected = plain.load_state_dict(deformable.state_dict(), strict=False)
    assert missing == [] and all(".conv2.offset." in k for k in unexpected) and unexpected
    x = torch.rand(1, 3, 48, 64)
    with torch.no_grad():
        torch.testing.assert_close(deformable(x), plain(x), rtol=1e-4, atol=1e-5)


def test_torchvision_weights_load_by_name():
    ours = resnet_features(18).state_dict()
    theirs = {k: v for k, v in resnet18(weights=None).state_dict().items() if not k.startswith("fc.")}
    assert {k: v.shape for k, v in theirs.items()} == {k: ours[k].shape for k in theirs}


def test_bad_depth():
    with pytest.raises(ValueError, match=r"\[18, 34, 50, 101\]"):
        resnet_features(152)


def test_flop_counter_sees_deformable_convolutions():
    conv = DeformableConv2d(8, 16, dilation=2)
    with FlopCounterMode(display=False) as counter:
        conv(torch.rand(1, 8, 10, 12))
    dense = 2 * 8 * 16 * 9 * 10 * 12
    offsets = 2 * 8 * 18 * 9 * 10 * 12
    assert counter.get_total_flops() == dense + offsets


def test_deformable_convolution_runs_in_fp32_under_cpu_bf16_autocast():
    # torchvision's CPU kernel has no bf16: under autocast (bf16 training on a CPU) the layer
    # computes in fp32, as torchvision's CUDA autocast rule does.
    torch.manual_seed(0)
    conv = DeformableConv2d(8, 16, dilation=2)
    torch.nn.init.normal_(conv.offset.weight, std=0.1)  # offsets that move the samples
    for x in (torch.rand(1, 8, 10, 12), torch.rand(1, 8, 10, 12).bfloat16()):  # a bf16 one: a conv's output
        with torch.autocast("cpu", torch.bfloat16):
            y = conv(x)
            offset = conv.offset(x).float()
        assert y.dtype == torch.float32
        expected = deform_conv2d(x.float(), offset, conv.weight, padding=2, dilation=2)
        torch.testing.assert_close(y, expected)


def test_x16_upsampling_is_the_codes_fixed_bilinear_deconvolution_away_from_the_border():
    c, h, w = 3, 4, 6
    scores = torch.randn(1, c, h, w, dtype=torch.float64)
    # The code: mx.init.Bilinear's 32x32 kernel, stride 16, one group per class, cropped at offset 8.
    k = 1 - (torch.arange(32, dtype=torch.float64) - 15.5).abs() / 16
    kernel = (k[:, None] * k[None, :]).expand(c, 1, 32, 32)
    deconv = F.conv_transpose2d(scores, kernel, stride=16, groups=c)[..., 8 : 8 + 16 * h, 8 : 8 + 16 * w]
    ours = upsample_scores(scores, (16 * h, 16 * w))
    assert ours.shape == deconv.shape
    # Between the outermost cell centres (pixels 8 .. 16 n - 9) they agree ...
    torch.testing.assert_close(ours[..., 8:-8, 8:-8], deconv[..., 8:-8, 8:-8])
    differs = ~torch.isclose(ours, deconv).all(dim=1)[0]
    rows = differs[:, 8:-8].any(1).nonzero().flatten().tolist()
    cols = differs[8:-8, :].any(0).nonzero().flatten().tolist()
    assert rows == [*range(8), *range(16 * h - 8, 16 * h)]
    assert cols == [*range(8), *range(16 * w - 8, 16 * w)]
    # ... and in the 8-pixel bands outside them the deconvolution, zero-padded, weighs the edge cell
    # by (8.5 + d) / 16 at distance d from the edge where interpolation repeats it: the same factor
    # for every class, so the labels agree everywhere, the logits do not.
    fade = (8.5 + torch.arange(8, dtype=torch.float64)) / 16
    interior = slice(8, 16 * w - 8)
    torch.testing.assert_close(deconv[0, :, :8, interior], ours[0, :, :8, interior] * fade[:, None])
    torch.testing.assert_close(deconv[0, :, -8:, interior], ours[0, :, -8:, interior] * fade.flip(0)[:, None])
    torch.testing.assert_close(deconv[0, :, 0, 0], scores[0, :, 0, 0] * (17 / 32) ** 2)
    assert torch.equal(ours.argmax(1), deconv.argmax(1))
    # A frame that ends more than 8 pixels before the grid's edge has only the leading bands.
    frame = upsample_scores(scores, (16 * h - 9, 16 * w - 9))
    torch.testing.assert_close(frame[..., 8:, 8:], deconv[..., 8 : 16 * h - 9, 8 : 16 * w - 9])


def test_head_shapes_and_errors():
    head = DeepLabHead(32, 5, hidden_channels=16)
    assert head(torch.rand(2, 32, 5, 7), (H, W)).shape == (2, 5, H, W)
    with pytest.raises(ValueError, match=r"\(B, 32, h, w\)"):
        head(torch.rand(2, 31, 5, 7), (H, W))
    with pytest.raises(ValueError, match="less than the 96x97 frame"):
        upsample_scores(torch.rand(1, 5, 5, 7), (96, 97))


@pytest.mark.parametrize("name", ["deeplab18", "deeplab34", "deeplab50", "deeplab101"])
def test_deeplab_models(name):
    model = create_model(name, num_classes=7, width=0.25).eval()
    frame = torch.rand(1, 3, H, W)
    with torch.no_grad():
        out = model.step(frame, model.init_state(frame))
    assert out.logits.shape == (1, 7, H, W) and torch.isfinite(out.logits).all()
    assert model.head.fc6.out_channels == 256 and math.isclose(model.features.out_channels, 512)
