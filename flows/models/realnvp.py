"""RealNVP: a multi-scale flow of checkerboard and channel-wise affine couplings.

Dinh, Sohl-Dickstein, Bengio. "Density estimation using Real NVP". ICLR 2017, Sec. 3-4;
official code ``tensorflow/models``, ``research/real_nvp`` (``real_nvp_multiscale_dataset.py``:
``rec_masked_conv_coupling``, ``masked_conv_aff_coupling``, ``conv_ch_aff_coupling``,
``resnet``; ``real_nvp_utils.py``), run with its default ``recursion_type=2``.

The map from an image ``y`` in ``[0, 1]`` to the latents:

    y -> z = logit(0.05 + 0.9 y) -> scale 0 -> ... -> scale S-1 (final)

A scale ``i < S - 1`` applies three affine couplings with alternating checkerboard masks,
squeezes (2x2, :func:`~flows.layers.squeeze`), applies three affine couplings with
alternating channel masks, unsqueezes, then squeezes with the official ordering
(:func:`~flows.layers.squeeze_ordered`) and factors out the second half of the channels: one
colour of a checkerboard of the scale's output. The final scale applies four checkerboard
couplings. Every factored-out half and the final output are modelled by a standard normal.

Each coupling is ``y_b = x_b * exp(s) + t`` with ``s = scale * tanh(raw)`` and a learned
scalar ``scale`` (0 at start in checkerboard couplings, 1 in channel-wise ones, as in the
official code). Its network, as in the official code, reads ``x_a``, batch-normalises it
(and doubles it, for checkerboards), concatenates ``[x_a, -x_a]`` (and the mask), applies a
ReLU and a ResNet: a 3x3 conv to ``width`` features, ``blocks`` residual blocks (BN-ReLU-conv3x3
-BN-ReLU-conv3x3), a 1x1 skip connection from the input and from every block summed into the
output, BN-ReLU and a 1x1 conv to ``[t, raw]``. All convolutions are weight-normalised (unit
filters for the first conv and the convs followed by a batch norm, a learned magnitude
otherwise); batch norms have a shift but no scale. The width doubles at each scale;
channel-wise couplings use twice the scale's width. Each coupling is followed by the paper's
batch normalisation of its output (:class:`~flows.layers.BatchNormFlow`).

Interface: that of every density model of the suite, :class:`~flows.models.image_flow.ImageFlow`
(``log_prob``, ``forward``, ``encode``, ``decode``, ``sample``, ``num_dims``). ``log_prob``
includes the logit transform's log-Jacobian; ``encode`` returns the factored-out halves from
the first scale on, then the final scale's output, flattened and concatenated.

The batch norms make the model's output depend on the batch in training mode (as in the
paper); in eval mode it is a fixed bijection and ``decode(encode(y)) == y``.

Example:
    >>> import torch
    >>> model = realnvp_cifar10(in_channels=1, image_size=8, scales=2, blocks=1, width=8)
    >>> y = torch.rand(16, 1, 8, 8)
    >>> model.log_prob(y).shape
    torch.Size([16])
    >>> model = model.eval()
    >>> z, logdet = model.encode(y)
    >>> bool((model.decode(z) - y).abs().max() < 1e-4), model.sample(2).shape
    (True, torch.Size([2, 1, 8, 8]))
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import weight_norm

from flows.layers import (
    AffineCoupling,
    BatchNormFlow,
    FlowSequence,
    InvertibleLayer,
    LogitTransform,
    checkerboard_mask,
    squeeze,
    squeeze_ordered,
    unsqueeze,
    unsqueeze_ordered,
)
from flows.models.image_flow import ImageFlow, split_latents
from flows.registry import register

__all__ = [
    "RealNVP",
    "RealNVPCouplingNet",
    "RealNVPResNet",
    "RealNVPScale",
    "realnvp_cifar10",
    "realnvp_imagenet32",
    "realnvp_imagenet64",
]

PAPER = (
    "Dinh, Sohl-Dickstein, Bengio. Density estimation using Real NVP. ICLR 2017 (Sec. 3-4; "
    "official code tensorflow/models research/real_nvp)"
)
NOTES = (
    "couplings y = x * exp(s) + t (the official code shifts first); learned scalar scale of "
    "tanh as in the official code; batch-norm running averages without the paper's lag "
    "(the official default bn_lag = 0); weight-norm magnitudes are `weight.original0` "
    "(the L2 of the official code also covers the checkerboard couplings' `scale`)"
)


class _UnitNorm(nn.Module):
    """Weight parametrisation ``v / ||v||`` per output filter (weight norm without magnitude)."""

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        norm = weight.flatten(1).norm(dim=1).view(-1, *([1] * (weight.dim() - 1)))
        return weight / norm


def _conv(
    in_channels: int, out_channels: int, kernel_size: int, *, bias: bool, magnitude: bool
) -> nn.Conv2d:
    """Weight-normalised conv of the official ``conv_layer`` (``weight_norm=True``).

    Weights start uniform in ``+-sqrt(2 / in_channels)``; with ``magnitude`` the filter norms
    are learned (``weight_norm``'s ``g``, started at ``stddev * sqrt(fan_in / 12)``), without
    it the filters are unit vectors.
    """
    conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=bias)
    stddev = math.sqrt(2.0 / in_channels)
    nn.init.uniform_(conv.weight, -stddev, stddev)
    if bias:
        nn.init.zeros_(conv.bias)
    if not magnitude:
        parametrize.register_parametrization(conv, "weight", _UnitNorm())
        return conv
    conv = weight_norm(conv, dim=0)
    fan_in = in_channels * kernel_size * kernel_size
    with torch.no_grad():
        conv.parametrizations.weight.original0.fill_(stddev * math.sqrt(fan_in / 12.0))
    return conv


class _ShiftBatchNorm(nn.Module):
    """Batch norm with a learned shift and no scale (official ``batch_norm(scale=False)``)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(channels, eps=1e-4, momentum=0.1, affine=False)
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x) + self.bias.view(1, -1, 1, 1)


