"""Flows for variational posteriors: MADE, inverse autoregressive flow and planar flows.

Germain, Gregor, Murray, Larochelle. "MADE: Masked Autoencoder for Distribution Estimation".
ICML 2015 (masks from a degree per unit). Kingma, Salimans, Jozefowicz, Chen, Sutskever,
Welling. "Improved Variational Inference with Inverse Autoregressive Flow". NeurIPS 2016,
Sec. 4 and Eq. (11)-(14) (the numerically stable IAF step). Rezende, Mohamed. "Variational
Inference with Normalizing Flows". ICML 2015, Sec. 4.1 and Appendix A (planar flows and the
invertibility reparameterisation of ``u``).

All three act on latent vectors ``(N, D)`` and return the log-determinant of their Jacobian,
``(N,)``, so that ``log q(z_K | x) = log q(z_0 | x) - sum_k logdet_k``:

* :class:`MADE` maps ``z`` (and a context ``h``) to ``(m, s)`` with ``m_i, s_i`` depending on
  ``z_j`` only for ``j`` before ``i`` in the order;
* :class:`IAFStep`: ``sigma = sigmoid(s)``, ``z' = sigma * z + (1 - sigma) * m``,
  ``logdet = sum(log sigma)``; ``s`` starts near +2 (a forget-gate bias), so ``sigma`` starts
  near 1 and the step near the identity; consecutive steps reverse the order;
* :class:`PlanarFlow`: ``z' = z + u_hat * tanh(w . z + b)`` with ``u_hat`` such that
  ``w . u_hat >= -1`` (invertible), ``logdet = log|1 + u_hat . psi|``; its parameters come from
  the encoder (amortised), one ``(u, w, b)`` per example.

Example:
    >>> import torch
    >>> step = IAFStep(latent_dim=4, hidden=16, context_dim=3)
    >>> z, logdet = step(torch.randn(5, 4), torch.randn(5, 3))
    >>> z.shape, logdet.shape
    (torch.Size([5, 4]), torch.Size([5]))
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["MADE", "IAFStep", "MaskedLinear", "PlanarFlow", "made_masks", "planar_u_hat"]


class MaskedLinear(nn.Linear):
    """``y = x (W * M)^T + b`` with a fixed binary mask ``M`` (``out x in``)."""

    def __init__(self, mask: torch.Tensor, bias: bool = True) -> None:
        super().__init__(mask.shape[1], mask.shape[0], bias=bias)
        self.register_buffer("mask", mask.to(self.weight.dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight * self.mask, self.bias)


def made_masks(order: torch.Tensor, hidden: list[int], outputs_per_dim: int) -> list[torch.Tensor]:
    """MADE's masks for inputs ordered by ``order`` (a permutation of ``0..D-1``: the position
    of each input in the autoregressive order).

    Hidden unit ``k`` of layer ``l`` gets degree ``d(k) = k mod (D - 1)`` (deterministic, as in
    the MADE paper's sequential assignment); a hidden unit sees input ``i`` when
    ``d(k) >= order[i]`` and the output of dimension ``i`` sees hidden units with
    ``order[i] > d(k)``, so output ``i`` depends on inputs strictly before it.
    """
    dims = len(order)
    degrees = [order]
    for width in hidden:
        degrees.append(torch.arange(width) % max(dims - 1, 1))
    masks = [
        (degrees[layer + 1][:, None] >= degrees[layer][None, :]).float()
        for layer in range(len(hidden))
    ]
    output = (order[:, None] > degrees[-1][None, :]).float()
    masks.append(output.repeat(outputs_per_dim, 1))
    return masks


class MADE(nn.Module):
    """Masked autoencoder: ``(N, D)`` (and a context ``(N, C)``) -> ``outputs`` tensors
    ``(N, D)`` each, autoregressive in ``order`` (default ``0, 1, ..., D - 1``).

    Hidden layers use ELU; the context enters the first hidden layer through an unmasked
    linear map (the IAF paper's ``h``).
    """

    def __init__(
        self,
        dims: int,
        hidden: list[int],
        context_dim: int = 0,
        outputs: int = 2,
        order: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        order = torch.arange(dims) if order is None else order
        self.register_buffer("order", order)
        self.outputs = outputs
        masks = made_masks(order, hidden, outputs)
        self.layers = nn.ModuleList(MaskedLinear(mask) for mask in masks)
        self.context = nn.Linear(context_dim, hidden[0], bias=False) if context_dim else None

    def forward(
        self, z: torch.Tensor, context: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, ...]:
        h = self.layers[0](z)
        if self.context is not None:
            if context is None:
                raise ValueError("this MADE was built with a context and needs one")
            h = h + self.context(context)
        for layer in self.layers[1:]:
            h = layer(F.elu(h))
        return tuple(h.chunk(self.outputs, dim=-1))


class IAFStep(nn.Module):
    """One inverse autoregressive flow step (IAF paper Eq. (14)), see the module docstring.

    Args:
        latent_dim: D.
        hidden: MADE width (one int: two hidden layers of that width; or a list).
        context_dim: size of the encoder's context ``h`` (0: none).
        reverse: use the reversed order ``D-1, ..., 0`` (alternate between steps).
        forget_bias: added to ``s`` so that ``sigma = sigmoid(s)`` starts near 1.
    """

    def __init__(
        self,
        latent_dim: int,
        hidden: int | list[int] = 320,
        context_dim: int = 0,
        reverse: bool = False,
        forget_bias: float = 2.0,
    ) -> None:
        super().__init__()
        widths = [hidden, hidden] if isinstance(hidden, int) else list(hidden)
        order = torch.arange(latent_dim)
        self.made = MADE(latent_dim, widths, context_dim, 2, order.flip(0) if reverse else order)
        self.forget_bias = forget_bias

    def forward(
        self, z: torch.Tensor, context: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        m, s = self.made(z, context)
        log_sigma = F.logsigmoid(s + self.forget_bias)
        sigma = torch.exp(log_sigma)
        return sigma * z + (1 - sigma) * m, log_sigma.sum(-1)

    def log_sigma(self, z: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """Per-dimension ``log sigma`` ``(N, D)`` (the step's log-determinant per unit)."""
        _, s = self.made(z, context)
        return F.logsigmoid(s + self.forget_bias)


def planar_u_hat(u: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``u_hat = u + (m(w.u) - w.u) w / ||w||^2`` with ``m(x) = -1 + softplus(x)``, so that
    ``w . u_hat = m(w . u) > -1`` (Rezende and Mohamed, Appendix A)."""
    wu = (w * u).sum(-1, keepdim=True)
    return u + (F.softplus(wu) - 1 - wu) * w / (w * w).sum(-1, keepdim=True)


class PlanarFlow(nn.Module):
    """``z' = z + u_hat tanh(w . z + b)`` with per-example parameters ``u, w (N, D)``,
    ``b (N, 1)`` (amortised by the encoder); parameter-free itself.

    ``logdet = log|1 + u_hat . psi(z)|``, ``psi = (1 - tanh^2(w . z + b)) w``; with ``u_hat``
    from :func:`planar_u_hat` it is strictly positive inside the log, the map is invertible.
    """

    def forward(
        self, z: torch.Tensor, u: torch.Tensor, w: torch.Tensor, b: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        u_hat = planar_u_hat(u, w)
        activation = torch.tanh((w * z).sum(-1, keepdim=True) + b)
        psi = (1 - activation**2) * w
        logdet = torch.log((1 + (psi * u_hat).sum(-1)).abs())
        return z + u_hat * activation, logdet
