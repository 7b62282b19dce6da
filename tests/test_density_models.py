"""RealNVP and Glow against mathematics, on tiny configurations in float64.

The change of variables is checked against a brute-force Jacobian of the whole map from the
image to the (standardised) latents; sampling at temperature 0 against the prior means; the
published configurations by their parameter counts, from formulas written out here.
"""

from __future__ import annotations

import math
import typing

import pytest
import torch
from torch import nn

import flows
from flows.layers import (
    ActNorm,
    AdditiveCoupling,
    AffineCoupling,
    BatchNormFlow,
    GlowAffineCoupling,
    InvConv1x1,
    InvConv1x1LU,
    gaussian_log_prob,
)
from flows.models.glow import Glow
from flows.models.image_flow import ImageFlow
from flows.models.realnvp import RealNVP
from flows.registry import get_info, list_models
from flows.testing import brute_force_logdet

DOUBLE = torch.float64

TINY = {
    "glow": ("glow_cifar10", {"levels": 2, "steps": 2, "width": 8}),
    "glow-lu-additive": (
        "glow_imagenet32",
        {"levels": 2, "steps": 1, "width": 8, "lu": True, "coupling": "additive"},
    ),
    "glow-3-levels-fixed-top": (
        "glow_imagenet64",
        {"levels": 3, "steps": 1, "width": 8, "learn_top": False},
    ),
    "realnvp": ("realnvp_cifar10", {"scales": 2, "blocks": 1, "width": 8}),
    "realnvp-3-scales-no-bn": (
        "realnvp_imagenet32",
        {"scales": 3, "blocks": 1, "width": 4, "batch_norm": False},
    ),
}


def _images(n: int, seed: int = 0, size: int = 8) -> torch.Tensor:
    return torch.rand(n, 1, size, size, generator=torch.Generator().manual_seed(seed), dtype=DOUBLE)


def _tiny(name: str) -> nn.Module:
    """A tiny model, initialised on data in training mode, perturbed, in eval mode."""
    torch.manual_seed(0)
    builder, kwargs = TINY[name]
    model = flows.create(builder, in_channels=1, image_size=8, **kwargs).double()
    with torch.no_grad():
        model.log_prob(_images(32, seed=1))  # actnorm initialisation / batch-norm statistics
        model.log_prob(_images(32, seed=2))
        generator = torch.Generator().manual_seed(3)
        for p in model.parameters():  # move zero-initialised convolutions and scales
            p.add_(0.02 * torch.randn(p.shape, generator=generator, dtype=p.dtype))
    return model.eval()


@pytest.mark.parametrize("name", list(TINY))
def test_encode_decode_is_an_exact_bijection(name: str) -> None:
    model = _tiny(name)
    y = _images(4, seed=4)
    with torch.no_grad():
        eps, _ = model.encode(y)
        assert eps.shape == (4, 64)
        assert (model.decode(eps) - y).abs().max() < 1e-10
        back, _ = model.encode(model.decode(eps))
        assert (back - eps).abs().max() < 1e-10


@pytest.mark.parametrize("name", list(TINY))
def test_log_prob_is_the_change_of_variables_with_a_brute_force_jacobian(name: str) -> None:
    model = _tiny(name)
    y = _images(2, seed=5)
    with torch.no_grad():
        log_prob = model.log_prob(y)
        eps, logdet = model.encode(y)
        assert torch.equal(model(y), log_prob)
    jacobian_logdet = brute_force_logdet(lambda v: model.encode(v)[0], y)
    expected = gaussian_log_prob(eps) + jacobian_logdet
    assert log_prob.shape == (2,)
    assert (log_prob - expected).abs().max() < 1e-8
    assert (logdet - jacobian_logdet).abs().max() < 1e-8  # encode's own log-determinant
    assert jacobian_logdet.abs().min() > 1.0  # far from volume preserving: a real check


