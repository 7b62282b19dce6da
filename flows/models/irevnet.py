"""i-RevNet: a classifier that is invertible up to its final projection.

Jacobsen, Smeulders, Oyallon. "i-RevNet: Deep Invertible Networks". ICLR 2018, Sec. 3 and
Table 1; official code github.com/jhjacobsen/pytorch-i-revnet (``models/iRevNet.py``).

The input is downsampled by :func:`~flows.layers.space_to_depth` and split into channel halves
``(x1, x2)``. Every block computes

    y1 = S(x1) + F(x2),    output (S(x2), y1)      (halves swap each block)

where ``S`` is the invertible downsampling on a stride-2 block and the identity otherwise, and

    F = [BN-ReLU, not in the first block] -> conv k1 (stride) -> BN-ReLU -> conv k2
        -> dropout -> BN-ReLU -> conv k3,   inner width out / 4.

Its inverse is ``x2 = S^-1(z1)``, ``x1 = S^-1(z2 - F(x2))``. A stride-1 block whose output is
wider than its input first appends zero channels (injective padding; the inverse drops them),
which makes the network injective rather than bijective. ``representation`` and ``inverse``
run in IEEE float32 (:func:`flows.precision.exact_float32`: no TF32 on GPUs), so the inverse
is exact to float32 rounding on every device.

Kernel sizes of ``F``: the paper describes bottleneck blocks (1x1, 3x3, 1x1); the public
PyTorch code uses 3x3 for all three convolutions. ``kernel_sizes="paper"`` gives the first
(about 29M parameters for i-RevNet (b)), ``"public"`` the second (about 125M).

Example:
    >>> import torch
    >>> model = irevnet_cifar(num_classes=10).double().eval()
    >>> x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    >>> z = model.representation(x)
    >>> bool((model.inverse(z) - x).abs().max() < 1e-10)
    True
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from flows.layers import ChannelZeroPad, depth_to_space, space_to_depth
from flows.precision import exact_float32
from flows.registry import register
from flows.reversible import (
    RngState,
    backpropagate_through,
    draws_random_numbers,
    frozen_batch_norm_stats,
    recompute_in_backward,
    record_rng_state,
)

__all__ = [
    "KERNEL_SIZES",
    "IRevNet",
    "IRevNetBlock",
    "irevnet_a",
    "irevnet_b",
    "irevnet_cifar",
    "zero_channels",
]

PAPER = (
    "Jacobsen, Smeulders, Oyallon. i-RevNet: Deep Invertible Networks. ICLR 2018 (Table 1; "
    "CIFAR configuration of the official code)"
)
KERNEL_SIZES = {"paper": (1, 3, 1), "public": (3, 3, 3)}

Halves = tuple[torch.Tensor, torch.Tensor]


def _conv(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(
        in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2, bias=False
    )


class IRevNetBlock(nn.Module):
    """One i-RevNet block on channel halves ``(x1, x2)``; returns ``(S(x2), S(x1) + F(x2))``.

    Args:
        in_channels: channels of both input halves together.
        out_channels: channels of each output half.
        stride: 2 downsamples both halves with ``space_to_depth``; 1 keeps the size.
        first: the first block skips ``F``'s leading BN-ReLU.
        dropout: dropout rate inside ``F``.
        kernel_sizes: kernel sizes of the three convolutions of ``F``.
        expansion: ``F``'s inner width is ``out_channels // expansion``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int = 1,
        first: bool = False,
        dropout: float = 0.0,
        kernel_sizes: Sequence[int] = KERNEL_SIZES["paper"],
        expansion: int = 4,
    ) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {stride}")
        if stride == 2 and out_channels != 2 * in_channels:
            raise ValueError(
                f"a stride-2 block maps {in_channels} channels to 4 x {in_channels // 2} per "
                f"half, so out_channels must be {2 * in_channels}, got {out_channels}"
            )
        pad = 2 * out_channels - in_channels if stride == 1 else 0
        if pad < 0:
            raise ValueError(f"cannot narrow {in_channels} channels to 2 x {out_channels}")
        self.stride = stride
        self.in_channels = in_channels
        self.pad = ChannelZeroPad(pad)
        half = (in_channels + pad) // 2
        inner = out_channels // expansion
        k1, k2, k3 = kernel_sizes
        layers: list[nn.Module] = [] if first else [nn.BatchNorm2d(half), nn.ReLU(inplace=True)]
        layers += [
            _conv(half, inner, k1, stride),
            nn.BatchNorm2d(inner),
            nn.ReLU(inplace=True),
            _conv(inner, inner, k2),
            nn.Dropout(dropout),
            nn.BatchNorm2d(inner),
            nn.ReLU(inplace=True),
            _conv(inner, out_channels, k3),
        ]
        self.f = nn.Sequential(*layers)
        self.rng_f = draws_random_numbers(self.f)
        # set by IRevNet for networks with injective padding, the one source of exact zeros
        self.restores_zero_channels = bool(pad)

    def _downsample(self, x: torch.Tensor) -> torch.Tensor:
        return space_to_depth(x, 2) if self.stride == 2 else x

    def _upsample(self, x: torch.Tensor) -> torch.Tensor:
        return depth_to_space(x, 2) if self.stride == 2 else x

    def forward(self, halves: Halves) -> Halves:
        x1, x2 = halves
        if self.pad.pad:
            x1, x2 = self.pad(torch.cat([x1, x2], dim=1)).chunk(2, dim=1)
        y1 = self._downsample(x1) + self.f(x2)
        return self._downsample(x2), y1

    def inverse(self, halves: Halves) -> Halves:
        z1, y1 = halves
        x2 = self._upsample(z1)
        x1 = self._upsample(y1 - self.f(x2))
        return self._unpad(x1, x2)

    def _unpad(self, x1: torch.Tensor, x2: torch.Tensor) -> Halves:
        """The inverse of the injective padding (and the adjoint of its gradient)."""
        if not self.pad.pad:
            return x1, x2
        x = self.pad.inverse(torch.cat([x1, x2], dim=1))
        return x[:, : self.in_channels // 2], x[:, self.in_channels // 2 :]

    def forward_recording_rng(
        self, x1: torch.Tensor, x2: torch.Tensor
    ) -> tuple[Halves, tuple[RngState, torch.Tensor | None]]:
        """:meth:`forward`, also returning what the backward replays: the random state before
        ``F`` (for dropout) and which channels of ``F``'s input were exactly zero."""
        if self.pad.pad:
            x1, x2 = self.pad(torch.cat([x1, x2], dim=1)).chunk(2, dim=1)
        state = record_rng_state(x1.device) if self.rng_f else None
        y1 = self._downsample(x1) + self.f(x2)
        zeros = zero_channels(x2) if self.restores_zero_channels else None
        return (self._downsample(x2), y1), (state, zeros)

    def backward_from_output(
        self,
        y: Halves,
        grad_y: Halves,
        states: tuple[RngState, torch.Tensor | None],
        autocast: contextlib.AbstractContextManager[object] | None = None,
    ) -> tuple[Halves, Halves, dict[nn.Parameter, torch.Tensor]]:
        """Reconstruct the block's input from its output ``(z1, y1)`` and backpropagate.

        ``x2 = S^-1(z1)``; recomputing ``F(x2)`` with grad enabled gives ``x1 = S^-1(y1 -
        F(x2))`` and, through ``F``, its share of ``dL/dx2``. ``S`` (``space_to_depth`` or the
        identity) is a permutation, so its gradient is ``S^-1`` of the output's; the injective
        padding's gradient drops the padded channels, as its inverse drops them.

        Channels of ``x2`` that were exactly zero in the forward pass are set back to exact
        zeros: the injective padding's, and those a fresh network passes on from it (at
        initialisation ``F`` maps a zero input to exact zeros, so a padded channel stays zero
        for a block or two). The reconstruction would leave rounding errors of 1e-17 there,
        which BatchNorm scales up and a ReLU reads on the wrong side of its kink.
        """
        recompute = autocast if autocast is not None else contextlib.nullcontext()
        (z1, y1), (grad_z1, grad_y1) = y, grad_y
        state, zeros = states
        parameter_grads: dict[nn.Parameter, torch.Tensor] = {}
        x2 = self._upsample(z1)
        if zeros is not None:
            x2 = x2.masked_fill(zeros.view(1, -1, 1, 1), 0.0)
        f_out, grad_through_f = backpropagate_through(
            self.f, state, x2, grad_y1, recompute, parameter_grads
        )
        x1 = self._upsample(y1 - f_out)
        grad_x1, grad_x2 = self._upsample(grad_y1), self._upsample(grad_z1) + grad_through_f
        return self._unpad(x1, x2), self._unpad(grad_x1, grad_x2), parameter_grads


def zero_channels(x: torch.Tensor) -> torch.Tensor:
    """``(C,)`` booleans: which channels of ``x`` are exactly zero in every sample and position.

    Example:
        >>> zero_channels(torch.tensor([[[[1.0]], [[0.0]]]])).tolist()
        [False, True]
    """
    return x.detach().abs().amax(dim=(0, 2, 3)) == 0


class IRevNet(nn.Module):
    """An i-RevNet classifier with an exact inverse of its representation.

    Args:
        blocks: blocks per stage, e.g. ``(6, 16, 72, 6)``.
        strides: stride of the first block of each stage.
        channels: output channels of each half in each stage.
        num_classes: size of the linear head.
        in_channels: image channels.
        init_block_size: block size of the initial ``space_to_depth`` (1: none).
        dropout: dropout rate inside ``F``.
        kernel_sizes: ``"paper"`` (1x1-3x3-1x1) or ``"public"`` (3x3-3x3-3x3).
        memory_saving: if True (default), training keeps only the representation and
            recomputes every block's input from its output in backward (the RevNet paper's
            backward, :func:`flows.reversible.recompute_in_backward`); False: plain autograd.

    ``representation(x)`` is the output of the last block (both halves concatenated), the
    point up to which nothing is discarded; ``inverse`` maps it back to the image. The head is
    BN (momentum 0.9, as in the official code) -> ReLU -> global average pool -> linear.
    """

    def __init__(
        self,
        blocks: Sequence[int],
        strides: Sequence[int],
        channels: Sequence[int],
        num_classes: int = 1000,
        in_channels: int = 3,
        init_block_size: int = 2,
        dropout: float = 0.0,
        kernel_sizes: str = "paper",
        memory_saving: bool = True,
    ) -> None:
        super().__init__()
        self.memory_saving = memory_saving
        if kernel_sizes not in KERNEL_SIZES:
            raise ValueError(f"kernel_sizes must be one of {sorted(KERNEL_SIZES)}")
        self.init_block_size = init_block_size
        width = in_channels * init_block_size**2
        self.split_at = width // 2
        layers = []
        for stage, (count, stride, out_channels) in enumerate(
            zip(blocks, strides, channels, strict=True)
        ):
            for index in range(count):
                layers.append(
                    IRevNetBlock(
                        width,
                        out_channels,
                        stride if index == 0 else 1,
                        first=stage == 0 and index == 0,
                        dropout=dropout,
                        kernel_sizes=KERNEL_SIZES[kernel_sizes],
                    )
                )
                width = 2 * out_channels
        self.blocks = nn.ModuleList(layers)
        padded = any(block.pad.pad for block in layers)
        for block in layers:  # zeros from the padding travel on: every block watches for them
            block.restores_zero_channels = padded
        self.head_norm = nn.BatchNorm2d(width, momentum=0.9)
        self.fc = nn.Linear(width, num_classes)

    @exact_float32()
    def representation(self, x: torch.Tensor) -> torch.Tensor:
        """The invertible representation before the head."""
        if self.init_block_size > 1:
            x = space_to_depth(x, self.init_block_size)
        params = [p for p in self.blocks.parameters() if p.requires_grad]
        needs_graph = torch.is_grad_enabled() and (x.requires_grad or bool(params))
        if self.memory_saving and needs_graph:
            halves = (x[:, : self.split_at], x[:, self.split_at :])
            return recompute_in_backward(halves, self.blocks, params, concatenate=True)
        halves = (x[:, : self.split_at], x[:, self.split_at :])
        for block in self.blocks:
            halves = block(halves)
        return torch.cat(halves, dim=1)

    @exact_float32()
    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        """Reconstruct the image from :meth:`representation`.

        Exact in eval mode; in train mode BatchNorm normalises with the statistics of the
        batch being inverted (the same as in the forward pass when ``z`` came from it), and
        running statistics are left untouched either way.
        """
        halves = z.chunk(2, dim=1)
        with frozen_batch_norm_stats(self):
            for block in reversed(self.blocks):
                halves = block.inverse(halves)
        x = torch.cat(halves, dim=1)
        if self.init_block_size > 1:
            x = depth_to_space(x, self.init_block_size)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.head_norm(self.representation(x)))
        return self.fc(h.mean(dim=(2, 3)))


