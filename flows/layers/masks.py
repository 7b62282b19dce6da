"""Binary masks of the RealNVP coupling layers: checkerboard and channel-wise.

Dinh, Sohl-Dickstein, Bengio. "Density estimation using Real NVP". ICLR 2017, Sec. 3.4 and
Figure 3; official code ``tensorflow/models``, ``research/real_nvp``.

A mask is 1 on the entries that pass through a coupling unchanged and condition it, 0 on
the entries it transforms. ``reverse=True`` gives the complementary mask, so that alternating
layers transform each entry in turn. The checkerboard mask is 1 where ``h + w`` is even (odd
when reversed); the official code's first coupling of each scale (``mask_in = 1``) is the
reversed one. The channel mask is 1 on the first half of the channels (the second half when
reversed).

Example:
    >>> checkerboard_mask(2, 3).squeeze().tolist()
    [[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]]
    >>> channel_mask(4, reverse=True).flatten().tolist()
    [0.0, 0.0, 1.0, 1.0]
"""

from __future__ import annotations

import torch

__all__ = ["MASK_TYPES", "channel_mask", "checkerboard_mask"]

MASK_TYPES = ("channel", "checkerboard")


def checkerboard_mask(
    height: int,
    width: int,
    reverse: bool = False,
    *,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """``(1, 1, H, W)`` mask, 1 where ``h + w`` is even (odd when ``reverse``)."""
    rows = torch.arange(height, device=device).view(-1, 1)
    cols = torch.arange(width, device=device).view(1, -1)
    parity = (rows + cols + int(reverse)) % 2 == 0
    return parity.to(dtype or torch.get_default_dtype()).view(1, 1, height, width)


def channel_mask(
    channels: int,
    reverse: bool = False,
    *,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """``(1, C, 1, 1)`` mask, 1 on the first ``C // 2`` channels (the last when ``reverse``)."""
    if channels % 2:
        raise ValueError(f"a channel mask needs an even number of channels, got {channels}")
    half = torch.zeros(channels, dtype=dtype or torch.get_default_dtype(), device=device)
    half[: channels // 2] = 1.0
    mask = half.flip(0) if reverse else half
    return mask.view(1, channels, 1, 1)
