"""Check a layer against the :class:`~flows.layers.InvertibleLayer` contract, by brute force.

The contract: ``y, logdet = layer(x)`` with ``logdet`` of shape ``(N,)`` equal to
``log|det dy/dx|`` of each sample, and ``layer.inverse(y)`` giving ``x`` back. These helpers
test a layer (yours or the suite's) against mathematics rather than against itself:

* :func:`inversion_error`: ``max |inverse(forward(x)) - x|``;
* :func:`logdet_error`: ``max_i |logdet_i - log|det J_i||`` with ``J_i`` the Jacobian of
  sample ``i``'s flattened output with respect to its flattened input, computed entry by entry
  by :func:`torch.autograd.functional.jacobian` (:func:`brute_force_logdet`);
* :func:`check_gradients`: :func:`torch.autograd.gradcheck` of ``(y, logdet)`` in float64;
* :func:`check_invertible_layer`: all three, raising :class:`AssertionError` with a readable
  message.

Use float64 and small inputs (the Jacobian of a sample with ``D`` entries takes ``D`` backward
passes). The per-sample Jacobian assumes that a sample's output does not depend on the rest of
its batch: initialise data-dependent layers first (one forward in training mode for
:class:`~flows.layers.ActNorm`) and check in eval mode when the layer holds batch
normalisation (:class:`~flows.layers.BatchNormFlow`, or ``nn.BatchNorm2d`` inside a coupling
network).

Example:
    >>> import torch
    >>> from flows.layers import ActNorm
    >>> layer = ActNorm(2).double()
    >>> x = torch.randn(4, 2, 3, 3, dtype=torch.float64)
    >>> _ = layer(x)                  # data-dependent initialisation, in training mode
    >>> check_invertible_layer(layer.eval(), x)
    >>> logdet_error(layer, x) < 1e-10
    True
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import nn
from torch.func import functional_call

__all__ = [
    "brute_force_logdet",
    "check_gradients",
    "check_invertible_layer",
    "inversion_error",
    "logdet_error",
]


def _name(layer: nn.Module) -> str:
    return type(layer).__name__


def _forward(layer: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    out = layer(x)
    if not (isinstance(out, tuple) and len(out) == 2):
        raise AssertionError(
            f"{_name(layer)}: forward must return (y, logdet), got {type(out).__name__}"
        )
    y, logdet = out
    if logdet.shape != (x.shape[0],):
        raise AssertionError(
            f"{_name(layer)}: logdet has shape {tuple(logdet.shape)}, expected ({x.shape[0]},)"
        )
    return y, logdet


@torch.no_grad()
def inversion_error(layer: nn.Module, x: torch.Tensor) -> float:
    """``max |layer.inverse(layer(x)[0]) - x|``."""
    y, _ = _forward(layer, x)
    back = layer.inverse(y)
    if back.shape != x.shape:
        raise AssertionError(
            f"{_name(layer)}: inverse returned shape {tuple(back.shape)}, expected {tuple(x.shape)}"
        )
    return float((back - x).abs().max())


def brute_force_logdet(
    function: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor
) -> torch.Tensor:
    """``log|det J_i|`` per sample ``i`` of ``x``, ``J_i`` the full Jacobian of the flattened
    ``function(x[i:i+1])`` with respect to the flattened ``x[i]``.

    ``function`` maps a batch of one to a tensor with as many entries as the sample (a
    bijection); the Jacobian is built by :func:`torch.autograd.functional.jacobian`.
    """
    logdets = []
    for i in range(x.shape[0]):
        sample = x[i : i + 1].detach()

        def flat(v: torch.Tensor, shape: torch.Size = sample.shape) -> torch.Tensor:
            return function(v.reshape(shape)).reshape(-1)

        jacobian = torch.autograd.functional.jacobian(flat, sample.reshape(-1))
        if jacobian.dim() != 2 or jacobian.shape[0] != jacobian.shape[1]:
            raise AssertionError(
                f"the map has {jacobian.shape[0]} outputs for {sample.numel()} inputs; a "
                "log-determinant needs a bijection"
            )
        logdets.append(torch.linalg.slogdet(jacobian).logabsdet)
    return torch.stack(logdets)


def logdet_error(layer: nn.Module, x: torch.Tensor) -> float:
    """``max_i |logdet_i - log|det J_i||``, with the Jacobian of each sample by brute force."""
    with torch.no_grad():
        _, logdet = _forward(layer, x)
    reference = brute_force_logdet(lambda v: layer(v)[0], x)
    return float((logdet - reference).abs().max())


def check_gradients(
    layer: nn.Module, x: torch.Tensor, parameters: bool = False, **gradcheck_kwargs: object
) -> None:
    """:func:`torch.autograd.gradcheck` of ``(y, logdet)`` with respect to ``x`` (and the
    layer's parameters if ``parameters``), on a float64 copy of the layer.

    Raises :class:`AssertionError` when analytical and numerical gradients disagree.
    """
    layer64 = copy.deepcopy(layer).double()
    x64 = x.detach().double().requires_grad_(True)
    named = [(n, p) for n, p in layer64.named_parameters() if p.requires_grad] if parameters else []
    names = [n for n, _ in named]
    inputs = (x64, *(p.detach().clone().requires_grad_(True) for _, p in named))

    def function(v: torch.Tensor, *params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not names:
            return _forward(layer64, v)
        return functional_call(layer64, dict(zip(names, params, strict=True)), (v,))

    try:
        ok = torch.autograd.gradcheck(function, inputs, **gradcheck_kwargs)
    except RuntimeError as error:  # gradcheck raises with its own report
        raise AssertionError(f"{_name(layer)}: gradient check failed: {error}") from None
    if not ok:
        raise AssertionError(f"{_name(layer)}: gradient check failed")


def check_invertible_layer(
    layer: nn.Module,
    x: torch.Tensor,
    *,
    inverse_atol: float | None = None,
    logdet_atol: float | None = None,
    gradients: bool = True,
) -> None:
    """Check ``layer`` on ``x``: shapes, inverse, log-determinant and (optionally) gradients.

    Tolerances default to ``1e-10`` (inverse) and ``1e-8`` (log-determinant) for float64
    input, ``1e-4`` and ``1e-3`` otherwise. Raises :class:`AssertionError` naming the check,
    the layer, the error found and the tolerance.

    Example:
        >>> import torch
        >>> from flows.layers import InvConv1x1
        >>> check_invertible_layer(InvConv1x1(3).double(), torch.randn(2, 3, 2, 2).double())
    """
    is_double = x.dtype == torch.float64
    inverse_atol = inverse_atol if inverse_atol is not None else (1e-10 if is_double else 1e-4)
    logdet_atol = logdet_atol if logdet_atol is not None else (1e-8 if is_double else 1e-3)
    with torch.no_grad():
        y, _ = _forward(layer, x)
    if y.shape[0] != x.shape[0] or y[0].numel() != x[0].numel():
        raise AssertionError(
            f"{_name(layer)}: output shape {tuple(y.shape)} does not have the input's "
            f"{tuple(x.shape)} batch size and number of entries per sample"
        )
    error = inversion_error(layer, x)
    if not error <= inverse_atol:
        raise AssertionError(
            f"{_name(layer)}: inverse(forward(x)) differs from x by {error:.3e} "
            f"(tolerance {inverse_atol:.1e}); is the layer initialised and in eval mode?"
        )
    error = logdet_error(layer, x)
    if not error <= logdet_atol:
        raise AssertionError(
            f"{_name(layer)}: logdet differs from log|det J| of the brute-force Jacobian by "
            f"{error:.3e} (tolerance {logdet_atol:.1e}); is the layer initialised and in eval "
            "mode?"
        )
    if gradients:
        check_gradients(layer, x)
