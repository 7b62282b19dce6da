"""The exponential moving average of the weights (Glow, Flow++ evaluate it): the fused update
must compute ``ema = decay * ema + (1 - decay) * current`` for every floating-point tensor and
copy the others, exactly as the per-tensor update it replaced."""

from __future__ import annotations

import copy

import torch
from torch import nn

from benchmarks.core.optim import ExponentialMovingAverage


def _model() -> nn.Module:
    torch.manual_seed(0)
    # float parameters, float buffers (running statistics), an integer buffer (batch count)
    return nn.Sequential(nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3), nn.Flatten(), nn.Linear(48, 2))


def _per_tensor_update(average: nn.Module, model: nn.Module, decay: float) -> None:
    """The update as it was before it was fused: one lerp per tensor of the state dict."""
    current = model.state_dict()
    with torch.no_grad():
        for name, value in average.state_dict().items():
            if value.is_floating_point():
                value.lerp_(current[name], 1 - decay)
            else:
                value.copy_(current[name])


def _train_steps(model: nn.Module, steps: int, callback) -> None:
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    generator = torch.Generator().manual_seed(1)
    for _ in range(steps):
        optimizer.zero_grad()
        model(torch.randn(4, 2, 6, 6, generator=generator)).square().mean().backward()
        optimizer.step()
        callback()


def test_the_fused_update_equals_the_per_tensor_update_bit_for_bit() -> None:
    model, decay = _model(), 0.95
    ema = ExponentialMovingAverage(decay)
    reference: list[nn.Module] = []

    def both() -> None:
        ema.update(model)
        if not reference:
            reference.append(copy.deepcopy(model))
        else:
            _per_tensor_update(reference[0], model, decay)

    _train_steps(model, 6, both)
    fused, expected = ema.module.state_dict(), reference[0].state_dict()
    assert fused.keys() == expected.keys()
    for name, value in expected.items():
        assert torch.equal(fused[name], value), name
    assert fused["1.num_batches_tracked"].item() == 6  # copied, not averaged


def test_the_average_follows_the_formula() -> None:
    model, decay = _model(), 0.9
    ema = ExponentialMovingAverage(decay)
    expected: dict[str, torch.Tensor] = {}

    def update() -> None:
        ema.update(model)
        for name, value in model.state_dict().items():
            value = value.double()
            previous = expected.get(name)
            expected[name] = value if previous is None else decay * previous + (1 - decay) * value

    _train_steps(model, 5, update)
    weight = ema.module.state_dict()["3.weight"].double()
    torch.testing.assert_close(weight, expected["3.weight"], rtol=1e-6, atol=1e-7)
    assert not torch.equal(weight, model.state_dict()["3.weight"].double())


def test_a_restored_average_keeps_averaging_the_model_it_was_restored_for() -> None:
    model = _model()
    ema = ExponentialMovingAverage(0.5)
    _train_steps(model, 2, lambda: ema.update(model))
    restored = ExponentialMovingAverage(0.5)
    restored.load_state_dict(model, ema.state_dict())
    _train_steps(model, 2, lambda: (ema.update(model), restored.update(model)))
    for name, value in ema.state_dict().items():
        assert torch.equal(restored.state_dict()[name], value), name
