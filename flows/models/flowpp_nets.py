"""Flow++'s coupling networks: gated convolutions, layer norm and multi-head self-attention.

Ho, Chen, Srinivas, Duan, Abbeel. "Flow++: Improving Flow-Based Generative Models with
Variational Dequantization and Architecture Design". ICML 2019, Sec. 3.3; official code
``aravindsrinivas/flowpp`` (``flows/flows.py``: ``concat_elu``, ``gate``, ``layernorm``,
``gated_conv``, ``gated_attn``, ``MixLogisticAttnCoupling``; ``flows/ablations/abl_noattn.py``:
``gated_nin``; ``flows_imagenet/launchers``: the ImageNet variant).

The network of one coupling reads the conditioning half ``(N, C, H, W)`` (and, inside the
dequantizer, a context ``(N, 32, H, W)`` computed from the discrete image) and returns
``C * (2 + 3K)`` channels per position: the coupling's log-scale (through tanh) and shift, and
the K mixture logits, means and log-scales per dimension:

    proj_in (conv3x3, filters) -> B x [gated conv -> layer norm -> gated attention -> layer norm]
        -> [concat ELU, ImageNet variant] -> proj_out (conv3x3, init scale 0.1)

* gated conv (PixelCNN++'s gated resnet): ``c = conv3x3(celu(x)) [+ nin(celu(context))]``,
  ``c = celu(c)``, dropout, ``c = nin(c)`` to 2 x filters, ``x + a * sigmoid(b)``;
* gated attention: position embedding added, ``nin`` to queries, keys and values, ``heads``
  heads of dot-product attention over all H x W positions, dropout, ``nin`` to 2 x filters,
  gated residual as above; the "no attention" ablation replaces the attention by a pointwise
  max-of-three MLP with the same parameter count (``mixer="pointwise"``), and the ImageNet
  64x64 dequantizer has neither (``mixer="none"``: gated conv and one layer norm per block);
* layer norm is over the channels of each position (learned gain and bias).

Every convolution initialises from data (:class:`~flows.layers.data_init.DataInitConv2d`).

Example:
    >>> import torch
    >>> net = CouplingNetwork(2, 2 * (2 + 3 * 4), height=4, width=4, filters=16, blocks=1, heads=2)
    >>> net(torch.randn(8, 2, 4, 4)).shape
    torch.Size([8, 28, 4, 4])
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from flows.layers.data_init import DataInitConv2d

__all__ = [
    "CONTEXT_MODES",
    "MIXERS",
    "ChannelLayerNorm",
    "ContextProcessor",
    "CouplingNetwork",
    "GatedAttention",
    "GatedConv",
    "GatedPointwise",
    "concat_elu",
]


MIXERS = ("attention", "pointwise", "none")
CONTEXT_MODES = ("shallow", "attention", "norm")


def concat_elu(x: torch.Tensor) -> torch.Tensor:
    """``elu([x, -x])`` along the channels (doubles them)."""
    return F.elu(torch.cat([x, -x], dim=1))


def _gate(x: torch.Tensor) -> torch.Tensor:
    a, b = x.chunk(2, dim=1)
    return a * torch.sigmoid(b)


class ChannelLayerNorm(nn.LayerNorm):
    """Layer norm over the channels of each position of an ``(N, C, H, W)`` tensor."""

    def __init__(self, channels: int) -> None:
        super().__init__(channels, eps=1e-5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class GatedConv(nn.Module):
    """PixelCNN++'s gated residual block (official ``gated_conv``).

    Args:
        channels: input and output channels.
        context_channels: channels of the optional context (0: none).
        dropout: dropout probability after the second nonlinearity.
        nin_output: the gating layer is a 1x1 (``use_nin=True``) rather than a 3x3 conv.
        weight_norm: weight-normalised convolutions (ImageNet launchers).
    """

    def __init__(
        self,
        channels: int,
        context_channels: int = 0,
        dropout: float = 0.0,
        nin_output: bool = True,
        weight_norm: bool = False,
    ) -> None:
        super().__init__()
        self.conv = DataInitConv2d(2 * channels, channels, 3, weight_norm=weight_norm)
        self.context = (
            DataInitConv2d(2 * context_channels, channels, 1, weight_norm=weight_norm)
            if context_channels
            else None
        )
        self.dropout = nn.Dropout(dropout)
        self.gate = DataInitConv2d(
            2 * channels, 2 * channels, 1 if nin_output else 3, 0.1, weight_norm
        )

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        c = self.conv(concat_elu(x))
        if self.context is not None:
            if context is None:
                raise ValueError("this gated conv was built with a context and needs one")
            c = c + self.context(concat_elu(context))
        c = self.dropout(concat_elu(c))
        return x + _gate(self.gate(c))


class GatedAttention(nn.Module):
    """Multi-head self-attention over all positions with a gated residual (``gated_attn``)."""

    def __init__(
        self, channels: int, heads: int = 4, dropout: float = 0.0, weight_norm: bool = False
    ) -> None:
        super().__init__()
        if channels % heads:
            raise ValueError(f"channels ({channels}) must be divisible by heads ({heads})")
        self.heads = heads
        self.qkv = DataInitConv2d(channels, 3 * channels, 1, weight_norm=weight_norm)
        self.dropout = nn.Dropout(dropout)
        self.out = DataInitConv2d(channels, 2 * channels, 1, 0.1, weight_norm)

    def forward(self, x: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        dim = c // self.heads
        # channel index of proj1's output is (q|k|v) * C + head * dim + d, as in the official
        # channel-last reshape [N, T, 3, heads, dim]
        qkv = self.qkv(x + position).view(n, 3, self.heads, dim, h * w)
        q, k, v = (qkv[:, i].transpose(-1, -2) for i in range(3))  # (N, heads, T, dim)
        weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(dim), dim=-1)
        attended = (weights @ v).transpose(-1, -2).reshape(n, c, h, w)
        return x + _gate(self.out(self.dropout(attended)))


class GatedPointwise(nn.Module):
    """The "no attention" ablation's ``gated_nin``: position embedding, 1x1 conv to 3 x C,
    maximum over each group of three, dropout, 1x1 conv to 2 x C, gated residual."""

    def __init__(self, channels: int, dropout: float = 0.0, weight_norm: bool = False) -> None:
        super().__init__()
        self.expand = DataInitConv2d(channels, 3 * channels, 1, weight_norm=weight_norm)
        self.dropout = nn.Dropout(dropout)
        self.out = DataInitConv2d(channels, 2 * channels, 1, 0.1, weight_norm)

    def forward(self, x: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        # official channel-last reshape [..., C, 3]: channel index c * 3 + j
        hidden = self.expand(x + position).view(n, c, 3, h, w).amax(dim=2)
        return x + _gate(self.out(self.dropout(hidden)))


class CouplingNetwork(nn.Module):
    """The network of one Flow++ coupling (see the module docstring).

    Args:
        in_channels: channels of the conditioning half.
        out_channels: output channels (``C * (2 + 3K)``, or ``2C`` for affine couplings).
        height, width: spatial size (for the learned position embedding).
        filters, blocks, heads, dropout: the paper's width, depth, attention heads, dropout.
        mixer: after each gated conv, ``"attention"`` (self-attention), ``"pointwise"`` (the
            ablation's gated MLP) or ``"none"`` (ImageNet 64x64 dequantizer; its position
            embedding is still allocated, unused, as in the official code).
        context_channels: channels of the dequantizer's context (0 in the main flow).
        layer_norm: layer norm after each residual block (True in every official setting).
        final_elu: concat ELU before the output layer (ImageNet launchers).
        weight_norm: weight-normalised convolutions (ImageNet launchers).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        height: int,
        width: int,
        filters: int = 96,
        blocks: int = 10,
        heads: int = 4,
        dropout: float = 0.0,
        mixer: str = "attention",
        context_channels: int = 0,
        layer_norm: bool = True,
        final_elu: bool = False,
        weight_norm: bool = False,
    ) -> None:
        super().__init__()
        self.position = nn.Parameter(torch.randn(1, filters, height, width) * 0.01)
        # read by nothing without a mixer: DistributedDataParallel must not wait for its grad
        self.allocates_unused_parameters = mixer == "none"
        self.proj_in = DataInitConv2d(in_channels, filters, 3, weight_norm=weight_norm)
        self.convs = nn.ModuleList(
            GatedConv(filters, context_channels, dropout, True, weight_norm) for _ in range(blocks)
        )
        if mixer not in MIXERS:
            raise ValueError(f"mixer must be one of {MIXERS}, got {mixer!r}")
        self.mixers = nn.ModuleList(
            GatedAttention(filters, heads, dropout, weight_norm)
            if mixer == "attention"
            else GatedPointwise(filters, dropout, weight_norm)
            for _ in range(blocks if mixer != "none" else 0)
        )
        norm = ChannelLayerNorm if layer_norm else (lambda channels: nn.Identity())
        per_block = 1 if mixer == "none" else 2
        self.norms = nn.ModuleList(
            nn.ModuleList([norm(filters) for _ in range(per_block)]) for _ in range(blocks)
        )
        self.final_elu = final_elu
        self.proj_out = DataInitConv2d(
            2 * filters if final_elu else filters, out_channels, 3, 0.1, weight_norm
        )

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        h = self.proj_in(x)
        for index, (conv, norms) in enumerate(zip(self.convs, self.norms, strict=True)):
            h = norms[0](conv(h, context))
            if len(self.mixers):
                h = norms[1](self.mixers[index](h, self.position))
        return self.proj_out(concat_elu(h) if self.final_elu else h)


