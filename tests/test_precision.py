"""The precision policy (issue 16): whatever TF32 setting the caller chose, everything that must
be undone exactly runs in IEEE float32, and the caller's setting is back afterwards.

On the CPU the flags change no arithmetic, so these tests check where they are set (a forward
hook records them while the computation runs). The numbers that the flags protect are checked
when CUDA is present: an H200 with TF32 on inverted ``irevnet_b`` only to 9.2e-4 and moved
RevNet-38's memory-saving gradients by 1.6 % relative.
"""

from __future__ import annotations

import copy
import tempfile

import pytest
import torch
from torch import nn

import flows
from benchmarks.config import TrainSettings
from benchmarks.tasks.classification.data import load_dataset
from benchmarks.tasks.classification.training import train_classifier
from flows.precision import exact_float32, float32_mode, tf32_enabled
from flows.reversible import ReversibleBlock, ReversibleSequence

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def record_tf32(module: nn.Module) -> list[bool]:
    """The TF32 setting each time ``module`` runs (forward passes and recomputations)."""
    seen: list[bool] = []
    module.register_forward_hook(lambda *_: seen.append(tf32_enabled()))
    return seen


def test_the_mode_is_set_inside_and_restored_after_also_on_an_error() -> None:
    before = tf32_enabled()
    for tf32 in (True, False):
        with float32_mode(tf32=tf32):
            assert tf32_enabled() is tf32
            with exact_float32():
                assert not tf32_enabled()
            assert tf32_enabled() is tf32
        assert tf32_enabled() is before
    with pytest.raises(ZeroDivisionError), float32_mode(tf32=not before):
        raise ZeroDivisionError
    assert tf32_enabled() is before


def test_the_reversible_sequence_runs_in_ieee_float32_forward_backward_and_inverse() -> None:
    torch.manual_seed(0)
    f, g = nn.Conv2d(2, 2, 3, padding=1), nn.Conv2d(2, 2, 3, padding=1)
    sequence = ReversibleSequence([ReversibleBlock(f, g)], memory_saving=True)
    seen = record_tf32(f)
    x = torch.randn(2, 4, 5, 5, requires_grad=True)
    with float32_mode(tf32=True):
        y = sequence(x)
        assert tf32_enabled()
        y.square().sum().backward()  # recomputes F inside the backward
        assert tf32_enabled()
        sequence.inverse(y.detach())
        assert tf32_enabled()
    assert seen == [False, False, False]  # forward, recomputation, inverse


def test_the_i_revnet_represents_and_inverts_in_ieee_float32() -> None:
    model = flows.create("irevnet_cifar", num_classes=10).eval()
    seen = record_tf32(model.blocks[0].f)
    with float32_mode(tf32=True):
        model.inverse(model.representation(torch.randn(1, 3, 32, 32)))
        assert tf32_enabled()
    assert seen == [False, False]


@pytest.mark.parametrize("name", ["glow_cifar10", "realnvp_cifar10", "flowpp_cifar10"])
def test_the_density_flows_encode_decode_and_score_in_ieee_float32(name: str) -> None:
    torch.manual_seed(0)
    sizes = {"glow_cifar10": dict(levels=2, steps=1, width=8)}.get(name, {})
    model = flows.create(name, in_channels=1, image_size=8, **sizes)
    layers = [
        m for m in model.modules() if isinstance(m, nn.Conv2d) or list(m.parameters(recurse=False))
    ]
    seen = record_tf32(layers[0])
    y = torch.rand(2, 1, 8, 8)
    with float32_mode(tf32=True):
        model.log_prob(y)  # training mode: data-dependent initialisation runs here
        model.eval()
        eps, _ = model.encode(y)
        model.decode(eps)
        assert tf32_enabled()
    assert seen and not any(seen)


@pytest.mark.parametrize(("precision", "tf32"), [("auto", False), ("fp32", False), ("tf32", True)])
def test_the_training_loop_sets_the_configured_precision(precision: str, tf32: bool) -> None:
    """A plain ResNet (no exactness scope of its own) sees the policy of the loop."""
    torch.manual_seed(0)
    model = flows.create("resnet32", num_classes=10, in_channels=1)
    seen = record_tf32(model)
    settings = TrainSettings(
        optimizer="sgd", learning_rate=0.01, batch_size=8, steps=2, precision=precision
    )
    data = load_dataset("digits").subset(16, 16)
    with float32_mode(tf32=not tf32), tempfile.TemporaryDirectory() as folder:
        train_classifier(model, data, settings, checkpoint_path=f"{folder}/last.pt", progress=False)
        assert tf32_enabled() is not tf32  # restored
    assert seen[:2] == [tf32, tf32]  # the two training steps


def test_a_second_order_gradient_through_the_memory_saving_backward_is_refused() -> None:
    """It would silently drop the paths through F's and G's parameters (found against an
    independent implementation: 8.3 off in float64); plain autograd computes it."""
    torch.manual_seed(0)
    blocks = [
        ReversibleBlock(nn.Sequential(nn.Linear(2, 2), nn.Tanh()), nn.Sequential(nn.Linear(2, 2)))
        for _ in range(2)
    ]
    saving = ReversibleSequence(blocks, memory_saving=True).double()
    plain = copy.deepcopy(saving)
    plain.memory_saving = False
    x = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(plain(x).square().sum(), x, create_graph=True)
    penalty = grad.square().sum()
    penalty.backward()  # plain autograd: second order works
    assert all(p.grad is not None for p in plain.parameters())
    with pytest.raises(RuntimeError, match="memory_saving=False"):
        torch.autograd.grad(saving(x).square().sum(), x, create_graph=True)
    # first order is unaffected
    (first,) = torch.autograd.grad(saving(x).square().sum(), x)
    torch.testing.assert_close(first, grad.detach(), rtol=1e-12, atol=1e-12)


@cuda
def test_irevnet_b_inverts_at_224_on_cuda_with_tf32_on_globally() -> None:
    torch.manual_seed(0)
    model = flows.create("irevnet_b").cuda().eval()
    x = torch.randn(2, 3, 224, 224, device="cuda")
    with float32_mode(tf32=True), torch.no_grad():
        error = (model.inverse(model.representation(x)) - x).abs().max().item()
    assert error < 1e-5


@cuda
@pytest.mark.parametrize(("dtype", "tolerance"), [(torch.float32, 1e-3), (torch.float64, 1e-10)])
def test_revnet38_memory_saving_gradients_equal_autograd_on_cuda(dtype, tolerance) -> None:
    torch.manual_seed(0)
    saving = flows.create("revnet38", num_classes=10).to("cuda", dtype)
    plain = copy.deepcopy(saving)
    for module in plain.modules():
        if isinstance(module, ReversibleSequence):
            module.memory_saving = False
    x = torch.randn(16, 3, 32, 32, device="cuda", dtype=dtype)
    grads = []
    for model in (saving, plain):
        model.zero_grad()
        model(x).logsumexp(dim=1).sum().backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    relative = ((grads[0] - grads[1]).norm() / grads[1].norm()).item()
    assert relative < tolerance
