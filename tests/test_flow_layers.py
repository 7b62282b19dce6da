"""Flow layers against mathematics: exact inverses, brute-force Jacobians, normalised densities.

Every bijective layer goes through :func:`flows.testing.check_invertible_layer` in float64
(inverse to 1e-10, log-determinant against the brute-force Jacobian to 1e-8, gradcheck).
Zero-initialised parts are perturbed first, so no check passes because a layer is the identity.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
from torch import nn

import flows
import flows.layers
from flows.layers import (
    ActNorm,
    AdditiveCoupling,
    AffineCoupling,
    BatchNormFlow,
    ChannelZeroPad,
    Conv2dSame,
    DataInitConv2d,
    ElementwiseNorm,
    FlowSequence,
    GlowAffineCoupling,
    InvConv1x1,
    InvConv1x1LU,
    InvertibleLayer,
    LogitTransform,
    SpaceToDepth,
    Split,
    Squeeze,
    UniformDequantizer,
    ZeroConv2d,
    channel_mask,
    checkerboard_mask,
    dequantize,
    edge_pad,
    gaussian_log_prob,
    squeeze,
    squeeze_ordered,
    unsqueeze,
    unsqueeze_ordered,
)
from flows.models.glow import GlowCouplingNet
from flows.testing import (
    brute_force_logdet,
    check_gradients,
    check_invertible_layer,
    inversion_error,
    logdet_error,
)

DOUBLE = torch.float64


def _perturb(module: nn.Module, std: float = 0.1, seed: int = 0) -> nn.Module:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(std * torch.randn(p.shape, generator=generator, dtype=p.dtype))
    return module


def _randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=DOUBLE)


def _conv_net(in_channels: int, out_channels: int) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(in_channels, 8, 3, padding=1), nn.Tanh(), nn.Conv2d(8, out_channels, 3, padding=1)
    )


# --- reshaping -------------------------------------------------------------------------------


def test_squeeze_has_the_official_glow_channel_order() -> None:
    x = _randn(2, 3, 4, 6)
    y = squeeze(x)
    assert y.shape == (2, 12, 2, 3)
    for c in range(3):
        for dy in range(2):
            for dx in range(2):
                assert torch.equal(y[:, c * 4 + 2 * dy + dx], x[:, c, dy::2, dx::2])
    assert torch.equal(unsqueeze(y), x)


def test_squeeze_ordered_puts_one_checkerboard_colour_first() -> None:
    x = _randn(2, 3, 4, 6)
    y = squeeze_ordered(x)
    positions = [(0, 0), (1, 1), (0, 1), (1, 0)]  # SQUEEZE_MATRIX of real_nvp_utils.py
    for k, (dy, dx) in enumerate(positions):
        for c in range(3):
            assert torch.equal(y[:, k * 3 + c], x[:, c, dy::2, dx::2])
    assert torch.equal(unsqueeze_ordered(y), x)
    first_half = unsqueeze_ordered(torch.cat([y[:, :6], torch.zeros_like(y[:, 6:])], dim=1))
    assert torch.equal(first_half, x * checkerboard_mask(4, 6, dtype=DOUBLE))


@pytest.mark.parametrize("layer", [Squeeze(), SpaceToDepth(2)], ids=["squeeze", "space_to_depth"])
def test_reshaping_layers_are_volume_preserving_bijections(layer: nn.Module) -> None:
    check_invertible_layer(layer, _randn(2, 2, 4, 4))


# --- masks and couplings ----------------------------------------------------------------------


def test_masks() -> None:
    board = checkerboard_mask(3, 4).squeeze()
    for h in range(3):
        for w in range(4):
            assert board[h, w] == float((h + w) % 2 == 0)
    assert torch.equal(checkerboard_mask(3, 4, reverse=True), 1 - checkerboard_mask(3, 4))
    assert channel_mask(4).flatten().tolist() == [1.0, 1.0, 0.0, 0.0]
    assert torch.equal(channel_mask(6, reverse=True), 1 - channel_mask(6))


def _couplings() -> dict[str, nn.Module]:
    torch.manual_seed(0)
    return {
        "additive-channel": AdditiveCoupling(_conv_net(2, 2)),
        "additive-checkerboard": AdditiveCoupling(_conv_net(4, 4), "checkerboard"),
        "affine-channel": AffineCoupling(_conv_net(2, 4), "channel", scale_init=0.7),
        "affine-channel-reverse": AffineCoupling(_conv_net(2, 4), "channel", reverse=True),
        "affine-checkerboard": AffineCoupling(_conv_net(4, 8), "checkerboard", scale_init=0.5),
        "affine-checkerboard-reverse": AffineCoupling(
            _conv_net(4, 8), "checkerboard", reverse=True, scale_channels=4
        ),
        "glow-affine": GlowAffineCoupling(_conv_net(2, 4)),
        "glow-affine-net": _perturb(GlowAffineCoupling(GlowCouplingNet(2, 4, width=8))),
    }


@pytest.mark.parametrize("name", list(_couplings()))
def test_couplings_are_exact_bijections_with_the_right_logdet(name: str) -> None:
    layer = _couplings()[name].double()
    x = _randn(3, 4, 4, 4)
    layer(x)  # initialise actnorms inside a Glow network (training mode)
    layer.eval()
    check_invertible_layer(layer, x)
    y, _ = layer(x)
    if "checkerboard" in name:
        keep = checkerboard_mask(4, 4, reverse="reverse" in name, dtype=DOUBLE)
        assert torch.equal(y * keep, x * keep)
        changed = (y - x).abs().masked_select((keep == 0).expand_as(x))
        assert changed.min() > 0  # every other entry changes
    else:
        kept = slice(2, 4) if "reverse" in name else slice(0, 2)
        assert torch.equal(y[:, kept], x[:, kept])


def test_couplings_on_flat_vectors() -> None:
    torch.manual_seed(1)
    net = nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 4))
    check_invertible_layer(AffineCoupling(net, reverse=True).double(), _randn(5, 4))
    check_invertible_layer(AdditiveCoupling(nn.Linear(2, 2)).double(), _randn(5, 4))


def test_realnvp_affine_coupling_formula() -> None:
    torch.manual_seed(2)
    net = _conv_net(2, 4).double()
    layer = AffineCoupling(net, scale_init=0.8).double()
    x = _randn(2, 4, 3, 3)
    y, logdet = layer(x)
    shift, raw = net(x[:, :2]).chunk(2, dim=1)
    s = 0.8 * torch.tanh(raw)
    assert torch.allclose(y[:, 2:], x[:, 2:] * torch.exp(s) + shift, atol=1e-14)
    assert torch.allclose(logdet, s.sum(dim=(1, 2, 3)), atol=1e-12)


def test_glow_affine_coupling_is_the_released_form() -> None:
    """Shift first, then a sigmoid(h + 2) scale; shift and scale interleaved in h."""
    torch.manual_seed(3)
    net = _conv_net(2, 4).double()
    layer = GlowAffineCoupling(net)
    x = _randn(2, 4, 3, 3)
    y, logdet = layer(x)
    h = net(x[:, :2])
    scale = torch.sigmoid(h[:, 1::2] + 2.0)
    assert torch.allclose(y[:, 2:], (x[:, 2:] + h[:, 0::2]) * scale, atol=1e-14)
    assert torch.allclose(logdet, torch.log(scale).sum(dim=(1, 2, 3)), atol=1e-12)
    assert torch.equal(y[:, :2], x[:, :2])


def test_glow_network_starts_as_zero_so_couplings_start_near_identity() -> None:
    net = GlowCouplingNet(2, 4, width=8)
    assert net(torch.randn(2, 2, 4, 4)).abs().max() == 0.0
    layer = GlowAffineCoupling(net)
    x = torch.randn(2, 4, 4, 4)
    y, logdet = layer(x)
    assert torch.allclose(y[:, 2:], x[:, 2:] * torch.sigmoid(torch.tensor(2.0)))
    assert torch.allclose(logdet, torch.full((2,), 32 * math.log(torch.sigmoid(torch.tensor(2.0)))))


# --- actnorm, batch norm ---------------------------------------------------------------------


def test_actnorm_initialises_to_zero_mean_unit_variance_once() -> None:
    x = 3.0 + 2.5 * _randn(16, 3, 5, 5)
    x[:, 1] *= 4.0
    layer = ActNorm(3).double()
    y, logdet = layer(x)
    assert bool(layer.initialized)
    assert y.mean(dim=(0, 2, 3)).abs().max() < 1e-12
    assert (y.var(dim=(0, 2, 3), unbiased=False) - 1).abs().max() < 1e-5
    expected = -25 * torch.log(x.std(dim=(0, 2, 3), unbiased=False)).sum()
    assert torch.allclose(logdet, expected.expand(16), atol=1e-4)
    state = {k: v.clone() for k, v in layer.state_dict().items()}
    layer(x + 10.0)  # training mode again: no re-initialisation
    assert all(torch.equal(state[k], v) for k, v in layer.state_dict().items())
    loaded = ActNorm(3).double()
    loaded.load_state_dict(state)  # a checkpoint is not re-initialised
    assert torch.equal(loaded(x + 10.0)[0], layer(x + 10.0)[0])
    layer.load_state_dict(ActNorm(3).double().state_dict())  # an uninitialised state ...
    y, _ = layer(x + 10.0)  # ... initialises again on the next training forward
    assert bool(layer.initialized) and y.mean(dim=(0, 2, 3)).abs().max() < 1e-12


def test_actnorm_is_an_exact_bijection_after_initialisation() -> None:
    layer = ActNorm(3).double()
    layer(2.0 * _randn(8, 3, 4, 4, seed=1) + 1.0)
    check_invertible_layer(layer.eval(), _randn(2, 3, 3, 3))
    flat = ActNorm(4).double()
    flat(_randn(10, 4) * 3)
    check_invertible_layer(flat.eval(), _randn(3, 4))


@pytest.mark.parametrize(
    ("mask", "reverse"), [(None, False), ("checkerboard", True), ("channel", False)]
)
def test_batch_norm_flow(mask: str | None, reverse: bool) -> None:
    layer = BatchNormFlow(4, mask, reverse).double()
    x = 2.0 + 3.0 * _randn(32, 4, 4, 4)
    y, _ = layer(x)  # training mode: batch statistics
    if mask is None:
        assert y.mean(dim=(0, 2, 3)).abs().max() < 1e-12
        assert (y.var(dim=(0, 2, 3), unbiased=False) - 1).abs().max() < 1e-3
    elif mask == "channel":
        assert torch.equal(y[:, :2], x[:, :2])  # the conditioning half is untouched
        assert y[:, 2:].mean(dim=(0, 2, 3)).abs().max() < 1e-12
    else:
        keep = checkerboard_mask(4, 4, reverse, dtype=DOUBLE)
        assert torch.equal(y * keep, x * keep)
    for _ in range(5):
        layer(x)
    assert layer.running_var.max() > 2.0  # running statistics moved away from 1
    check_invertible_layer(layer.eval(), _randn(2, 4, 4, 4))


# --- 1x1 convolutions -------------------------------------------------------------------------


def test_invertible_1x1_conv_starts_as_a_rotation_and_has_hw_logdet() -> None:
    layer = InvConv1x1(5).double()
    w = layer.weight.detach()
    assert torch.allclose(w @ w.T, torch.eye(5, dtype=DOUBLE), atol=1e-6)
    with torch.no_grad():
        layer.weight.copy_(_randn(5, 5))
    x = _randn(2, 5, 3, 4)
    _, logdet = layer(x)
    expected = 12 * torch.linalg.slogdet(layer.weight.detach()).logabsdet
    assert torch.allclose(logdet, expected.expand(2), atol=1e-12)
    check_invertible_layer(layer, x[:, :, :2, :2])


def test_lu_and_plain_1x1_conv_agree_for_the_same_matrix() -> None:
    w = _randn(6, 6, seed=4)
    plain, lu = InvConv1x1.from_matrix(w), InvConv1x1LU.from_matrix(w).double()
    assert torch.allclose(lu.weight, w, atol=1e-12)
    assert torch.allclose(lu.log_abs_det(), plain.log_abs_det(), atol=1e-12)
    x = _randn(2, 6, 3, 3)
    (y_plain, ld_plain), (y_lu, ld_lu) = plain(x), lu(x)
    assert torch.allclose(y_plain, y_lu, atol=1e-12) and torch.allclose(ld_plain, ld_lu, atol=1e-10)
    lower, _ = lu._factors()
    assert torch.equal(torch.diagonal(lower), torch.ones(6, dtype=DOUBLE))
    assert torch.equal(torch.triu(lower, 1), torch.zeros(6, 6, dtype=DOUBLE))
    assert torch.equal(torch.tril(lu.upper * lu.lower_mask.T, 0), torch.zeros(6, 6, dtype=DOUBLE))
    assert not lu.permutation.requires_grad and not lu.sign_s.requires_grad
    _perturb(lu)  # training moves L, U and log_s; still a bijection with logdet h w sum(log_s)
    check_invertible_layer(lu, x[:, :, :2, :2])
    check_invertible_layer(InvConv1x1LU(3).double(), _randn(3, 3))  # (N, D) input


# --- split, priors, convolutions --------------------------------------------------------------


def test_split_conditional_gaussian_prior() -> None:
    split = _perturb(Split(4), 0.3).double()
    x = _randn(3, 4, 3, 3)
    z1, z2, log_p = split(x)
    assert torch.equal(split.inverse(z1, z2), x)
    h = split.prior_net(z1)
    mean, log_std = h[:, 0::2], h[:, 1::2]
    assert log_std.abs().max() > 0.01  # a non-trivial prior
    reference = torch.distributions.Normal(mean, torch.exp(log_std)).log_prob(z2).sum((1, 2, 3))
    assert torch.allclose(log_p, reference, atol=1e-10)
    noise = _randn(3, 2, 3, 3, seed=5)
    assert torch.equal(split.sample(z1, 0.0), mean)  # temperature 0: the mean
    sampled = split.sample(z1, 0.5, noise=noise)
    assert torch.allclose(sampled, mean + 0.5 * torch.exp(log_std) * noise, atol=1e-14)
    torch.manual_seed(0)
    draws = torch.stack([split.sample(z1, 0.5) for _ in range(2000)])
    assert torch.allclose(draws.std(0) / torch.exp(log_std), torch.full_like(mean, 0.5), atol=0.05)


def test_split_starts_as_standard_normal_and_realnvp_split_stays_one() -> None:
    x = _randn(2, 6, 2, 2)
    for split in (Split(6), Split(6, learned_prior=False)):
        _, z2, log_p = split.double()(x)
        assert torch.allclose(log_p, gaussian_log_prob(z2), atol=1e-14)
    assert Split(6, learned_prior=False).prior_net is None


def test_edge_padding_and_zero_conv() -> None:
    padded = edge_pad(torch.ones(1, 2, 3, 3), 3)
    assert padded.shape == (1, 3, 5, 5)
    assert padded[0, 2].sum() == 25 - 9 and padded[0, 2, 1:4, 1:4].abs().sum() == 0
    conv = Conv2dSame(2, 4, 3, bias=False)
    assert conv.conv.weight.shape == (4, 3, 3, 3) and conv(torch.ones(1, 2, 3, 3)).shape == (
        1,
        4,
        3,
        3,
    )
    assert Conv2dSame(2, 4, 1).conv.weight.shape == (4, 2, 1, 1)  # 1x1: no padding channel
    zero = ZeroConv2d(2, 4)
    assert zero(torch.randn(2, 2, 3, 3)).abs().max() == 0
    with torch.no_grad():
        zero.conv.bias.fill_(1.0)
        zero.logs.fill_(0.1)
    assert torch.allclose(zero(torch.randn(1, 2, 3, 3)), torch.full((1, 4, 3, 3), math.exp(0.3)))


# --- pre-processing ---------------------------------------------------------------------------


def test_logit_transform_matches_the_official_formula() -> None:
    layer = LogitTransform(0.05)
    y = torch.rand(3, 2, 3, 3, dtype=DOUBLE, generator=torch.Generator().manual_seed(6))
    z, logdet = layer(y)
    p = 0.05 + 0.9 * y
    assert torch.allclose(z, torch.log(p / (1 - p)), atol=1e-12)
    # transform_cost: softplus(z) + softplus(-z) - softplus(-log(0.9 / 0.1))
    softplus = nn.functional.softplus
    cost = softplus(z) + softplus(-z) - softplus(-torch.tensor(math.log(9.0), dtype=DOUBLE))
    assert torch.allclose(logdet, cost.sum(dim=(1, 2, 3)), atol=1e-10)
    check_invertible_layer(layer, y)


def test_dequantize() -> None:
    x = torch.randint(0, 17, (4, 1, 8, 8), generator=torch.Generator().manual_seed(0))
    y = dequantize(x, levels=17, generator=torch.Generator().manual_seed(1))
    assert y.dtype == torch.get_default_dtype()
    assert ((y * 17 >= x) & (y * 17 < x + 1)).all() and not torch.equal(y * 17, x.float())
    again = dequantize(x, levels=17, generator=torch.Generator().manual_seed(1))
    assert torch.equal(y, again)
    assert dequantize(x.double(), 17).dtype == DOUBLE


# --- sequences and 2-D densities ---------------------------------------------------------------


def test_flow_sequence_sums_logdets() -> None:
    torch.manual_seed(7)
    layers = [
        Squeeze(),
        _perturb(AffineCoupling(_conv_net(4, 8))),
        InvConv1x1(8),
        GlowAffineCoupling(_conv_net(4, 8)),
    ]
    flow = FlowSequence(*layers).double()
    x = _randn(2, 2, 4, 4)
    z, logdet = flow(x)
    total, h = torch.zeros(2, dtype=DOUBLE), x
    for layer in layers:
        h, step = layer(h)
        total = total + step
    assert torch.equal(z, h) and torch.allclose(logdet, total, atol=1e-14)
    check_invertible_layer(flow, x)


def _integral_of_density(flow: nn.Module, as_image: bool) -> float:
    """Integrate exp(log N(f(x)) + log|det df/dx|) over a grid covering the density's mass."""
    step, half = 0.04, 9.0
    axis = torch.arange(-half, half + step / 2, step, dtype=DOUBLE)
    grid = torch.cartesian_prod(axis, axis)
    points = grid.view(-1, 2, 1, 1) if as_image else grid
    with torch.no_grad():
        z, logdet = flow(points)
        density = torch.exp(gaussian_log_prob(z) + logdet)
    return float(density.sum() * step**2)


