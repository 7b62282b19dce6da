"""What the image density flows (Glow, RealNVP, Flow++) share: :class:`ImageFlow`.

Each of them maps a dequantized image ``y`` in ``[0, 1]^D`` bijectively to standardised
latents ``eps`` and models them by a standard normal, so that by the change of variables

    log p(y) = log N(eps; 0, I) + log|det d eps / d y|

(Dinh, Sohl-Dickstein, Bengio. "Density estimation using Real NVP". ICLR 2017, Sec. 3.1,
eq. (3); Kingma, Dhariwal. "Glow". NeurIPS 2018, Sec. 2) and a sample is the image of
Gaussian noise under the inverse map. The interface of every density model of the suite:

* ``log_prob(y) -> (N,)``: log-density in nats of the dequantized image ``y`` in ``[0, 1]``,
  pre-processing Jacobians included; ``forward(y)`` returns the same (so that
  ``DistributedDataParallel`` sees the loss). Bits/dim add ``D log(levels)`` (done by the
  runner, not here).
* ``encode(y) -> (eps, logdet)``: the latents flattened and concatenated, ``(N, D)``, and
  ``log|det d eps / d y|``, ``(N,)``; ``decode(eps)`` is its inverse (unclamped).
* ``sample(n, temperature=1.0) -> (n, C, H, W)`` in ``[0, 1]`` (clamped):
  ``decode(temperature * N(0, I))`` in eval mode; 0 gives the mode path.
* ``num_dims``: ``D = C * H * W``; ``image_shape``: ``(C, H, W)``.

A model implements the two hooks :meth:`~ImageFlow.encode` and :meth:`~ImageFlow.decode`;
it may override :meth:`~ImageFlow.log_prob` with a path of its own that equals the change of
variables (Glow evaluates its learned priors directly). A subclass's ``encode``, ``decode``
and ``log_prob`` run in IEEE float32 (:func:`flows.precision.exact_float32`, TF32 off on
GPUs) whatever the caller set, so that ``decode(encode(y))`` is ``y`` to float32 rounding.

Example:
    >>> import math
    >>> import torch
    >>> from torch import nn
    >>> class ScaledImage(ImageFlow):
    ...     '''``eps = s (y - 1/2)``: a Gaussian of standard deviation ``1 / s`` per pixel.'''
    ...     def __init__(self, scale):
    ...         super().__init__(in_channels=1, image_size=2)
    ...         self.log_scale = nn.Parameter(torch.tensor(math.log(scale)))
    ...     def encode(self, y):
    ...         logdet = (self.num_dims * self.log_scale).expand(y.shape[0])
    ...         return (y.flatten(1) - 0.5) * torch.exp(self.log_scale), logdet
    ...     def decode(self, eps):
    ...         y = eps * torch.exp(-self.log_scale) + 0.5
    ...         return y.reshape(-1, *self.image_shape)
    >>> model = ScaledImage(4.0)
    >>> round(model(torch.full((1, 1, 2, 2), 0.5)).item(), 4)  # 4 (log 4 - log sqrt(2 pi))
    1.8694
    >>> model.sample(3, temperature=0.0).unique().tolist()    # the mode: mid-grey
    [0.5]
"""

from __future__ import annotations

import abc
from collections.abc import Sequence

import torch
from torch import nn

from flows.layers import gaussian_log_prob
from flows.precision import exact_float32

__all__ = ["ImageFlow", "split_latents"]


def split_latents(eps: torch.Tensor, shapes: Sequence[tuple[int, int, int]]) -> list[torch.Tensor]:
    """Flattened latents ``(N, D)`` -> one tensor ``(N, C_i, H_i, W_i)`` per shape, in order.

    The inverse of flattening each latent and concatenating them along dimension 1.

    Example:
        >>> eps = torch.arange(10.0).reshape(1, 10)
        >>> [tuple(part.shape) for part in split_latents(eps, [(2, 2, 2), (2, 1, 1)])]
        [(1, 2, 2, 2), (1, 2, 1, 1)]
    """
    sizes = [c * h * w for c, h, w in shapes]
    return [
        part.reshape(-1, *shape)
        for part, shape in zip(eps.split(sizes, dim=1), shapes, strict=True)
    ]


class ImageFlow(nn.Module, metaclass=abc.ABCMeta):
    """Base class of the image density flows (see the module docstring).

    Args:
        in_channels: image channels ``C``.
        image_size: image side ``H = W``.
    """

    EXACT_METHODS = ("encode", "decode", "log_prob")

    def __init_subclass__(cls, **kwargs: object) -> None:
        """Wrap the subclass's own ``encode``, ``decode`` and ``log_prob`` in
        :func:`~flows.precision.exact_float32` (see the module docstring)."""
        super().__init_subclass__(**kwargs)
        for name in cls.EXACT_METHODS:
            method = vars(cls).get(name)
            if method is not None and not getattr(method, "__isabstractmethod__", False):
                setattr(cls, name, exact_float32()(method))

    def __init__(self, in_channels: int, image_size: int) -> None:
        super().__init__()
        self.image_shape = (in_channels, image_size, image_size)

    @property
    def num_dims(self) -> int:
        """``D = C * H * W``."""
        c, h, w = self.image_shape
        return c * h * w

    @abc.abstractmethod
    def encode(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Standardised latents ``(N, D)`` and ``log|det d eps / d y|`` ``(N,)``."""

    @abc.abstractmethod
    def decode(self, eps: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`encode`: latents ``(N, D)`` -> image (unclamped)."""

    def log_prob(self, y: torch.Tensor) -> torch.Tensor:
        """``log p(y)`` in nats per sample, ``y`` the dequantized image in ``[0, 1]``."""
        eps, logdet = self.encode(y)
        return gaussian_log_prob(eps) + logdet

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        """Same as :meth:`log_prob` (so that ``DistributedDataParallel`` sees the loss)."""
        return self.log_prob(y)

    @torch.no_grad()
    def sample(self, n: int, temperature: float = 1.0) -> torch.Tensor:
        """``n`` images in ``[0, 1]``, ``decode(temperature * eps)`` with ``eps ~ N(0, I)``.

        Runs in eval mode (data-dependent layers neither initialise nor update their statistics
        on samples), then restores the model's mode.
        """
        reference = next(self.parameters())
        eps = torch.randn(n, self.num_dims, dtype=reference.dtype, device=reference.device)
        was_training = self.training
        try:
            return self.eval().decode(temperature * eps).clamp(0.0, 1.0)
        finally:
            self.train(was_training)
