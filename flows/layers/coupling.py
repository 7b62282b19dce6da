"""Coupling layers: additive (NICE), affine (RealNVP) and Glow's sigmoid-scaled affine.

Dinh, Krueger, Bengio. "NICE: Non-linear Independent Components Estimation". ICLR 2015
workshop, Sec. 3.2 (additive coupling). Dinh, Sohl-Dickstein, Bengio. "Density estimation
using Real NVP". ICLR 2017, Sec. 3.3-3.4 (affine coupling, masks). Kingma, Dhariwal. "Glow:
Generative Flow with Invertible 1x1 Convolutions". NeurIPS 2018, Sec. 3.3 and Table 1
(official code ``openai/glow``, ``model.py``, ``revnet2d_step``).

A coupling splits its input into a conditioning part ``x_a``, which passes through unchanged,
and a transformed part ``x_b``; a network ``net`` reads ``x_a`` only, so the map is triangular
and invertible whatever ``net`` is. Two ways of splitting (``mask``):

* ``"channel"``: ``x_a`` is the first half of the channels, ``x_b`` the second (swapped when
  ``reverse``); ``net`` sees ``x_a`` (``C / 2`` channels). Works on ``(N, C, H, W)`` and
  ``(N, D)``.
* ``"checkerboard"``: ``x_a = x * m`` with the checkerboard mask ``m`` of
  :func:`~flows.layers.masks.checkerboard_mask` (its complement when ``reverse``); ``net``
  sees the full-size masked tensor and its outputs are multiplied by ``1 - m``.

``net`` returns, for ``x_b`` with ``c_b`` channels: ``c_b`` channels (additive), ``2 c_b``
channels ``[shift, raw log-scale]`` (RealNVP, halves as in ``tf.split``) or ``2 c_b`` channels
interleaved ``shift = h[:, 0::2]``, ``raw = h[:, 1::2]`` (Glow).

Each coupling is written as its network's output, ``parameters(x_a)``, and an elementwise map
of ``x_b`` given them, ``transform`` / ``untransform``. The memory-saving backward uses the
split: :meth:`~_Coupling.rebuild` evaluates the network once, on the conditioning part of the
output (which *is* ``x_a``), to invert ``x_b`` and to recompute the forward pass with grad,
where inverting and then running the forward pass would evaluate it twice (the RevNet paper's
Algorithm 1 shares ``F(x2)`` the same way).

Example:
    >>> import torch
    >>> from torch import nn
    >>> layer = AffineCoupling(nn.Conv2d(2, 4, 3, padding=1)).double()
    >>> x = torch.randn(3, 4, 5, 5, dtype=torch.float64)
    >>> y, logdet = layer(x)
    >>> error = (layer.inverse(y) - x).abs().max()
    >>> logdet.shape, torch.equal(y[:, :2], x[:, :2]), bool(error < 1e-12)
    (torch.Size([3]), True, True)
"""

from __future__ import annotations

import abc
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from flows.layers.base import InvertibleLayer, Rebuilt, Replay
from flows.layers.masks import MASK_TYPES, checkerboard_mask

__all__ = ["AdditiveCoupling", "AffineCoupling", "GlowAffineCoupling"]


def _per_sample_sum(t: torch.Tensor) -> torch.Tensor:
    return t.flatten(1).sum(1)


