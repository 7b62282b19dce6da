"""Factoring out half of the variables, with Glow's learned conditional Gaussian prior.

Dinh, Sohl-Dickstein, Bengio. "Density estimation using Real NVP". ICLR 2017, Sec. 3.6
(multi-scale architecture: factor out half the dimensions at each scale). Kingma, Dhariwal.
"Glow: Generative Flow with Invertible 1x1 Convolutions". NeurIPS 2018, Sec. 3; official code
``openai/glow``, ``model.split2d`` / ``split2d_prior`` / ``split2d_reverse``.

:class:`Split` is the one layer that does not follow the ``y, logdet = layer(x)`` contract:
``forward(x)`` returns ``(z1, z2, log p(z2 | z1))``. ``z2`` leaves the flow there; its
density given ``z1`` is a diagonal Gaussian whose mean and log-std come from a
zero-initialised 3x3 convolution of ``z1`` (``h = conv2d_zeros(z1, 2 * c2)``,
``mean = h[:, 0::2]``, ``log_std = h[:, 1::2]``), or a standard normal
(``learned_prior=False``, RealNVP). The split itself is a permutation (log-determinant 0).

Example:
    >>> import torch
    >>> split = Split(4)
    >>> x = torch.randn(2, 4, 3, 3)
    >>> z1, z2, log_p = split(x)
    >>> z1.shape, log_p.shape, torch.equal(split.inverse(z1, z2), x)
    (torch.Size([2, 2, 3, 3]), torch.Size([2]), True)
    >>> torch.equal(split.sample(z1, temperature=0.0), torch.zeros_like(z2))  # prior mean
    True
"""

from __future__ import annotations

import math

import torch
from torch import nn

from flows.layers.conv import ZeroConv2d

__all__ = ["Split", "gaussian_log_prob"]

_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


def gaussian_log_prob(
    x: torch.Tensor, mean: torch.Tensor | None = None, log_std: torch.Tensor | None = None
) -> torch.Tensor:
    """Per-sample log-density ``(N,)`` of a diagonal Gaussian (standard normal by default)."""
    if mean is not None:
        x = x - mean
    if log_std is None:
        log_p = -0.5 * x.pow(2) - _HALF_LOG_2PI
    else:
        log_p = -0.5 * (x * torch.exp(-log_std)).pow(2) - log_std - _HALF_LOG_2PI
    return log_p.flatten(1).sum(1)


class Split(nn.Module):
    """Factor out the second half of the channels (see the module docstring).

    Args:
        in_channels: channels of ``x`` (even); ``z1`` and ``z2`` get half each.
        learned_prior: Glow's conditional prior (True) or a standard normal (False).
    """

    def __init__(self, in_channels: int, learned_prior: bool = True) -> None:
        super().__init__()
        if in_channels % 2:
            raise ValueError(f"Split needs an even number of channels, got {in_channels}")
        self.in_channels = in_channels
        half = in_channels // 2
        self.prior_net = ZeroConv2d(half, 2 * half) if learned_prior else None

    def prior(self, z1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and log-std of ``p(z2 | z1)``, each shaped like ``z2``."""
        if self.prior_net is None:
            zeros = torch.zeros_like(z1)
            return zeros, zeros
        h = self.prior_net(z1)
        return h[:, 0::2], h[:, 1::2]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        z1, z2 = x.chunk(2, dim=1)
        return z1, z2, gaussian_log_prob(z2, *self.prior(z1))

    def inverse(self, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
        return torch.cat([z1, z2], dim=1)

    def sample(
        self, z1: torch.Tensor, temperature: float = 1.0, noise: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``z2 = mean + exp(log_std) * temperature * noise`` with ``noise ~ N(0, I)`` unless
        given; ``temperature=0`` returns the mean."""
        mean, log_std = self.prior(z1)
        if noise is None:
            noise = torch.randn_like(mean)
        return mean + torch.exp(log_std) * (temperature * noise)
