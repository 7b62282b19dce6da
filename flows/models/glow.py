"""Glow: a multi-scale flow of actnorm, invertible 1x1 convolutions and affine couplings.

Kingma, Dhariwal. "Glow: Generative Flow with Invertible 1x1 Convolutions". NeurIPS 2018,
Sec. 3, Figure 2 and Table 2; official code ``openai/glow`` (``model.py``: ``codec``,
``revnet2d_step``, ``f``, ``split2d``, ``prior``; ``tfops.py``), run with the README's
quantitative settings (``--flow_permutation 2 --flow_coupling 1 --learntop``).

The map from an image ``y`` in ``[0, 1]`` to the latents:

    y - 0.5 -> squeeze -> [K steps -> split2d -> squeeze] x (L - 1) -> K steps -> top prior

One step is actnorm -> invertible 1x1 convolution (plain; ``lu=True`` for the LU version) ->
coupling (Glow's affine coupling; ``coupling="additive"`` for ``z2 += NN(z1)``). The coupling
network is conv3x3(width) -> actnorm -> ReLU -> conv1x1(width) -> actnorm -> ReLU ->
zero-initialised conv3x3 (``conv2d_zeros``: output times ``exp(3 * logs)``); its convolutions
use Glow's edge-indicator padding (:mod:`flows.layers.conv`). ``split2d`` factors out half of
the channels with a learned conditional Gaussian prior (:class:`~flows.layers.Split`); the top
prior is a diagonal Gaussian whose mean and log-std come from a zero-initialised conv on zeros
(``learntop``; with the edge indicator it can differ at the image border).

Interface: that of every density model of the suite, :class:`~flows.models.image_flow.ImageFlow`
(``log_prob``, ``forward``, ``encode``, ``decode``, ``sample``, ``num_dims``). The shift
``y - 0.5`` has log-determinant 0. ``encode`` returns the standardised latents ``eps``, each
split's and the top's ``(z - mean) / std``, flattened and concatenated, so that ``sample``'s
temperature multiplies the standard deviation of the top prior and of every split prior; 0
gives the mode path (every latent at its prior mean). ``log_prob`` evaluates the learned priors
directly, without standardising.

Actnorm layers initialise on the first forward in training mode (call ``log_prob`` on a batch
of data before sampling from a fresh model).

Example:
    >>> import torch
    >>> model = glow_cifar10(in_channels=1, image_size=8, levels=2, steps=2, width=16)
    >>> y = torch.rand(8, 1, 8, 8)
    >>> model.log_prob(y).shape                     # training mode: actnorm initialises here
    torch.Size([8])
    >>> model = model.eval()
    >>> model.sample(3, temperature=0.7).shape
    torch.Size([3, 1, 8, 8])
    >>> eps, logdet = model.encode(y)
    >>> bool((model.decode(eps) - y).abs().max() < 1e-4)
    True
"""

from __future__ import annotations

import torch
from torch import nn

from flows.layers import (
    ActNorm,
    AdditiveCoupling,
    Conv2dSame,
    FlowSequence,
    GlowAffineCoupling,
    InvConv1x1,
    InvConv1x1LU,
    Split,
    ZeroConv2d,
    gaussian_log_prob,
    squeeze,
    unsqueeze,
)
from flows.models.image_flow import ImageFlow, split_latents
from flows.registry import register

__all__ = [
    "Glow",
    "GlowCouplingNet",
    "GlowStep",
    "glow_cifar10",
    "glow_imagenet32",
    "glow_imagenet64",
]

PAPER = (
    "Kingma, Dhariwal. Glow: Generative Flow with Invertible 1x1 Convolutions. NeurIPS 2018 "
    "(Sec. 3, Table 2; official code openai/glow)"
)
NOTES = (
    "official code's settings: affine coupling in the released form (shift, then "
    "sigmoid(h + 2) scale), plain 1x1 convolution (lu=True for LU), learned top prior, "
    "edge-indicator padding"
)


