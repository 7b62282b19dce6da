"""ImageNet baselines of the i-RevNet table: ResNet-50 and RevNet-56 as in revnet-public."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from flows.models.revnet import RevNetTransition
from flows.registry import create, get_info


def count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(("name", "printed_millions"), [("resnet50", 26), ("revnet56", 28)])
def test_parameter_counts_round_to_the_printed_millions(name: str, printed_millions: int) -> None:
    # The i-RevNet paper prints whole millions (ResNet 26M, RevNet 28M).
    assert round(count(create(name)) / 1e6) == printed_millions
    assert get_info(name).published_params == printed_millions * 1_000_000


def test_resnet50_is_within_a_tenth_of_a_percent_of_torchvision() -> None:
    # Same widths and units; pre-activation moves BatchNorms, bias-free projections drop BNs.
    ours, reference = count(create("resnet50")), count(torchvision.models.resnet50())
    assert abs(ours - reference) / reference < 1e-3


def test_imagenet_stem_and_stage_layout() -> None:
    resnet = create("resnet50")
    conv, _, _, pool = resnet.stem
    assert conv.kernel_size == (7, 7) and conv.stride == (2, 2) and conv.out_channels == 64
    assert isinstance(pool, nn.MaxPool2d) and pool.stride == 2
    assert len(resnet.units) == 16 and resnet.fc.in_features == 2048
    revnet = create("revnet56")
    assert revnet.stem[0].out_channels == 128
    assert [len(stage[1].blocks) + 1 for stage in revnet.stages] == [2, 2, 3, 2]
    assert all(isinstance(stage[0], RevNetTransition) for stage in revnet.stages)
    assert revnet.fc.in_features == 4 * 832


def test_forward_at_imagenet_resolution() -> None:
    with torch.no_grad():
        assert create("resnet50").eval()(torch.randn(1, 3, 224, 224)).shape == (1, 1000)
