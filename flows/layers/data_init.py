"""Convolutions with data-dependent initialisation, optionally weight-normalised.

Salimans, Kingma. "Weight Normalization: A Simple Reparameterization to Accelerate Training of
Deep Neural Networks". NeurIPS 2016, Sec. 3 (data-dependent initialisation). Used by Flow++'s
coupling networks (official code ``aravindsrinivas/flowpp``: ``conv2d`` and ``dense`` with
``vcfg.init``; the ImageNet launchers' weight-normalised ``conv2d`` and ``dense``).

Weights start as ``N(0, 0.05^2)`` and biases at 0. On the first forward pass in training mode
the layer rescales itself so that its outputs over that batch have mean 0 and standard
deviation ``init_scale`` per channel (``W <- W * scale``, ``b <- -mean * scale`` with
``scale = init_scale / sqrt(var + 1e-8)``; with weight normalisation the magnitude ``g`` is
rescaled instead of ``W``). A 1x1 convolution is the official ``nin`` (a dense layer applied at
every position).

Example:
    >>> import torch
    >>> conv = DataInitConv2d(3, 8, kernel_size=3, init_scale=0.5)
    >>> y = conv(torch.randn(64, 3, 6, 6))           # training mode: initialises on this batch
    >>> abs(y.mean().item()) < 1e-5, round(y.std(dim=(0, 2, 3)).mean().item(), 2)
    (True, 0.5)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["DataInitConv2d"]


class DataInitConv2d(nn.Module):
    """``kernel_size`` x ``kernel_size`` convolution, stride 1, zero 'same' padding, with bias.

    Args:
        in_channels, out_channels, kernel_size: as for ``nn.Conv2d`` (odd kernel sizes).
        init_scale: standard deviation of the outputs after the data-dependent initialisation
            (0.1 for Flow++'s gating and output layers, 1 elsewhere).
        weight_norm: ``W = g * V / ||V||`` per output channel (Flow++'s ImageNet launchers).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        init_scale: float = 1.0,
        weight_norm: bool = False,
    ) -> None:
        super().__init__()
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd for 'same' padding, got {kernel_size}")
        self.padding = kernel_size // 2
        self.init_scale = init_scale
        shape = (out_channels, in_channels, kernel_size, kernel_size)
        self.weight = nn.Parameter(torch.randn(shape) * 0.05)
        self.gain = nn.Parameter(torch.ones(out_channels)) if weight_norm else None
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.register_buffer("initialized", torch.tensor(False))
        self._seen_initialized = False  # spares a device sync per forward once initialised

    def _load_from_state_dict(self, *args: object, **kwargs: object) -> None:
        super()._load_from_state_dict(*args, **kwargs)  # type: ignore[arg-type]
        self._seen_initialized = False

    def extra_repr(self) -> str:
        out_channels, in_channels, k, _ = self.weight.shape
        return (
            f"{in_channels}, {out_channels}, kernel_size={k}, init_scale={self.init_scale}, "
            f"weight_norm={self.gain is not None}"
        )

    def effective_weight(self) -> torch.Tensor:
        if self.gain is None:
            return self.weight
        norm = self.weight.flatten(1).norm(dim=1)
        return self.weight * (self.gain / norm).view(-1, 1, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and not self._seen_initialized:
            if not bool(self.initialized):
                self._initialize(x)
            self._seen_initialized = True
        return F.conv2d(x, self.effective_weight(), self.bias, padding=self.padding)

    @torch.no_grad()
    def _initialize(self, x: torch.Tensor) -> None:
        y = F.conv2d(x, self.effective_weight(), None, padding=self.padding)
        mean, var = y.mean(dim=(0, 2, 3)), y.var(dim=(0, 2, 3), unbiased=False)
        scale = self.init_scale / torch.sqrt(var + 1e-8)
        if self.gain is None:
            self.weight.mul_(scale.view(-1, 1, 1, 1))
        else:
            self.gain.mul_(scale)
        self.bias.copy_(-mean * scale)
        self.initialized.fill_(True)
