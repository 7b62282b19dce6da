"""Mixtures of logistics and Flow++'s logistic-mixture CDF coupling transform.

Ho, Chen, Srinivas, Duan, Abbeel. "Flow++: Improving Flow-Based Generative Models with
Variational Dequantization and Architecture Design". ICML 2019, Sec. 3.2, Eq. (5); official
code ``aravindsrinivas/flowpp`` (``flows/logistic.py``: ``mixlogistic_logpdf``,
``mixlogistic_logcdf``, ``mixlogistic_invcdf``; ``flows/flows.py``: ``MixLogisticCDF``,
``MixLogisticAttnCoupling``).

The elementwise map of one coupling, with parameters computed from the conditioning half:

    y = exp(s) * logit(F(x; pi, mu, log sigma)) + t,   F = sum_k pi_k sigmoid((x - mu_k) / sigma_k)

is strictly increasing in ``x``, so its log-derivative is

    log dy/dx = log f(x) - log F(x) - log(1 - F(x)) + s,   f = F'

(the mixture pdf, the logit's derivative and the scale). ``logit(F)`` is computed as
``log F - log(1 - F)`` from two log-sum-exps, which stays finite where ``F`` rounds to 0 or 1.
The inverse solves ``F(x) = sigmoid((y - t) exp(-s))`` by bisection (no closed form exists), as
the official code does, to a tolerance of 1e-12 or 200 halvings. Log-scales are clamped below at
-7, as in the official code.

Example:
    >>> import torch
    >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
    <torch._C.Generator object at ...>
    >>> x = torch.randn(5, dtype=torch.float64)
    >>> logits, means, log_scales = torch.randn(3, 5, 4, dtype=torch.float64)
    >>> s, t = torch.randn(2, 5, dtype=torch.float64)
    >>> y, log_derivative = mixture_logistic_coupling(x, s, t, logits, means, log_scales)
    >>> x_back = mixture_logistic_coupling_inverse(y, s, t, logits, means, log_scales)
    >>> bool((x_back - x).abs().max() < 1e-9)
    True
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

__all__ = [
    "MIN_LOG_SCALE",
    "mixture_logistic_coupling",
    "mixture_logistic_coupling_inverse",
    "mixture_logistic_inverse_cdf",
    "mixture_logistic_log_cdf",
    "mixture_logistic_log_pdf",
    "mixture_logistic_log_sf",
]

MIN_LOG_SCALE = -7.0


def _softplus(x: torch.Tensor) -> torch.Tensor:
    """``log(1 + exp(x))``, accurate to rounding for every ``x`` of the dtype.

    ``F.softplus`` returns ``x`` itself above ``x = 20``, which drops ``log1p(exp(-x))``: below
    float32's rounding there, but 2e-9 in float64 (whose rounding at 20 is 4e-15). In float64
    the exact branch is used up to 40, where ``exp(-40) = 4e-18`` is below its rounding.
    """
    return F.softplus(x, threshold=40.0 if x.dtype == torch.float64 else 20.0)


def _standardised(
    x: torch.Tensor, means: torch.Tensor, log_scales: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    log_scales = log_scales.clamp(min=MIN_LOG_SCALE)
    return (x.unsqueeze(-1) - means) * torch.exp(-log_scales), log_scales


def mixture_logistic_log_pdf(
    x: torch.Tensor, logits: torch.Tensor, means: torch.Tensor, log_scales: torch.Tensor
) -> torch.Tensor:
    """``log f(x)`` of a mixture of logistics; parameters have one more (last) axis than ``x``,
    the K components; ``logits`` are unnormalised mixture weights."""
    z, log_scales = _standardised(x, means, log_scales)
    log_component = z - log_scales - 2.0 * _softplus(z)
    return torch.logsumexp(F.log_softmax(logits, dim=-1) + log_component, dim=-1)


def mixture_logistic_log_cdf(
    x: torch.Tensor, logits: torch.Tensor, means: torch.Tensor, log_scales: torch.Tensor
) -> torch.Tensor:
    """``log F(x)``, the log cumulative distribution function of the mixture."""
    z, _ = _standardised(x, means, log_scales)
    return torch.logsumexp(F.log_softmax(logits, dim=-1) + F.logsigmoid(z), dim=-1)


def mixture_logistic_log_sf(
    x: torch.Tensor, logits: torch.Tensor, means: torch.Tensor, log_scales: torch.Tensor
) -> torch.Tensor:
    """``log(1 - F(x))``, the log survival function of the mixture."""
    z, _ = _standardised(x, means, log_scales)
    return torch.logsumexp(F.log_softmax(logits, dim=-1) + F.logsigmoid(-z), dim=-1)


@torch.no_grad()
def mixture_logistic_inverse_cdf(
    p: torch.Tensor,
    logits: torch.Tensor,
    means: torch.Tensor,
    log_scales: torch.Tensor,
    tolerance: float = 1e-12,
    max_iterations: int = 200,
) -> torch.Tensor:
    """``x`` with ``F(x) = p`` by bisection, elementwise (no gradient).

    The bracket is ``[min_k mu_k - 200 S, max_k mu_k + 200 S]`` with ``S`` the sum of the
    component scales (the official ``init_bounds_scale``), which contains every ``x`` whose
    ``F(x)`` is representable; it is halved until no entry moves by more than ``tolerance``.
    ``p`` is clamped to ``[0, 1]``.
    """
    return _bisect(
        lambda x: torch.exp(mixture_logistic_log_cdf(x, logits, means, log_scales)),
        p.clamp(0.0, 1.0),
        logits,
        means,
        log_scales,
        tolerance,
        max_iterations,
    )


def mixture_logistic_logit(
    x: torch.Tensor, logits: torch.Tensor, means: torch.Tensor, log_scales: torch.Tensor
) -> torch.Tensor:
    """``log F(x) - log(1 - F(x))``, exact in the tails where ``F(x)`` rounds to 0 or 1."""
    z, _ = _standardised(x, means, log_scales)
    log_weights = F.log_softmax(logits, dim=-1)
    a = _softplus(-z)
    return torch.logsumexp(log_weights - a, dim=-1) - torch.logsumexp(log_weights - z - a, dim=-1)


@torch.no_grad()
def _bisect(
    increasing: Callable[[torch.Tensor], torch.Tensor],
    target: torch.Tensor,
    logits: torch.Tensor,
    means: torch.Tensor,
    log_scales: torch.Tensor,
    tolerance: float,
    max_iterations: int = 200,
) -> torch.Tensor:
    """``x`` with ``increasing(x) = target`` elementwise, by bisection on the bracket of
    :func:`mixture_logistic_inverse_cdf`, widened (doubling its width) where it does not hold
    the solution: in logit space every ``x`` is representable, however far in a tail."""
    scale_sum = torch.exp(log_scales.clamp(min=MIN_LOG_SCALE)).sum(-1, keepdim=True)
    lower = (means - 200.0 * scale_sum).amin(-1)
    upper = (means + 200.0 * scale_sum).amax(-1)
    width = upper - lower
    for _ in range(64):
        too_high, too_low = increasing(lower) > target, increasing(upper) < target
        if not bool((too_high | too_low).any()):
            break
        lower = torch.where(too_high, lower - width, lower)
        upper = torch.where(too_low, upper + width, upper)
        width = 2.0 * width
    resolution = 4.0 * torch.finfo(target.dtype).eps
    x = torch.zeros_like(target)
    for _ in range(max_iterations):
        above = increasing(x) > target
        new_x = torch.where(above, (x + lower) / 2, (x + upper) / 2)
        lower = torch.where(above, lower, x)
        upper = torch.where(above, x, upper)
        moved = (new_x - x).abs()
        x = new_x
        # within the tolerance, or within the dtype's resolution at x (float32 cannot resolve
        # 1e-12: it stops after 25 to 30 halvings instead of 200)
        if bool((moved <= tolerance + resolution * (x.abs() + 1.0)).all()):
            break
    return x


def mixture_logistic_coupling(
    x: torch.Tensor,
    s: torch.Tensor,
    t: torch.Tensor,
    logits: torch.Tensor,
    means: torch.Tensor,
    log_scales: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``y = exp(s) logit(F(x)) + t`` and the elementwise ``log dy/dx`` (same shape as ``x``).

    One pass over the components: with ``a = softplus(-z)``, ``log sigmoid(z) = -a``,
    ``log sigmoid(-z) = -z - a`` and the component log-density is ``-z - log sigma - 2a``.
    """
    z, log_scales = _standardised(x, means, log_scales)
    log_weights = F.log_softmax(logits, dim=-1)
    a = _softplus(-z)
    log_cdf = torch.logsumexp(log_weights - a, dim=-1)
    log_sf = torch.logsumexp(log_weights - z - a, dim=-1)
    log_pdf = torch.logsumexp(log_weights - z - log_scales - 2.0 * a, dim=-1)
    y = torch.exp(s) * (log_cdf - log_sf) + t
    return y, log_pdf - log_cdf - log_sf + s


def mixture_logistic_coupling_inverse(
    y: torch.Tensor,
    s: torch.Tensor,
    t: torch.Tensor,
    logits: torch.Tensor,
    means: torch.Tensor,
    log_scales: torch.Tensor,
    tolerance: float = 1e-12,
) -> torch.Tensor:
    """Inverse of :func:`mixture_logistic_coupling` by bisection on ``logit F(x)``.

    The bisection compares ``log F(x) - log(1 - F(x))`` with ``(y - t) exp(-s)`` rather than
    ``F(x)`` with its sigmoid: in the tails, where ``F(x)`` rounds to 0 or 1, the logit is
    still exact, so the inverse keeps full precision there (the memory-saving backward
    reconstructs coupling inputs with it; comparing probabilities once put them off by 2 %).
    """
    return _bisect(
        lambda x: mixture_logistic_logit(x, logits, means, log_scales),
        (y - t) * torch.exp(-s),
        logits,
        means,
        log_scales,
        tolerance,
    )
