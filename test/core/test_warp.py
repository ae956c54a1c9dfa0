"""warp(features, flow): pixel-unit backward warping, bilinear, zeros outside, checked shapes."""

from __future__ import annotations

import pytest
import torch

from vseg_core.nn.warp import warp


def _features(b=2, c=3, h=5, w=7):
    return torch.rand(b, c, h, w, dtype=torch.float64)


def test_zero_flow_is_the_identity():
    f = _features()
    torch.testing.assert_close(warp(f, torch.zeros(2, 2, 5, 7, dtype=torch.float64)), f, rtol=0, atol=1e-12)


def test_integer_flow_moves_features_exactly_and_reads_zeros_outside():
    f = _features()
    flow = torch.zeros(2, 2, 5, 7, dtype=torch.float64)
    flow[:, 0], flow[:, 1] = 2.0, -1.0  # every output pixel reads 2 to the right and 1 up
    out = warp(f, flow)
    torch.testing.assert_close(out[:, :, 1:, :5], f[:, :, :4, 2:], rtol=0, atol=1e-12)
    # Row -1 and columns 7 and 8 do not exist (zero up to float rounding of the sample positions).
    assert out[:, :, 0].abs().max() < 1e-12
    assert out[:, :, :, 5:].abs().max() < 1e-12


def test_half_pixel_flow_averages_neighbours_and_far_flow_reads_zero():
    f = _features(1, 1, 4, 6)
    flow = torch.zeros(1, 2, 4, 6, dtype=torch.float64)
    flow[:, 0] = 0.5
    out = warp(f, flow)
    torch.testing.assert_close(out[..., :5], (f[..., :5] + f[..., 1:]) / 2)
    torch.testing.assert_close(out[..., 5], f[..., 5] / 2)  # half of the sample lies outside
    assert warp(f, torch.full_like(flow, 100.0)).abs().max() == 0


def test_one_pixel_wide_maps():
    f = _features(1, 2, 1, 1)
    torch.testing.assert_close(warp(f, torch.zeros(1, 2, 1, 1, dtype=torch.float64)), f)
    assert warp(f, torch.ones(1, 2, 1, 1, dtype=torch.float64)).abs().max() < 1e-12


def test_gradients_reach_features_and_flow():
    f = _features(1, 2, 4, 5).requires_grad_()
    flow = (0.3 * torch.rand(1, 2, 4, 5, dtype=torch.float64) + 0.1).requires_grad_()
    assert torch.autograd.gradcheck(warp, (f, flow))


def test_half_precision_features_keep_their_dtype():
    f = torch.rand(1, 4, 6, 8).half()
    assert warp(f, torch.zeros(1, 2, 6, 8)).dtype == torch.float16


@pytest.mark.parametrize(
    ("features", "flow", "match"),
    [
        (torch.zeros(1, 3, 4, 5), torch.zeros(1, 2, 4, 6), r"\(1, 2, 4, 5\)"),
        (torch.zeros(1, 3, 4, 5), torch.zeros(1, 3, 4, 5), r"\(B, 2, h, w\)"),
        (torch.zeros(2, 3, 4, 5), torch.zeros(1, 2, 4, 5), r"\(2, 2, 4, 5\)"),
        (torch.zeros(3, 4, 5), torch.zeros(1, 2, 4, 5), r"\(B, C, h, w\)"),
        (torch.zeros(1, 3, 4, 5), torch.zeros(1, 2, 4, 5, dtype=torch.int64), "floating point"),
    ],
)
def test_bad_shapes_say_what_was_expected(features, flow, match):
    with pytest.raises(ValueError, match=match):
        warp(features, flow)