def test_a_two_dimensional_glow_stack_is_a_normalised_density() -> None:
    torch.manual_seed(8)
    flow = FlowSequence(
        ActNorm(2),
        InvConv1x1(2),
        GlowAffineCoupling(GlowCouplingNet(1, 2, width=8)),
        ActNorm(2),
        InvConv1x1LU(2),
        GlowAffineCoupling(GlowCouplingNet(1, 2, width=8)),
        AdditiveCoupling(GlowCouplingNet(1, 1, width=8)),
    ).double()
    flow(0.5 + 1.3 * _randn(256, 2, 1, 1))  # actnorm initialisation
    _perturb(flow, 0.02).eval()
    check_invertible_layer(flow, _randn(3, 2, 1, 1))
    assert _integral_of_density(flow, as_image=True) == pytest.approx(1.0, abs=1e-2)


def test_a_two_dimensional_realnvp_stack_is_a_normalised_density() -> None:
    torch.manual_seed(9)

    def mlp(out: int) -> nn.Module:
        return nn.Sequential(nn.Linear(1, 16), nn.Tanh(), nn.Linear(16, out))

    flow = FlowSequence(
        AffineCoupling(mlp(2), scale_init=0.6),
        BatchNormFlow(2, "channel"),
        AffineCoupling(mlp(2), reverse=True, scale_init=0.6),
        AdditiveCoupling(mlp(1)),
        AffineCoupling(mlp(2), scale_channels=1, scale_init=0.5),
    ).double()
    flow(1.5 * _randn(256, 2))  # batch-norm running averages
    flow.eval()
    check_invertible_layer(flow, _randn(3, 2))
    assert _integral_of_density(flow, as_image=False) == pytest.approx(1.0, abs=1e-2)


