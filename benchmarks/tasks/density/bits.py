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
from typing import Protocol

import torch

from benchmarks.core.distributed import Shard
from benchmarks.core.importance import log_mean_exp_groups

__all__ = [
    "Dequantizer",
    "bits_per_dim",
    "dequantization_bound",
    "dequantize_with",
    "importance_weighted_bits_per_dim",
    "log_importance_weights",
    "uniform_dequantize",
]


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


class Dequantizer(Protocol):
    """``q(u | x)``: draws ``u`` in ``[0, 1)^D`` per example with its ``log q`` (nats)."""

    def draw_noise(
        self, shape: tuple[int, ...], generator: torch.Generator | None = None
    ) -> torch.Tensor: ...

    def sample(
        self,
        x: torch.Tensor,
        levels: int,
        generator: torch.Generator | None = None,
        noise: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]: ...


def dequantize_with(
    dequantizer: Dequantizer | None,
    x: torch.Tensor,
    levels: int,
    generator: torch.Generator | None = None,
    shard: Shard | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``y = (x + u) / levels`` and ``log q(u | x)`` with ``u`` from ``dequantizer``
    (uniform noise and ``log q = 0`` when it is None, identical to :func:`uniform_dequantize`).

    With a ``shard`` (``x`` is this process's rows of a global batch), the noise is drawn for
    the global batch and sliced, so an example gets the same ``u`` in any number of processes.
    """
    shard = shard or Shard()
    draw = dequantizer.draw_noise if dequantizer is not None else _uniform_noise
    noise = shard.draw(draw, tuple(x.shape), generator)
    if dequantizer is None:  # exactly uniform_dequantize
        return (x.float() + noise.to(x.device)) / levels, torch.zeros(x.shape[0], device=x.device)
    u, log_q = dequantizer.sample(x, levels, noise=noise)
    return (x.to(u.dtype) + u) / levels, log_q


def _uniform_noise(shape: tuple[int, ...], generator: torch.Generator | None) -> torch.Tensor:
    return torch.rand(shape, generator=generator, dtype=torch.float32)


def log_importance_weights(
    log_density_fn: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    levels: int,
    samples: int,
    generator: torch.Generator | None = None,
    dequantizer: Dequantizer | None = None,
) -> torch.Tensor:
    """``log p(y_s) - log q(u_s | x)`` for ``samples`` draws, shape ``(samples, N)``."""
    if samples < 1:
        raise ValueError(f"samples must be at least 1, got {samples}")
    weights = []
    for _ in range(samples):
        y, log_q = dequantize_with(dequantizer, x, levels, generator)
        weights.append(log_density_fn(y) - log_q)
    return torch.stack(weights)


def importance_weighted_bits_per_dim(
    log_weights: torch.Tensor, num_dims: int, levels: int, samples: int
) -> torch.Tensor:
    """Bits/dim per example of the S-sample bound from ``(S_total, N)`` log-weights
    (:func:`log_mean_exp_groups` with ``S = samples``)."""
    return bits_per_dim(log_mean_exp_groups(log_weights, samples), num_dims, levels)


def dequantization_bound(
    log_density_fn: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    levels: int,
    samples: int = 1,
    generator: torch.Generator | None = None,
    dequantizer: Dequantizer | None = None,
) -> torch.Tensor:
    """Bits/dim per example of the dequantization bound with ``samples`` samples.

    ``samples = 1`` is the one-sample bound used for training (the ELBO
    ``E_q[log p(y) - log q(u | x)]``); ``samples = S > 1`` is the importance-weighted bound
    ``log (1/S) sum_s p(y_s) / q(u_s | x)``, which is tighter (lower in bits/dim) on average and
    tends to ``-log P(x)`` as S grows. ``dequantizer`` None is uniform dequantization.
    """
    weights = log_importance_weights(log_density_fn, x, levels, samples, generator, dequantizer)
    return importance_weighted_bits_per_dim(weights, x[0].numel(), levels, samples)