@register(
    task="classification",
    paper=PAPER,
    table="imagenet",
    row="i-RevNet (b)",
    published_params=29_000_000,
    notes="bijective; kernel_sizes='public' gives the public code's 3x3 variant",
)
def irevnet_b(
    num_classes: int = 1000,
    in_channels: int = 3,
    kernel_sizes: str = "paper",
    dropout: float = 0.0,
    memory_saving: bool = True,
) -> IRevNet:
    """i-RevNet (b), bijective: blocks 6-16-72-6, strides 2-2-2-2, channels 24-96-384-1536.

    With the initial 2x2 ``space_to_depth`` the representation of a 3x224x224 image is
    3072x7x7, exactly as many numbers as the image.
    """
    return IRevNet(
        (6, 16, 72, 6),
        (2, 2, 2, 2),
        (24, 96, 384, 1536),
        num_classes=num_classes,
        in_channels=in_channels,
        init_block_size=2,
        dropout=dropout,
        kernel_sizes=kernel_sizes,
        memory_saving=memory_saving,
    )


@register(
    task="classification",
    paper=PAPER,
    table="cifar",
    row="i-RevNet (CIFAR)",
    notes="official code's CIFAR configuration; injective (first block pads channels)",
)
def irevnet_cifar(
    num_classes: int = 10,
    in_channels: int = 3,
    kernel_sizes: str = "public",
    dropout: float = 0.1,
    memory_saving: bool = True,
) -> IRevNet:
    """CIFAR i-RevNet of the official code: blocks 18-18-18, strides 1-2-2, channels 16-64-256,
    dropout 0.1, 3x3 kernels, no initial downsampling."""
    return IRevNet(
        (18, 18, 18),
        (1, 2, 2),
        (16, 64, 256),
        num_classes=num_classes,
        in_channels=in_channels,
        init_block_size=1,
        dropout=dropout,
        kernel_sizes=kernel_sizes,
        memory_saving=memory_saving,
    )