@pytest.mark.parametrize("name", list(TINY))
def test_temperature_zero_is_the_mode_path(name: str) -> None:
    model = _tiny(name)
    torch.manual_seed(6)
    first, second = model.sample(3, temperature=0.0), model.sample(2, temperature=0.0)
    assert torch.equal(first[0], first[2]) and torch.equal(first[:2], second)
    with torch.no_grad():
        mode = model.decode(torch.zeros(1, 64, dtype=DOUBLE))
        assert torch.equal(first[:1], mode.clamp(0, 1))
        eps, _ = model.encode(mode)  # every latent sits at its prior mean
    assert eps.abs().max() < 1e-10
    if isinstance(model, Glow) and model.top_prior is not None:
        mean, _ = model.top_prior_params(1, mode)
        assert mean.abs().max() > 1e-3  # the prior means are not all zero here


@pytest.mark.parametrize("name", list(TINY))
def test_samples_are_finite_images_and_the_temperature_scales_the_latents(name: str) -> None:
    model = _tiny(name).float()
    torch.manual_seed(7)
    samples = model.sample(5, temperature=1.0)
    assert samples.shape == (5, 1, 8, 8) and samples.dtype == torch.float32
    assert torch.isfinite(samples).all() and samples.min() >= 0 and samples.max() <= 1
    assert (samples[0] - samples[1]).abs().max() > 0
    torch.manual_seed(8)
    cool = model.sample(5, temperature=0.5)
    torch.manual_seed(8)
    with torch.no_grad():
        expected = model.decode(0.5 * torch.randn(5, 64)).clamp(0, 1)
    assert torch.allclose(cool, expected)


@pytest.mark.parametrize("name", ["glow", "realnvp"])
def test_sampling_in_training_mode_changes_nothing(name: str) -> None:
    torch.manual_seed(14)
    builder, kwargs = TINY[name]
    model = flows.create(builder, in_channels=1, image_size=8, **kwargs)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    assert torch.isfinite(model.sample(4)).all() and model.training
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    if name == "glow":  # the fresh model's actnorms wait for data
        assert not any(bool(m.initialized) for m in model.modules() if isinstance(m, ActNorm))


def test_glow_at_initialisation_is_a_standard_normal_on_the_shifted_image() -> None:
    """Additive couplings and zero convolutions start as identities, rotations keep norms and
    actnorm is uninitialised in eval mode: log p(y) = log N(y - 0.5; 0, I) exactly."""
    torch.manual_seed(9)
    model = Glow(1, 8, levels=2, steps=2, width=8, coupling="additive").double().eval()
    y = _images(3, seed=9)
    expected = gaussian_log_prob(y - 0.5)
    assert torch.allclose(model.log_prob(y), expected, atol=1e-10)


def test_realnvp_log_prob_includes_the_logit_transform() -> None:
    """With every coupling network's output zeroed, the flow is the identity and log p(y) is
    the standard normal density of logit(0.05 + 0.9 y) plus the logit's log-Jacobian."""
    model = RealNVP(1, 8, scales=2, blocks=1, width=4, batch_norm=False).double().eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, AffineCoupling):
                out = module.net.resnet.conv_out
                out.parametrizations.weight.original0.zero_()
    y = _images(3, seed=10)
    p = 0.05 + 0.9 * y
    z = torch.log(p) - torch.log1p(-p)
    log_jacobian = (math.log(0.9) - torch.log(p) - torch.log1p(-p)).sum(dim=(1, 2, 3))
    assert torch.allclose(model.log_prob(y), gaussian_log_prob(z) + log_jacobian, atol=1e-10)


def test_glow_structure_follows_the_official_code() -> None:
    model = Glow(3, 32, levels=3, steps=2, width=16)
    assert [c for c, _, _ in model.latent_shapes] == [6, 12, 48]  # 12 -> split 6 ...
    assert [s for _, s, _ in model.latent_shapes] == [16, 8, 4]
    assert sum(c * h * w for c, h, w in model.latent_shapes) == model.num_dims == 3 * 32 * 32
    step = model.blocks[0][0]
    assert [type(layer) for layer in step] == [ActNorm, InvConv1x1, GlowAffineCoupling]
    assert type(model.blocks[2][1].layers[2]) is GlowAffineCoupling
    assert len(model.blocks[1]) == 2 and len(model.splits) == 2
    assert model.blocks[1][0][2].net.conv1.conv.in_channels == 12 + 1  # z1 plus edge channel
    lu = Glow(3, 32, levels=2, steps=1, width=8, lu=True, coupling="additive")
    assert [type(layer) for layer in lu.blocks[0][0]] == [ActNorm, InvConv1x1LU, AdditiveCoupling]
    with pytest.raises(ValueError, match="divisible"):
        Glow(3, 12, levels=3)


