"""Bits/dim against closed forms: an identity flow with a standard normal base, whose exact
discrete likelihood is a product of Gaussian cell probabilities."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

import flows
from benchmarks.tasks.density.baseline import fit_pixel_categorical
from benchmarks.tasks.density.bits import (
    bits_per_dim,
    dequantization_bound,
    importance_weighted_bits_per_dim,
    log_importance_weights,
    uniform_dequantize,
)
from benchmarks.tasks.density.data import load_density_dataset
from flows.layers import UniformDequantizer

LEVELS = 4
X = torch.tensor([[[[0, 1], [2, 3]]], [[[3, 3], [0, 2]]]])  # two 1x2x2 images, 4 levels
D = 4


def standard_normal_log_density(y: torch.Tensor) -> torch.Tensor:
    """log N(y; 0, I) of an identity flow, per example, in nats."""
    flat = y.reshape(len(y), -1).double()
    return (-0.5 * flat**2 - 0.5 * math.log(2 * math.pi)).sum(dim=1)


NARROW = torch.distributions.Normal(0.5, 0.2)  # varies a lot within a cell: a loose bound


def narrow_log_density(y: torch.Tensor) -> torch.Tensor:
    return NARROW.log_prob(y.reshape(len(y), -1).double()).sum(dim=1)


def exact_bits_per_dim(x: torch.Tensor) -> torch.Tensor:
    """-log2 P(x) / D with P(x) = prod_d [F((x_d + 1) / L) - F(x_d / L)], F the normal CDF."""
    flat = x.reshape(len(x), -1).double()
    cells = NARROW.cdf((flat + 1) / LEVELS) - NARROW.cdf(flat / LEVELS)
    return -cells.log().sum(dim=1) / (flat.shape[1] * math.log(2))


def test_uniform_dequantization_stays_in_the_cell() -> None:
    y = uniform_dequantize(X, LEVELS, torch.Generator().manual_seed(0))
    assert ((y * LEVELS).floor() == X).all()


def test_one_sample_bound_matches_its_closed_form_expectation() -> None:
    # E_u[y^2] = (x^2 + x + 1/3) / L^2 for y = (x + u) / L, u ~ U[0, 1)
    expected_square = (X.double() ** 2 + X + 1 / 3) / LEVELS**2
    closed_form = (
        D * 0.5 * math.log(2 * math.pi)
        + 0.5 * expected_square.reshape(2, -1).sum(1)
        + D * math.log(LEVELS)
    ) / (D * math.log(2))
    generator = torch.Generator().manual_seed(1)
    draws = torch.stack(
        [
            dequantization_bound(standard_normal_log_density, X, LEVELS, 1, generator)
            for _ in range(4000)
        ]
    )
    torch.testing.assert_close(draws.mean(0), closed_form, atol=2e-3, rtol=0)


def test_importance_weighted_bound_tightens_towards_the_exact_likelihood() -> None:
    generator = torch.Generator().manual_seed(2)
    exact = exact_bits_per_dim(X)
    one = torch.stack(
        [dequantization_bound(narrow_log_density, X, LEVELS, 1, generator) for _ in range(500)]
    ).mean(0)
    eight = torch.stack(
        [dequantization_bound(narrow_log_density, X, LEVELS, 8, generator) for _ in range(500)]
    ).mean(0)
    many = dequantization_bound(narrow_log_density, X, LEVELS, 20000, generator)
    assert (one > eight + 0.05).all() and (eight > many).all()
    assert (many >= exact - 5e-3).all()  # still a bound (up to Monte Carlo error)
    torch.testing.assert_close(many, exact, atol=5e-3, rtol=0)


def test_bits_per_dim_includes_log_q_and_rejects_zero_samples() -> None:
    log_p = torch.tensor([-10.0])
    assert bits_per_dim(log_p, 8, 256, log_q=torch.tensor([-2.0])) < bits_per_dim(log_p, 8, 256)
    with pytest.raises(ValueError, match="at least 1"):
        dequantization_bound(standard_normal_log_density, X, LEVELS, samples=0)


def test_pixel_categorical_baseline_is_an_exact_normalised_model() -> None:
    data = load_density_dataset("digits")
    model = fit_pixel_categorical(data.train, data.levels)
    torch.testing.assert_close(model.log_probs.exp().sum(1), torch.ones(64))
    uniform = math.log2(17)
    test_bpd = float(model.bits_per_dim(data.test).mean())
    assert 1.0 < test_bpd < uniform  # it learns the stroke positions, not more
    # add-one smoothing: a level never seen at a dimension keeps a finite cost
    assert torch.isfinite(model.log_probs).all()


def test_density_digits_split_is_the_classifiers_split(digits) -> None:
    data = load_density_dataset("digits")
    scaled = data.train.float() / 16
    torch.testing.assert_close(scaled - scaled.mean(0, keepdim=True), digits.train_images)


class PosteriorDequantizer:
    """The optimal q(u | x): the model's own posterior over each cell, p(y | cell), drawn by
    inverting the normal CDF of ``NARROW`` within the cell ``[x / L, (x + 1) / L)``."""

    @staticmethod
    def draw_noise(shape: tuple[int, ...], generator: torch.Generator | None) -> torch.Tensor:
        return torch.rand(shape, generator=generator, dtype=torch.float64)

    def sample(
        self,
        x: torch.Tensor,
        levels: int,
        generator: torch.Generator | None = None,
        noise: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        low, high = NARROW.cdf(x.double() / levels), NARROW.cdf((x.double() + 1) / levels)
        w = self.draw_noise(x.shape, generator) if noise is None else noise
        y = NARROW.icdf(low + w * (high - low))
        u = y * levels - x
        # q(u) = p(y) |dy/du| / P(cell) = p(y) / (L (high - low))
        log_q = NARROW.log_prob(y) - math.log(levels) - torch.log(high - low)
        return u, log_q.reshape(len(x), -1).sum(1)


class ShiftedDequantizer:
    """A valid but poor q: u = (w + 0.5) mod 1 squared towards 0 (density 1 / (2 sqrt(u)))."""

    @staticmethod
    def draw_noise(shape: tuple[int, ...], generator: torch.Generator | None) -> torch.Tensor:
        return torch.rand(shape, generator=generator, dtype=torch.float64)

    def sample(
        self,
        x: torch.Tensor,
        levels: int,
        generator: torch.Generator | None = None,
        noise: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        w = self.draw_noise(x.shape, generator) if noise is None else noise
        w = w.clamp(min=1e-12)
        u = w**2
        log_q = -math.log(2) - 0.5 * torch.log(u)
        return u, log_q.reshape(len(x), -1).sum(1)


def test_the_exact_posterior_as_dequantizer_gives_the_exact_likelihood_with_one_sample() -> None:
    """With q(u | x) = p(y | cell) every draw of the ELBO equals -log2 P(x) / D exactly."""
    generator = torch.Generator().manual_seed(3)
    exact = exact_bits_per_dim(X)
    for _ in range(5):
        bound = dequantization_bound(
            narrow_log_density, X, LEVELS, 1, generator, PosteriorDequantizer()
        )
        torch.testing.assert_close(bound, exact, atol=1e-6, rtol=0)


def test_a_poor_variational_q_is_still_a_bound_that_importance_sampling_tightens() -> None:
    generator = torch.Generator().manual_seed(4)
    exact = exact_bits_per_dim(X)
    weights = log_importance_weights(
        narrow_log_density, X, LEVELS, 4096, generator, ShiftedDequantizer()
    )
    curve = [importance_weighted_bits_per_dim(weights, D, LEVELS, s) for s in (1, 4, 64, 4096)]
    for looser, tighter in itertools.pairwise(curve):
        assert (tighter <= looser + 1e-12).all()
    assert (curve[0] > exact + 0.05).all()  # the ELBO of a poor q is loose ...
    torch.testing.assert_close(curve[-1], exact, atol=2e-2, rtol=0)  # ... IW closes the gap


def test_nested_groups_make_the_bound_monotone_in_s_for_every_example() -> None:
    """log-mean-exp over 2k draws >= mean of the log-mean-exps of its two halves (Jensen)."""
    weights = torch.randn(64, 10, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    sizes = (1, 2, 4, 8, 16, 32, 64)
    curve = [importance_weighted_bits_per_dim(weights * 30, 16, 17, s) for s in sizes]
    for looser, tighter in itertools.pairwise(curve):
        assert (tighter <= looser + 1e-12).all()
    with pytest.raises(ValueError, match="samples must be in"):
        importance_weighted_bits_per_dim(weights, 16, 17, 65)


def test_uniform_dequantization_is_variational_dequantization_with_q_uniform() -> None:
    """The uniform dequantizer plugged into the variational path gives the same number."""
    plain = dequantization_bound(narrow_log_density, X, LEVELS, 8, torch.Generator().manual_seed(6))
    plugged = dequantization_bound(
        narrow_log_density, X, LEVELS, 8, torch.Generator().manual_seed(6), UniformDequantizer()
    )
    assert torch.equal(plain, plugged)


def test_elbo_is_below_the_importance_weighted_bound_for_a_trained_flowpp() -> None:
    """On a fixed Flow++ with its variational dequantizer (briefly trained on digits): the
    S-sample bound in bits/dim decreases with S on average, i.e. log-likelihood bound rises."""
    torch.manual_seed(0)
    data = load_density_dataset("digits").subset(256, 64)
    model = flows.create(
        "flowpp_cifar10",
        in_channels=1,
        image_size=8,
        filters=8,
        blocks=1,
        components=2,
        heads=2,
        dequant_filters=8,
        dequant_blocks=1,
        dropout=0.0,
    )
    optimizer = torch.optim.Adam(model.parameters(), 3e-3)
    for step in range(30):
        x = data.train[(step * 64) % 256 : (step * 64) % 256 + 64]
        u, log_q = model.dequantizer(x, data.levels)
        loss = bits_per_dim(model.log_prob((x + u) / data.levels), 64, data.levels, log_q).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        weights = log_importance_weights(
            model.log_prob,
            data.test,
            data.levels,
            16,
            torch.Generator().manual_seed(0),
            model.dequantizer,
        )
    one, sixteen = (
        float(importance_weighted_bits_per_dim(weights, 64, data.levels, s).mean()) for s in (1, 16)
    )
    assert sixteen < one < math.log2(17)