class GlowCouplingNet(nn.Module):
    """Glow's ``f``: conv3x3 -> actnorm -> ReLU -> conv1x1 -> actnorm -> ReLU -> zero conv3x3.

    The two hidden convolutions have no bias (an actnorm follows, ``do_actnorm=True``); the
    actnorms are only normalisers here, their log-determinants are not part of the flow.
    """

    def __init__(self, in_channels: int, out_channels: int, width: int = 512) -> None:
        super().__init__()
        self.conv1 = Conv2dSame(in_channels, width, 3, bias=False)
        self.norm1 = ActNorm(width)
        self.conv2 = Conv2dSame(width, width, 1, bias=False)
        self.norm2 = ActNorm(width)
        self.out = ZeroConv2d(width, out_channels, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.norm1(self.conv1(x))[0])
        h = torch.relu(self.norm2(self.conv2(h))[0])
        return self.out(h)


class GlowStep(FlowSequence):
    """One step of flow: actnorm -> invertible 1x1 conv -> coupling (Glow Figure 2a)."""

    def __init__(
        self, channels: int, width: int = 512, coupling: str = "affine", lu: bool = False
    ) -> None:
        if channels % 2:
            raise ValueError(f"a Glow step needs an even number of channels, got {channels}")
        half = channels // 2
        if coupling == "affine":
            layer: nn.Module = GlowAffineCoupling(GlowCouplingNet(half, channels, width))
        elif coupling == "additive":
            layer = AdditiveCoupling(GlowCouplingNet(half, half, width))
        else:
            raise ValueError(f"coupling must be 'affine' or 'additive', got {coupling!r}")
        invconv = InvConv1x1LU(channels) if lu else InvConv1x1(channels)
        super().__init__(ActNorm(channels), invconv, layer)