class ContextProcessor(nn.Module):
    """Features of the discrete image that condition the variational dequantizer.

    ``x / levels - 0.5`` is split into its two column-alternating halves, which are stacked
    along the channels and projected to ``channels`` (32) by a 3x3 conv, followed by
    ``blocks`` gated convs with 3x3 gating layers: ``mode="shallow"`` (CIFAR-10: 3 blocks,
    official ``shallow_processor``); ``"attention"``: each gated conv followed by layer norm,
    self-attention and layer norm (ImageNet 32x32: 8 blocks, ``deep_processor``); ``"norm"``:
    each followed by a layer norm (ImageNet 64x64: 5 blocks). The output has the shape of one
    half: ``(N, channels, H, W / 2)``.
    """

    def __init__(
        self,
        in_channels: int,
        height: int,
        width: int,
        channels: int = 32,
        blocks: int = 3,
        dropout: float = 0.0,
        mode: str = "shallow",
        heads: int = 4,
        weight_norm: bool = False,
    ) -> None:
        super().__init__()
        if mode not in CONTEXT_MODES:
            raise ValueError(f"mode must be one of {CONTEXT_MODES}, got {mode!r}")
        attention = mode == "attention"
        self.norms = (
            nn.ModuleList(ChannelLayerNorm(channels) for _ in range(blocks))
            if mode == "norm"
            else None
        )
        self.proj = DataInitConv2d(2 * in_channels, channels, 3, weight_norm=weight_norm)
        self.convs = nn.ModuleList(
            GatedConv(channels, 0, dropout, nin_output=False, weight_norm=weight_norm)
            for _ in range(blocks)
        )
        self.attention = (
            nn.ModuleList(
                nn.ModuleList(
                    [
                        ChannelLayerNorm(channels),
                        GatedAttention(channels, heads, dropout, weight_norm),
                        ChannelLayerNorm(channels),
                    ]
                )
                for _ in range(blocks)
            )
            if attention
            else None
        )
        self.position = (
            nn.Parameter(torch.randn(1, channels, height, width // 2) * 0.01) if attention else None
        )

    def forward(self, x: torch.Tensor, levels: int) -> torch.Tensor:
        scaled = x / levels - 0.5
        n, c, h, w = scaled.shape
        halves = scaled.view(n, c, h, w // 2, 2)
        h_ = self.proj(torch.cat([halves[..., 0], halves[..., 1]], dim=1))
        for index, conv in enumerate(self.convs):
            h_ = conv(h_)
            if self.norms is not None:
                h_ = self.norms[index](h_)
            if self.attention is not None:
                norm1, attend, norm2 = self.attention[index]
                h_ = norm2(attend(norm1(h_), self.position))
        return h_
