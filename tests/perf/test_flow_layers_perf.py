"""Micro-benchmarks of the flow layers (pytest-benchmark).

`make test` runs each once as a smoke test (`--benchmark-disable` in pyproject.toml); `make
perf` times them and writes `results/perf/flow_layers.json`, which `pytest-benchmark compare`
reads. Groups put the variants to compare side by side: plain against LU-decomposed 1x1
convolution (forward and log-determinant, 16 to 512 channels), and Glow's affine coupling
forward against its inverse.
"""

from __future__ import annotations

import pytest
import torch

from flows.layers import GlowAffineCoupling, InvConv1x1, InvConv1x1LU
from flows.models.glow import GlowCouplingNet

CHANNELS = [16, 64, 128, 256, 512]


@pytest.mark.parametrize("channels", CHANNELS)
@pytest.mark.parametrize("variant", ["plain", "lu"])
def test_invertible_1x1_conv_forward_and_logdet(benchmark, variant: str, channels: int) -> None:
    benchmark.group = f"1x1 conv forward + log-det, {channels} channels, 16x8x8"
    torch.manual_seed(0)
    weight = torch.linalg.qr(torch.randn(channels, channels))[0]
    layer = InvConv1x1(channels, weight) if variant == "plain" else InvConv1x1LU(channels, weight)
    x = torch.randn(16, channels, 8, 8)
    with torch.no_grad():
        y, logdet = benchmark(layer, x)
    assert y.shape == x.shape and torch.isfinite(logdet).all()


@pytest.mark.parametrize("direction", ["forward", "inverse"])
def test_glow_affine_coupling(benchmark, direction: str) -> None:
    benchmark.group = "Glow affine coupling, 48 channels, width 128, 16x16x16"
    torch.manual_seed(0)
    layer = GlowAffineCoupling(GlowCouplingNet(24, 48, width=128))
    x = torch.randn(16, 48, 16, 16)
    with torch.no_grad():
        layer(x)  # training mode: the data-dependent initialisation of the net's actnorms
        layer.eval()
        y, _ = layer(x)
        result = benchmark(layer.inverse, y) if direction == "inverse" else benchmark(layer, x)[0]
    assert result.shape == x.shape