# --- the InvertibleLayer contract of every exported layer ----------------------------------------

# exported modules that are not bijections ``y, logdet = layer(x)``, as flows.layers documents
NOT_INVERTIBLE_LAYERS = {
    ChannelZeroPad,
    Conv2dSame,
    DataInitConv2d,
    Split,
    UniformDequantizer,
    ZeroConv2d,
}


def _exported_modules() -> list[type[nn.Module]]:
    exported = (getattr(flows.layers, name) for name in flows.layers.__all__)
    return [obj for obj in exported if isinstance(obj, type) and issubclass(obj, nn.Module)]


def _exported_invertible_layers() -> list[type[InvertibleLayer]]:
    return [
        cls
        for cls in _exported_modules()
        if issubclass(cls, InvertibleLayer) and cls is not InvertibleLayer
    ]


def _unit_interval(*shape: int) -> torch.Tensor:
    return torch.rand(*shape, generator=torch.Generator().manual_seed(0), dtype=DOUBLE)


# one small instance and input per exported InvertibleLayer; a newly exported one needs a case
CONTRACT_CASES: dict[type[nn.Module], Callable[[], tuple[nn.Module, torch.Tensor]]] = {
    ActNorm: lambda: (ActNorm(3), 1.0 + 2.0 * _randn(4, 3, 2, 2)),
    AdditiveCoupling: lambda: (AdditiveCoupling(_conv_net(2, 2)), _randn(4, 4, 3, 3)),
    AffineCoupling: lambda: (
        AffineCoupling(_conv_net(4, 8), "checkerboard", scale_init=0.7),
        _randn(4, 4, 2, 2),
    ),
    BatchNormFlow: lambda: (BatchNormFlow(3, "checkerboard"), 1.0 + 2.0 * _randn(4, 3, 2, 2)),
    ElementwiseNorm: lambda: (ElementwiseNorm((3, 2, 2)), 1.0 + 2.0 * _randn(4, 3, 2, 2)),
    FlowSequence: lambda: (
        FlowSequence(Squeeze(), ActNorm(8), InvConv1x1LU(8), AffineCoupling(_conv_net(4, 8))),
        _randn(4, 2, 4, 4),
    ),
    GlowAffineCoupling: lambda: (GlowAffineCoupling(_conv_net(2, 4)), _randn(4, 4, 3, 3)),
    InvConv1x1: lambda: (InvConv1x1(3), _randn(4, 3, 2, 2)),
    InvConv1x1LU: lambda: (InvConv1x1LU(3), _randn(4, 3, 2, 2)),
    LogitTransform: lambda: (LogitTransform(), _unit_interval(4, 3, 2, 2)),
    SpaceToDepth: lambda: (SpaceToDepth(2), _randn(4, 2, 4, 4)),
    Squeeze: lambda: (Squeeze(), _randn(4, 2, 4, 4)),
}


