"""ConvLSTM cell with standard, spatially separable, depthwise or depthwise-separable convolutions.

The cell of Pfeuffer & Dietmayer (ITSC 2019; their LSTM-ICNet code): the input x and the hidden
state h get their own convolution for each gate i, f, g, o; the two results are summed with a bias,
and

    c' = sigmoid(f + forget_bias) * c + sigmoid(i) * tanh(g)
    h' = sigmoid(o) * tanh(c')

with forget_bias = 1.0 and no peepholes. The variants replace every one of those convolutions:

- ``standard``:  k x k
- ``spatial``:   k x 1, then 1 x k
- ``depthwise``: one depthwise k x k per gate (no channel mixing; needs C_in == C_hidden)
- ``separable``: depthwise k x k, then 1 x 1 pointwise

Weights are stored per gate, gate-major (i, f, g, o). ``forward`` runs the fused form (one
convolution per stage for all four gates); ``forward_reference`` runs every gate's convolutions one
by one, as the definition reads. A test checks that both agree for every variant.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["CONV_VARIANTS", "ConvLSTMCell", "LSTMState"]

CONV_VARIANTS = ("standard", "spatial", "depthwise", "separable")
GATES = 4  # i, f, g, o

LSTMState = tuple[Tensor, Tensor]  # (h, c), each (B, C_hidden, H, W)


def _weight(*shape: int) -> nn.Parameter:
    w = torch.empty(*shape)
    # The default initialisation of nn.Conv2d, per gate: fan-in is dims 1.. of one gate's kernel.
    nn.init.kaiming_uniform_(w, a=math.sqrt(5))
    return nn.Parameter(w)


def _interleave(w: Tensor, channels: int) -> Tensor:
    """Gate-major depthwise weights (4 * C, 1, kh, kw) -> channel-major, the order a grouped conv
    with groups=C and 4 outputs per group produces."""
    return w.view(GATES, channels, *w.shape[1:]).transpose(0, 1).reshape(GATES * channels, *w.shape[1:])


def _gate_major(y: Tensor, channels: int) -> Tensor:
    """(B, C * 4, H, W) channel-major grouped-conv output -> (B, 4 * C, H, W) gate-major."""
    b, _, h, w = y.shape
    return y.view(b, channels, GATES, h, w).transpose(1, 2).reshape(b, GATES * channels, h, w)


class _GateConvs(nn.Module):
    """The four gates' convolutions of one input (x or h) of the cell, bias-free."""

    def __init__(self, variant: str, in_channels: int, out_channels: int, k: int) -> None:
        super().__init__()
        self.variant, self.c_in, self.c_out, self.k = variant, in_channels, out_channels, k
        g = GATES
        if variant == "standard":
            self.weight = _weight(g * out_channels, in_channels, k, k)
        elif variant == "spatial":
            self.weight_v = _weight(g * out_channels, in_channels, k, 1)
            self.weight_h = _weight(g * out_channels, out_channels, 1, k)
        elif variant == "depthwise":
            self.weight = _weight(g * out_channels, 1, k, k)
        else:  # separable
            self.weight_dw = _weight(g * in_channels, 1, k, k)
            self.weight_pw = _weight(g * out_channels, in_channels, 1, 1)

    def forward(self, x: Tensor) -> Tensor:
        """Fused: (B, C_in, H, W) -> (B, 4 * C_out, H, W), gates i, f, g, o along channels."""
        p = self.k // 2
        if self.variant == "standard":
            return F.conv2d(x, self.weight, padding=p)
        if self.variant == "spatial":
            y = F.conv2d(x, self.weight_v, padding=(p, 0))
            return F.conv2d(y, self.weight_h, padding=(0, p), groups=GATES)
        if self.variant == "depthwise":
            y = F.conv2d(x, _interleave(self.weight, self.c_in), padding=p, groups=self.c_in)
            return _gate_major(y, self.c_in)
        y = F.conv2d(x, _interleave(self.weight_dw, self.c_in), padding=p, groups=self.c_in)
        return F.conv2d(_gate_major(y, self.c_in), self.weight_pw, groups=GATES)

    def gate(self, x: Tensor, i: int) -> Tensor:
        """Reference: gate ``i``'s convolutions alone, (B, C_in, H, W) -> (B, C_out, H, W)."""
        p, co, ci = self.k // 2, self.c_out, self.c_in
        if self.variant == "standard":
            return F.conv2d(x, self.weight[i * co : (i + 1) * co], padding=p)
        if self.variant == "spatial":
            y = F.conv2d(x, self.weight_v[i * co : (i + 1) * co], padding=(p, 0))
            return F.conv2d(y, self.weight_h[i * co : (i + 1) * co], padding=(0, p))
        if self.variant == "depthwise":
            return F.conv2d(x, self.weight[i * co : (i + 1) * co], padding=p, groups=ci)
        y = F.conv2d(x, self.weight_dw[i * ci : (i + 1) * ci], padding=p, groups=ci)
        return F.conv2d(y, self.weight_pw[i * co : (i + 1) * co])


