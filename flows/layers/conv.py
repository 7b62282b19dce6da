"""Glow's convolutions: 'SAME' padding with an edge indicator, and the zero-initialised conv.

Kingma, Dhariwal. "Glow: Generative Flow with Invertible 1x1 Convolutions". NeurIPS 2018,
Sec. 3.3; official code ``openai/glow``, ``tfops.conv2d`` / ``tfops.conv2d_zeros`` /
``tfops.add_edge_padding``.

These are building blocks of coupling networks and priors, not bijections. With
``edge_bias=True`` (the official default), a convolution larger than 1x1 zero-pads its input
and appends one channel that is 1 on the padded border and 0 inside, so the network can tell
the image edge from a dark pixel; its kernel therefore has ``in_channels + 1`` input channels.

Example:
    >>> import torch
    >>> conv = ZeroConv2d(4, 6)
    >>> conv(torch.randn(2, 4, 5, 5)).abs().max().item()    # zero at initialisation
    0.0
    >>> conv.conv.weight.shape                              # the edge channel: 4 + 1 inputs
    torch.Size([6, 5, 3, 3])
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["Conv2dSame", "ZeroConv2d", "edge_pad"]


def edge_pad(x: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """Zero-pad by ``k // 2`` on each side and append a channel that is 1 on the padding."""
    pad = kernel_size // 2
    if pad == 0:
        return x
    batch, _, height, width = x.shape
    inside = x.new_zeros(1, 1, height, width)
    indicator = F.pad(inside, (pad, pad, pad, pad), value=1.0).expand(batch, -1, -1, -1)
    return torch.cat([F.pad(x, (pad, pad, pad, pad)), indicator], dim=1)


class Conv2dSame(nn.Module):
    """Stride-1 convolution with 'SAME' output size and Glow's edge indicator (``tfops.conv2d``).

    Weights start from ``N(0, 0.05^2)`` (``default_initializer``). ``bias=False`` is what Glow
    uses when an actnorm follows (``do_actnorm=True``).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        bias: bool = True,
        edge_bias: bool = True,
        init_std: float = 0.05,
    ) -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd, got {kernel_size}")
        self.kernel_size = kernel_size
        self.edge_bias = edge_bias and kernel_size > 1
        extra = 1 if self.edge_bias else 0
        padding = 0 if self.edge_bias else kernel_size // 2
        self.conv = nn.Conv2d(
            in_channels + extra, out_channels, kernel_size, padding=padding, bias=bias
        )
        nn.init.normal_(self.conv.weight, 0.0, init_std)
        if bias:
            nn.init.zeros_(self.conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.edge_bias:
            return self.conv(x)
        # conv(cat[pad(x), indicator]) split by input channel, which convolution is linear in:
        # the image part is an ordinary zero-padded conv, and the indicator part does not depend
        # on the batch, so it is computed once at batch size 1 and broadcast. Same result as
        # ``self.conv(edge_pad(x, k))`` without copying the padded batch.
        weight, pad = self.conv.weight, self.kernel_size // 2
        out = F.conv2d(x, weight[:, :-1], self.conv.bias, padding=pad)
        indicator = F.pad(x.new_zeros(1, 1, *x.shape[2:]), (pad, pad, pad, pad), value=1.0)
        return out + F.conv2d(indicator, weight[:, -1:])


class ZeroConv2d(Conv2dSame):
    """Glow's ``conv2d_zeros``: ``(conv(x) + b) * exp(3 * logs)``, all parameters zero at start.

    ``logs`` is one learned log-scale per output channel, multiplied by ``logscale_factor``
    (3); the layer outputs zeros until training moves it, so a coupling that ends with it
    starts as the identity and a prior that uses it starts as a standard normal.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        logscale_factor: float = 3.0,
        edge_bias: bool = True,
    ) -> None:
        super().__init__(in_channels, out_channels, kernel_size, bias=True, edge_bias=edge_bias)
        nn.init.zeros_(self.conv.weight)
        self.logscale_factor = logscale_factor
        self.logs = nn.Parameter(torch.zeros(out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = torch.exp(self.logs * self.logscale_factor).view(1, -1, 1, 1)
        return super().forward(x) * scale
