"""Flow++ against mathematics: the logistic-mixture CDF coupling, its bisection inverse, the
log-determinants of the stages and of the whole model by brute-force Jacobians, the variational
dequantizer's density by numerical integration, and the published parameter counts."""

from __future__ import annotations

import inspect
import math
import typing

import pytest
import torch

import flows
from flows.layers import DataInitConv2d, ElementwiseNorm, UniformDequantizer
from flows.layers.logistic import (
    mixture_logistic_coupling,
    mixture_logistic_coupling_inverse,
    mixture_logistic_inverse_cdf,
    mixture_logistic_log_cdf,
    mixture_logistic_log_pdf,
    mixture_logistic_log_sf,
)
from flows.models.flowpp import (
    FlowPlusPlus,
    FlowPPStage,
    VariationalDequantizer,
    merge_halves,
    split_halves,
)
from flows.registry import get_info
from flows.testing import brute_force_logdet, check_invertible_layer

DOUBLE = torch.float64
TINY = {
    "filters": 8,
    "blocks": 1,
    "components": 3,
    "heads": 2,
    "dropout": 0.0,
    "dequant_filters": 8,
    "dequant_blocks": 1,
}


def _mixture(shape: tuple[int, ...], components: int, seed: int = 0) -> tuple[torch.Tensor, ...]:
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(*shape, components, generator=generator, dtype=DOUBLE)
    means = 2 * torch.randn(*shape, components, generator=generator, dtype=DOUBLE)
    log_scales = torch.randn(*shape, components, generator=generator, dtype=DOUBLE) - 0.5
    return logits, means, log_scales


def _initialised(module: torch.nn.Module, *inputs: torch.Tensor) -> torch.nn.Module:
    """Run one forward in training mode (data-dependent initialisation), then eval mode."""
    module.train()
    with torch.no_grad():
        module(*inputs)
    return module.eval()


# --- the mixture of logistics ---------------------------------------------------------------


def test_mixture_functions_equal_the_mixture_formula() -> None:
    x = torch.linspace(-8, 8, 101, dtype=DOUBLE)
    logits, means, log_scales = _mixture((101,), 4)
    weights = torch.softmax(logits, -1)
    scales = torch.exp(log_scales)
    z = (x[:, None] - means) / scales
    cdf = (weights * torch.sigmoid(z)).sum(-1)
    pdf = (weights * torch.sigmoid(z) * torch.sigmoid(-z) / scales).sum(-1)
    assert torch.allclose(mixture_logistic_log_cdf(x, logits, means, log_scales).exp(), cdf)
    assert torch.allclose(mixture_logistic_log_sf(x, logits, means, log_scales).exp(), 1 - cdf)
    assert torch.allclose(mixture_logistic_log_pdf(x, logits, means, log_scales).exp(), pdf)


def test_mixture_pdf_is_the_derivative_of_the_cdf() -> None:
    x = torch.linspace(-5, 5, 41, dtype=DOUBLE).requires_grad_(True)
    params = _mixture((41,), 5, seed=1)
    cdf = mixture_logistic_log_cdf(x, *params).exp()
    (derivative,) = torch.autograd.grad(cdf.sum(), x)
    pdf = mixture_logistic_log_pdf(x.detach(), *params).exp()
    assert torch.allclose(derivative, pdf, atol=1e-12)


def _logistic_log_pdf_reference(z: float, log_scale: float) -> float:
    """``log f`` of one logistic, by Python's ``math`` on the form that never cancels:
    ``-|z| - log s - 2 log1p(exp(-|z|))`` (the density is symmetric in ``z``)."""
    return -abs(z) - log_scale - 2.0 * math.log1p(math.exp(-abs(z)))