def _norm(channels: int, batch_norm: bool) -> nn.Module:
    return _ShiftBatchNorm(channels) if batch_norm else nn.Identity()


class _ResidualBlock(nn.Module):
    def __init__(self, width: int, batch_norm: bool) -> None:
        super().__init__()
        self.norm_in = _norm(width, batch_norm)
        self.conv1 = _conv(width, width, 3, bias=not batch_norm, magnitude=False)
        self.norm1 = _norm(width, batch_norm)
        self.conv2 = _conv(width, width, 3, bias=True, magnitude=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(torch.relu(self.norm_in(x)))
        return x + self.conv2(torch.relu(self.norm1(h)))


class RealNVPResNet(nn.Module):
    """The official ``resnet`` with ``skip=True`` (see the module docstring)."""

    def __init__(
        self, in_channels: int, width: int, out_channels: int, blocks: int, batch_norm: bool = True
    ) -> None:
        super().__init__()
        if blocks < 1:
            raise ValueError(f"blocks must be positive, got {blocks}")
        self.conv_in = _conv(in_channels, width, 3, bias=True, magnitude=False)
        self.skip_in = _conv(width, width, 1, bias=True, magnitude=True)
        self.blocks = nn.ModuleList(_ResidualBlock(width, batch_norm) for _ in range(blocks))
        self.skips = nn.ModuleList(
            _conv(width, width, 1, bias=True, magnitude=True) for _ in range(blocks)
        )
        self.norm_out = _norm(width, batch_norm)
        self.conv_out = _conv(width, out_channels, 1, bias=True, magnitude=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        out = self.skip_in(h)
        for block, skip in zip(self.blocks, self.skips, strict=True):
            h = block(h)
            out = out + skip(h)
        return self.conv_out(torch.relu(self.norm_out(out)))


class RealNVPCouplingNet(nn.Module):
    """``x_a -> [t, raw]``: input processing of the official couplings, then the ResNet.

    Args:
        in_channels: channels of ``x_a``.
        out_channels: ``2 c_b``.
        width: ResNet features.
        blocks: residual blocks.
        checkerboard: ``None`` for a channel-wise coupling; for a checkerboard coupling the
            ``reverse`` flag of its mask, which is appended to the input as one more channel.
        batch_norm: batch norms (and the doubling of checkerboard inputs) as in the official
            code's ``use_batch_norm``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        width: int,
        blocks: int,
        checkerboard: bool | None = None,
        batch_norm: bool = True,
    ) -> None:
        super().__init__()
        self.checkerboard = checkerboard
        self.batch_norm = batch_norm
        self.norm_in = _norm(in_channels, batch_norm)
        extra = 0 if checkerboard is None else 1
        self.resnet = RealNVPResNet(
            2 * in_channels + extra, width, out_channels, blocks, batch_norm
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm_in(x)
        if self.checkerboard is not None and self.batch_norm:
            h = 2.0 * h
        parts = [h, -h]
        if self.checkerboard is not None:
            mask = checkerboard_mask(
                x.shape[2], x.shape[3], self.checkerboard, dtype=x.dtype, device=x.device
            )
            parts.append(mask.expand(x.shape[0], -1, -1, -1))
        return self.resnet(torch.relu(torch.cat(parts, dim=1)))


def _coupling(
    channels: int, width: int, blocks: int, mask: str, reverse: bool, batch_norm: bool
) -> list[nn.Module]:
    """An affine coupling and (with ``batch_norm``) the batch norm of its output."""
    if mask == "checkerboard":
        net = RealNVPCouplingNet(channels, 2 * channels, width, blocks, reverse, batch_norm)
        scale_init = 0.0  # rescaling_scale
    else:
        net = RealNVPCouplingNet(channels // 2, channels, width, blocks, None, batch_norm)
        scale_init = 1.0  # scale
    layers: list[nn.Module] = [AffineCoupling(net, mask, reverse, scale_init=scale_init)]
    if batch_norm:
        layers.append(BatchNormFlow(channels, mask, reverse))
    return layers


class RealNVPScale(InvertibleLayer):
    """One scale: checkerboard couplings, then (unless final) squeezed channel-wise ones."""

    def __init__(
        self,
        channels: int,
        width: int,
        blocks: int,
        final: bool,
        batch_norm: bool = True,
        memory_saving: bool = True,
    ) -> None:
        super().__init__()
        self.final = final
        # the official first coupling of a scale uses mask_in = 1: our reversed checkerboard
        reverses = (True, False, True, False) if final else (True, False, True)
        self.checkerboard = FlowSequence(
            *(
                layer
                for r in reverses
                for layer in _coupling(channels, width, blocks, "checkerboard", r, batch_norm)
            ),
            memory_saving=memory_saving,
        )
        self.channelwise = (
            None
            if final
            else FlowSequence(
                *(
                    layer
                    for r in (False, True, False)  # change_bottom = True, False, True
                    for layer in _coupling(
                        4 * channels, 2 * width, blocks, "channel", r, batch_norm
                    )
                ),
                memory_saving=memory_saving,
            )
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x, logdet = self.checkerboard(x)
        if self.channelwise is not None:
            h, step = self.channelwise(squeeze(x))
            x, logdet = unsqueeze(h), logdet + step
        return x, logdet

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        if self.channelwise is not None:
            y = unsqueeze(self.channelwise.inverse(squeeze(y)))
        return self.checkerboard.inverse(y)


class RealNVP(ImageFlow):
    """The RealNVP density model (see the module docstring).

    Args:
        in_channels: image channels ``C``.
        image_size: image side ``H = W``, divisible by ``2 ** (scales - 1)``.
        scales: number of scales including the final one (the official ``n_scale``).
        blocks: residual blocks per coupling network.
        width: ResNet features at the first scale (the official ``base_dim``).
        batch_norm: batch norms in the networks and on the couplings' outputs (the official
            ``use_batch_norm``; without them the official code also adds a learned scalar to
            every log-scale, which is not reproduced here).
        alpha: the logit transform's ``alpha`` (0.05).
        memory_saving: if True (default), training keeps each scale's outputs only and
            recomputes every coupling's and batch norm's input from its output in backward
            (:mod:`flows.layers.memory_saving`; not in the official code); False: plain
            autograd, the same weights.
    """

    def __init__(
        self,
        in_channels: int = 3,
        image_size: int = 32,
        scales: int = 2,
        blocks: int = 8,
        width: int = 64,
        batch_norm: bool = True,
        alpha: float = 0.05,
        memory_saving: bool = True,
    ) -> None:
        super().__init__(in_channels, image_size)
        if scales < 1:
            raise ValueError(f"scales must be positive, got {scales}")
        if image_size % 2 ** (scales - 1):
            raise ValueError(
                f"image_size {image_size} is not divisible by 2 ** (scales - 1) = "
                f"{2 ** (scales - 1)} (one squeeze per scale before the last)"
            )
        self.logit = LogitTransform(alpha)
        layers, self.latent_shapes = [], []
        channels, side = in_channels, image_size
        for index in range(scales):
            final = index == scales - 1
            layers.append(
                RealNVPScale(channels, width * 2**index, blocks, final, batch_norm, memory_saving)
            )
            if not final:
                self.latent_shapes.append((2 * channels, side // 2, side // 2))
                channels, side = 2 * channels, side // 2
        self.latent_shapes.append((channels, side, side))
        self.scales = nn.ModuleList(layers)

    def encode(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Latents ``(N, D)`` and ``log|det dz/dy|`` ``(N,)``, logit transform included."""
        z, logdet = self.logit(y)
        parts = []
        for scale in self.scales:
            z, step = scale(z)
            logdet = logdet + step
            if not scale.final:
                z, factored = squeeze_ordered(z).chunk(2, dim=1)
                parts.append(factored.flatten(1))
        parts.append(z.flatten(1))
        return torch.cat(parts, dim=1), logdet

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`encode` (unclamped image)."""
        parts = split_latents(z, self.latent_shapes)
        h = parts[-1]
        for index in reversed(range(len(self.scales))):
            scale = self.scales[index]
            if not scale.final:
                h = unsqueeze_ordered(torch.cat([h, parts[index]], dim=1))
            h = scale.inverse(h)
        return self.logit.inverse(h)


@register(task="density", paper=PAPER, table="density", row="RealNVP", notes=NOTES)
def realnvp_cifar10(
    in_channels: int = 3,
    image_size: int = 32,
    scales: int = 2,
    blocks: int = 8,
    width: int = 64,
    batch_norm: bool = True,
    memory_saving: bool = True,
) -> RealNVP:
    """RealNVP for CIFAR-10 (paper, Sec. 4.1: 8 residual blocks, 64 feature maps, downscale
    only once, i.e. two scales; the official code has no CIFAR-10 setting). 19.6M parameters."""
    return RealNVP(
        in_channels, image_size, scales, blocks, width, batch_norm, memory_saving=memory_saving
    )


@register(task="density", paper=PAPER, table="density", row="RealNVP", notes=NOTES)
def realnvp_imagenet32(
    in_channels: int = 3,
    image_size: int = 32,
    scales: int = 4,
    blocks: int = 4,
    width: int = 32,
    batch_norm: bool = True,
    memory_saving: bool = True,
) -> RealNVP:
    """RealNVP for ImageNet 32x32 (official README: ``n_scale=4, base_dim=32,
    residual_blocks=4``). 46.2M parameters."""
    return RealNVP(
        in_channels, image_size, scales, blocks, width, batch_norm, memory_saving=memory_saving
    )


@register(task="density", paper=PAPER, table="density", row="RealNVP", notes=NOTES)
def realnvp_imagenet64(
    in_channels: int = 3,
    image_size: int = 64,
    scales: int = 5,
    blocks: int = 4,
    width: int = 32,
    batch_norm: bool = True,
    memory_saving: bool = True,
) -> RealNVP:
    """RealNVP for ImageNet 64x64 (the official README's 64x64 setting: ``n_scale=5,
    base_dim=32, residual_blocks=4``). 185.9M parameters: the width doubles at each of the
    five scales, to 512 at the final one."""
    return RealNVP(
        in_channels, image_size, scales, blocks, width, batch_norm, memory_saving=memory_saving
    )
