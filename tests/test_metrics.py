"""Bits/dim against closed forms: an identity flow with a standard normal base, whose exact
discrete likelihood is a product of Gaussian cell probabilities."""

from __future__ import annotations

import math

import pytest
import torch

from benchmarks.baselines import fit_pixel_categorical
from benchmarks.density_data import load_density_dataset
from benchmarks.metrics import bits_per_dim, dequantization_bound, uniform_dequantize

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
