"""Pre-activation CIFAR ResNets, configured as the baselines of the RevNet paper.

He et al., "Identity Mappings in Deep Residual Networks", ECCV 2016 (pre-activation units);
depths, widths and training recipe of Gomez et al., "The Reversible Residual Network:
Backpropagation Without Storing Activations", NeurIPS 2017, Table 1/2, following the official
code (github.com/renmengye/revnet-public, ``resnet/models/resnet_model.py``, ``version="v2"``).

Architecture, as in that code:

* stem: 3x3 conv (no bias) -> BN -> ReLU, no max-pool;
* units are pre-activation (BN -> ReLU -> conv); the first unit of stage 1 skips its first
  BN-ReLU because the stem has just applied one;
* basic units (ResNet-32/110): two 3x3 convs; on a change of stride or width the shortcut is
  average pooling plus symmetric zero-padding of channels (no parameters);
* bottleneck units (ResNet-164): 1x1 (carrying the stride) -> 3x3 -> 1x1 with the inner width
  a quarter of the output width; the shortcut is a 1x1 conv (no BN) whenever stride > 1 or the
  width changes;
* head: BN -> ReLU -> global average pool -> linear;
* BatchNorm as in TensorFlow: eps 1e-3, moving-average decay 0.99 (PyTorch momentum 0.01);
* initialisation as in the official code: convs truncated normal with std sqrt(2 / (k*k*out)),
  linear weights uniform in +-sqrt(3 / in) (TF ``uniform_unit_scaling``), biases zero.

Deviation: PyTorch pads a stride-2 3x3 conv symmetrically (1, 1) where TensorFlow's ``SAME``
pads (0, 1); the receptive fields are shifted by one pixel, the parameter count is unchanged.

Example:
    >>> import torch
    >>> from flows.models.resnet import resnet32
    >>> model = resnet32(num_classes=10)
    >>> model(torch.randn(2, 3, 32, 32)).shape
    torch.Size([2, 10])
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from flows.registry import register
from flows.reversible import frozen_batch_norm_stats

__all__ = [
    "BasicBranch",
    "BottleneckBranch",
    "PreActResNet",
    "ResidualClassifier",
    "ResidualUnit",
    "ZeroPadShortcut",
    "batch_norm",
    "init_like_official_code",
    "make_shortcut",
    "resnet32",
    "resnet50",
    "resnet110",
    "resnet164",
]

PAPER = (
    "Gomez, Ren, Urtasun, Grosse. The Reversible Residual Network: Backpropagation Without "
    "Storing Activations. NeurIPS 2017 (ResNet baselines of Table 2; pre-activation units of "
    "He et al. 2016)"
)

BN_EPS = 1e-3
BN_MOMENTUM = 0.01  # TensorFlow decay 0.99


def batch_norm(channels: int) -> nn.BatchNorm2d:
    """BatchNorm with the TensorFlow settings of the official code (eps 1e-3, decay 0.99)."""
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


def conv(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1) -> nn.Conv2d:
    """Bias-free 'same' convolution."""
    return nn.Conv2d(
        in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2, bias=False
    )


class ZeroPadShortcut(nn.Module):
    """Parameter-free shortcut: average pooling by ``stride``, then zero channels on both sides.

    Example:
        >>> ZeroPadShortcut(16, 32, stride=2)(torch.ones(1, 16, 8, 8)).shape
        torch.Size([1, 32, 4, 4])
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        if out_channels < in_channels or (out_channels - in_channels) % 2:
            raise ValueError(
                f"zero-padding shortcut needs an even width increase, got {in_channels} -> "
                f"{out_channels}"
            )
        self.stride = stride
        self.pad = (out_channels - in_channels) // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = F.avg_pool2d(x, self.stride, self.stride)
        if self.pad:
            x = F.pad(x, (0, 0, 0, 0, self.pad, self.pad))
        return x


