"""Importance-weighted bounds: the log-mean-exp of log-weights, over groups of draws.

Both the density models' dequantization bound (Ho et al. 2019, Flow++, eq. 11-12) and the VAE's
importance-weighted log-likelihood (Burda et al. 2016, "Importance Weighted Autoencoders")
estimate ``log (1/S) sum_s exp(w_s)`` from ``S`` draws of log-weights ``w_s``; from one set of
``S_total`` draws, :func:`log_mean_exp_groups` gives the bound for every ``S`` dividing it.

Example:
    >>> import torch
    >>> weights = torch.zeros(4, 3)  # four draws of log-weight 0 for three examples
    >>> log_mean_exp_groups(weights, 2).tolist(), sample_sizes(6)
    ([0.0, 0.0, 0.0], [1, 2, 4, 6])
"""

from __future__ import annotations

import math

import torch

__all__ = ["log_mean_exp_groups", "sample_sizes"]


def log_mean_exp_groups(log_weights: torch.Tensor, size: int) -> torch.Tensor:
    """``log (1/S) sum_s exp(w_s)`` per example from ``(S_total, N)`` log-weights, averaged over
    the ``S_total // S`` disjoint groups of ``S = size`` consecutive draws (one group when
    ``S = S_total``).

    Averaging over disjoint groups estimates the same expectation as one group, with less
    variance, so one set of draws gives the whole curve of the bound against S; the groups of
    2S are unions of groups of S, so the curve over powers of two is monotone per example.
    """
    total = log_weights.shape[0]
    if not 1 <= size <= total:
        raise ValueError(f"samples must be in [1, {total}], got {size}")
    groups = log_weights[: total - total % size].reshape(total // size, size, -1)
    return (torch.logsumexp(groups, dim=1) - math.log(size)).mean(0)


def sample_sizes(samples: int) -> list[int]:
    """The sizes of an importance-weighted curve: 1, 2, 4, ... up to ``samples``, and it."""
    return sorted({2**k for k in range(samples.bit_length()) if 2**k <= samples} | {samples})
