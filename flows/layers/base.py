"""The contract every invertible layer of the suite obeys: :class:`InvertibleLayer`.

A normalizing flow is a chain of bijections ``f = f_K o ... o f_1``, and the density of the
data follows from the change of variables

    log p_X(x) = log p_Z(f(x)) + sum_k log|det J_{f_k}|

(Dinh, Krueger, Bengio. "NICE: Non-linear Independent Components Estimation". ICLR 2015
workshop, Sec. 2; Papamakarios, Nalisnick, Rezende, Mohamed, Lakshminarayanan. "Normalizing
Flows for Probabilistic Modeling and Inference". JMLR 2021, Sec. 2.2). Each layer therefore
provides its map, its log-determinant and its inverse, through one interface:

* ``y, logdet = layer(x)``: ``logdet`` has shape ``(batch,)`` and holds ``log|det dy/dx|`` of
  each sample in nats, summed over the dimensions of that sample;
* ``x = layer.inverse(y)``: the exact inverse of ``forward`` (up to floating-point rounding,
  or to the tolerance of a numerical inversion such as a bisection).

``y`` has as many entries per sample as ``x`` (its shape may differ, as after a squeeze).
Layers whose statistics depend on the batch in training mode (batch normalisation) or that
initialise from the first batch they see (actnorm) obey the contract in eval mode, after that
initialisation. :mod:`flows.testing` checks a layer against the contract by brute force.

The contract is a small abstract base class rather than a :class:`typing.Protocol`: every
``nn.Module`` has a ``forward``, and the suite's non-bijective layers with an ``inverse``
(:class:`~flows.layers.Split`, :class:`~flows.layers.ChannelZeroPad`) have a different one, so
a structural check could not tell a bijective layer from these; subclassing states it. The
base class adds no parameters, buffers or submodules: a layer's ``state_dict`` is unchanged by
subclassing it.

For the memory-saving backward (:mod:`flows.layers.memory_saving`), which keeps a chain's
output only and recomputes each layer's input from its output, a layer also offers
:meth:`~InvertibleLayer.forward_and_memo` (the forward pass plus the little it needs to
invert itself exactly, e.g. a batch norm's batch moments; ``None`` by default) and
:meth:`~InvertibleLayer.rebuild` (reconstruct the input from the output and recompute the
forward pass from it with grad enabled). The defaults invert and then run the forward pass; a
coupling overrides ``rebuild`` to evaluate its network once for both.

Example:
    >>> import math
    >>> import torch
    >>> class Double(InvertibleLayer):
    ...     '''``y = 2 x``: ``log|det| = D log 2`` per sample.'''
    ...     def forward(self, x):
    ...         return 2.0 * x, x.new_full((x.shape[0],), x[0].numel() * math.log(2.0))
    ...     def inverse(self, y):
    ...         return y / 2.0
    >>> layer = Double()
    >>> x = torch.randn(4, 3, 2, 2)
    >>> y, logdet = layer(x)
    >>> logdet.shape, torch.equal(layer.inverse(y), x), isinstance(layer, InvertibleLayer)
    (torch.Size([4]), True, True)
"""

from __future__ import annotations

import abc
import contextlib
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import torch
from torch import nn

__all__ = ["InvertibleLayer", "Rebuilt", "Replay"]

Replay = Callable[[], contextlib.AbstractContextManager[object]]
"""Enters the random state of the forward pass (for dropout) around each network call."""


class Rebuilt(NamedTuple):
    """A layer's input reconstructed from its output, and the forward pass recomputed from it.

    ``output`` and ``logdet`` are functions of the tensors ``leaves`` (which require grad) and
    the layer's parameters; ``input_grad`` maps the gradients with respect to ``leaves`` to
    the gradient with respect to the layer's input, whose value is ``input``.
    """

    input: torch.Tensor
    leaves: tuple[torch.Tensor, ...]
    output: torch.Tensor
    logdet: torch.Tensor
    input_grad: Callable[[Sequence[torch.Tensor]], torch.Tensor]


def _only_leaf_grad(grads: Sequence[torch.Tensor]) -> torch.Tensor:
    (grad,) = grads
    return grad


class InvertibleLayer(nn.Module, metaclass=abc.ABCMeta):
    """Base class of the bijective layers: ``y, logdet = layer(x)``, ``x = layer.inverse(y)``.

    Subclasses implement :meth:`forward` and :meth:`inverse` (see the module docstring); a
    subclass missing either cannot be instantiated.
    """

    @abc.abstractmethod
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(y, logdet)``: the image of ``x`` and ``log|det dy/dx|`` per sample, ``(batch,)``,
        in nats."""

    @abc.abstractmethod
    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        """``x`` with ``forward(x)[0] == y``."""

    def forward_and_memo(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, Any]:
        """``(y, logdet, memo)``: :meth:`forward` and what :meth:`rebuild` needs besides ``y``
        to invert exactly (``None`` here: the inverse needs nothing else)."""
        y, logdet = self(x)
        return y, logdet, None

    def rebuild(self, y: torch.Tensor, memo: Any, replay: Replay) -> Rebuilt:
        """Reconstruct the input from ``y`` (and ``memo``) without grad, then recompute the
        forward pass from it with grad enabled (see :class:`Rebuilt`)."""
        with torch.no_grad(), replay():
            x = self.inverse(y)
        leaf = x.detach().requires_grad_()
        with replay():
            output, logdet = self(leaf)
        return Rebuilt(x.detach(), (leaf,), output, logdet, _only_leaf_grad)