class _Coupling(InvertibleLayer):
    """Splitting and merging shared by the couplings (see the module docstring)."""

    def __init__(self, net: nn.Module, mask: str = "channel", reverse: bool = False) -> None:
        super().__init__()
        if mask not in MASK_TYPES:
            raise ValueError(f"mask must be one of {MASK_TYPES}, got {mask!r}")
        self.net = net
        self.mask = mask
        self.reverse = reverse

    def extra_repr(self) -> str:
        return f"mask={self.mask!r}, reverse={self.reverse}"

    def _split(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """``(conditioning input of net, transformed part, weight of net's outputs or None)``."""
        if self.mask == "channel":
            if x.shape[1] % 2:
                raise ValueError(f"a channel coupling needs an even channel count, got {x.shape}")
            first, second = x.chunk(2, dim=1)
            return (second, first, None) if self.reverse else (first, second, None)
        if x.dim() != 4:
            raise ValueError(f"a checkerboard coupling needs (N, C, H, W) input, got {x.shape}")
        m = checkerboard_mask(x.shape[2], x.shape[3], self.reverse, dtype=x.dtype, device=x.device)
        return x * m, x, 1.0 - m

    def _merge(self, conditioning: torch.Tensor, transformed: torch.Tensor) -> torch.Tensor:
        if self.mask == "checkerboard":
            return transformed  # the weighted update left the conditioning entries unchanged
        parts = (transformed, conditioning) if self.reverse else (conditioning, transformed)
        return torch.cat(parts, dim=1)

    @staticmethod
    def _weighted(t: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
        return t if weight is None else t * weight

    @abc.abstractmethod
    def parameters_of(
        self, a: torch.Tensor, weight: torch.Tensor | None
    ) -> tuple[torch.Tensor, ...]:
        """The elementwise map's parameters from ``net(x_a)`` (weighted for a checkerboard)."""

    @abc.abstractmethod
    def transform(
        self, b: torch.Tensor, params: tuple[torch.Tensor, ...]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(y_b, logdet)`` given the parameters."""

    @abc.abstractmethod
    def untransform(self, y_b: torch.Tensor, params: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """``x_b`` given the parameters."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a, b, weight = self._split(x)
        y_b, logdet = self.transform(b, self.parameters_of(a, weight))
        return self._merge(a, y_b), logdet

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        a, b, weight = self._split(y)
        return self._merge(a, self.untransform(b, self.parameters_of(a, weight)))

    def rebuild(self, y: torch.Tensor, memo: object, replay: Replay) -> Rebuilt:
        """Invert and recompute with one evaluation of ``net`` (see the module docstring).

        The leaves are ``y`` (its conditioning part is ``x_a``, read by ``net``) and the
        reconstructed ``x_b``; the input's gradient is the conditioning part's (through
        ``net``) plus ``x_b``'s (through the elementwise map, identity where a checkerboard
        leaves entries unchanged).
        """
        conditioning = y.detach().requires_grad_()
        a, b, weight = self._split(conditioning)
        with replay():
            params = self.parameters_of(a, weight)
        with torch.no_grad():
            x_b = self.untransform(b, tuple(p.detach() for p in params))
        transformed = x_b.requires_grad_()
        y_b, logdet = self.transform(transformed, params)
        x = self._merge(a.detach(), x_b.detach())
        return Rebuilt(x, (conditioning, transformed), self._merge(a, y_b), logdet, self._grad)

    def _grad(self, grads: Sequence[torch.Tensor]) -> torch.Tensor:
        through_net, through_map = grads
        if self.mask == "checkerboard":
            return through_net + through_map
        return self._merge(self._split(through_net)[0], through_map)


class AdditiveCoupling(_Coupling):
    """NICE's additive coupling ``y_b = x_b + t(x_a)``; log-determinant 0.

    Also Glow's ``flow_coupling=0`` (``z2 += f(z1)``). ``net`` maps ``x_a`` to ``c_b``
    channels.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> layer = AdditiveCoupling(nn.Linear(1, 1))
        >>> y, logdet = layer(torch.randn(4, 2))
        >>> logdet.tolist()
        [0.0, 0.0, 0.0, 0.0]
    """

    def parameters_of(
        self, a: torch.Tensor, weight: torch.Tensor | None
    ) -> tuple[torch.Tensor, ...]:
        return (self._weighted(self.net(a), weight),)

    def transform(
        self, b: torch.Tensor, params: tuple[torch.Tensor, ...]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        (shift,) = params
        return b + shift, b.new_zeros(b.shape[0])

    def untransform(self, y_b: torch.Tensor, params: tuple[torch.Tensor, ...]) -> torch.Tensor:
        (shift,) = params
        return y_b - shift


class AffineCoupling(_Coupling):
    """RealNVP's affine coupling ``y_b = x_b * exp(s) + t``, ``s = scale * tanh(raw)``.

    ``net(x_a)`` returns ``2 c_b`` channels, ``[t, raw]``. ``scale`` is learned: one scalar
    (the official code's ``rescaling_scale`` / ``scale``, shape ``[]``) unless
    ``scale_channels`` asks for one per channel. The official code initialises it to 0 in
    checkerboard and 1 in channel-wise couplings (``scale_init``). log-determinant:
    ``sum(s)`` over the transformed entries.

    The official code applies the shift first, ``y_b = (x_b + t) * exp(s)``; this layer uses
    the paper's order (eq. 7), an equally expressive reparameterisation of ``t`` with the same
    log-determinant.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> layer = AffineCoupling(nn.Linear(1, 2), scale_init=1.0)
        >>> x = torch.randn(5, 2)
        >>> y, logdet = layer(x)
        >>> bool(torch.allclose(layer.inverse(y), x, atol=1e-6))
        True
    """

    def __init__(
        self,
        net: nn.Module,
        mask: str = "channel",
        reverse: bool = False,
        scale_init: float = 1.0,
        scale_channels: int | None = None,
    ) -> None:
        super().__init__(net, mask, reverse)
        shape = () if scale_channels is None else (scale_channels,)
        self.scale = nn.Parameter(torch.full(shape, float(scale_init)))

    def parameters_of(
        self, a: torch.Tensor, weight: torch.Tensor | None
    ) -> tuple[torch.Tensor, ...]:
        shift, raw = self.net(a).chunk(2, dim=1)
        scale = self.scale
        if scale.dim() == 1:
            scale = scale.view(1, -1, *([1] * (raw.dim() - 2)))
        log_scale = scale * torch.tanh(raw)
        return self._weighted(shift, weight), self._weighted(log_scale, weight)

    def transform(
        self, b: torch.Tensor, params: tuple[torch.Tensor, ...]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        shift, log_scale = params
        return b * torch.exp(log_scale) + shift, _per_sample_sum(log_scale)

    def untransform(self, y_b: torch.Tensor, params: tuple[torch.Tensor, ...]) -> torch.Tensor:
        shift, log_scale = params
        return (y_b - shift) * torch.exp(-log_scale)


class GlowAffineCoupling(_Coupling):
    """Glow's affine coupling as released: ``y_b = (x_b + shift) * sigmoid(raw + 2)``.

    ``h = net(x_a)`` has ``2 c_b`` channels, ``shift = h[:, 0::2]``, ``raw = h[:, 1::2]``
    (``revnet2d_step`` with ``flow_coupling=1`` in ``openai/glow``); log-determinant
    ``sum(log sigmoid(raw + 2))``. The paper's Table 1 writes the scale as ``exp(log s)`` and
    applies it before the shift (``y_a = s * x_a + t``); the released code, which produced the
    published numbers, shifts first and bounds the scale in ``(0, 1)`` with a sigmoid whose
    ``+2`` offset starts it near 0.88. Glow splits by channel (``mask="channel"``).

    Example:
        >>> import torch
        >>> from torch import nn
        >>> layer = GlowAffineCoupling(nn.Conv2d(2, 4, 1)).double()
        >>> x = torch.randn(2, 4, 3, 3, dtype=torch.float64)
        >>> y, logdet = layer(x)
        >>> bool((layer.inverse(y) - x).abs().max() < 1e-12), bool((logdet < 0).all())
        (True, True)
    """

    def parameters_of(
        self, a: torch.Tensor, weight: torch.Tensor | None
    ) -> tuple[torch.Tensor, ...]:
        h = self.net(a)
        shift, raw = h[:, 0::2], h[:, 1::2]
        return self._weighted(shift, weight), self._weighted(F.logsigmoid(raw + 2.0), weight)

    def transform(
        self, b: torch.Tensor, params: tuple[torch.Tensor, ...]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        shift, log_scale = params
        return (b + shift) * torch.exp(log_scale), _per_sample_sum(log_scale)

    def untransform(self, y_b: torch.Tensor, params: tuple[torch.Tensor, ...]) -> torch.Tensor:
        shift, log_scale = params
        return y_b * torch.exp(-log_scale) - shift