def test_every_exported_layer_is_an_invertible_layer_or_a_documented_exception() -> None:
    for cls in _exported_modules():
        assert issubclass(cls, InvertibleLayer) != (cls in NOT_INVERTIBLE_LAYERS), cls.__name__
    assert flows.InvertibleLayer is InvertibleLayer
    assert len(_exported_invertible_layers()) == len(CONTRACT_CASES)


@pytest.mark.parametrize("cls", _exported_invertible_layers(), ids=lambda cls: cls.__name__)
def test_every_exported_invertible_layer_obeys_the_contract(cls: type[InvertibleLayer]) -> None:
    """``y, logdet = layer(x)`` with ``logdet`` of shape ``(batch,)`` equal to the brute-force
    ``log|det dy/dx|``, and ``layer.inverse(y) == x``; initialised on data, then perturbed."""
    if cls not in CONTRACT_CASES:
        pytest.fail(f"{cls.__name__} is exported as an InvertibleLayer: add it to CONTRACT_CASES")
    torch.manual_seed(0)
    layer, x = CONTRACT_CASES[cls]()
    assert type(layer) is cls and isinstance(layer, InvertibleLayer)
    layer = layer.double().train()
    with torch.no_grad():
        layer(x)  # data-dependent initialisation, batch-norm running averages
    layer = _perturb(layer.eval(), std=0.05)
    y, logdet = layer(x)
    assert logdet.shape == (x.shape[0],) and logdet.dtype == DOUBLE
    assert y.shape[0] == x.shape[0] and y[0].numel() == x[0].numel()
    assert inversion_error(layer, x) < 1e-10
    check_invertible_layer(layer, x, gradients=False)  # inverse and brute-force logdet