def test_glow_top_prior_takes_mean_then_log_std_and_the_split_prior_interleaves() -> None:
    """``prior``: mean = h[..., :n_z], logs = h[..., n_z:]; ``split2d_prior``: 0::2 and 1::2."""
    model = Glow(1, 8, levels=2, steps=1, width=4)
    channels = model.latent_shapes[-1][0]
    with torch.no_grad():
        model.top_prior.conv.bias.copy_(torch.arange(2.0 * channels))
        model.splits[0].prior_net.conv.bias.copy_(torch.arange(4.0))
    mean, log_std = model.top_prior_params(2, torch.zeros(1))
    assert mean.shape == (2, channels, 2, 2)
    assert mean[0, :, 0, 0].tolist() == list(range(channels))
    assert log_std[1, :, 1, 1].tolist() == list(range(channels, 2 * channels))
    split_mean, split_log_std = model.splits[0].prior(torch.zeros(1, 2, 4, 4))
    assert split_mean[0, :, 0, 0].tolist() == [0.0, 2.0]
    assert split_log_std[0, :, 0, 0].tolist() == [1.0, 3.0]


def test_realnvp_structure_follows_the_official_code() -> None:
    model = RealNVP(3, 32, scales=3, blocks=2, width=8)
    first, second, final = model.scales
    checkerboard = [m for m in first.checkerboard if isinstance(m, AffineCoupling)]
    channelwise = [m for m in first.channelwise if isinstance(m, AffineCoupling)]
    assert [m.mask for m in checkerboard] == ["checkerboard"] * 3
    assert [m.reverse for m in checkerboard] == [True, False, True]  # mask_in = 1, 0, 1
    assert [m.reverse for m in channelwise] == [False, True, False]  # change_bottom = T, F, T
    assert [m.mask for m in final.checkerboard if isinstance(m, AffineCoupling)] == [
        "checkerboard"
    ] * 4
    assert final.channelwise is None
    assert all(m.scale.item() == 0.0 for m in checkerboard)  # rescaling_scale
    assert all(m.scale.item() == 1.0 for m in channelwise)  # scale
    assert sum(isinstance(m, BatchNormFlow) for m in first.modules()) == 6
    widths = [
        [m.net.resnet.conv_in.out_channels for m in s.modules() if isinstance(m, AffineCoupling)]
        for s in model.scales
    ]
    assert widths == [[8] * 3 + [16] * 3, [16] * 3 + [32] * 3, [32] * 4]
    assert [m.net.resnet.conv_in.in_channels for m in checkerboard] == [2 * 3 + 1] * 3
    assert [m.net.resnet.conv_in.in_channels for m in channelwise] == [2 * 6] * 3
    assert model.latent_shapes == [(6, 16, 16), (12, 8, 8), (12, 8, 8)]
    assert len(second.checkerboard) == 6
    with pytest.raises(ValueError, match="divisible"):
        RealNVP(3, 12, scales=4)


def test_realnvp_factors_out_one_colour_of_a_checkerboard() -> None:
    """The half factored out after the first scale is the (0, 1) and (1, 0) pixels of each
    2x2 block of that scale's output (``squeeze_2x2_ordered``, then the second half)."""
    model = RealNVP(1, 8, scales=2, blocks=1, width=4).double().eval()
    y = _images(1, seed=11)
    with torch.no_grad():
        h, _ = model.scales[0](model.logit(y)[0])
        eps, _ = model.encode(y)
    factored = eps[:, :32].reshape(1, 2, 4, 4)
    assert torch.equal(factored[:, 0], h[:, 0, 0::2, 1::2])
    assert torch.equal(factored[:, 1], h[:, 0, 1::2, 0::2])


def test_tiny_models_learn() -> None:
    """A few Adam steps on one batch lower the negative log-likelihood (float32, train mode)."""
    y = _images(16, seed=12).float()
    for builder, kwargs in (TINY["glow"], TINY["realnvp"]):
        torch.manual_seed(13)
        model = flows.create(builder, in_channels=1, image_size=8, **kwargs)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        losses = []
        for _ in range(15):
            loss = -model.log_prob(y).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        assert all(math.isfinite(v) for v in losses)
        assert losses[-1] < losses[0] - 1.0, (builder, losses)