@register(
    task="classification",
    paper=PAPER,
    table="imagenet",
    row="i-RevNet (a)",
    published_params=181_000_000,
    notes="injective; configuration reconstructed (initial 4x4 downsampling, a stride-1 first "
    "stage that zero-pads 48 to 128 channels, channels 64-256-1024-4096): 193.5M parameters "
    "against the published 181M, which no natural configuration of the block matches exactly",
)
def irevnet_a(
    num_classes: int = 1000,
    in_channels: int = 3,
    kernel_sizes: str = "paper",
    dropout: float = 0.0,
    memory_saving: bool = True,
) -> IRevNet:
    """i-RevNet (a), injective, as reconstructed here (the paper gives no full configuration).

    Reasoning: an injective i-RevNet needs a stride-1 block that widens (the only place the
    official block pads); keeping a 7x7 output from 224x224 with strides 1-2-2-2 needs an
    initial 4x4 ``space_to_depth`` (3x224x224 -> 48x56x56, as the official code's
    ``init_ds`` allows); stride-2 blocks then fix the widths to ``c, 4c, 16c, 64c``. With the
    paper's 1x1-3x3-1x1 kernels and blocks 6-16-72-6, ``c = 64`` gives 193.5M parameters, the
    closest to 181M (``c = 48`` gives 110.4M; 3x3 kernels with ``c = 32`` give 221.0M).
    """
    return IRevNet(
        (6, 16, 72, 6),
        (1, 2, 2, 2),
        (64, 256, 1024, 4096),
        num_classes=num_classes,
        in_channels=in_channels,
        init_block_size=4,
        dropout=dropout,
        kernel_sizes=kernel_sizes,
        memory_saving=memory_saving,
    )