class BasicBranch(nn.Module):
    """Pre-activation basic residual branch: [BN-ReLU] -> 3x3 conv -> BN-ReLU -> 3x3 conv.

    Args:
        in_channels: input width.
        out_channels: output width.
        stride: stride of the first conv.
        preactivate: apply BN-ReLU to the input; False for the first unit of stage 1.
    """

    def __init__(
        self, in_channels: int, out_channels: int, stride: int = 1, preactivate: bool = True
    ) -> None:
        super().__init__()
        self.bn1 = batch_norm(in_channels) if preactivate else None
        self.conv1 = conv(in_channels, out_channels, 3, stride)
        self.bn2 = batch_norm(out_channels)
        self.conv2 = conv(out_channels, out_channels, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x if self.bn1 is None else F.relu(self.bn1(x))
        h = self.conv1(h)
        return self.conv2(F.relu(self.bn2(h)))


class BottleneckBranch(nn.Module):
    """Pre-activation bottleneck branch: [BN-ReLU] -> 1x1 -> BN-ReLU -> 3x3 -> BN-ReLU -> 1x1.

    The first 1x1 conv carries the stride; the inner width is ``out_channels // 4``.
    """

    expansion = 4

    def __init__(
        self, in_channels: int, out_channels: int, stride: int = 1, preactivate: bool = True
    ) -> None:
        super().__init__()
        inner = out_channels // self.expansion
        self.bn1 = batch_norm(in_channels) if preactivate else None
        self.conv1 = conv(in_channels, inner, 1, stride)
        self.bn2 = batch_norm(inner)
        self.conv2 = conv(inner, inner, 3)
        self.bn3 = batch_norm(inner)
        self.conv3 = conv(inner, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x if self.bn1 is None else F.relu(self.bn1(x))
        h = self.conv1(h)
        h = self.conv2(F.relu(self.bn2(h)))
        return self.conv3(F.relu(self.bn3(h)))


Branch = type[BasicBranch] | type[BottleneckBranch]


def make_shortcut(branch: Branch, in_channels: int, out_channels: int, stride: int) -> nn.Module:
    """The official shortcut for a branch kind: identity when the shape is kept; otherwise
    pool + zero-pad (basic) or a bias-free 1x1 projection (bottleneck)."""
    if stride == 1 and in_channels == out_channels:
        return nn.Identity()
    if branch is BottleneckBranch:
        return conv(in_channels, out_channels, 1, stride)
    return ZeroPadShortcut(in_channels, out_channels, stride)


class ResidualUnit(nn.Module):
    """``shortcut(x) + branch(x)`` with the official shortcut for the branch kind.

    Example:
        >>> unit = ResidualUnit(BasicBranch, 16, 32, stride=2)
        >>> unit(torch.randn(1, 16, 8, 8)).shape
        torch.Size([1, 32, 4, 4])
    """

    def __init__(
        self,
        branch: Branch,
        in_channels: int,
        out_channels: int,
        stride: int = 1,
        preactivate: bool = True,
    ) -> None:
        super().__init__()
        self.branch = branch(in_channels, out_channels, stride, preactivate)
        self.shortcut = make_shortcut(branch, in_channels, out_channels, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shortcut(x) + self.branch(x)


def init_like_official_code(module: nn.Module) -> None:
    """Initialise weights as ``revnet-public`` does (see the module docstring)."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            k_h, k_w = m.kernel_size
            std = math.sqrt(2.0 / (k_h * k_w * m.out_channels))
            nn.init.trunc_normal_(m.weight, std=std, a=-2 * std, b=2 * std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            bound = math.sqrt(3.0 / m.in_features)
            nn.init.uniform_(m.weight, -bound, bound)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def _recompute_context(unit: nn.Module) -> Callable[[], tuple[object, object]]:
    """``torch.utils.checkpoint`` contexts: plain forward, BN-frozen recomputation."""
    return lambda: (contextlib.nullcontext(), frozen_batch_norm_stats(unit))


class ResidualClassifier(nn.Module):
    """Skeleton shared by the residual classifiers: stem -> :meth:`body` -> BN -> ReLU ->
    global average pool -> linear, initialised as the official code does.

    The stem is conv -> BN -> ReLU: a 3x3 conv for CIFAR, or (``imagenet_stem=True``) a 7x7
    stride-2 conv followed by a 3x3 stride-2 max-pool, as in the official ImageNet configs.
    Subclasses call ``super().__init__``, build their body, then :meth:`add_head`.
    """

    def __init__(
        self,
        stem_width: int,
        in_channels: int,
        units_per_stage: Sequence[int],
        widths: Sequence[int],
        strides: Sequence[int],
        imagenet_stem: bool = False,
    ) -> None:
        super().__init__()
        if not len(units_per_stage) == len(widths) == len(strides):
            raise ValueError("units_per_stage, widths and strides need one entry per stage")
        kernel, stride = (7, 2) if imagenet_stem else (3, 1)
        stem: list[nn.Module] = [
            conv(in_channels, stem_width, kernel, stride),
            batch_norm(stem_width),
            nn.ReLU(inplace=True),
        ]
        if imagenet_stem:
            stem.append(nn.MaxPool2d(3, stride=2, padding=1))
        self.stem = nn.Sequential(*stem)

    def add_head(self, width: int, num_classes: int) -> None:
        """Create the head for a body of output ``width``, then initialise every weight."""
        self.head_norm = batch_norm(width)
        self.fc = nn.Linear(width, num_classes)
        init_like_official_code(self)

    def body(self, h: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features before the linear head."""
        h = self.body(self.stem(x))
        return F.relu(self.head_norm(h)).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


class PreActResNet(ResidualClassifier):
    """Pre-activation ResNet for small images (CIFAR, digits).

    Args:
        branch: :class:`BasicBranch` or :class:`BottleneckBranch`.
        units_per_stage: number of units in each stage, e.g. ``(5, 5, 5)``.
        widths: output width of each stage, e.g. ``(16, 32, 64)``.
        strides: stride of the first unit of each stage.
        stem_width: width of the 3x3 stem convolution.
        num_classes: size of the linear head.
        in_channels: image channels (3 for CIFAR, 1 for digits).
        imagenet_stem: 7x7 stride-2 stem conv and max-pool (ImageNet) instead of a 3x3 conv.
        checkpoint_units: recompute each unit in backward with ``torch.utils.checkpoint``
            (the standard recompute baseline of the memory benchmark); BatchNorm statistics
            are frozen during recomputation so they are updated once per step.

    Example:
        >>> net = PreActResNet(BasicBranch, (1, 1, 1), (16, 32, 64), in_channels=1)
        >>> net(torch.randn(4, 1, 8, 8)).shape
        torch.Size([4, 10])
    """

    def __init__(
        self,
        branch: Branch,
        units_per_stage: Sequence[int],
        widths: Sequence[int],
        strides: Sequence[int] = (1, 2, 2),
        stem_width: int = 16,
        num_classes: int = 10,
        in_channels: int = 3,
        imagenet_stem: bool = False,
        checkpoint_units: bool = False,
    ) -> None:
        super().__init__(stem_width, in_channels, units_per_stage, widths, strides, imagenet_stem)
        self.checkpoint_units = checkpoint_units
        units: list[nn.Module] = []
        width = stem_width
        for stage, (count, out_width, stride) in enumerate(
            zip(units_per_stage, widths, strides, strict=True)
        ):
            for index in range(count):
                first = index == 0
                units.append(
                    ResidualUnit(
                        branch,
                        width,
                        out_width,
                        stride=stride if first else 1,
                        preactivate=not (stage == 0 and first),
                    )
                )
                width = out_width
        self.units = nn.Sequential(*units)
        self.add_head(width, num_classes)

    def body(self, h: torch.Tensor) -> torch.Tensor:
        if not (self.checkpoint_units and torch.is_grad_enabled()):
            return self.units(h)
        for unit in self.units:
            h = checkpoint(unit, h, use_reentrant=False, context_fn=_recompute_context(unit))
        return h


@register(
    task="classification", paper=PAPER, table="cifar", row="32 (38)", published_params=460_000
)
def resnet32(
    num_classes: int = 10, in_channels: int = 3, checkpoint_units: bool = False
) -> PreActResNet:
    """ResNet-32: basic units 5-5-5, widths 16-32-64 (0.46M parameters)."""
    return PreActResNet(
        BasicBranch,
        (5, 5, 5),
        (16, 32, 64),
        num_classes=num_classes,
        in_channels=in_channels,
        checkpoint_units=checkpoint_units,
    )


@register(task="classification", paper=PAPER, table="cifar", row="110", published_params=1_730_000)
def resnet110(
    num_classes: int = 10, in_channels: int = 3, checkpoint_units: bool = False
) -> PreActResNet:
    """ResNet-110: basic units 18-18-18, widths 16-32-64 (1.73M parameters)."""
    return PreActResNet(
        BasicBranch,
        (18, 18, 18),
        (16, 32, 64),
        num_classes=num_classes,
        in_channels=in_channels,
        checkpoint_units=checkpoint_units,
    )


@register(task="classification", paper=PAPER, table="cifar", row="164", published_params=1_700_000)
def resnet164(
    num_classes: int = 10, in_channels: int = 3, checkpoint_units: bool = False
) -> PreActResNet:
    """ResNet-164: bottleneck units 18-18-18, output widths 64-128-256 (1.70M parameters)."""
    return PreActResNet(
        BottleneckBranch,
        (18, 18, 18),
        (64, 128, 256),
        num_classes=num_classes,
        in_channels=in_channels,
        checkpoint_units=checkpoint_units,
    )


@register(
    task="classification",
    paper=PAPER + "; ImageNet baseline of the i-RevNet paper's Table 1",
    table="imagenet",
    row="ResNet",
    published_params=26_000_000,
    notes="pre-activation ResNet-50 of revnet-public's imagenet_configs.py",
)
def resnet50(
    num_classes: int = 1000, in_channels: int = 3, checkpoint_units: bool = False
) -> PreActResNet:
    """ResNet-50 (pre-activation): bottleneck units 3-4-6-3, output widths 256-512-1024-2048,
    strides 1-2-2-2, 7x7 stride-2 stem with max-pool (official ``resnet-50`` config)."""
    return PreActResNet(
        BottleneckBranch,
        (3, 4, 6, 3),
        (256, 512, 1024, 2048),
        (1, 2, 2, 2),
        stem_width=64,
        num_classes=num_classes,
        in_channels=in_channels,
        imagenet_stem=True,
        checkpoint_units=checkpoint_units,
    )