def test_mixture_log_pdf_is_accurate_in_float64_across_its_range() -> None:
    """Above |z| = 20 ``F.softplus`` switches to its linear branch, which cost 2.5e-9 here."""
    z = torch.linspace(-60, 60, 1201, dtype=DOUBLE)
    mean, log_scale = 0.25, -0.5
    x = mean + z * math.exp(log_scale)
    params = (
        torch.zeros(1201, 1, dtype=DOUBLE),
        torch.full((1201, 1), mean, dtype=DOUBLE),
        torch.full((1201, 1), log_scale, dtype=DOUBLE),
    )
    standardised = (x - mean) * math.exp(-log_scale)  # what the function standardises to
    expected = torch.tensor(
        [_logistic_log_pdf_reference(v, log_scale) for v in standardised.tolist()], dtype=DOUBLE
    )
    actual = mixture_logistic_log_pdf(x, *params)
    relative = ((actual - expected).abs() / expected.abs()).max().item()
    assert relative < 1e-14  # a few float64 roundings (vectorised exp/log1p differ by CPU)
    # and the coupling's log-derivative, which for one component is exactly s - log sigma
    s, t = torch.full_like(x, 0.3), torch.zeros_like(x)
    _, log_derivative = mixture_logistic_coupling(x, s, t, *params)
    assert (log_derivative - (0.3 - log_scale)).abs().max().item() < 1e-12


@pytest.mark.parametrize("span", [5.0, 30.0])
def test_bisection_inverts_the_cdf_in_float64(span: float) -> None:
    x = torch.linspace(-span, span, 200, dtype=DOUBLE)
    params = _mixture((200,), 3, seed=2)
    p = mixture_logistic_log_cdf(x, *params).exp()
    back = mixture_logistic_inverse_cdf(p, *params)
    # F(back) = p everywhere (bisection stops at steps of 1e-12 in x); x itself is recoverable
    # where F is not flat to double precision (an error of 1e-16 in p moves x by 1e-16 / f(x))
    assert (mixture_logistic_log_cdf(back, *params).exp() - p).abs().max() < 1e-11
    well_conditioned = mixture_logistic_log_pdf(x, *params).exp() > 1e-6
    assert well_conditioned.float().mean() > 0.5
    assert (back - x)[well_conditioned].abs().max() < 1e-6


def test_coupling_inverse_is_accurate_to_1e6_in_float64() -> None:
    shape = (4, 2, 3, 3)
    generator = torch.Generator().manual_seed(3)
    x = 2 * torch.randn(*shape, generator=generator, dtype=DOUBLE)
    s, t = torch.tanh(torch.randn(2, *shape, generator=generator, dtype=DOUBLE))
    params = _mixture(shape, 4, seed=4)
    y, _ = mixture_logistic_coupling(x, s, t, *params)
    error = (mixture_logistic_coupling_inverse(y, s, t, *params) - x).abs().max()
    assert error < 1e-6


def test_coupling_log_derivative_equals_finite_differences() -> None:
    shape = (3, 7)
    x = torch.randn(*shape, dtype=DOUBLE)
    s, t = torch.randn(2, *shape, dtype=DOUBLE) * 0.5
    params = _mixture(shape, 3, seed=5)
    _, log_derivative = mixture_logistic_coupling(x, s, t, *params)
    h = 1e-6
    up, _ = mixture_logistic_coupling(x + h, s, t, *params)
    down, _ = mixture_logistic_coupling(x - h, s, t, *params)
    assert torch.allclose(log_derivative, torch.log((up - down) / (2 * h)), atol=1e-6)


# --- layers ----------------------------------------------------------------------------------


def test_data_init_conv_standardises_its_outputs() -> None:
    for weight_norm in (False, True):
        conv = DataInitConv2d(3, 5, 3, init_scale=0.1, weight_norm=weight_norm)
        y = conv(4 * torch.randn(128, 3, 6, 6) + 1)
        assert y.mean(dim=(0, 2, 3)).abs().max() < 1e-5
        assert torch.allclose(
            y.std(dim=(0, 2, 3), unbiased=False), torch.full((5,), 0.1), atol=1e-4
        )
        again = conv(torch.randn(8, 3, 6, 6))  # initialised once only
        assert not torch.equal(again, y[:8])
    weight = conv.effective_weight()
    assert torch.allclose(weight.flatten(1).norm(dim=1), conv.gain)


