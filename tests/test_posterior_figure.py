"""The toy VAE of the IAF paper's Figure 2: data, change of variables, training, the figure."""

from __future__ import annotations

import math

import pytest
import torch

from benchmarks.tasks.vae.posterior_figure import (
    TOY_DATA,
    ToyVAE,
    fit_toy_vae,
    mean_elbo,
    posterior_figure,
    write_posterior_figure,
)

FEW_STEPS = 300


def test_toy_data_is_four_distinct_one_hot_rows() -> None:
    assert TOY_DATA.shape == (4, 4)
    assert TOY_DATA.dtype == torch.float32
    assert set(TOY_DATA.unique().tolist()) == {0.0, 1.0}
    assert TOY_DATA.sum(1).tolist() == [1.0] * 4
    assert len({tuple(row.tolist()) for row in TOY_DATA}) == 4


@pytest.mark.parametrize("posterior", ["gaussian", "iaf"])
def test_shapes(posterior: str) -> None:
    torch.manual_seed(0)
    model = ToyVAE(posterior)
    z, log_q = model.sample_posterior(TOY_DATA, 7)
    assert z.shape == (7, 4, 2) and log_q.shape == (7, 4)
    assert model.elbo(TOY_DATA, 5).shape == (4,)
    assert len(model.flow) == (4 if posterior == "iaf" else 0)


def test_unknown_posterior_is_rejected() -> None:
    with pytest.raises(ValueError, match="posterior"):
        ToyVAE("planar")


def _perturbed_iaf_vae() -> ToyVAE:
    """An IAF ToyVAE in float64 whose steps are far from the identity."""
    torch.manual_seed(1)
    model = ToyVAE("iaf").double()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    return model


def test_iaf_log_q_is_the_change_of_variables() -> None:
    """log q(z_K) = log N(eps; 0, I) - log|det dz_K / deps| by a brute-force Jacobian."""
    model = _perturbed_iaf_vae()
    x = TOY_DATA[2:3].double()
    generator = torch.Generator().manual_seed(3)
    z, log_q = model.sample_posterior(x, 5, generator)
    eps = torch.randn(5, 1, 2, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    for draw in range(5):

        def to_z(e: torch.Tensor) -> torch.Tensor:
            return model.transform(x, e.view(1, 1, 2))[0].view(2)

        jacobian = torch.autograd.functional.jacobian(to_z, eps[draw, 0])
        assert torch.allclose(to_z(eps[draw, 0]), z[draw, 0])
        # The alternating orders make the full Jacobian non-triangular: a real check.
        assert jacobian[0, 1].abs() > 1e-3 and jacobian[1, 0].abs() > 1e-3
        log_normal = -0.5 * (eps[draw, 0] ** 2).sum() - math.log(2 * math.pi)
        expected = log_normal - torch.linalg.slogdet(jacobian).logabsdet
        assert torch.allclose(log_q[draw, 0], expected, atol=1e-10)


def test_iaf_log_q_is_base_density_minus_step_logdets() -> None:
    model = _perturbed_iaf_vae()
    x = TOY_DATA.double()
    eps = torch.randn(3, 4, 2, dtype=torch.float64)
    z, log_q = model.transform(x, eps)
    mean, log_std, context = model.encode(x)
    z0 = mean + log_std.exp() * eps
    base = torch.distributions.Normal(mean, log_std.exp()).log_prob(z0).sum(-1)
    total_logdet = torch.zeros_like(base)
    step_z = z0
    for step in model.flow:
        step_z, logdet = step(step_z, context.expand(3, 4, -1))
        total_logdet = total_logdet + logdet
    assert torch.allclose(step_z, z)
    assert torch.allclose(log_q, base - total_logdet, atol=1e-10)


@pytest.mark.parametrize("posterior", ["gaussian", "iaf"])
def test_training_improves_the_elbo(posterior: str) -> None:
    torch.manual_seed(0)
    initial = mean_elbo(ToyVAE(posterior))
    fitted = fit_toy_vae(posterior, steps=FEW_STEPS, seed=0)
    assert mean_elbo(fitted) > initial + 0.2
    # The ELBO bounds log p(x) <= 0 (binary data) and the estimate is reproducible.
    assert mean_elbo(fitted) < 0 and mean_elbo(fitted) == mean_elbo(fitted)


def test_posterior_figure_has_three_panels() -> None:
    models = {"Gaussian": ToyVAE("gaussian"), "IAF": ToyVAE("iaf")}
    figure = posterior_figure(models, samples=20)
    axes = [axis for axis in figure.axes if axis.get_title()]
    assert len(axes) == 3
    assert all(axis.get_xlim() == (-3.0, 3.0) for axis in axes)
    assert "ELBO" in axes[1].get_title() and "ELBO" in axes[2].get_title()


def test_write_posterior_figure_writes_a_png(tmp_path) -> None:
    path = tmp_path / "f.png"
    elbos = write_posterior_figure(path, steps=20)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert list(tmp_path.iterdir()) == [path]
    assert set(elbos) == {"gaussian_elbo", "iaf_elbo"}
    assert all(math.isfinite(value) and value < 0 for value in elbos.values())
