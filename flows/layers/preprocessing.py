"""Pre-processing of images for flows: uniform dequantization and RealNVP's logit transform.

Dinh, Sohl-Dickstein, Bengio. "Density estimation using Real NVP". ICLR 2017, Sec. 4.1;
official code ``tensorflow/models``, ``research/real_nvp/real_nvp_multiscale_dataset.py``
(``data_constraint = 0.9``: ``p = 0.05 + 0.9 y``, ``z = logit(p)``, ``transform_cost``).
Theis, van den Oord, Bethge. "A note on the evaluation of generative models". ICLR 2016
(uniform dequantization).

Example:
    >>> import torch
    >>> x = torch.tensor([[0, 1, 2]])                 # three levels: 0, 1, 2
    >>> y = dequantize(x, levels=3, generator=torch.Generator().manual_seed(0))
    >>> bool(((y >= x / 3) & (y < (x + 1) / 3)).all())
    True
    >>> z, logdet = LogitTransform()(torch.full((1, 1, 2, 2), 0.5))
    >>> z.abs().max().item(), round(logdet.item(), 4)     # 4 * (log 0.9 - 2 log 0.5)
    (0.0, 5.1237)
"""

from __future__ import annotations

import math

import torch
from torch import nn

from flows.layers.base import InvertibleLayer

__all__ = ["LogitTransform", "UniformDequantizer", "dequantize"]


def dequantize(
    x: torch.Tensor,
    levels: int = 256,
    generator: torch.Generator | None = None,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Integer images with values ``0 .. levels - 1`` -> ``y = (x + u) / levels``, ``u ~ U[0, 1)``.

    ``dtype`` defaults to ``x``'s if it is floating point, else the default dtype. With a
    ``generator`` the noise is reproducible.
    """
    if dtype is None:
        dtype = x.dtype if x.is_floating_point() else torch.get_default_dtype()
    noise = torch.rand(x.shape, generator=generator, dtype=dtype, device=x.device)
    return (x.to(dtype) + noise) / levels


class UniformDequantizer(nn.Module):
    """``q(u | x) = U[0, 1)^D``: the special case of a variational dequantizer with
    ``log q = 0``, with the interface of :class:`~flows.models.flowpp.VariationalDequantizer`.

    ``sample(x, levels, generator)`` draws ``u`` with ``torch.rand`` in float32 on the CPU
    generator (then moves it to ``x``'s device), exactly as :func:`dequantize` does, so both
    give the same ``y = (x + u) / levels`` for the same generator state.

    Example:
        >>> import torch
        >>> x = torch.tensor([[0, 1, 2]])
        >>> u, log_q = UniformDequantizer().sample(x, 3, torch.Generator().manual_seed(0))
        >>> y = dequantize(x, 3, torch.Generator().manual_seed(0))
        >>> torch.allclose((x + u) / 3, y), log_q.tolist()
        (True, [0.0])
    """

    @staticmethod
    def draw_noise(
        shape: tuple[int, ...], generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """The noise ``sample`` transforms: ``U[0, 1)``, float32, on the CPU generator."""
        return torch.rand(shape, generator=generator, dtype=torch.float32)

    def sample(
        self,
        x: torch.Tensor,
        levels: int,
        generator: torch.Generator | None = None,
        noise: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``u`` (``noise`` itself when given, else drawn) and ``log q = 0``."""
        u = (self.draw_noise(x.shape, generator) if noise is None else noise).to(x.device)
        return u, u.new_zeros(x.shape[0])


class LogitTransform(InvertibleLayer):
    """``y in [0, 1] -> z = logit(alpha + (1 - 2 alpha) y)``, RealNVP's pre-processing.

    log-determinant: ``sum(log(1 - 2 alpha) - log p - log(1 - p))`` over all dimensions, the
    official ``transform_cost``. The inverse ``y = (sigmoid(z) - alpha) / (1 - 2 alpha)`` maps
    all of R back, to ``(-alpha / (1 - 2 alpha), 1 + alpha / (1 - 2 alpha))``.

    Args:
        alpha: 0.05 in the official code (``data_constraint = 1 - 2 alpha = 0.9``).
    """

    def __init__(self, alpha: float = 0.05) -> None:
        super().__init__()
        if not 0.0 <= alpha < 0.5:
            raise ValueError(f"alpha must be in [0, 0.5), got {alpha}")
        self.alpha = alpha

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}"

    def forward(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        p = self.alpha + (1.0 - 2.0 * self.alpha) * y
        log_p, log_1mp = torch.log(p), torch.log1p(-p)
        log_jacobian = math.log1p(-2.0 * self.alpha) - log_p - log_1mp
        return log_p - log_1mp, log_jacobian.flatten(1).sum(1)

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        return (torch.sigmoid(z) - self.alpha) / (1.0 - 2.0 * self.alpha)
