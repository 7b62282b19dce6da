"""A chain of invertible layers whose log-determinants add up.

Example:
    >>> import torch
    >>> from flows.layers import ActNorm, InvConv1x1, Squeeze
    >>> flow = FlowSequence(Squeeze(), ActNorm(8), InvConv1x1(8))
    >>> x = torch.randn(4, 2, 4, 4)
    >>> z, logdet = flow(x)                      # train mode: actnorm initialises on x
    >>> z.shape, logdet.shape, bool((flow.inverse(z) - x).abs().max() < 1e-4)
    (torch.Size([4, 8, 2, 2]), torch.Size([4]), True)

With ``memory_saving=True`` a training forward pass keeps only the chain's output and
log-determinant, and the backward recomputes every layer's input from its output
(:mod:`flows.layers.memory_saving`); the values and gradients are those of plain autograd up
to rounding.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn

from flows.layers.base import InvertibleLayer
from flows.layers.memory_saving import RecomputedLayer, run_with_memory_saving

__all__ = ["FlowSequence"]


class FlowSequence(InvertibleLayer):
    """``forward`` applies the layers in order and sums their log-determinants; ``inverse``
    applies their inverses in reverse order.

    Args:
        *layers: invertible layers (the :class:`~flows.layers.InvertibleLayer` contract:
            ``y, logdet = layer(x)`` and ``x = layer.inverse(y)``).
        memory_saving: recompute the layers' activations in backward instead of storing
            them (see the module docstring); False (default): plain autograd.
    """

    def __init__(self, *layers: InvertibleLayer, memory_saving: bool = False) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.memory_saving = memory_saving
        self._recomputed: list[RecomputedLayer] | None = None

    def __len__(self) -> int:
        return len(self.layers)

    def __iter__(self) -> Iterator[nn.Module]:
        return iter(self.layers)

    def __getitem__(self, index: int) -> nn.Module:
        return self.layers[index]

    def flat_layers(self) -> list[InvertibleLayer]:
        """The layers, with those of nested sequences in their place (a Glow step's three)."""
        return [
            inner
            for layer in self.layers
            for inner in (layer.flat_layers() if isinstance(layer, FlowSequence) else [layer])
        ]

    def _steps(self) -> list[RecomputedLayer]:
        """The flat layers as steps of the memory-saving backward, built once (walking every
        layer's modules for dropout on each forward pass cost a K = 32 Glow hundreds of
        module walks per step)."""
        if self._recomputed is None:
            self._recomputed = [RecomputedLayer(layer) for layer in self.flat_layers()]
        return self._recomputed

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        needs_graph = torch.is_grad_enabled() and (
            x.requires_grad or any(p.requires_grad for p in self.parameters())
        )
        if self.memory_saving and needs_graph and len(self.layers):
            return run_with_memory_saving(x, self._steps())
        logdet = x.new_zeros(x.shape[0])
        for layer in self.layers:
            x, step = layer(x)
            logdet = logdet + step
        return x, logdet

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        for layer in reversed(self.layers):
            y = layer.inverse(y)
        return y
