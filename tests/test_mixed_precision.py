"""Mixed precision, channels_last and torch.compile: options of the training loop that must not
change what is computed beyond the precision asked for.

The memory-saving backward recomputes ``F`` and ``G`` inside ``backward``, which runs outside
the forward pass's autocast region: unless the autocast state is replayed, the recomputation
runs in float32 and its gradients drift from autograd's by the bfloat16 rounding (measured:
7.6e-3 relative, the same size as bf16's own error of 6.6e-3 against float32).
"""

from __future__ import annotations

import copy
import tempfile

import pytest
import torch

import flows
from benchmarks.config import TrainSettings
from benchmarks.core.loop import uses_bf16, uses_tf32
from benchmarks.tasks.classification.data import load_dataset
from benchmarks.tasks.classification.training import train_classifier
from flows.models.resnet import BasicBranch
from flows.models.revnet import RevNet
from flows.reversible import ReversibleBlock, ReversibleSequence


def _sequence() -> ReversibleSequence:
    torch.manual_seed(0)
    blocks = [
        ReversibleBlock(BasicBranch(8, 8, 1, True), BasicBranch(8, 8, 1, True)) for _ in range(3)
    ]
    return ReversibleSequence(blocks)


def _gradients(
    sequence: ReversibleSequence, x: torch.Tensor, memory_saving: bool, autocast: bool = True
) -> torch.Tensor:
    model = copy.deepcopy(sequence)
    model.memory_saving = memory_saving
    x = x.clone().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        out = model(x)
    out.float().sin().sum().backward()
    return torch.cat([p.grad.flatten() for p in model.parameters()] + [x.grad.float().flatten()])


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


@pytest.mark.parametrize("input_dtype", [torch.float32, torch.bfloat16])
def test_memory_saving_gradients_equal_autograd_under_bf16_autocast(input_dtype) -> None:
    sequence = _sequence()
    x = torch.randn(8, 16, 8, 8, generator=torch.Generator().manual_seed(1)).to(input_dtype)
    saving, plain = _gradients(sequence, x, True), _gradients(sequence, x, False)
    assert _relative(saving, plain) < 1e-6
    # the comparison is sensitive: bf16 itself moves the gradients a thousand times more
    assert _relative(plain, _gradients(sequence, x.float(), False, autocast=False)) > 1e-3


def test_the_recomputation_runs_in_the_forward_passes_precision() -> None:
    """Under autocast the recomputed F sees bf16 convolutions, as the forward pass did."""
    seen: list[torch.dtype] = []
    sequence = _sequence()
    conv = sequence.blocks[0].f.conv1
    conv.register_forward_hook(lambda module, inputs, output: seen.append(output.dtype))
    x = torch.randn(2, 16, 8, 8, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = sequence(x)
    out.float().sum().backward()
    assert seen == [torch.bfloat16, torch.bfloat16]  # forward, then recomputation


def test_precision_auto_is_float32_and_bf16_is_asked_for() -> None:
    """bf16 autocast was slower than float32 for every CIFAR network on an H200 (issue 16)."""
    settings = TrainSettings(optimizer="sgd", learning_rate=0.1, batch_size=4, steps=1)
    assert not uses_bf16(settings) and not uses_tf32(settings)
    assert uses_bf16(TrainSettings(**{**settings.__dict__, "precision": "bf16"}))
    assert uses_tf32(TrainSettings(**{**settings.__dict__, "precision": "tf32"}))


def _train(
    settings: TrainSettings, memory_saving: bool = True, small: bool = False
) -> tuple[float, torch.Tensor]:
    """Train RevNet-38 (or, ``small``, a RevNet of one unit per stage: tracing for
    torch.compile takes seconds per layer on a CPU) on digits; its test loss and weights."""
    torch.manual_seed(0)
    if small:
        widths = (8, 16, 32)
        model = RevNet(BasicBranch, (1, 1, 1), widths, stem_width=8, in_channels=1)
        model.memory_saving = memory_saving
    else:
        model = flows.create("revnet38", in_channels=1, memory_saving=memory_saving)
    data = load_dataset("digits").subset(64, 64)
    with tempfile.TemporaryDirectory() as folder:
        outcome = train_classifier(
            model, data, settings, checkpoint_path=f"{folder}/last.pt", progress=False
        )
    weights = torch.cat([p.detach().flatten() for p in model.parameters()])
    return outcome.final["test_loss"], weights


BASE = dict(optimizer="sgd", learning_rate=0.05, momentum=0.9, batch_size=16, steps=3)


def test_channels_last_trains_the_same_weights() -> None:
    loss, weights = _train(TrainSettings(**BASE))
    loss_nhwc, weights_nhwc = _train(TrainSettings(**BASE, channels_last=True))
    assert _relative(weights_nhwc, weights) < 1e-5
    assert loss_nhwc == pytest.approx(loss, rel=1e-4)


def test_a_compiled_training_step_trains_the_same_weights() -> None:
    """``compile: aot_eager`` traces forward and backward through AOTAutograd (the inductor
    backend would add a C++ build, minutes on a CPU)."""
    loss, weights = _train(TrainSettings(**BASE), memory_saving=False, small=True)
    compiled_loss, compiled = _train(
        TrainSettings(**BASE, compile="aot_eager"), memory_saving=False, small=True
    )
    assert _relative(compiled, weights) < 1e-5
    assert compiled_loss == pytest.approx(loss, rel=1e-4)


def test_bf16_training_on_the_cpu_stays_close_to_float32() -> None:
    loss, weights = _train(TrainSettings(**BASE))
    loss_bf16, weights_bf16 = _train(TrainSettings(**BASE, precision="bf16"))
    assert 0 < _relative(weights_bf16, weights) < 5e-2  # it did change the arithmetic
    assert loss_bf16 == pytest.approx(loss, rel=5e-2)