def test_density_models_are_registered_with_their_papers() -> None:
    assert list_models(task="density") == [
        "flowpp_cifar10",
        "flowpp_cifar10_affine",
        "flowpp_cifar10_no_attention",
        "flowpp_cifar10_uniform",
        "flowpp_imagenet32",
        "flowpp_imagenet64",
        "glow_cifar10",
        "glow_imagenet32",
        "glow_imagenet64",
        "realnvp_cifar10",
        "realnvp_imagenet32",
        "realnvp_imagenet64",
    ]
    for name in list_models("glow*"):
        info = get_info(name)
        assert (info.task, info.table, info.row) == ("density", "density", "Glow")
        assert "Kingma" in info.paper and info.notes
    for name in list_models("realnvp*"):
        info = get_info(name)
        assert (info.task, info.table, info.row) == ("density", "density", "RealNVP")
        assert "Dinh" in info.paper and info.notes
    for name in list_models("flowpp*"):
        info = get_info(name)
        assert info.table in ("density", "dequantization") and "Ho, Chen" in info.paper
    runner_example = flows.create(
        "glow_cifar10", in_channels=1, image_size=8, levels=3, steps=4, width=32
    )
    assert runner_example.latent_shapes[-1] == (16, 1, 1)


def test_every_density_model_has_the_image_flow_interface() -> None:
    """``log_prob``, ``sample``, ``encode``, ``decode`` and ``num_dims`` come from one base."""
    for name in list_models(task="density"):
        assert issubclass(typing.get_type_hints(get_info(name).builder)["return"], ImageFlow)
    with pytest.raises(TypeError, match="decode"):
        type("EncodeOnly", (ImageFlow,), {"encode": lambda self, y: (y, y)})(1, 2)


def _glow_params(c: int, levels: int, steps: int, width: int) -> int:
    def step(ch: int) -> int:
        half = ch // 2
        net = (half + 1) * 9 * width + 2 * width + width * width + 2 * width
        net += (width + 1) * 9 * ch + 2 * ch  # zero conv: weight (edge channel), bias, logs
        return 2 * ch + ch * ch + net  # actnorm, 1x1 conv, coupling network

    total, ch = 0, 4 * c
    for level in range(levels):
        total += steps * step(ch)
        if level < levels - 1:
            total += (ch // 2 + 1) * 9 * ch + 2 * ch  # split prior
            ch *= 2
    return total + (2 * ch + 1) * 9 * 2 * ch + 4 * ch  # learned top prior


def _realnvp_params(c: int, scales: int, blocks: int, width: int) -> int:
    def net(cond: int, out: int, extra: int, w: int) -> int:
        conv_in = (2 * cond + extra) * w * 9 + w  # unit-norm filters, bias
        skip = w * w + 2 * w  # 1x1, bias, magnitude
        block = w + w * w * 9 + w + w * w * 9 + 2 * w  # BN shift, conv, BN shift, conv
        return cond + conv_in + skip + blocks * (block + skip) + w + w * out + 2 * out

    total, ch = 0, c
    for index in range(scales):
        w = width * 2**index
        final = index == scales - 1
        total += (4 if final else 3) * (net(ch, 2 * ch, 1, w) + 1)
        if not final:
            total += 3 * (net(2 * ch, 4 * ch, 0, 2 * w) + 1)
            ch *= 2
    return total


PUBLISHED = {
    "glow_cifar10": _glow_params(3, 3, 32, 512),
    "glow_imagenet32": _glow_params(3, 3, 48, 512),
    "glow_imagenet64": _glow_params(3, 4, 48, 512),
    "realnvp_cifar10": _realnvp_params(3, 2, 8, 64),
    "realnvp_imagenet32": _realnvp_params(3, 4, 4, 32),
    "realnvp_imagenet64": _realnvp_params(3, 5, 4, 32),
}


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_published_configurations_by_parameter_count(name: str) -> None:
    with torch.device("meta"):  # no memory: count the parameters of the full-size model
        model = flows.create(name)
    assert sum(p.numel() for p in model.parameters()) == PUBLISHED[name]
