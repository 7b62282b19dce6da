"""Bits per dimension, the one metric of every density row, and its dequantization bounds.

A flow models a continuous density p(y) on the dequantized image ``y = (x + u) / L`` in
[0, 1]^D, where x has L levels per dimension (8-bit images: L = 256; the embedded digits:
L = 17) and u ~ q(u | x) on [0, 1)^D. The probability of the discrete image is bounded by

    log P(x) >= E_q[log p(y) - log q(u | x)] - D log L          (one-sample bound)
    log P(x) >= E log (1/S) sum_s p(y_s) / q(u_s | x) - D log L   (importance weighted, S samples)

and bits per dimension is ``-log P(x) / (D log 2)``, i.e.

    bpd = (-log p(y) + D log L) / (D log 2)

with ``log p(y)`` in nats, including every pre-processing log-Jacobian (the logit transform of
RealNVP, for instance). Uniform dequantization is the special case q = U[0, 1)^D, log q = 0.
Flow++'s variational dequantization passes its ``log q`` in.

Example:
    >>> import math, torch
    >>> # a uniform density on [0, 1]^D gives exactly log2(L) bits per dimension
    >>> bits_per_dim(torch.zeros(3), num_dims=64, levels=256)
    tensor([8., 8., 8.])
    >>> round(float(bits_per_dim(torch.tensor([0.0]), 64, levels=17)), 4) == round(math.log2(17), 4)
    True
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

__all__ = ["bits_per_dim", "dequantization_bound", "uniform_dequantize"]


def bits_per_dim(
    log_density: torch.Tensor,
    num_dims: int,
    levels: int = 256,
    log_q: torch.Tensor | float = 0.0,
) -> torch.Tensor:
    """Bits per dimension of discrete data from the continuous density of its dequantization.

    Args:
        log_density: ``log p(y)`` in nats per example, pre-processing Jacobians included.
        num_dims: D, the number of dimensions of one example (e.g. 3 * 32 * 32).
        levels: L, the number of values each dimension takes (256 for 8-bit images).
        log_q: ``log q(u | x)`` of the dequantization noise per example (0 for uniform).
    """
    return (-(log_density - log_q) + num_dims * math.log(levels)) / (num_dims * math.log(2))


def uniform_dequantize(
    x: torch.Tensor, levels: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Integer images with values 0..levels-1 -> ``(x + u) / levels`` with u ~ U[0, 1)."""
    noise = torch.rand(x.shape, generator=generator, dtype=torch.float32).to(x.device)
    return (x.float() + noise) / levels


def dequantization_bound(
    log_density_fn: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    levels: int,
    samples: int = 1,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Bits/dim per example of the uniform-dequantization bound with ``samples`` samples.

    ``samples = 1`` is the one-sample bound used for training; ``samples = S > 1`` is the
    importance-weighted bound ``log (1/S) sum_s p(y_s)``, which is tighter (lower in bits/dim)
    on average and tends to ``-log P(x)`` as S grows.
    """
    if samples < 1:
        raise ValueError(f"samples must be at least 1, got {samples}")
    log_densities = torch.stack(
        [log_density_fn(uniform_dequantize(x, levels, generator)) for _ in range(samples)]
    )
    log_mean = torch.logsumexp(log_densities, dim=0) - math.log(samples)
    return bits_per_dim(log_mean, x[0].numel(), levels)
