"""VAEs with flow posteriors against mathematics: MADE is autoregressive, IAF and planar
log-determinants equal brute-force Jacobians, planar flows are invertible, the posterior's
log q is the change of variables of its noise, the importance-weighted bound rises with k above
the ELBO, and the analytic KL equals its Monte Carlo estimate."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import pandas as pd
import pytest
import torch

import flows
from benchmarks.cli import main
from benchmarks.config import TrainSettings, load_config
from benchmarks.errors import DatasetNotFoundError
from benchmarks.tasks.vae.data import load_binary_dataset
from benchmarks.tasks.vae.training import evaluate_vae, train_vae, vae_objective
from flows.layers.latent import MADE, IAFStep, PlanarFlow, planar_u_hat
from flows.models.vae import ConvVAE
from tests.conftest import REPO_ROOT

DOUBLE = torch.float64
CONFIG = REPO_ROOT / "configs" / "vae.yaml"


def _jacobian(function, z: torch.Tensor) -> torch.Tensor:  # type: ignore[no-untyped-def]
    return torch.autograd.functional.jacobian(function, z)


@pytest.mark.parametrize("reverse", [False, True])
def test_made_outputs_depend_only_on_earlier_inputs(reverse: bool) -> None:
    torch.manual_seed(0)
    dims = 6
    order = torch.arange(dims).flip(0) if reverse else torch.arange(dims)
    made = MADE(dims, [20, 20], context_dim=3, outputs=2, order=order).double()
    for layer in made.layers:  # random weights: no accidental zeros from the initialisation
        layer.weight.data.normal_()
    z, context = torch.randn(dims, dtype=DOUBLE), torch.randn(3, dtype=DOUBLE)
    for output in range(2):
        jacobian = _jacobian(lambda v, o=output: made(v[None], context[None])[o][0], z)
        position = order  # position[i]: place of dimension i in the autoregressive order
        before = position[None, :] < position[:, None]  # allowed: j strictly before i
        assert torch.all(jacobian[~before] == 0)
        assert torch.all(jacobian[before].abs() > 0)


def test_iaf_step_logdet_equals_the_brute_force_jacobian() -> None:
    torch.manual_seed(1)
    step = IAFStep(5, hidden=16, context_dim=4, reverse=True).double()
    for layer in step.made.layers:
        layer.weight.data.normal_(0, 0.5)
    context = torch.randn(1, 4, dtype=DOUBLE)
    z = torch.randn(1, 5, dtype=DOUBLE)
    _, logdet = step(z, context)
    jacobian = _jacobian(lambda v: step(v[None], context)[0][0], z[0])
    assert torch.allclose(logdet[0], torch.linalg.slogdet(jacobian).logabsdet, atol=1e-10)
    # reversed order: z'_i depends on z_j for j > i only (besides z_i), so J is upper triangular
    strictly_upper = torch.ones(5, 5, dtype=torch.bool).triu(1)
    assert torch.all(jacobian.tril(-1) == 0) and torch.all(jacobian[strictly_upper] != 0)
    sigma = torch.sigmoid(step.made(z, context)[1] + step.forget_bias)[0]
    assert torch.allclose(jacobian.diagonal(), sigma)


def test_planar_reparameterisation_keeps_w_dot_u_hat_above_minus_one() -> None:
    generator = torch.Generator().manual_seed(2)
    w = torch.randn(1000, 8, generator=generator, dtype=DOUBLE)
    u = torch.randn(1000, 8, generator=generator, dtype=DOUBLE)
    assert ((w * planar_u_hat(u, w)).sum(-1) > -1).all()
    # u pointing against w: w.u_hat = -1 + softplus(w.u) stays above -1 while softplus(w.u)
    # is above rounding (here w.u >= -8); far beyond, it is -1 up to rounding, never below
    against = (w[:50] * planar_u_hat(-0.5 * w[:50], w[:50])).sum(-1)
    assert ((w[:50] * w[:50]).sum(-1) < 16).any() and (against > -1).all()
    extreme = (w[:50] * planar_u_hat(-100 * w[:50], w[:50])).sum(-1)
    assert (extreme >= -1 - 1e-12).all()


def _planar_inverse(
    z_out: torch.Tensor, u: torch.Tensor, w: torch.Tensor, b: torch.Tensor
) -> torch.Tensor:
    """Solve ``w.z' = a + (w.u_hat) tanh(a + b)`` for ``a = w.z`` by bisection (strictly
    increasing in ``a`` when ``w.u_hat > -1``), then ``z = z' - u_hat tanh(a + b)``."""
    u_hat = planar_u_hat(u, w)
    target, slope = (w * z_out).sum(-1), (w * u_hat).sum(-1)
    low, high = target - slope.abs() - 1, target + slope.abs() + 1
    for _ in range(200):
        middle = (low + high) / 2
        above = middle + slope * torch.tanh(middle + b[:, 0]) > target
        low, high = torch.where(above, low, middle), torch.where(above, middle, high)
    alpha = (low + high) / 2
    return z_out - u_hat * torch.tanh(alpha + b[:, 0])[:, None]


