"""Invertible 1x1 convolution of Glow, plain and LU-decomposed.

Kingma, Dhariwal. "Glow: Generative Flow with Invertible 1x1 Convolutions". NeurIPS 2018,
Sec. 3.2 and eq. (9)-(10); official code ``openai/glow``, ``model.invertible_1x1_conv``.

Every position's channel vector is multiplied by the same ``C x C`` matrix, ``y = W x``, so
the log-determinant is ``h * w * log|det W|``. Both versions start from a random rotation
(the Q of a QR decomposition of a Gaussian matrix). The released Glow code trains with the
plain version (its LU branch sits behind ``if True:``); the LU version parameterises
``W = P L (U + diag(sign(s) * exp(log_s)))`` with ``P`` and ``sign(s)`` fixed, ``L`` unit lower
triangular and ``U`` strictly upper triangular, so that ``log|det W| = sum(log_s)`` costs
``O(C)`` instead of ``O(C^3)``.

Example:
    >>> import torch
    >>> plain = InvConv1x1(4)
    >>> lu = InvConv1x1LU.from_matrix(plain.weight.detach())
    >>> x = torch.randn(2, 4, 3, 3)
    >>> bool(torch.allclose(plain(x)[0], lu(x)[0], atol=1e-5))
    True
    >>> bool(torch.allclose(plain(x)[1], lu(x)[1], atol=1e-4))
    True
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from flows.layers.base import InvertibleLayer

__all__ = ["InvConv1x1", "InvConv1x1LU", "random_rotation"]


def random_rotation(channels: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """A random orthogonal ``C x C`` matrix: Q of the QR decomposition of a Gaussian matrix."""
    gaussian = torch.randn(channels, channels, generator=generator, dtype=torch.float64)
    return torch.linalg.qr(gaussian)[0].to(torch.get_default_dtype())


def _apply(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``y[:, i] = sum_j weight[i, j] x[:, j]`` at every position (``(N, C, ...)`` input)."""
    if x.dim() == 2:
        return x @ weight.T
    return F.conv2d(x, weight.view(*weight.shape, 1, 1))


def _positions(x: torch.Tensor) -> int:
    return x[0, 0].numel() if x.dim() > 2 else 1


def _check(weight: torch.Tensor) -> torch.Tensor:
    if weight.dim() != 2 or weight.shape[0] != weight.shape[1]:
        raise ValueError(f"expected a square matrix, got shape {tuple(weight.shape)}")
    return weight.detach().clone()


class InvConv1x1(InvertibleLayer):
    """Plain invertible 1x1 convolution: a full learned matrix ``W``.

    ``log|det W|`` is computed in float64 and cast back (as the official code does); the
    inverse uses ``W^-1`` computed in float64.

    Args:
        channels: ``C``.
        weight: initial ``W`` (default: :func:`random_rotation`).
    """

    def __init__(self, channels: int, weight: torch.Tensor | None = None) -> None:
        super().__init__()
        w = random_rotation(channels) if weight is None else _check(weight)
        if w.shape[0] != channels:
            raise ValueError(f"weight is {tuple(w.shape)}, expected {channels}x{channels}")
        self.weight = nn.Parameter(w)

    @classmethod
    def from_matrix(cls, weight: torch.Tensor) -> InvConv1x1:
        """The layer with ``W = weight``."""
        return cls(weight.shape[0], weight)

    def log_abs_det(self) -> torch.Tensor:
        """``log|det W|`` (computed in float64, returned in the weight's dtype)."""
        return torch.linalg.slogdet(self.weight.double()).logabsdet.to(self.weight.dtype)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logdet = self.log_abs_det() * _positions(x)
        return _apply(x, self.weight), logdet.expand(x.shape[0])

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        inverse = torch.linalg.inv(self.weight.double()).to(self.weight.dtype)
        return _apply(y, inverse)


class InvConv1x1LU(InvertibleLayer):
    """LU-decomposed invertible 1x1 convolution (Glow eq. (10)).

    ``W = P L (U + diag(sign_s * exp(log_s)))``; ``P`` (permutation) and ``sign_s`` are fixed
    buffers; ``L`` is stored as a full matrix and used through its strictly lower part plus the
    identity, ``U`` through its strictly upper part. log-determinant ``h * w * sum(log_s)``.

    Args:
        channels: ``C``.
        weight: the matrix to decompose at initialisation (default: :func:`random_rotation`).
    """

    def __init__(self, channels: int, weight: torch.Tensor | None = None) -> None:
        super().__init__()
        w = random_rotation(channels) if weight is None else _check(weight)
        if w.shape[0] != channels:
            raise ValueError(f"weight is {tuple(w.shape)}, expected {channels}x{channels}")
        p, lower, upper = torch.linalg.lu(w.double())
        s = torch.diagonal(upper)
        dtype = w.dtype
        self.register_buffer("permutation", p.to(dtype))
        self.register_buffer("sign_s", torch.sign(s).to(dtype))
        self.register_buffer("lower_mask", torch.tril(torch.ones(channels, channels), -1).to(dtype))
        self.register_buffer("eye", torch.eye(channels, dtype=dtype))
        self.lower = nn.Parameter(lower.to(dtype))
        self.upper = nn.Parameter(torch.triu(upper, 1).to(dtype))
        self.log_s = nn.Parameter(torch.log(s.abs()).to(dtype))

    @classmethod
    def from_matrix(cls, weight: torch.Tensor) -> InvConv1x1LU:
        """The layer whose ``W`` equals ``weight`` (up to the rounding of the decomposition)."""
        return cls(weight.shape[0], weight)

    def _factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        lower = self.lower * self.lower_mask + self.eye
        upper = self.upper * self.lower_mask.T + torch.diag(self.sign_s * torch.exp(self.log_s))
        return lower, upper

    @property
    def weight(self) -> torch.Tensor:
        """The matrix ``W = P L U``."""
        lower, upper = self._factors()
        return self.permutation @ lower @ upper

    def log_abs_det(self) -> torch.Tensor:
        """``log|det W| = sum(log_s)``."""
        return self.log_s.sum()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logdet = self.log_abs_det() * _positions(x)
        return _apply(x, self.weight), logdet.expand(x.shape[0])

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        lower, upper = self._factors()
        # W^-1 = U^-1 L^-1 P^T, by triangular solves
        l_inv_pt = torch.linalg.solve_triangular(
            lower, self.permutation.T, upper=False, unitriangular=True
        )
        inverse = torch.linalg.solve_triangular(upper, l_inv_pt, upper=True)
        return _apply(y, inverse)