def test_elementwise_norm_is_an_invertible_layer() -> None:
    layer = _initialised(
        ElementwiseNorm((2, 3, 4)).double(), torch.randn(32, 2, 3, 4, dtype=DOUBLE)
    )
    check_invertible_layer(layer, torch.randn(3, 2, 3, 4, dtype=DOUBLE))


@pytest.mark.parametrize("kind", ["checkerboard", "channel"])
def test_split_alternates_columns_or_halves_channels(kind: str) -> None:
    x = torch.arange(2 * 4 * 2 * 4, dtype=DOUBLE).reshape(2, 4, 2, 4)
    first, second = split_halves(x, kind)
    if kind == "checkerboard":
        assert torch.equal(first, x[..., 0::2]) and torch.equal(second, x[..., 1::2])
    else:
        assert torch.equal(first, x[:, :2]) and torch.equal(second, x[:, 2:])
    assert torch.equal(merge_halves(first, second, kind), x)


@pytest.mark.parametrize(
    ("spec", "coupling", "attention"),
    [
        ("checkerboard:2", "mixture", True),
        ("channel:2", "mixture", True),
        ("checkerboard:1", "affine", True),
        ("channel:1", "mixture", False),
        ("checkerboard:1", "mixture", None),
    ],
)
def test_stage_inverse_and_logdet_against_brute_force(
    spec: str, coupling: str, attention: bool | None
) -> None:
    torch.manual_seed(0)
    mixer = {True: "attention", False: "pointwise", None: "none"}[attention]
    network = {"filters": 8, "blocks": 1, "heads": 2, "mixer": mixer}
    stage = FlowPPStage(spec, (2, 4, 4), coupling=coupling, components=3, **network).double()
    stage = _initialised(stage, torch.randn(16, 2, 4, 4, dtype=DOUBLE))
    check_invertible_layer(stage, torch.randn(2, 2, 4, 4, dtype=DOUBLE), gradients=False)


# --- the model --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_model() -> FlowPlusPlus:
    torch.manual_seed(0)
    model = flows.create("flowpp_cifar10", in_channels=1, image_size=4, **TINY).double()
    x = torch.randint(0, 17, (32, 1, 4, 4)).double()
    model.train()
    with torch.no_grad():
        u, _ = model.dequantizer(x, 17)
        model.log_prob((x + u) / 17)
    return model.eval()


def test_model_log_density_equals_change_of_variables_by_brute_force(
    tiny_model: FlowPlusPlus,
) -> None:
    y = torch.rand(2, 1, 4, 4, dtype=DOUBLE) * 0.9 + 0.05
    _, logdet = tiny_model.encode(y)
    reference = brute_force_logdet(lambda v: tiny_model.encode(v)[0], y)
    assert torch.allclose(logdet, reference, atol=1e-8)
    z, _ = tiny_model.encode(y)
    gaussian = -0.5 * (z**2).sum(1) - 0.5 * z.shape[1] * math.log(2 * math.pi)
    assert torch.allclose(tiny_model.log_prob(y), gaussian + reference, atol=1e-8)


def test_model_decode_inverts_encode(tiny_model: FlowPlusPlus) -> None:
    y = torch.rand(3, 1, 4, 4, dtype=DOUBLE)
    z, _ = tiny_model.encode(y)
    assert (tiny_model.decode(z) - y).abs().max() < 1e-8
    samples = tiny_model.sample(5, temperature=0.7)
    assert samples.shape == (5, 1, 4, 4) and samples.min() >= 0 and samples.max() <= 1


def test_dequantizer_noise_is_strictly_inside_the_unit_interval(tiny_model: FlowPlusPlus) -> None:
    x = torch.randint(0, 17, (64, 1, 4, 4)).double()
    far = torch.full_like(x, 40.0)  # a sigmoid argument far beyond float rounding
    for noise in (None, far, -far):
        u, log_q = tiny_model.dequantizer(x, 17, noise)
        assert bool(((u > 0) & (u < 1)).all()) and bool(torch.isfinite(log_q).all())