def test_planar_flow_is_invertible_and_its_logdet_is_the_jacobian() -> None:
    generator = torch.Generator().manual_seed(3)
    n, d = 6, 4
    z, u, w = (torch.randn(n, d, generator=generator, dtype=DOUBLE) for _ in range(3))
    u = u - 3 * w  # push towards the non-invertible region the reparameterisation guards
    b = torch.randn(n, 1, generator=generator, dtype=DOUBLE)
    flow = PlanarFlow()
    z_out, logdet = flow(z, u, w, b)
    assert (_planar_inverse(z_out, u, w, b) - z).abs().max() < 1e-10
    for i in range(n):
        jacobian = _jacobian(
            lambda v, i=i: flow(v[None], u[i : i + 1], w[i : i + 1], b[i : i + 1])[0][0], z[i]
        )
        assert torch.allclose(logdet[i], torch.linalg.slogdet(jacobian).logabsdet, atol=1e-10)


@pytest.mark.parametrize(("posterior", "depth"), [("gaussian", 0), ("iaf", 2), ("planar", 3)])
def test_posterior_log_q_is_the_change_of_variables_of_its_noise(
    posterior: str, depth: int
) -> None:
    """log q(z_K | x) = log N(eps; 0, I) - log|det d z_K / d eps| (brute-force Jacobian)."""
    torch.manual_seed(4)
    model = ConvVAE(1, 8, latent_dim=6, posterior=posterior, depth=depth, width=16).double()
    with torch.no_grad():
        for parameter in model.encoder_out.parameters():
            parameter.mul_(5.0)  # non-trivial posterior parameters
    x = torch.bernoulli(torch.full((1, 1, 8, 8), 0.4, dtype=DOUBLE))
    eps = torch.randn(1, 1, 6, dtype=DOUBLE)
    _, log_q, log_q_dims = model.posterior(x, 1, eps)
    jacobian = _jacobian(lambda e: model.posterior(x, 1, e[None, None])[0][0, 0], eps[0, 0])
    expected = (
        -0.5 * (eps**2 + math.log(2 * math.pi)).sum() - torch.linalg.slogdet(jacobian).logabsdet
    )
    assert torch.allclose(log_q[0, 0], expected, atol=1e-8)
    assert torch.allclose(log_q_dims.sum(-1), log_q, atol=1e-10)


def test_analytic_kl_equals_its_monte_carlo_estimate() -> None:
    torch.manual_seed(5)
    model = ConvVAE(1, 8, latent_dim=32).double()
    with torch.no_grad():
        for parameter in model.encoder_out.parameters():
            parameter.mul_(4.0)
    x = torch.bernoulli(torch.full((3, 1, 8, 8), 0.4, dtype=DOUBLE))
    z, log_q, _ = model.posterior(x, 20000)
    samples = log_q + 0.5 * (z**2 + math.log(2 * math.pi)).sum(-1)  # log q - log p per draw
    error = samples.std(0) / math.sqrt(len(samples))
    assert ((samples.mean(0) - model.analytic_kl(x)).abs() < 4 * error).all()


def test_importance_weighted_bound_is_above_the_elbo_and_rises_with_k() -> None:
    torch.manual_seed(6)
    data = load_binary_dataset("digits").subset(200, 40)
    model = flows.create("vae_iaf_mnist_d2_w320", image_size=8)
    optimizer = torch.optim.Adamax(model.parameters(), 2e-3)
    batches = data.train_batches(50, seed=0)
    for _ in range(20):
        x = next(batches)
        objective, _ = vae_objective(model, x, torch.randn(1, len(x), 32), 0.25, 32)
        optimizer.zero_grad()
        objective.backward()
        optimizer.step()
    curve = evaluate_vae(model, data.test_batches(40), k=64, seed=0)
    values = [curve[k] for k in sorted(curve)]
    assert all(b >= a - 1e-9 for a, b in itertools.pairwise(values))
    assert curve[64] > curve[1] + 0.1


