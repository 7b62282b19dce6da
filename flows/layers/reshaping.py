"""Reshaping layers: invertible downsampling (space-to-depth) and injective channel padding.

Jacobsen, Smeulders, Oyallon. "i-RevNet: Deep Invertible Networks". ICLR 2018, Sec. 3.1
(the invertible downsampling ``S`` and the injective padding of i-RevNet (a)).

``space_to_depth`` moves each ``b x b`` spatial block into channels with the i-RevNet channel
ordering (official code, ``models/model_utils.py``, class ``psi``): output channel
``(i * b + j) * C + c`` at position ``(h, w)`` holds input channel ``c`` at
``(h * b + i, w * b + j)``. It is a permutation of the entries, so its log-determinant is
zero and its inverse is exact bit for bit.

Example:
    >>> import torch
    >>> x = torch.arange(16.0).reshape(1, 1, 4, 4)
    >>> y = space_to_depth(x, 2)
    >>> y.shape, torch.equal(depth_to_space(y, 2), x)
    (torch.Size([1, 4, 2, 2]), True)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ChannelZeroPad", "SpaceToDepth", "depth_to_space", "space_to_depth"]


def space_to_depth(x: torch.Tensor, block_size: int) -> torch.Tensor:
    """``(B, C, H, W) -> (B, C * b * b, H / b, W / b)`` in the i-RevNet channel ordering."""
    batch, channels, height, width = x.shape
    b = block_size
    if height % b or width % b:
        raise ValueError(f"spatial size {height}x{width} is not divisible by block size {b}")
    blocks = x.reshape(batch, channels, height // b, b, width // b, b)
    # (batch, c, h, i, w, j) -> (batch, i, j, c, h, w)
    return blocks.permute(0, 3, 5, 1, 2, 4).reshape(
        batch, b * b * channels, height // b, width // b
    )


def depth_to_space(y: torch.Tensor, block_size: int) -> torch.Tensor:
    """Exact inverse of :func:`space_to_depth`."""
    batch, depth, height, width = y.shape
    b = block_size
    if depth % (b * b):
        raise ValueError(f"{depth} channels are not divisible by block size squared {b * b}")
    channels = depth // (b * b)
    blocks = y.reshape(batch, b, b, channels, height, width)
    # (batch, i, j, c, h, w) -> (batch, c, h, i, w, j)
    return blocks.permute(0, 3, 4, 1, 5, 2).reshape(batch, channels, height * b, width * b)


class SpaceToDepth(nn.Module):
    """Invertible downsampling ``psi`` as a bijective layer (log-determinant zero).

    Example:
        >>> layer = SpaceToDepth(2)
        >>> y, logdet = layer(torch.randn(3, 2, 8, 8))
        >>> y.shape, logdet.tolist()
        (torch.Size([3, 8, 4, 4]), [0.0, 0.0, 0.0])
    """

    def __init__(self, block_size: int = 2) -> None:
        super().__init__()
        self.block_size = block_size

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logdet = x.new_zeros(x.shape[0])
        return space_to_depth(x, self.block_size), logdet

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        return depth_to_space(y, self.block_size)


class ChannelZeroPad(nn.Module):
    """Injective widening: append ``pad`` zero channels; the inverse drops them.

    Injective, not bijective: it has a left inverse but no log-determinant, so its forward
    returns only the padded tensor.

    Example:
        >>> pad = ChannelZeroPad(3)
        >>> y = pad(torch.ones(1, 2, 4, 4))
        >>> y.shape, y[:, 2:].abs().sum().item(), pad.inverse(y).shape
        (torch.Size([1, 5, 4, 4]), 0.0, torch.Size([1, 2, 4, 4]))
    """

    def __init__(self, pad: int) -> None:
        super().__init__()
        if pad < 0:
            raise ValueError(f"padding must be non-negative, got {pad}")
        self.pad = pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x, (0, 0, 0, 0, 0, self.pad)) if self.pad else x

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        return y[:, : y.shape[1] - self.pad] if self.pad else y