def test_a_layer_without_an_inverse_cannot_be_built() -> None:
    class ForwardOnly(InvertibleLayer):
        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return x, x.new_zeros(x.shape[0])

    with pytest.raises(TypeError, match="inverse"):
        ForwardOnly()


# --- the testing helper itself --------------------------------------------------------------


class _WrongLogdet(nn.Module):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return 2.0 * x, x.new_full((x.shape[0],), math.log(2.0))  # should be D log 2

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        return y / 2.0


class _WrongInverse(_WrongLogdet):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return 2.0 * x, x.new_full((x.shape[0],), x[0].numel() * math.log(2.0))

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        return y / 2.0 + 1e-6


def test_the_helper_catches_a_wrong_logdet_and_a_wrong_inverse() -> None:
    x = _randn(2, 3, 2, 2)
    assert logdet_error(_WrongLogdet(), x) == pytest.approx(11 * math.log(2.0))
    with pytest.raises(AssertionError, match="logdet differs"):
        check_invertible_layer(_WrongLogdet(), x)
    assert inversion_error(_WrongInverse(), x) == pytest.approx(1e-6)
    with pytest.raises(AssertionError, match=r"inverse\(forward\(x\)\) differs"):
        check_invertible_layer(_WrongInverse(), x)
    check_invertible_layer(_WrongInverse(), x, inverse_atol=1e-5)