class Glow(ImageFlow):
    """The Glow density model (see the module docstring).

    Args:
        in_channels: image channels ``C``.
        image_size: image side ``H = W``, divisible by ``2 ** levels``.
        levels: ``L``, the number of levels (scales).
        steps: ``K``, steps of flow per level.
        width: channels of the coupling networks' hidden layers.
        coupling: ``"affine"`` (default) or ``"additive"``.
        lu: LU-decomposed 1x1 convolutions instead of plain ones.
        learn_top: learned top prior (``learntop``) instead of a standard normal.
        memory_saving: if True (default), training keeps each level's output only and
            recomputes every step's input from its output in backward
            (:mod:`flows.layers.memory_saving`; not in the official code, which stores the
            activations); False: plain autograd, the same weights.
    """

    def __init__(
        self,
        in_channels: int = 3,
        image_size: int = 32,
        levels: int = 3,
        steps: int = 32,
        width: int = 512,
        coupling: str = "affine",
        lu: bool = False,
        learn_top: bool = True,
        memory_saving: bool = True,
    ) -> None:
        super().__init__(in_channels, image_size)
        if levels < 1 or steps < 1:
            raise ValueError(f"levels and steps must be positive, got {levels} and {steps}")
        if image_size % 2**levels:
            raise ValueError(
                f"image_size {image_size} is not divisible by 2 ** levels = {2**levels} (one "
                "squeeze per level)"
            )
        channels, side = 4 * in_channels, image_size // 2
        blocks, splits = [], []
        self.latent_shapes: list[tuple[int, int, int]] = []
        for level in range(levels):
            blocks.append(
                FlowSequence(
                    *(GlowStep(channels, width, coupling, lu) for _ in range(steps)),
                    memory_saving=memory_saving,
                )
            )
            if level < levels - 1:
                splits.append(Split(channels))
                self.latent_shapes.append((channels // 2, side, side))
                channels, side = 2 * channels, side // 2
        self.latent_shapes.append((channels, side, side))
        self.blocks = nn.ModuleList(blocks)
        self.splits = nn.ModuleList(splits)
        self.top_prior = ZeroConv2d(2 * channels, 2 * channels) if learn_top else None

    def top_prior_params(self, batch: int, like: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Mean and log-std of the top latent, ``(batch, C_L, H_L, W_L)`` each."""
        channels, side, _ = self.latent_shapes[-1]
        zeros = like.new_zeros(1, 2 * channels, side, side)
        if self.top_prior is None:
            mean = log_std = zeros[:, :channels]
        else:
            h = self.top_prior(zeros)
            mean, log_std = h[:, :channels], h[:, channels:]
        shape = (batch, channels, side, side)
        return mean.expand(shape), log_std.expand(shape)

    def log_prob(self, y: torch.Tensor) -> torch.Tensor:
        """``log p(y)`` in nats per sample, ``y`` the dequantized image in ``[0, 1]``; the
        densities of the split and top priors evaluated directly (equal to the change of
        variables through :meth:`encode`)."""
        z = squeeze(y - 0.5)
        log_p = y.new_zeros(y.shape[0])
        for level, block in enumerate(self.blocks):
            z, logdet = block(z)
            log_p = log_p + logdet
            if level < len(self.splits):
                z1, _, log_p_z2 = self.splits[level](z)
                log_p = log_p + log_p_z2
                z = squeeze(z1)
        return log_p + gaussian_log_prob(z, *self.top_prior_params(z.shape[0], z))

    def encode(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Standardised latents ``(N, D)`` and ``log|det d eps / d y|`` ``(N,)``."""
        z = squeeze(y - 0.5)
        logdet = y.new_zeros(y.shape[0])
        parts = []
        for level, block in enumerate(self.blocks):
            z, step = block(z)
            logdet = logdet + step
            if level < len(self.splits):
                z1, z2 = z.chunk(2, dim=1)
                mean, log_std = self.splits[level].prior(z1)
                parts.append(((z2 - mean) * torch.exp(-log_std)).flatten(1))
                logdet = logdet - log_std.flatten(1).sum(1)
                z = squeeze(z1)
        mean, log_std = self.top_prior_params(z.shape[0], z)
        parts.append(((z - mean) * torch.exp(-log_std)).flatten(1))
        return torch.cat(parts, dim=1), logdet - log_std.flatten(1).sum(1)

    def decode(self, eps: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`encode`: standardised latents ``(N, D)`` -> image (unclamped)."""
        parts = split_latents(eps, self.latent_shapes)
        mean, log_std = self.top_prior_params(eps.shape[0], eps)
        z = mean + torch.exp(log_std) * parts[-1]
        for level in reversed(range(len(self.blocks))):
            if level < len(self.splits):
                z1 = unsqueeze(z)
                split = self.splits[level]
                z = split.inverse(z1, split.sample(z1, noise=parts[level]))
            z = self.blocks[level].inverse(z)
        return unsqueeze(z) + 0.5


@register(task="density", paper=PAPER, table="density", row="Glow", notes=NOTES)
def glow_cifar10(
    in_channels: int = 3,
    image_size: int = 32,
    levels: int = 3,
    steps: int = 32,
    width: int = 512,
    coupling: str = "affine",
    lu: bool = False,
    learn_top: bool = True,
    memory_saving: bool = True,
) -> Glow:
    """Glow for CIFAR-10: L = 3 levels of K = 32 steps, width 512 (44.6M parameters)."""
    return Glow(
        in_channels, image_size, levels, steps, width, coupling, lu, learn_top, memory_saving
    )


@register(task="density", paper=PAPER, table="density", row="Glow", notes=NOTES)
def glow_imagenet32(
    in_channels: int = 3,
    image_size: int = 32,
    levels: int = 3,
    steps: int = 48,
    width: int = 512,
    coupling: str = "affine",
    lu: bool = False,
    learn_top: bool = True,
    memory_saving: bool = True,
) -> Glow:
    """Glow for ImageNet 32x32: L = 3 levels of K = 48 steps, width 512 (66.9M parameters)."""
    return Glow(
        in_channels, image_size, levels, steps, width, coupling, lu, learn_top, memory_saving
    )


@register(task="density", paper=PAPER, table="density", row="Glow", notes=NOTES)
def glow_imagenet64(
    in_channels: int = 3,
    image_size: int = 64,
    levels: int = 4,
    steps: int = 48,
    width: int = 512,
    coupling: str = "affine",
    lu: bool = False,
    learn_top: bool = True,
    memory_saving: bool = True,
) -> Glow:
    """Glow for ImageNet 64x64: L = 4 levels of K = 48 steps, width 512 (112.4M parameters)."""
    return Glow(
        in_channels, image_size, levels, steps, width, coupling, lu, learn_top, memory_saving
    )