def test_free_bits_floors_each_group_of_kl() -> None:
    torch.manual_seed(7)
    model = ConvVAE(1, 8, latent_dim=8)
    x = torch.bernoulli(torch.full((5, 1, 8, 8), 0.4))
    noise = torch.randn(1, 5, 8)
    plain, elbo = vae_objective(model, x, noise)
    assert torch.allclose(plain, -elbo.mean())
    floored, _ = vae_objective(model, x, noise, free_bits=1000.0, groups=4)
    z, _, _ = model.posterior(x, 1, noise)
    reconstruction = model.log_likelihood(x, z)[0].mean()
    assert torch.allclose(floored, -(reconstruction - 4 * 1000.0))
    with pytest.raises(ValueError, match="does not divide"):
        vae_objective(model, x, noise, free_bits=1.0, groups=3)


def test_binarisation_is_dynamic_for_training_and_fixed_for_testing(tmp_path: Path) -> None:
    data = load_binary_dataset("digits")
    first, second = next(data.train_batches(64, seed=0)), next(data.train_batches(64, seed=0))
    assert torch.equal(first, second)  # a function of (seed, step)
    stream = data.train_batches(64, seed=0)
    next(stream)
    later = next(data.train_batches(64, seed=0, start_step=1))
    assert torch.equal(next(stream), later)
    assert torch.equal(load_binary_dataset("digits").test, data.test)
    with pytest.raises(DatasetNotFoundError, match="--data-dir"):
        load_binary_dataset("mnist", tmp_path)


def test_training_resumes_exactly_after_a_kill(tmp_path: Path) -> None:
    data = load_binary_dataset("digits").subset(128, 32)
    settings = TrainSettings(
        optimizer="adamax",
        learning_rate=2e-3,
        batch_size=32,
        steps=8,
        eval_every=4,
        checkpoint_every=4,
        log_every=2,
        eval_samples=4,
        free_bits=0.25,
        free_bits_groups=32,
    )

    class Killed(Exception):
        pass

    def kill(step: int) -> None:
        if step == 6:
            raise Killed

    torch.manual_seed(0)
    whole = train_vae(
        flows.create("vae_planar_mnist", image_size=8),
        data,
        settings,
        checkpoint_path=tmp_path / "a.pt",
        progress=False,
    )
    torch.manual_seed(0)
    with pytest.raises(Killed):
        train_vae(
            flows.create("vae_planar_mnist", image_size=8),
            data,
            settings,
            checkpoint_path=tmp_path / "b.pt",
            progress=False,
            after_step=kill,
        )
    torch.manual_seed(42)
    resumed = train_vae(
        flows.create("vae_planar_mnist", image_size=8),
        data,
        settings,
        checkpoint_path=tmp_path / "b.pt",
        progress=False,
        resume=True,
    )
    assert resumed.resumed_from_step == 4
    assert resumed.final["test_log_px"] == whole.final["test_log_px"]


def test_profiles_choose_their_rows() -> None:
    config = load_config(CONFIG)
    assert config.resolve("quick").models == [
        "vae_mnist",
        "vae_iaf_mnist_d2_w320",
        "vae_planar_mnist",
    ]
    assert config.resolve("paper").models == config.models and len(config.models) == 6
    counts = {
        name: sum(p.numel() for p in flows.create(name).parameters()) for name in config.models
    }
    assert counts["vae_iaf_mnist_d8_w1920"] > counts["vae_iaf_mnist_d4_w1920"] > counts["vae_mnist"]


@pytest.mark.slow
def test_smoke_run_through_the_cli_fills_the_vae_table(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    common = ["--runs-dir", str(tmp_path / "runs"), "--tracking-uri", uri, "--no-progress"]
    models = ["--models", "vae_mnist", "vae_iaf_mnist_d2_w320"]
    assert main(["run", str(CONFIG), "--profile", "smoke", *models, *common]) == 0
    out = tmp_path / "results"
    tables = ["tables", "--configs-dir", str(REPO_ROOT / "configs"), "--out", str(out)]
    assert main([*tables, "--tracking-uri", uri]) == 0
    table = pd.read_csv(out / "vae.csv")
    smoke = table[table.profile == "smoke"]
    assert set(smoke.model) == {"vae_mnist", "vae_iaf_mnist_d2_w320"}
    assert set(smoke.seeds) == {"0 1"}
    iaf = smoke[smoke.model == "vae_iaf_mnist_d2_w320"].iloc[0]
    assert iaf.better_than_vae.endswith("of 2")
    mnist = table[(table.model == "vae_mnist") & (table.dataset == "mnist")].iloc[0]
    assert mnist.profile == "not run" and mnist.published_elbo == -84.08
    markdown = (out / "vae.md").read_text()
    assert "| diagonal Gaussian | `vae_mnist` | MNIST | *not run* | -84.08 | -81.08 |" in markdown
