"""Reshaping layers: invertible downsampling (space-to-depth, squeeze) and channel padding.

Jacobsen, Smeulders, Oyallon. "i-RevNet: Deep Invertible Networks". ICLR 2018, Sec. 3.1
(the invertible downsampling ``S`` and the injective padding of i-RevNet (a)).
Dinh, Sohl-Dickstein, Bengio. "Density estimation using Real NVP". ICLR 2017, Sec. 3.6, and
Kingma, Dhariwal. "Glow". NeurIPS 2018, Sec. 3 (the ``squeeze`` operation).

Three channel orderings of a 2x2 space-to-depth live here, each matching its official code:

* :func:`space_to_depth` (i-RevNet, any block size, used by the i-RevNets);
* :func:`squeeze` (Glow ``tfops.squeeze2d`` and RealNVP ``squeeze_2x2``): output channel
  ``c * 4 + 2 * dy + dx`` holds input channel ``c`` at ``(2h + dy, 2w + dx)``;
* :func:`squeeze_ordered` (RealNVP ``squeeze_2x2_ordered``, used before factoring out):
  output channel ``k * C + c`` with ``(dy, dx) = (0, 0), (1, 1), (0, 1), (1, 0)`` for
  ``k = 0, 1, 2, 3``, so the first half of the channels is one colour of a checkerboard.

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

from flows.layers.base import InvertibleLayer

__all__ = [
    "ChannelZeroPad",
    "SpaceToDepth",
    "Squeeze",
    "depth_to_space",
    "space_to_depth",
    "squeeze",
    "squeeze_ordered",
    "unsqueeze",
    "unsqueeze_ordered",
]

# squeeze_ordered: position k of each channel's 2x2 block, as an index 2 * dy + dx of squeeze
_ORDERED = (0, 3, 1, 2)  # k -> 2 * dy + dx: (0, 0), (1, 1), (0, 1), (1, 0)
_ORDERED_INVERSE = (0, 2, 3, 1)  # 2 * dy + dx -> k


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


class SpaceToDepth(InvertibleLayer):
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


def squeeze(x: torch.Tensor, factor: int = 2) -> torch.Tensor:
    """``(B, C, H, W) -> (B, C * f * f, H / f, W / f)`` in the Glow/RealNVP channel ordering.

    Output channel ``c * f * f + f * dy + dx`` at ``(h, w)`` is input channel ``c`` at
    ``(f * h + dy, f * w + dx)`` (the NHWC reshape ``[b, h/f, f, w/f, f, c]``, transpose
    ``[0, 1, 3, 5, 2, 4]`` of the official code, written for NCHW).

    Example:
        >>> x = torch.arange(8.0).reshape(1, 2, 2, 2)
        >>> squeeze(x).flatten().tolist()
        [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]
        >>> torch.equal(unsqueeze(squeeze(x)), x)
        True
    """
    batch, channels, height, width = x.shape
    f = factor
    if height % f or width % f:
        raise ValueError(f"spatial size {height}x{width} is not divisible by {f}")
    blocks = x.reshape(batch, channels, height // f, f, width // f, f)
    # (batch, c, h, dy, w, dx) -> (batch, c, dy, dx, h, w)
    return blocks.permute(0, 1, 3, 5, 2, 4).reshape(
        batch, channels * f * f, height // f, width // f
    )


def unsqueeze(y: torch.Tensor, factor: int = 2) -> torch.Tensor:
    """Exact inverse of :func:`squeeze`."""
    batch, depth, height, width = y.shape
    f = factor
    if depth % (f * f):
        raise ValueError(f"{depth} channels are not divisible by {f * f}")
    blocks = y.reshape(batch, depth // (f * f), f, f, height, width)
    # (batch, c, dy, dx, h, w) -> (batch, c, h, dy, w, dx)
    return blocks.permute(0, 1, 4, 2, 5, 3).reshape(batch, depth // (f * f), height * f, width * f)


def squeeze_ordered(x: torch.Tensor) -> torch.Tensor:
    """RealNVP's ``squeeze_2x2_ordered``: channel ``k * C + c`` holds pixel ``k`` of the block.

    Pixels ``k = 0, 1, 2, 3`` of each 2x2 block are ``(0, 0), (1, 1), (0, 1), (1, 0)``: the
    first ``2C`` output channels are one colour of a checkerboard, the last ``2C`` the other.

    Example:
        >>> x = torch.arange(4.0).reshape(1, 1, 2, 2)   # [[0, 1], [2, 3]]
        >>> squeeze_ordered(x).flatten().tolist()
        [0.0, 3.0, 1.0, 2.0]
    """
    batch, channels, height, width = x.shape
    blocks = squeeze(x).reshape(batch, channels, 4, height // 2, width // 2)
    ordered = blocks[:, :, list(_ORDERED)].transpose(1, 2)
    return ordered.reshape(batch, 4 * channels, height // 2, width // 2)


def unsqueeze_ordered(y: torch.Tensor) -> torch.Tensor:
    """Exact inverse of :func:`squeeze_ordered`."""
    batch, depth, height, width = y.shape
    if depth % 4:
        raise ValueError(f"{depth} channels are not divisible by 4")
    blocks = y.reshape(batch, 4, depth // 4, height, width).transpose(1, 2)
    return unsqueeze(blocks[:, :, list(_ORDERED_INVERSE)].reshape(batch, depth, height, width))


class Squeeze(InvertibleLayer):
    """The 2x2 squeeze of RealNVP and Glow as a bijective layer (log-determinant zero).

    Example:
        >>> layer = Squeeze()
        >>> y, logdet = layer(torch.randn(2, 3, 4, 4))
        >>> y.shape, logdet.tolist()
        (torch.Size([2, 12, 2, 2]), [0.0, 0.0])
    """

    def __init__(self, factor: int = 2) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return squeeze(x, self.factor), x.new_zeros(x.shape[0])

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        return unsqueeze(y, self.factor)


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
