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

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from flows.registry import register

__all__ = [
    "BasicUnit",
    "BottleneckUnit",
    "CifarResNet",
    "ZeroPadShortcut",
    "batch_norm",
    "resnet32",
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


class BasicUnit(nn.Module):
    """Pre-activation basic unit: [BN-ReLU] -> 3x3 conv -> BN-ReLU -> 3x3 conv, plus shortcut.

    Args:
        in_channels: input width.
        out_channels: output width.
        stride: stride of the first conv (and of the shortcut's pooling).
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
        changes_shape = stride > 1 or in_channels != out_channels
        self.shortcut = (
            ZeroPadShortcut(in_channels, out_channels, stride) if changes_shape else nn.Identity()
        )

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        """The residual branch alone (reused as F and G by reversible blocks)."""
        h = x if self.bn1 is None else F.relu(self.bn1(x))
        h = self.conv1(h)
        return self.conv2(F.relu(self.bn2(h)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shortcut(x) + self.residual(x)


class BottleneckUnit(nn.Module):
    """Pre-activation bottleneck: [BN-ReLU] -> 1x1 -> BN-ReLU -> 3x3 -> BN-ReLU -> 1x1.

    The first 1x1 conv carries the stride; the inner width is ``out_channels // 4``. The
    shortcut is a bias-free 1x1 projection whenever the stride or width changes.
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
        changes_shape = stride > 1 or in_channels != out_channels
        self.shortcut = conv(in_channels, out_channels, 1, stride) if changes_shape else None

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        """The residual branch alone (reused as F and G by reversible blocks)."""
        h = x if self.bn1 is None else F.relu(self.bn1(x))
        h = self.conv1(h)
        h = self.conv2(F.relu(self.bn2(h)))
        return self.conv3(F.relu(self.bn3(h)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.shortcut is None else self.shortcut(x)
        return shortcut + self.residual(x)


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


class CifarResNet(nn.Module):
    """Pre-activation ResNet for small images (CIFAR, digits).

    Args:
        unit: :class:`BasicUnit` or :class:`BottleneckUnit`.
        units_per_stage: number of units in each stage, e.g. ``(5, 5, 5)``.
        widths: output width of each stage, e.g. ``(16, 32, 64)``.
        strides: stride of the first unit of each stage.
        stem_width: width of the 3x3 stem convolution.
        num_classes: size of the linear head.
        in_channels: image channels (3 for CIFAR, 1 for digits).

    Example:
        >>> net = CifarResNet(BasicUnit, (1, 1, 1), (16, 32, 64), in_channels=1)
        >>> net(torch.randn(4, 1, 8, 8)).shape
        torch.Size([4, 10])
    """

    def __init__(
        self,
        unit: type[BasicUnit] | type[BottleneckUnit],
        units_per_stage: Sequence[int],
        widths: Sequence[int],
        strides: Sequence[int] = (1, 2, 2),
        stem_width: int = 16,
        num_classes: int = 10,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        if not len(units_per_stage) == len(widths) == len(strides):
            raise ValueError("units_per_stage, widths and strides need one entry per stage")
        self.stem = nn.Sequential(
            conv(in_channels, stem_width, 3), batch_norm(stem_width), nn.ReLU(inplace=True)
        )
        units: list[nn.Module] = []
        width = stem_width
        for stage, (count, out_width, stride) in enumerate(
            zip(units_per_stage, widths, strides, strict=True)
        ):
            for index in range(count):
                first = index == 0
                units.append(
                    unit(
                        width,
                        out_width,
                        stride=stride if first else 1,
                        preactivate=not (stage == 0 and first),
                    )
                )
                width = out_width
        self.units = nn.Sequential(*units)
        self.head_norm = batch_norm(width)
        self.fc = nn.Linear(width, num_classes)
        init_like_official_code(self)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features before the linear head."""
        h = self.units(self.stem(x))
        return F.relu(self.head_norm(h)).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


@register(
    task="classification", paper=PAPER, table="cifar", row="32 (38)", published_params=460_000
)
def resnet32(num_classes: int = 10, in_channels: int = 3) -> CifarResNet:
    """ResNet-32: basic units 5-5-5, widths 16-32-64 (0.46M parameters)."""
    return CifarResNet(
        BasicUnit, (5, 5, 5), (16, 32, 64), num_classes=num_classes, in_channels=in_channels
    )


@register(task="classification", paper=PAPER, table="cifar", row="110", published_params=1_730_000)
def resnet110(num_classes: int = 10, in_channels: int = 3) -> CifarResNet:
    """ResNet-110: basic units 18-18-18, widths 16-32-64 (1.73M parameters)."""
    return CifarResNet(
        BasicUnit, (18, 18, 18), (16, 32, 64), num_classes=num_classes, in_channels=in_channels
    )


@register(task="classification", paper=PAPER, table="cifar", row="164", published_params=1_700_000)
def resnet164(num_classes: int = 10, in_channels: int = 3) -> CifarResNet:
    """ResNet-164: bottleneck units 18-18-18, output widths 64-128-256 (1.70M parameters)."""
    return CifarResNet(
        BottleneckUnit,
        (18, 18, 18),
        (64, 128, 256),
        num_classes=num_classes,
        in_channels=in_channels,
    )
