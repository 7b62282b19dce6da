"""A chain of invertible layers whose log-determinants add up.

Example:
    >>> import torch
    >>> from flows.layers import ActNorm, InvConv1x1, Squeeze
    >>> flow = FlowSequence(Squeeze(), ActNorm(8), InvConv1x1(8))
    >>> x = torch.randn(4, 2, 4, 4)
    >>> z, logdet = flow(x)                      # train mode: actnorm initialises on x
    >>> z.shape, logdet.shape, bool((flow.inverse(z) - x).abs().max() < 1e-4)
    (torch.Size([4, 8, 2, 2]), torch.Size([4]), True)
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn

from flows.layers.base import InvertibleLayer

__all__ = ["FlowSequence"]


class FlowSequence(InvertibleLayer):
    """``forward`` applies the layers in order and sums their log-determinants; ``inverse``
    applies their inverses in reverse order.

    Args:
        *layers: invertible layers (the :class:`~flows.layers.InvertibleLayer` contract:
            ``y, logdet = layer(x)`` and ``x = layer.inverse(y)``).
    """

    def __init__(self, *layers: InvertibleLayer) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)

    def __len__(self) -> int:
        return len(self.layers)

    def __iter__(self) -> Iterator[nn.Module]:
        return iter(self.layers)

    def __getitem__(self, index: int) -> nn.Module:
        return self.layers[index]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logdet = x.new_zeros(x.shape[0])
        for layer in self.layers:
            x, step = layer(x)
            logdet = logdet + step
        return x, logdet

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        for layer in reversed(self.layers):
            y = layer.inverse(y)
        return y
