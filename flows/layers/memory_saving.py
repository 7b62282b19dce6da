"""The memory-saving backward for chains of flow layers: inputs recomputed from outputs.

Gomez, Ren, Urtasun, Grosse. "The Reversible Residual Network: Backpropagation Without
Storing Activations". NeurIPS 2017, Sec. 3 and Algorithm 1, carried from reversible blocks to
flow layers: every layer of a normalizing flow is invertible, so a chain of them need not
store its activations. :func:`run_with_memory_saving` keeps the chain's output and summed
log-determinant only; the backward walks the layers in reverse, reconstructs each layer's
input from its output (:meth:`~flows.layers.InvertibleLayer.rebuild`, a coupling evaluating
its network once for that and for the recomputed forward pass), backpropagates through the
recomputed layer, and frees that graph before the next.

It is the mechanism of the RevNets and i-RevNets, :func:`flows.reversible.recompute_in_backward`,
with each layer a step on the pair ``(x, logdet)``: the log-determinant's gradient passes
through every step unchanged and reaches each layer's parameters through that layer's own
log-determinant. Exactness is that of the reversible networks: what a layer needs besides its
output to invert exactly is recorded in the forward pass (a batch norm's batch moments), batch
norms do not update their running averages again while recomputing, dropout in a coupling
network draws the masks of the forward pass again, and data-dependent initialisation (actnorm)
happens in the forward pass, on the first batch, as without memory saving.

Example:
    >>> import torch
    >>> from flows.layers import ActNorm, AffineCoupling, InvConv1x1
    >>> layers = [ActNorm(4), InvConv1x1(4), AffineCoupling(torch.nn.Conv2d(2, 4, 3, padding=1))]
    >>> x = torch.randn(8, 4, 6, 6, requires_grad=True)
    >>> y, logdet = run_with_memory_saving(x, layers)
    >>> (y.square().sum() - logdet.sum()).backward()
    >>> x.grad.shape, logdet.shape
    (torch.Size([8, 4, 6, 6]), torch.Size([8]))
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import nn

from flows.layers.base import InvertibleLayer
from flows.reversible import (
    RngState,
    batch_norm_updates_off,
    draws_random_numbers,
    leaf_and_parameter_grads,
    recompute_in_backward,
    record_rng_state,
    replayed_rng,
)

__all__ = ["RecomputedLayer", "run_with_memory_saving"]

Pair = tuple[torch.Tensor, torch.Tensor]  # (x, logdet)


class RecomputedLayer:
    """A flow layer as a step of :func:`flows.reversible.recompute_in_backward` on
    ``(x, logdet)`` (see the module docstring)."""

    def __init__(self, layer: InvertibleLayer) -> None:
        self.layer = layer
        self.draws_random_numbers = draws_random_numbers(layer)

    def forward_recording_rng(
        self, x: torch.Tensor, logdet: torch.Tensor
    ) -> tuple[Pair, tuple[RngState, Any]]:
        """The layer's forward pass, with the random state before it and its memo."""
        state = record_rng_state(x.device) if self.draws_random_numbers else None
        y, step, memo = self.layer.forward_and_memo(x)
        return (y, logdet + step), (state, memo)

    def backward_from_output(
        self,
        outputs: Pair,
        grads: Pair,
        states: tuple[RngState, Any],
        autocast: contextlib.AbstractContextManager[object] | None = None,
    ) -> tuple[Pair, Pair, dict[nn.Parameter, torch.Tensor]]:
        """Rebuild the layer's input from its output and backpropagate through the layer."""
        (y, logdet), (grad_y, grad_logdet), (state, memo) = outputs, grads, states
        parameters = [p for p in self.layer.parameters() if p.requires_grad]

        @contextlib.contextmanager
        def replay() -> Iterator[None]:
            with replayed_rng(state, y.device):
                yield

        recompute = autocast if autocast is not None else contextlib.nullcontext()
        with torch.enable_grad(), batch_norm_updates_off(self.layer), recompute:
            rebuilt = self.layer.rebuild(y, memo, replay)
        leaf_grads, parameter_grads = leaf_and_parameter_grads(
            (rebuilt.output, rebuilt.logdet), (grad_y, grad_logdet), rebuilt.leaves, parameters
        )
        inputs = (rebuilt.input, logdet - rebuilt.logdet.detach())
        return inputs, (rebuilt.input_grad(leaf_grads), grad_logdet), parameter_grads


def run_with_memory_saving(
    x: torch.Tensor, layers: Sequence[InvertibleLayer | RecomputedLayer]
) -> Pair:
    """``(y, logdet)`` of the chain ``layers`` applied to ``x``, keeping only ``y`` and
    ``logdet`` for backward (see the module docstring). ``layers`` may be given already
    wrapped as :class:`RecomputedLayer` (a sequence builds them once)."""
    steps = [s if isinstance(s, RecomputedLayer) else RecomputedLayer(s) for s in layers]
    parameters = list(
        {id(p): p for step in steps for p in step.layer.parameters() if p.requires_grad}.values()
    )
    y, logdet = recompute_in_backward((x, x.new_zeros(x.shape[0])), steps, parameters)
    return y, logdet
