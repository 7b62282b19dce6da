"""Convolutional VAEs for binary images, with factorised Gaussian, IAF or planar posteriors.

Kingma, Salimans, Jozefowicz, Chen, Sutskever, Welling. "Improved Variational Inference with
Inverse Autoregressive Flow". NeurIPS 2016, Sec. 4-5, Table 1 (MNIST) and Appendix C (the
MNIST architecture). Rezende, Mohamed. "Variational Inference with Normalizing Flows". ICML
2015 (planar flows). Kingma, Welling. "Auto-Encoding Variational Bayes". ICLR 2014.

Encoder: three stride-2 ResNet blocks with 16, 32, 32 feature maps and a stride-1 block between
consecutive ones, a 450-unit dense layer, then the posterior's parameters; the decoder mirrors
it (nearest upsampling to the encoder's sizes, then convolutions) and outputs Bernoulli logits.
ELU nonlinearities and weight normalisation (``torch.nn.utils.parametrizations.weight_norm``)
throughout; 32 latent dimensions; prior N(0, I).

The posterior ``q(z | x)``:

* ``"gaussian"``: ``z_0 = mu + sigma * eps`` (the diagonal Gaussian row of the paper);
* ``"iaf"``: the encoder also outputs a context ``h``; ``depth`` IAF steps
  (:class:`~flows.layers.latent.IAFStep`, MADE of two hidden layers of ``width`` units,
  alternating orders) transform ``z_0``, ``log q`` decreasing by ``sum(log sigma)`` per step;
* ``"planar"``: ``depth`` planar flows whose ``u, w, b`` the encoder outputs per example.

``log_weights(x, k)`` returns ``log p(x, z) - log q(z | x)`` for ``k`` posterior draws per
image, ``(k, N)``: the ELBO is their mean, the importance-weighted bound
``log (1/k) sum exp(.)``. ``kl_parts`` gives the per-dimension single-sample KL terms that the
free-bits objective (``benchmarks/vae_training.py``) groups.

Example:
    >>> import torch
    >>> model = ConvVAE(in_channels=1, image_size=8, posterior="iaf", depth=2, width=32)
    >>> x = torch.bernoulli(torch.full((4, 1, 8, 8), 0.3))
    >>> model.log_weights(x, k=3).shape
    torch.Size([3, 4])
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

from flows.layers.latent import IAFStep, PlanarFlow
from flows.registry import register

__all__ = [
    "ConvVAE",
    "vae_iaf_mnist_d2_w320",
    "vae_iaf_mnist_d2_w1920",
    "vae_iaf_mnist_d4_w1920",
    "vae_iaf_mnist_d8_w1920",
    "vae_mnist",
    "vae_planar_mnist",
]

PAPER = (
    "Kingma, Salimans, Jozefowicz, Chen, Sutskever, Welling. Improved Variational Inference "
    "with Inverse Autoregressive Flow. NeurIPS 2016 (Table 1, MNIST; Appendix C)"
)
PLANAR_PAPER = (
    "Rezende, Mohamed. Variational Inference with Normalizing Flows. ICML 2015 (planar flows), "
    "in the convolutional VAE of Kingma et al. 2016"
)
POSTERIORS = ("gaussian", "iaf", "planar")
LOG_2PI = math.log(2 * math.pi)


def _conv(in_channels: int, out_channels: int, stride: int = 1) -> nn.Module:
    return weight_norm(nn.Conv2d(in_channels, out_channels, 3, stride, padding=1))


def _linear(in_features: int, out_features: int) -> nn.Module:
    return weight_norm(nn.Linear(in_features, out_features))


def _standard_normal_log_prob(z: torch.Tensor) -> torch.Tensor:
    return -0.5 * (z**2 + LOG_2PI)


class ResidualBlock(nn.Module):
    """``x -> shortcut(x) + conv(ELU(conv(ELU(x))))``; the first conv has the stride (or the
    block first upsamples to ``size``), the shortcut is a 1x1 conv when the shape changes."""

    def __init__(
        self, in_channels: int, out_channels: int, stride: int = 1, size: int | None = None
    ) -> None:
        super().__init__()
        self.size = size
        self.conv1 = _conv(in_channels, out_channels, stride)
        self.conv2 = _conv(out_channels, out_channels)
        changes = stride != 1 or in_channels != out_channels
        self.shortcut = (
            weight_norm(nn.Conv2d(in_channels, out_channels, 1, stride)) if changes else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.size is not None:
            x = F.interpolate(x, size=(self.size, self.size), mode="nearest")
        h = self.conv2(F.elu(self.conv1(F.elu(x))))
        return h + (x if self.shortcut is None else self.shortcut(x))


class ConvVAE(nn.Module):
    """The convolutional VAE (see the module docstring).

    Args:
        in_channels, image_size: binary images ``(C, H, H)``.
        latent_dim: 32 in the paper.
        posterior: ``"gaussian"``, ``"iaf"`` or ``"planar"``.
        depth: number of IAF or planar steps.
        width: MADE hidden units (IAF).
        context_dim: size of the IAF context ``h``.
        channels: feature maps of the three stride-2 blocks (16, 32, 32).
        hidden: units of the dense layer (450).
    """

    def __init__(
        self,
        in_channels: int = 1,
        image_size: int = 28,
        latent_dim: int = 32,
        posterior: str = "gaussian",
        depth: int = 0,
        width: int = 320,
        context_dim: int = 32,
        channels: tuple[int, int, int] = (16, 32, 32),
        hidden: int = 450,
    ) -> None:
        super().__init__()
        if posterior not in POSTERIORS:
            raise ValueError(f"posterior must be one of {POSTERIORS}, got {posterior!r}")
        if posterior != "gaussian" and depth < 1:
            raise ValueError(f"a {posterior} posterior needs depth >= 1, got {depth}")
        self.image_shape = (in_channels, image_size, image_size)
        self.latent_dim, self.kind, self.depth = latent_dim, posterior, depth
        sizes = [image_size]
        for _ in range(3):
            sizes.append((sizes[-1] + 1) // 2)
        self.sizes = sizes
        c1, c2, c3 = channels
        self.encoder_blocks = nn.Sequential(
            ResidualBlock(in_channels, c1, 2),
            ResidualBlock(c1, c1),
            ResidualBlock(c1, c2, 2),
            ResidualBlock(c2, c2),
            ResidualBlock(c2, c3, 2),
        )
        flat = c3 * sizes[3] ** 2
        self.context_dim = context_dim if posterior == "iaf" else 0
        flow_params = depth * (2 * latent_dim + 1) if posterior == "planar" else 0
        self.encoder_dense = _linear(flat, hidden)
        self.encoder_out = _linear(hidden, 2 * latent_dim + self.context_dim + flow_params)
        self.iaf = nn.ModuleList(
            IAFStep(latent_dim, width, self.context_dim, reverse=bool(i % 2))
            for i in range(depth if posterior == "iaf" else 0)
        )
        self.planar = PlanarFlow()
        self.decoder_dense = nn.Sequential(
            _linear(latent_dim, hidden), nn.ELU(), _linear(hidden, flat)
        )
        self.decoder_blocks = nn.Sequential(
            ResidualBlock(c3, c3, size=sizes[2]),
            ResidualBlock(c3, c2),
            ResidualBlock(c2, c2, size=sizes[1]),
            ResidualBlock(c2, c1),
            ResidualBlock(c1, c1, size=sizes[0]),
        )
        self.decoder_out = _conv(c1, in_channels)
        self._channels = c3

    def encode(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """``mean``, ``log_std`` ``(N, D)``, and ``context`` (IAF) or ``flow`` parameters."""
        h = F.elu(self.encoder_blocks(x * 2.0 - 1.0))
        h = F.elu(self.encoder_dense(h.flatten(1)))
        out = self.encoder_out(h)
        d = self.latent_dim
        parts = {"mean": out[:, :d], "log_std": out[:, d : 2 * d]}
        rest = out[:, 2 * d :]
        if self.kind == "iaf":
            parts["context"] = rest
        elif self.kind == "planar":
            parts["flow"] = rest.view(len(x), self.depth, 2 * d + 1)
        return parts

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Bernoulli logits ``(N, C, H, W)`` of ``p(x | z)``."""
        side = self.sizes[3]
        h = self.decoder_dense(z).view(len(z), self._channels, side, side)
        return self.decoder_out(F.elu(self.decoder_blocks(h)))

    def posterior(
        self, x: torch.Tensor, k: int = 1, noise: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``k`` draws ``z_K (k, N, D)``, ``log q(z_K | x) (k, N)`` and the per-dimension
        log-q contributions ``(k, N, D)`` (whose sum is ``log q``; a planar step's
        log-determinant, not per dimension, is spread evenly)."""
        parts = self.encode(x)
        mean, log_std = parts["mean"], parts["log_std"]
        eps = (
            torch.randn(k, *mean.shape, device=x.device, dtype=mean.dtype)
            if noise is None
            else noise
        )
        z = mean + torch.exp(log_std) * eps
        log_q_dims = _standard_normal_log_prob(eps) - log_std
        if self.kind == "iaf":
            context = parts["context"].expand(k, *parts["context"].shape)
            for step in self.iaf:
                log_sigma = step.log_sigma(z, context)
                z, _ = step(z, context)
                log_q_dims = log_q_dims - log_sigma
        elif self.kind == "planar":
            d = self.latent_dim
            for index in range(self.depth):
                params = parts["flow"][:, index]
                u, w, b = params[:, :d], params[:, d : 2 * d], params[:, 2 * d :]
                z, logdet = self.planar(z, u, w, b)
                log_q_dims = log_q_dims - logdet.unsqueeze(-1) / d
        return z, log_q_dims.sum(-1), log_q_dims

    def log_likelihood(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """``log p(x | z)`` ``(k, N)`` for binary ``x (N, C, H, W)`` and ``z (k, N, D)``."""
        k, n = z.shape[:2]
        logits = self.decode(z.reshape(k * n, -1)).view(k, n, -1)
        target = x.reshape(1, n, -1).expand(k, -1, -1)
        return -F.binary_cross_entropy_with_logits(logits, target, reduction="none").sum(-1)

    def log_weights(self, x: torch.Tensor, k: int = 1) -> torch.Tensor:
        """``log p(x | z) + log p(z) - log q(z | x)`` for ``k`` draws, ``(k, N)``."""
        z, log_q, _ = self.posterior(x, k)
        log_prior = _standard_normal_log_prob(z).sum(-1)
        return self.log_likelihood(x, z) + log_prior - log_q

    def analytic_kl(self, x: torch.Tensor) -> torch.Tensor:
        """``KL(q(z_0 | x) || N(0, I))`` of the Gaussian base, ``(N,)``, in closed form."""
        parts = self.encode(x)
        mean, log_std = parts["mean"], parts["log_std"]
        return 0.5 * (mean**2 + torch.exp(2 * log_std) - 1 - 2 * log_std).sum(-1)

    @torch.no_grad()
    def sample(self, n: int) -> torch.Tensor:
        """Bernoulli means ``(n, C, H, W)`` of ``p(x | z)``, ``z ~ N(0, I)``."""
        reference = next(self.parameters())
        z = torch.randn(n, self.latent_dim, device=reference.device, dtype=reference.dtype)
        return torch.sigmoid(self.decode(z))


@register(task="latent-variable", paper=PAPER, table="vae", row="VAE, diagonal Gaussian")
def vae_mnist(in_channels: int = 1, image_size: int = 28, latent_dim: int = 32) -> ConvVAE:
    """The convolutional VAE with a factorised Gaussian posterior."""
    return ConvVAE(in_channels, image_size, latent_dim, "gaussian")


def _iaf(depth: int, width: int) -> Callable[..., ConvVAE]:
    """The builder of the IAF row with ``depth`` steps of MADE width ``width``."""

    def build(in_channels: int = 1, image_size: int = 28, latent_dim: int = 32) -> ConvVAE:
        return ConvVAE(in_channels, image_size, latent_dim, "iaf", depth, width)

    build.__name__ = build.__qualname__ = f"vae_iaf_mnist_d{depth}_w{width}"
    build.__doc__ = f"VAE + IAF: {depth} steps, MADE of two hidden layers of {width} units."
    return build


vae_iaf_mnist_d2_w320 = register(
    task="latent-variable",
    paper=PAPER,
    table="vae",
    row="IAF, depth 2, width 320",
    name="vae_iaf_mnist_d2_w320",
)(_iaf(2, 320))
vae_iaf_mnist_d2_w1920 = register(
    task="latent-variable",
    paper=PAPER,
    table="vae",
    row="IAF, depth 2, width 1920",
    name="vae_iaf_mnist_d2_w1920",
)(_iaf(2, 1920))
vae_iaf_mnist_d4_w1920 = register(
    task="latent-variable",
    paper=PAPER,
    table="vae",
    row="IAF, depth 4, width 1920",
    name="vae_iaf_mnist_d4_w1920",
)(_iaf(4, 1920))
vae_iaf_mnist_d8_w1920 = register(
    task="latent-variable",
    paper=PAPER,
    table="vae",
    row="IAF, depth 8, width 1920",
    name="vae_iaf_mnist_d8_w1920",
)(_iaf(8, 1920))


@register(
    task="latent-variable",
    paper=PLANAR_PAPER,
    table="vae",
    row="planar flow, depth 8",
    notes="not a row of the IAF paper's table: planar flows in the same VAE, for comparison",
)
def vae_planar_mnist(
    in_channels: int = 1, image_size: int = 28, latent_dim: int = 32, depth: int = 8
) -> ConvVAE:
    """The convolutional VAE with ``depth`` amortised planar flows."""
    return ConvVAE(in_channels, image_size, latent_dim, "planar", depth)