class ConvLSTMCell(nn.Module):
    """ConvLSTM cell; ``cell(x, state=None) -> (h, (h, c))``.

    in_channels / hidden_channels: C_in of x, C_hidden of h and c.
    kernel_size: odd k of every convolution (3 in the paper).
    conv: one of ``CONV_VARIANTS``.
    forget_bias: constant added to the forget gate before the sigmoid (1.0 in the paper).
    """

    def __init__(
        self,
        in_channels: int,
        hidden_channels: int,
        *,
        kernel_size: int = 3,
        conv: str = "standard",
        forget_bias: float = 1.0,
    ) -> None:
        super().__init__()
        if conv not in CONV_VARIANTS:
            raise ValueError(f"unknown ConvLSTM conv variant {conv!r}; variants: {', '.join(CONV_VARIANTS)}")
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd and positive (same padding), got {kernel_size}")
        if in_channels < 1 or hidden_channels < 1:
            raise ValueError(f"channel counts must be positive, got in {in_channels}, hidden {hidden_channels}")
        if conv == "depthwise" and in_channels != hidden_channels:
            raise ValueError(
                f"depthwise ConvLSTM convolutions mix no channels, so they need in_channels == hidden_channels; "
                f"got {in_channels} and {hidden_channels} (use 'separable', or reduce the input first)"
            )
        self.in_channels, self.hidden_channels = in_channels, hidden_channels
        self.kernel_size, self.conv, self.forget_bias = kernel_size, conv, forget_bias
        self.x_convs = _GateConvs(conv, in_channels, hidden_channels, kernel_size)
        self.h_convs = _GateConvs(conv, hidden_channels, hidden_channels, kernel_size)
        self.bias = nn.Parameter(torch.zeros(GATES * hidden_channels))

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.hidden_channels}, kernel_size={self.kernel_size}, conv={self.conv}"

    def _check(self, x: Tensor, state: LSTMState | None) -> LSTMState:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"ConvLSTMCell expects x of shape (B, {self.in_channels}, H, W), got {tuple(x.shape)}")
        b, _, h, w = x.shape
        if state is None:
            zeros = x.new_zeros(b, self.hidden_channels, h, w)
            return zeros, zeros
        expected = (b, self.hidden_channels, h, w)
        if tuple(state[0].shape) != expected or tuple(state[1].shape) != expected:
            raise ValueError(
                f"ConvLSTMCell state must be (h, c) of shape {expected}, got "
                f"{tuple(state[0].shape)} and {tuple(state[1].shape)}"
            )
        return state

    def _update(self, gates: Tensor, c: Tensor) -> tuple[Tensor, LSTMState]:
        i, f, g, o = gates.chunk(GATES, dim=1)
        c_next = torch.sigmoid(f + self.forget_bias) * c + torch.sigmoid(i) * torch.tanh(g)
        h_next = torch.sigmoid(o) * torch.tanh(c_next)
        return h_next, (h_next, c_next)

    def forward(self, x: Tensor, state: LSTMState | None = None) -> tuple[Tensor, LSTMState]:
        """x: (B, C_in, H, W); state: (h, c) or None for zeros on x's device and dtype."""
        h, c = self._check(x, state)
        gates = self.x_convs(x) + self.h_convs(h) + self.bias.view(1, -1, 1, 1)
        return self._update(gates, c)

    def forward_reference(self, x: Tensor, state: LSTMState | None = None) -> tuple[Tensor, LSTMState]:
        """The same cell, gate by gate, convolution by convolution (for tests and reading)."""
        h, c = self._check(x, state)
        n = self.hidden_channels
        gates = torch.cat(
            [self.x_convs.gate(x, i) + self.h_convs.gate(h, i) + self.bias[i * n : (i + 1) * n].view(1, -1, 1, 1)
             for i in range(GATES)],
            dim=1,
        )  # fmt: skip
        return self._update(gates, c)