def test_dequantizer_log_q_matches_its_inverse_evaluation(tiny_model: FlowPlusPlus) -> None:
    x = torch.randint(0, 17, (4, 1, 4, 4)).double()
    u, log_q = tiny_model.dequantizer(x, 17)
    assert torch.allclose(tiny_model.dequantizer.log_prob(u, x, 17), log_q, atol=1e-6)


def test_dequantizer_density_integrates_to_one_in_two_dimensions() -> None:
    """q(u | x) on (0, 1)^2 (an image of 1 x 1 x 2), integrated on a 200 x 200 midpoint grid,
    with the dequantizer as initialised from data (its couplings are not the identity)."""
    torch.manual_seed(1)
    network = {"filters": 8, "blocks": 1, "components": 2, "heads": 2}
    dequantizer = VariationalDequantizer(1, 1, 2, **network).double()
    x = torch.tensor([[[[3.0, 11.0]]]], dtype=DOUBLE)
    _initialised(dequantizer, torch.randint(0, 17, (32, 1, 1, 2)).double(), 17)
    side = 200
    centres = (torch.arange(side, dtype=DOUBLE) + 0.5) / side
    grid = torch.cartesian_prod(centres, centres).reshape(-1, 1, 1, 2)
    with torch.no_grad():
        log_q = dequantizer.log_prob(grid, x.expand(len(grid), -1, -1, -1), 17)
    density = log_q.exp()
    assert abs(float(density.mean()) - 1.0) < 2e-3
    assert float(density.max() / density.min()) > 2.0  # the check is not of a uniform density


def test_uniform_dequantizer_has_the_uniform_dequantization_interface() -> None:
    x = torch.randint(0, 17, (5, 1, 4, 4))
    u, log_q = UniformDequantizer().sample(x, 17, torch.Generator().manual_seed(0))
    assert bool(((u >= 0) & (u < 1)).all()) and torch.equal(log_q, torch.zeros(5))


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("flowpp_cifar10", 31_443_440),
        ("flowpp_cifar10_uniform", 32_324_408),
        ("flowpp_cifar10_affine", 32_045_708),
        ("flowpp_cifar10_no_attention", 31_443_440),
        ("flowpp_imagenet32", 168_955_724),
        ("flowpp_imagenet64", 73_489_960),
    ],
)
def test_parameter_counts_equal_the_official_code(name: str, expected: int) -> None:
    """The counts the official scripts print (``run_cifar.py`` "Params: 31,443,440", the
    ablation scripts' and the ImageNet 32 and 64 launchers')."""
    count = sum(p.numel() for p in flows.create(name).parameters())
    assert count == expected == get_info(name).published_params
    if name == "flowpp_cifar10":
        assert abs(count - 31.4e6) / 31.4e6 < 0.01  # the paper's "31.4M"


@pytest.mark.parametrize("name", flows.list_models("flowpp*"))
def test_builders_pass_each_argument_on_under_its_own_name(name: str) -> None:
    """Configs set a builder's arguments by keyword; the builder hands them to
    :class:`FlowPlusPlus` under the same names, so each is a parameter of the same type."""
    builder = get_info(name).builder
    hints = typing.get_type_hints(builder)
    model_hints = typing.get_type_hints(FlowPlusPlus.__init__)
    for parameter in inspect.signature(builder).parameters:
        assert hints[parameter] == model_hints[parameter], parameter


def test_bad_arguments_name_what_is_wrong() -> None:
    with pytest.raises(ValueError, match="dequantization must be one of"):
        FlowPlusPlus(dequantization="none")
    with pytest.raises(ValueError, match="coupling must be one of"):
        FlowPlusPlus(
            in_channels=1,
            image_size=4,
            coupling="spline",
            **{k: v for k, v in TINY.items() if k not in ("dequant_filters", "dequant_blocks")},
        )
    with pytest.raises(ValueError, match="checkerboard:N"):
        FlowPPStage("diagonal:2", (2, 4, 4))
