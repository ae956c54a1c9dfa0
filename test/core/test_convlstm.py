"""The ConvLSTM cell: fused equals per-gate reference, the update of the paper, cost of the variants."""

from __future__ import annotations

import pytest
import torch

from vseg_core.nn.convlstm import CONV_VARIANTS, ConvLSTMCell


def _cell(conv, c_in=6, hidden=6, k=3):
    return ConvLSTMCell(c_in, hidden, kernel_size=k, conv=conv).double()


@pytest.mark.parametrize("conv", CONV_VARIANTS)
@pytest.mark.parametrize("kernel_size", [1, 3, 5])
def test_fused_form_equals_the_per_gate_reference(conv, kernel_size):
    c_in = 6 if conv == "depthwise" else 5
    cell = _cell(conv, c_in, 6, kernel_size)
    with torch.no_grad():
        cell.bias.normal_()  # a zero bias would hide a gate-order mix-up in the bias
    x = [torch.randn(2, c_in, 9, 7, dtype=torch.float64) for _ in range(3)]
    fused = ref = None
    for xt in x:
        h_f, fused = cell(xt, fused)
        h_r, ref = cell.forward_reference(xt, ref)
        torch.testing.assert_close(h_f, h_r, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(fused[1], ref[1], rtol=1e-10, atol=1e-12)


def test_update_is_the_papers_with_forget_bias_one():
    cell = _cell("standard", 3, 4)
    x = torch.randn(1, 3, 5, 5, dtype=torch.float64)
    h0, c0 = torch.randn(1, 4, 5, 5, dtype=torch.float64), torch.randn(1, 4, 5, 5, dtype=torch.float64)
    h1, (_, c1) = cell(x, (h0, c0))
    # Gates computed independently with conv2d over the concatenated input and weights.
    w = torch.cat([cell.x_convs.weight, cell.h_convs.weight], dim=1)
    gates = torch.nn.functional.conv2d(torch.cat([x, h0], 1), w, cell.bias, padding=1)
    i, f, g, o = gates.chunk(4, 1)
    c_expected = torch.sigmoid(f + 1.0) * c0 + torch.sigmoid(i) * torch.tanh(g)
    torch.testing.assert_close(c1, c_expected)
    torch.testing.assert_close(h1, torch.sigmoid(o) * torch.tanh(c_expected))


def test_zero_state_follows_the_input_device_and_dtype():
    cell = ConvLSTMCell(3, 4).to(torch.float64)
    h, (h2, c) = cell(torch.zeros(1, 3, 4, 4, dtype=torch.float64))
    assert h.dtype == c.dtype == torch.float64 and h is h2


def test_parameter_counts_of_the_variants():
    c, k = 16, 3
    counts = {conv: sum(p.numel() for p in ConvLSTMCell(c, c, conv=conv).parameters()) for conv in CONV_VARIANTS}
    gates, bias = 4, 4 * c
    assert counts["standard"] == gates * 2 * (c * c * k * k) + bias
    assert counts["spatial"] == gates * 2 * (c * c * k + c * c * k) + bias
    assert counts["depthwise"] == gates * 2 * (c * k * k) + bias
    assert counts["separable"] == gates * 2 * (c * k * k + c * c) + bias


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kernel_size": 2}, "kernel_size must be odd"),
        ({"conv": "dilated"}, "unknown ConvLSTM conv variant 'dilated'; variants: standard, spatial"),
        ({"conv": "depthwise", "hidden": 8}, "in_channels == hidden_channels"),
    ],
)
def test_bad_settings_fail_at_construction(kwargs, message):
    hidden = kwargs.pop("hidden", 6)
    with pytest.raises(ValueError, match=message):
        ConvLSTMCell(6, hidden, **kwargs)


def test_bad_inputs_fail_with_the_expected_shape():
    cell = ConvLSTMCell(6, 4)
    with pytest.raises(ValueError, match=r"expects x of shape \(B, 6, H, W\)"):
        cell(torch.zeros(1, 5, 8, 8))
    with pytest.raises(ValueError, match=r"expects x of shape"):
        cell(torch.zeros(6, 8, 8))
    with pytest.raises(ValueError, match="state must be"):
        cell(torch.zeros(1, 6, 8, 8), (torch.zeros(1, 4, 4, 4), torch.zeros(1, 4, 4, 4)))


@pytest.mark.parametrize("conv", CONV_VARIANTS)
def test_each_gate_is_the_variants_convolution(conv):
    # Every gate's x-path rebuilt from torch.nn layers with the cell's weights, as the variant is
    # defined: standard k x k; spatial k x 1 then 1 x k; depthwise k x k per channel; separable
    # depthwise k x k then 1 x 1.
    c, k = 4, 3
    cell = ConvLSTMCell(c, c, conv=conv).double()
    convs = cell.x_convs
    x = torch.randn(1, c, 7, 6, dtype=torch.float64)
    for gate in range(4):
        rows, layers = slice(gate * c, (gate + 1) * c), []
        if conv == "standard":
            layers.append((torch.nn.Conv2d(c, c, k, padding=1, bias=False), convs.weight[rows]))
        elif conv == "spatial":
            layers.append((torch.nn.Conv2d(c, c, (k, 1), padding=(1, 0), bias=False), convs.weight_v[rows]))
            layers.append((torch.nn.Conv2d(c, c, (1, k), padding=(0, 1), bias=False), convs.weight_h[rows]))
        elif conv == "depthwise":
            layers.append((torch.nn.Conv2d(c, c, k, padding=1, groups=c, bias=False), convs.weight[rows]))
        else:
            layers.append((torch.nn.Conv2d(c, c, k, padding=1, groups=c, bias=False), convs.weight_dw[rows]))
            layers.append((torch.nn.Conv2d(c, c, 1, bias=False), convs.weight_pw[rows]))
        y = x
        for layer, weight in layers:
            with torch.no_grad():
                layer.double().weight.copy_(weight)
                y = layer(y)
        torch.testing.assert_close(convs.gate(x, gate), y)
