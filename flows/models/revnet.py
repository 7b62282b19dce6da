"""RevNet-38/110/164 for CIFAR, as in the RevNet paper's official code.

Gomez, Ren, Urtasun, Grosse. "The Reversible Residual Network: Backpropagation Without
Storing Activations". NeurIPS 2017, Table 1/2; official code github.com/renmengye/revnet-public
(``resnet/models/revnet_model.py``, ``resnet/configs/cifar_configs.py``).

Architecture, as in that code:

* stem: 3x3 conv (no bias) -> BN -> ReLU with the width of the first stage;
* each unit splits channels into halves; ``F`` and ``G`` are the pre-activation residual
  branches of the ResNet baselines (basic or bottleneck) on half the width; ``F`` carries the
  stride; the first unit of stage 1 skips ``F``'s first BN-ReLU;
* the first unit of every stage changes resolution or width, so it is not reversible and
  stores its input: ``y1 = s1(x1) + F(x2)``, ``y2 = s2(x2) + G(y1)`` with ``s`` the official
  shortcut of the branch kind applied to each half (pool + zero-pad for basic, a 1x1
  projection per half for bottleneck). The official code treats the first unit of stage 1 the
  same way, although its shape does not change;
* the other units are :class:`~flows.reversible.ReversibleBlock` in a
  :class:`~flows.reversible.ReversibleSequence`, whose backward recomputes activations
  (``memory_saving=True``) or uses plain autograd (``memory_saving=False``);
* head: BN -> ReLU -> global average pool -> linear; TF BatchNorm and initialisation as in
  :mod:`flows.models.resnet`.

Example:
    >>> import torch
    >>> model = revnet38(num_classes=10)
    >>> model(torch.randn(2, 3, 32, 32)).shape
    torch.Size([2, 10])
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from flows.models.resnet import (
    PAPER as RESNET_PAPER,
)
from flows.models.resnet import (
    BasicBranch,
    BottleneckBranch,
    Branch,
    ResidualClassifier,
    make_shortcut,
)
from flows.registry import register
from flows.reversible import ReversibleBlock, ReversibleSequence

__all__ = ["RevNet", "RevNetTransition", "revnet38", "revnet56", "revnet110", "revnet164"]

PAPER = RESNET_PAPER.split(" (")[0] + " (RevNets of Table 2)"


class RevNetTransition(nn.Module):
    """First unit of a RevNet stage: reversible form, but it changes shape and stores its input.

    ``y1 = shortcut1(x1) + F(x2)``, ``y2 = shortcut2(x2) + G(y1)``.

    Args:
        branch: residual branch kind for ``F`` and ``G``.
        in_channels: input width (both halves together).
        out_channels: output width (both halves together).
        stride: stride of ``F`` and the shortcuts.
        preactivate: False for the first unit of stage 1 (``F`` skips its first BN-ReLU).
    """

    def __init__(
        self,
        branch: Branch,
        in_channels: int,
        out_channels: int,
        stride: int,
        preactivate: bool = True,
    ) -> None:
        super().__init__()
        half_in, half_out = in_channels // 2, out_channels // 2
        self.f = branch(half_in, half_out, stride, preactivate)
        self.g = branch(half_out, half_out, 1, True)
        self.shortcut1 = make_shortcut(branch, half_in, half_out, stride)
        self.shortcut2 = make_shortcut(branch, half_in, half_out, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2 = x.chunk(2, dim=1)
        y1 = self.shortcut1(x1) + self.f(x2)
        y2 = self.shortcut2(x2) + self.g(y1)
        return torch.cat([y1, y2], dim=1)


class RevNet(ResidualClassifier):
    """Reversible residual network for small images.

    Args:
        branch: :class:`~flows.models.resnet.BasicBranch` or
            :class:`~flows.models.resnet.BottleneckBranch`.
        units_per_stage: units per stage, the transition unit included, e.g. ``(3, 3, 3)``.
        widths: output width of each stage (both halves), e.g. ``(32, 64, 112)``.
        strides: stride of the first unit of each stage.
        stem_width: width of the stem convolution.
        num_classes: size of the linear head.
        in_channels: image channels.
        imagenet_stem: 7x7 stride-2 stem conv and max-pool (ImageNet) instead of a 3x3 conv.
        memory_saving: recompute activations in backward (True) or use plain autograd.

    Example:
        >>> net = RevNet(BasicBranch, (2, 2, 2), (32, 64, 128), in_channels=1)
        >>> net.memory_saving = False   # switch to plain autograd
        >>> net(torch.randn(4, 1, 8, 8)).shape
        torch.Size([4, 10])
    """

    def __init__(
        self,
        branch: Branch,
        units_per_stage: Sequence[int],
        widths: Sequence[int],
        strides: Sequence[int] = (1, 2, 2),
        stem_width: int = 32,
        num_classes: int = 10,
        in_channels: int = 3,
        imagenet_stem: bool = False,
        memory_saving: bool = True,
    ) -> None:
        super().__init__(stem_width, in_channels, units_per_stage, widths, strides, imagenet_stem)
        stages: list[nn.Module] = []
        width = stem_width
        for stage, (count, out_width, stride) in enumerate(
            zip(units_per_stage, widths, strides, strict=True)
        ):
            half = out_width // 2
            transition = RevNetTransition(branch, width, out_width, stride, preactivate=stage > 0)
            blocks = [
                ReversibleBlock(branch(half, half, 1, True), branch(half, half, 1, True))
                for _ in range(count - 1)
            ]
            stages.append(nn.Sequential(transition, ReversibleSequence(blocks, memory_saving)))
            width = out_width
        self.stages = nn.Sequential(*stages)
        self.add_head(width, num_classes)

    @property
    def memory_saving(self) -> bool:
        """Whether the reversible sequences recompute activations in backward."""
        return all(s.memory_saving for s in self.modules() if isinstance(s, ReversibleSequence))

    @memory_saving.setter
    def memory_saving(self, enabled: bool) -> None:
        for sequence in self.modules():
            if isinstance(sequence, ReversibleSequence):
                sequence.memory_saving = enabled

    def body(self, h: torch.Tensor) -> torch.Tensor:
        return self.stages(h)


@register(
    task="classification", paper=PAPER, table="cifar", row="32 (38)", published_params=460_000
)
def revnet38(num_classes: int = 10, in_channels: int = 3, memory_saving: bool = True) -> RevNet:
    """RevNet-38: basic units 3-3-3, widths 32-64-112 (0.46M parameters)."""
    return RevNet(
        BasicBranch,
        (3, 3, 3),
        (32, 64, 112),
        num_classes=num_classes,
        in_channels=in_channels,
        memory_saving=memory_saving,
    )


@register(task="classification", paper=PAPER, table="cifar", row="110", published_params=1_730_000)
def revnet110(num_classes: int = 10, in_channels: int = 3, memory_saving: bool = True) -> RevNet:
    """RevNet-110: basic units 9-9-9, widths 32-64-128 (1.73M parameters)."""
    return RevNet(
        BasicBranch,
        (9, 9, 9),
        (32, 64, 128),
        num_classes=num_classes,
        in_channels=in_channels,
        memory_saving=memory_saving,
    )


@register(task="classification", paper=PAPER, table="cifar", row="164", published_params=1_750_000)
def revnet164(num_classes: int = 10, in_channels: int = 3, memory_saving: bool = True) -> RevNet:
    """RevNet-164: bottleneck units 9-9-9, output widths 128-256-512 (1.75M parameters)."""
    return RevNet(
        BottleneckBranch,
        (9, 9, 9),
        (128, 256, 512),
        num_classes=num_classes,
        in_channels=in_channels,
        memory_saving=memory_saving,
    )


@register(
    task="classification",
    paper=PAPER.replace("Table 2", "Table 3") + "; ImageNet row of the i-RevNet paper's Table 1",
    table="imagenet",
    row="RevNet",
    published_params=28_000_000,
    notes="the official config names it revnet-54 (2-2-3-2 bottleneck units); 56 counts the "
    "stem conv and the linear layer as the CIFAR names do",
)
def revnet56(num_classes: int = 1000, in_channels: int = 3, memory_saving: bool = True) -> RevNet:
    """RevNet-56 for ImageNet: bottleneck units 2-2-3-2, widths 128-256-512-832 before the
    bottleneck expansion (512-1024-2048-3328), strides 1-2-2-2, stem width 128, 7x7 stride-2
    stem with max-pool (official ``revnet-54`` config)."""
    return RevNet(
        BottleneckBranch,
        (2, 2, 3, 2),
        (512, 1024, 2048, 3328),
        (1, 2, 2, 2),
        stem_width=128,
        num_classes=num_classes,
        in_channels=in_channels,
        imagenet_stem=True,
        memory_saving=memory_saving,
    )
