"""RevNets: parameter counts against the paper and the official architecture details."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from flows.models.resnet import BasicBranch, BottleneckBranch, ZeroPadShortcut
from flows.models.revnet import RevNetTransition
from flows.registry import create, get_info
from flows.reversible import ReversibleBlock, ReversibleSequence


@pytest.mark.parametrize(
    ("name", "printed_millions"), [("revnet38", 0.46), ("revnet110", 1.73), ("revnet164", 1.75)]
)
def test_parameter_count_matches_the_paper_table(name: str, printed_millions: float) -> None:
    params = sum(p.numel() for p in create(name, num_classes=10).parameters())
    assert round(params / 1e6, 2) == printed_millions
    assert get_info(name).published_params == round(printed_millions * 1e6)


@pytest.mark.parametrize(
    ("name", "units", "widths", "branch"),
    [
        ("revnet38", 3, (32, 64, 112), BasicBranch),
        ("revnet110", 9, (32, 64, 128), BasicBranch),
        ("revnet164", 9, (128, 256, 512), BottleneckBranch),
    ],
)
def test_stage_layout(name: str, units: int, widths: tuple, branch: type) -> None:
    model = create(name)
    assert model.stem[0].out_channels == 32
    for stage, width in zip(model.stages, widths, strict=True):
        transition, sequence = stage
        assert isinstance(transition, RevNetTransition)
        assert isinstance(sequence, ReversibleSequence) and len(sequence.blocks) == units - 1
        for module in (transition.f, transition.g, *(b.f for b in sequence.blocks)):
            assert isinstance(module, branch)
        block = sequence.blocks[0]
        assert isinstance(block, ReversibleBlock)
        last_conv = block.f.conv3 if branch is BottleneckBranch else block.f.conv2
        assert last_conv.out_channels == width // 2
    # depth = stem + (F and G convs of every unit) + linear
    convs_per_unit = 2 * (3 if branch is BottleneckBranch else 2)
    assert 1 + 3 * units * convs_per_unit + 1 == int(name.removeprefix("revnet"))


def test_f_carries_the_stride_and_transitions_have_official_shortcuts() -> None:
    basic, bottleneck = create("revnet38"), create("revnet164")
    stage2 = basic.stages[1][0]
    assert stage2.f.conv1.stride == (2, 2) and stage2.g.conv1.stride == (1, 1)
    assert isinstance(stage2.shortcut1, ZeroPadShortcut) and stage2.shortcut1.pad == 8
    stage3 = basic.stages[2][0]
    assert stage3.shortcut2.pad == (56 - 32) // 2  # 64 -> 112 channels, per half 32 -> 56
    projection = bottleneck.stages[1][0].shortcut1
    assert isinstance(projection, nn.Conv2d) and projection.kernel_size == (1, 1)
    assert (projection.in_channels, projection.out_channels) == (64, 128)
    assert projection.stride == (2, 2) and projection.bias is None
    # stage 1: 32 -> 128 channels at stride 1 also needs a projection per half
    assert isinstance(bottleneck.stages[0][0].shortcut2, nn.Conv2d)
    assert isinstance(basic.stages[0][0].shortcut1, nn.Identity)


def test_only_the_first_unit_of_stage_one_skips_its_preactivation() -> None:
    model = create("revnet110")
    assert model.stages[0][0].f.bn1 is None
    assert model.stages[0][0].g.bn1 is not None
    assert all(stage[0].f.bn1 is not None for stage in model.stages[1:])


def test_memory_saving_switch() -> None:
    model = create("revnet38", memory_saving=False)
    assert not model.memory_saving
    model.memory_saving = True
    assert all(stage[1].memory_saving for stage in model.stages)


def test_reversible_part_of_a_stage_inverts() -> None:
    torch.manual_seed(0)
    model = create("revnet38").double().eval()
    sequence = model.stages[1][1]
    x = torch.randn(2, 64, 16, 16, dtype=torch.float64)
    with torch.no_grad():
        assert (sequence.inverse(sequence(x)) - x).abs().max() < 1e-12
