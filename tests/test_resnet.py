"""CIFAR ResNets: parameter counts against the paper, and the official architecture details."""

from __future__ import annotations

import pytest
import torch
import yaml
from torch import nn

from flows.models.resnet import BasicBranch, BottleneckBranch, ZeroPadShortcut
from flows.registry import create, get_info
from tests.conftest import REPO_ROOT


def count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(
    ("name", "printed_millions"), [("resnet32", 0.46), ("resnet110", 1.73), ("resnet164", 1.70)]
)
def test_parameter_count_matches_the_paper_table(name: str, printed_millions: float) -> None:
    # The RevNet paper's Table 1 prints counts in millions with two decimals (CIFAR-10 head).
    params = count(create(name, num_classes=10))
    assert round(params / 1e6, 2) == printed_millions
    assert get_info(name).published_params == round(printed_millions * 1e6)


def test_published_yaml_agrees_with_the_registry() -> None:
    published = yaml.safe_load((REPO_ROOT / "results" / "published.yaml").read_text())
    for table in ("cifar", "imagenet"):
        for name, entry in published[table]["models"].items():
            assert entry.get("params") == get_info(name).published_params
            assert entry["row"] == get_info(name).row and get_info(name).table == table


def test_stage_layout_and_units() -> None:
    resnet32, resnet164 = create("resnet32"), create("resnet164")
    assert len(resnet32.units) == 15
    assert all(isinstance(u.branch, BasicBranch) for u in resnet32.units)
    assert len(resnet164.units) == 54
    assert all(isinstance(u.branch, BottleneckBranch) for u in resnet164.units)
    # 32 = 1 stem conv + 15 units x 2 convs + 1 linear; 164 = 1 + 54 x 3 + 1
    assert sum(isinstance(m, nn.Conv2d) for m in resnet32.modules()) == 1 + 30
    bottleneck_convs = sum(
        isinstance(m, nn.Conv2d)
        for u in resnet164.units
        for m in (u.branch.conv1, u.branch.conv2, u.branch.conv3)
    )
    assert 1 + bottleneck_convs + 1 == 164


def test_first_unit_skips_its_preactivation_and_others_do_not() -> None:
    for name in ("resnet32", "resnet164"):
        units = create(name).units
        assert units[0].branch.bn1 is None
        assert all(unit.branch.bn1 is not None for unit in units[1:])


def test_basic_shortcut_is_parameter_free_pool_and_symmetric_zero_pad() -> None:
    unit = create("resnet32").units[5]  # first unit of stage 2: 16 -> 32 channels, stride 2
    assert isinstance(unit.shortcut, ZeroPadShortcut)
    assert count(unit.shortcut) == 0
    x = torch.randn(2, 16, 8, 8)
    out = unit.shortcut(x)
    assert out.shape == (2, 32, 4, 4)
    pooled = torch.nn.functional.avg_pool2d(x, 2)
    torch.testing.assert_close(out[:, 8:24], pooled)
    assert out[:, :8].abs().sum() == 0 and out[:, 24:].abs().sum() == 0


def test_bottleneck_projection_whenever_stride_or_width_changes() -> None:
    units = create("resnet164").units
    first, second, stage2 = units[0], units[1], units[18]
    assert isinstance(first.shortcut, nn.Conv2d) and first.shortcut.kernel_size == (1, 1)
    assert first.shortcut.bias is None  # 16 -> 64 channels, stride 1
    assert isinstance(second.shortcut, nn.Identity)
    assert stage2.shortcut.stride == (2, 2) and stage2.branch.conv1.stride == (2, 2)
    assert stage2.branch.conv2.stride == (1, 1)
    assert stage2.branch.conv1.out_channels == 128 // 4


def test_batch_norm_uses_tensorflow_settings() -> None:
    norms = [m for m in create("resnet32").modules() if isinstance(m, nn.BatchNorm2d)]
    assert norms and all(m.eps == 1e-3 and m.momentum == 0.01 for m in norms)


def test_cifar_forward_shapes_and_no_max_pool() -> None:
    model = create("resnet110", num_classes=100).eval()
    assert not any(isinstance(m, nn.MaxPool2d) for m in model.modules())
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 100)
    stem_out = model.stem(torch.randn(1, 3, 32, 32))
    assert stem_out.shape == (1, 16, 32, 32)


def test_checkpointed_resnet_matches_plain_gradients_and_statistics() -> None:
    torch.manual_seed(0)
    plain = create("resnet32", in_channels=1).double()
    checkpointed = create("resnet32", in_channels=1, checkpoint_units=True).double()
    checkpointed.load_state_dict(plain.state_dict())
    x = torch.randn(8, 1, 8, 8, dtype=torch.float64)
    weights = torch.randn(8, 10, dtype=torch.float64)
    (plain(x) * weights).sum().backward()
    (checkpointed(x) * weights).sum().backward()
    for p, q in zip(plain.parameters(), checkpointed.parameters(), strict=True):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-12, atol=1e-14)
    for a, b in zip(plain.buffers(), checkpointed.buffers(), strict=True):
        assert torch.equal(a, b)  # BN statistics updated once, not again in recomputation