def test_the_helper_catches_a_batch_dependent_layer_in_training_mode() -> None:
    layer = BatchNormFlow(3).double()  # training mode: statistics of the batch
    with pytest.raises(AssertionError, match="eval"):
        check_invertible_layer(layer, 1.0 + 2.0 * _randn(4, 3, 2, 2))


def test_the_helper_catches_a_wrong_gradient() -> None:
    class DetachedScale(nn.Module):
        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            y = x * torch.exp(x.detach().mean())  # the scale's dependence on x is hidden
            return y, x.new_zeros(x.shape[0])

    with pytest.raises(AssertionError, match="gradient check failed"):
        check_gradients(DetachedScale(), _randn(1, 2))
    check_gradients(_perturb(AffineCoupling(nn.Linear(1, 2))), _randn(2, 2), parameters=True)


def test_brute_force_logdet_of_a_linear_map() -> None:
    matrix = _randn(4, 4, seed=11)
    x = _randn(3, 4)
    logdet = brute_force_logdet(lambda v: v @ matrix.T, x)
    assert torch.allclose(logdet, torch.linalg.slogdet(matrix).logabsdet.expand(3), atol=1e-12)


def test_edge_padded_conv_equals_the_official_concatenated_form() -> None:
    """Conv2dSame splits the edge indicator off (cheaper); it must equal conv(cat[pad(x), 1])."""
    from flows.layers import Conv2dSame, edge_pad

    torch.manual_seed(0)
    conv = Conv2dSame(5, 7).double()
    torch.nn.init.normal_(conv.conv.bias)
    x = torch.randn(3, 5, 6, 4, dtype=torch.float64)
    torch.testing.assert_close(conv(x), conv.conv(edge_pad(x, 3)), atol=1e-12, rtol=0)
