"""Memory probes, checked against bytes computed by hand."""

from __future__ import annotations

import torch
from torch import nn

from benchmarks.core.profiling import (
    count_parameters,
    profile_training_step,
    saved_activation_bytes,
)


def test_saved_bytes_of_a_linear_layer_are_its_input() -> None:
    # y = x W^T needs x (batch x in floats) to compute dL/dW; W itself is a parameter.
    layer = nn.Linear(32, 5, bias=False)
    x = torch.randn(8, 32)
    loss, saved = saved_activation_bytes(lambda: layer(x).sum(), {id(layer.weight)})
    assert saved == 8 * 32 * 4
    loss.backward()


def test_shared_storage_is_counted_once() -> None:
    x = torch.randn(10, 10, requires_grad=True)
    _, saved = saved_activation_bytes(lambda: (x * x).sum(), set())
    assert saved == 10 * 10 * 4


def test_probe_counts_parameters_and_leaves_the_model_untouched() -> None:
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.LazyLinear(3))
    images, labels = torch.randn(6, 1, 5, 5), torch.zeros(6, dtype=torch.long)
    model(images)  # materialise the lazy layer
    before = {k: v.clone() for k, v in model.state_dict().items()}
    probe = profile_training_step(model, images, labels)
    assert probe["params"] == count_parameters(model) == 4 * 9 + 4 + 4 + 4 + 4 * 9 * 3 + 3
    assert probe["activation_bytes"] > 0
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())
