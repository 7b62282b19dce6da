"""The memory-saving backward of the flows (RealNVP, Glow, Flow++): gradients, statistics and
initialisation equal plain autograd's; what is held for backward does not grow with depth."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from benchmarks.core.profiling import saved_activation_bytes
from flows.layers import ActNorm, FlowSequence, GlowAffineCoupling, InvConv1x1
from flows.registry import create
from tests.test_reversible import relative_error

SMALL = {
    "glow affine": ("glow_cifar10", {"levels": 2, "steps": 3, "width": 8}),
    "glow additive, LU": (
        "glow_cifar10",
        {"levels": 2, "steps": 3, "width": 8, "coupling": "additive", "lu": True},
    ),
    "realnvp (batch norms)": ("realnvp_cifar10", {"scales": 2, "blocks": 1, "width": 4}),
    "flow++ mixture, dropout": (
        "flowpp_cifar10",
        {
            "filters": 8,
            "blocks": 1,
            "components": 3,
            "heads": 2,
            "dequant_filters": 8,
            "dropout": 0.3,
        },
    ),
    "flow++ affine": (
        "flowpp_cifar10",
        {
            "filters": 8,
            "blocks": 1,
            "heads": 2,
            "dequant_filters": 8,
            "coupling": "affine",
            "dropout": 0.0,
        },
    ),
}


def _pair(case: str, dtype: torch.dtype) -> tuple[nn.Module, nn.Module]:
    """The small model with the memory-saving backward, and a copy with plain autograd."""
    name, settings = SMALL[case]
    torch.manual_seed(0)
    saving = create(name, in_channels=1, image_size=8, **settings).to(dtype).train()
    plain = copy.deepcopy(saving)
    for module in plain.modules():
        if hasattr(module, "memory_saving"):
            module.memory_saving = False
    return saving, plain


def _step(model: nn.Module, y: torch.Tensor) -> tuple[float, torch.Tensor, list[torch.Tensor]]:
    """Loss, input gradient and parameter gradients of one training step (dropout seeded)."""
    model.zero_grad()
    y = y.clone().requires_grad_()
    torch.manual_seed(5)
    loss = -model.log_prob(y).mean()
    loss.backward()
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in model.parameters()]
    return loss.item(), y.grad, grads


def _perturb(model: nn.Module) -> None:
    """Move every parameter off its initialisation (zero-initialised output convolutions
    would otherwise hide every path through the coupling networks)."""
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for parameter in model.parameters():
            noise = torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype)
            parameter.add_(0.05 * noise)


@pytest.mark.parametrize("case", list(SMALL))
def test_gradients_equal_plain_autograd_in_float64(case: str) -> None:
    """First step (data-dependent initialisation inside it) and a step from perturbed
    weights: loss, input and parameter gradients within 1e-10, buffers (batch norms' running
    averages, actnorm's initialisation) equal."""
    saving, plain = _pair(case, torch.float64)
    y = torch.rand(6, 1, 8, 8, dtype=torch.float64)
    for step in range(2):
        if step:
            _perturb(saving)
            plain.load_state_dict(saving.state_dict())
        loss, grad_y, grads = _step(saving, y)
        plain_loss, plain_grad_y, plain_grads = _step(plain, y)
        assert loss == pytest.approx(plain_loss, rel=1e-12)
        assert relative_error(grad_y, plain_grad_y) < 1e-10
        everything = torch.cat([g.flatten() for g in plain_grads])
        assert relative_error(torch.cat([g.flatten() for g in grads]), everything) < 1e-10
        floor = 1e-10 * everything.norm()  # biases before a batch norm have zero gradient
        for grad, plain_grad in zip(grads, plain_grads, strict=True):
            assert (grad - plain_grad).norm() <= max(1e-10 * plain_grad.norm(), floor)
        for (name, buffer), plain_buffer in zip(
            saving.named_buffers(), plain.buffers(), strict=True
        ):
            if buffer.dtype.is_floating_point:
                assert torch.allclose(buffer, plain_buffer, rtol=1e-12, atol=1e-14), name
            else:
                assert torch.equal(buffer, plain_buffer), name


def test_glow_gradients_in_float32() -> None:
    """float32: the reconstruction is exact to float32 rounding, which the backward amplifies
    (the same bound as the RevNets' and i-RevNets' float32 checks)."""
    saving, plain = _pair("glow affine", torch.float32)
    y = torch.rand(6, 1, 8, 8)
    _step(saving, y), _step(plain, y)  # initialise
    _perturb(saving)
    plain.load_state_dict(saving.state_dict())
    _, _, grads = _step(saving, y)
    _, _, plain_grads = _step(plain, y)
    flat, plain_flat = (torch.cat([g.flatten() for g in gs]) for gs in (grads, plain_grads))
    assert relative_error(flat, plain_flat) < 1e-4


def test_actnorm_initialises_on_the_first_batch() -> None:
    """The memory-saving forward pass initialises actnorm from the first training batch, as
    plain autograd does: its shift is minus the batch mean per channel."""
    torch.manual_seed(0)
    chain = FlowSequence(ActNorm(4), InvConv1x1(4), memory_saving=True)
    x = 3.0 + 2.0 * torch.randn(16, 4, 5, 5)
    chain(x.requires_grad_())
    assert bool(chain[0].initialized)
    normalised = chain[0].inverse(torch.zeros(1, 4, 1, 1)).flatten()  # -bias
    assert torch.allclose(normalised, x.detach().mean(dim=(0, 2, 3)), atol=1e-5)


def _glow_chain(steps: int) -> FlowSequence:
    torch.manual_seed(0)
    layers = []
    for _ in range(steps):
        net = nn.Sequential(
            nn.Conv2d(4, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 8, 3, padding=1)
        )
        layers += [ActNorm(8), InvConv1x1(8), GlowAffineCoupling(net)]
    return FlowSequence(*layers, memory_saving=True)


def test_held_activations_do_not_grow_with_depth() -> None:
    """What autograd saves for backward: the chain's output and log-determinant only, the same
    for 2 and 8 steps; plain autograd saves about four times more at 8 steps than at 2."""

    def saved(steps: int, memory_saving: bool) -> int:
        chain = _glow_chain(steps)
        chain.memory_saving = memory_saving
        x = torch.randn(4, 8, 8, 8, requires_grad=True)
        ids = {id(p) for p in chain.parameters()}
        chain(x)  # actnorm initialisation
        loss, nbytes = saved_activation_bytes(lambda: chain(x)[0].square().sum(), ids)
        loss.backward()
        return nbytes

    assert saved(8, True) == saved(2, True)
    assert saved(8, False) > 3.5 * saved(2, False)
    assert saved(2, False) > 4 * saved(2, True)


def test_higher_order_gradients_ask_for_plain_autograd() -> None:
    chain = _glow_chain(2)
    x = torch.randn(2, 8, 4, 4, requires_grad=True)
    chain(x)
    with pytest.raises(RuntimeError, match="memory_saving=False"):
        torch.autograd.grad(chain(x)[0].sum(), x, create_graph=True)
