"""ICNet and LSTM-ICNet against the authors' code: where the cells sit, at which resolution, what
follows them, the "Faster" reduction, and gradients through time."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from vseg_core.models.registry import create_model
from vseg_core.nn.convlstm import ConvLSTMCell
from vseg_core.nn.icnet_parts import PyramidPoolingSum

WIDTH = 0.25  # 32 channels at every cell instead of 128
H, W = 64, 128

# The cells of models/LSTM_ICNet_v{1..6}.py by their names there, and the stride of the map each
# one runs on (conv_sub4 and conv3_1_sub2_proj at 1/16, conv3_sub1_proj and sub12_sum at 1/8).
AUTHORS_CELLS = {
    "v1": {"convlstm3_sub1"},
    "v2": {"convlstm6_cls"},
    "v3": {"convlstm5_4_sub4"},
    "v4": {"convlstm5_4_sub4", "convlstm3_1_sub2"},
    "v5": {"convlstm5_4_sub4", "convlstm3_1_sub2", "convlstm3_sub1"},
    "v6": {"convlstm5_4_sub4", "convlstm3_1_sub2", "convlstm3_sub1", "convlstm6_cls"},
}
STRIDE = {"convlstm5_4_sub4": 16, "convlstm3_1_sub2": 16, "convlstm3_sub1": 8, "convlstm6_cls": 8}
# The same places by the taps of vseg's ICNetBody.
TAP = {"convlstm5_4_sub4": "sub4", "convlstm3_1_sub2": "sub2", "convlstm3_sub1": "sub1", "convlstm6_cls": "fused"}


def _frames(t: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(1, t, 3, H, W, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("version", sorted(AUTHORS_CELLS))
def test_cells_sit_where_the_authors_code_puts_them(version):
    model = create_model(f"lstm_icnet_{version}", num_classes=3, width=WIDTH).eval()
    cells = {name: m for name, m in model.named_modules() if isinstance(m, ConvLSTMCell)}
    expected = {f"temporal.{TAP[c]}.cell" for c in AUTHORS_CELLS[version]}
    assert set(cells) == expected
    sizes = {}
    hooks = [
        m.register_forward_hook(lambda m, args, out, n=n: sizes.__setitem__(n, args[0].shape)) for n, m in cells.items()
    ]
    with torch.no_grad():
        model(_frames(1)[:, 0])
    for hook in hooks:
        hook.remove()
    for cell in AUTHORS_CELLS[version]:
        s = STRIDE[cell]
        assert tuple(sizes[f"temporal.{TAP[cell]}.cell"]) == (1, 32, H // s, W // s), cell


def test_the_cell_after_the_fusion_has_its_own_norm_and_relu():
    # convlstm6_cls is followed by convlstm6_cls_bn (ReLU); the branch cells feed the norm that
    # ICNet already has after their convolution.
    model = create_model("lstm_icnet_v6", num_classes=3, width=WIDTH)
    post = model.temporal["fused"].post
    assert [type(m) for m in post] == [nn.BatchNorm2d, nn.ReLU]
    assert all(model.temporal[tap].post is None for tap in ("sub4", "sub2", "sub1"))
    block = model.temporal["fused"].eval()
    with torch.no_grad():
        post[0].running_mean.uniform_(-0.5, 0.5)
        post[0].running_var.uniform_(0.5, 2.0)
        x = torch.randn(2, 32, 5, 6)
        y, (h, _) = block(x, None)
        expected = F.relu(F.batch_norm(h, post[0].running_mean, post[0].running_var, post[0].weight, post[0].bias))
    torch.testing.assert_close(y, expected)


@pytest.mark.parametrize("conv", ["standard", "depthwise"])
def test_faster_reduction_feeds_the_cell_r_channels_and_skips_the_rest(conv):
    model = create_model("lstm_icnet_v2", num_classes=3, conv=conv, reduce_channels=32, width=WIDTH)
    block = model.temporal["fused"]
    r = 8  # 32 x width
    assert (block.cell.in_channels, block.cell.hidden_channels) == (r, r)
    assert block.reduce.weight.shape == (r, 32, 1, 1) and block.reduce.bias is None
    assert block.skip.weight.shape == (32 - r, 32, 1, 1) and block.skip.bias is None
    block.post = None  # look at the concatenation itself
    x = torch.randn(1, 32, 6, 7)
    with torch.no_grad():
        y, (h, _) = block(x, None)
        h_alone, _ = block.cell(F.conv2d(x, block.reduce.weight), None)
    assert y.shape == (1, 32, 6, 7)
    torch.testing.assert_close(y[:, :r], h_alone)
    torch.testing.assert_close(y[:, r:], F.conv2d(x, block.skip.weight))
    torch.testing.assert_close(h, h_alone)


def test_reduced_cell_costs_less():
    def cell_params(**config):
        model = create_model("lstm_icnet_v2", num_classes=3, **config)
        return sum(p.numel() for p in model.temporal["fused"].cell.parameters())

    c, k = 128, 3
    assert cell_params() == 4 * 2 * c * c * k * k + 4 * c
    for r in (64, 48, 32):
        assert cell_params(reduce_channels=r) == 4 * 2 * r * r * k * k + 4 * r


def test_gradients_flow_back_through_time():
    # Loss on the last frame of a 3-frame clip: the first frame reaches it only through the cell state.
    model = create_model("lstm_icnet_v2", num_classes=3, width=WIDTH).train()
    clip = _frames(3).requires_grad_(True)
    model.forward_clip(clip, output_frames=(-1,)).square().mean().backward()
    assert clip.grad[:, 0].abs().sum() > 0
    icnet = create_model("icnet", num_classes=3, width=WIDTH).train()
    clip.grad = None
    icnet.forward_clip(clip, output_frames=(-1,)).square().mean().backward()
    assert clip.grad[:, 0].abs().sum() == 0 and clip.grad[:, 2].abs().sum() > 0


def test_icnet_fuses_at_one_eighth_and_classifies_at_one_quarter():
    model = create_model("icnet", num_classes=5, width=WIDTH).eval()
    shapes = {}
    model.classifier.register_forward_hook(lambda m, args, out: shapes.update(features=args[0].shape, scores=out.shape))
    frame = torch.rand(1, 3, 65, 97)
    with torch.no_grad():
        logits = model(frame)
    # Three 3x3 stride-2 convolutions with padding 1 on the high branch: n -> (n - 1) // 2 + 1.
    eighth = [65, 97]
    for _ in range(3):
        eighth = [(n - 1) // 2 + 1 for n in eighth]
    assert tuple(shapes["features"]) == (1, 32, 2 * eighth[0], 2 * eighth[1])
    assert tuple(shapes["scores"]) == (1, 5, 2 * eighth[0], 2 * eighth[1])
    assert logits.shape == (1, 5, 65, 97)


def test_pyramid_pooling_adds_the_pooled_grids_to_its_input():
    x = torch.randn(2, 3, 12, 24, dtype=torch.float64)
    expected = x.clone()
    for bins in (1, 2, 3, 4):
        # Fixed windows as in the authors' code (avg_pool of size and stride map / bins).
        pooled = F.avg_pool2d(x, kernel_size=(12 // bins, 24 // bins))
        expected += F.interpolate(pooled, size=(12, 24), mode="bilinear", align_corners=False)
    torch.testing.assert_close(PyramidPoolingSum((1, 2, 3, 4))(x), expected)
