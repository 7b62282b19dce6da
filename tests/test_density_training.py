"""The density training loop on a flow with a closed-form likelihood: it learns, it resumes
exactly after a kill, it stops on a NaN, and its EMA and schedule do what they say."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
import torch
from torch import nn

import flows
from benchmarks.config import TrainSettings
from benchmarks.core.checkpoint import load_checkpoint
from benchmarks.core.optim import learning_rate_at
from benchmarks.errors import TrainingDivergedError
from benchmarks.tasks.density.baseline import fit_pixel_categorical
from benchmarks.tasks.density.data import DiscreteImages, load_density_dataset
from benchmarks.tasks.density.training import ExponentialMovingAverage, train_density


class PixelGaussian(nn.Module):
    """An elementwise affine flow: y_d = mu_d + sigma_d z_d with z ~ N(0, 1) per pixel."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.mean = nn.Parameter(torch.full(shape, 0.5))
        self.log_std = nn.Parameter(torch.zeros(shape))

    def log_prob(self, y: torch.Tensor) -> torch.Tensor:
        normal = torch.distributions.Normal(self.mean, self.log_std.exp(), validate_args=False)
        return normal.log_prob(y).reshape(len(y), -1).sum(dim=1)

    def sample(self, n: int, temperature: float = 1.0) -> torch.Tensor:
        noise = torch.randn(n, *self.mean.shape) * temperature
        return (self.mean + self.log_std.exp() * noise).clamp(0, 1)


class Interrupted(Exception):
    pass


@pytest.fixture(scope="module")
def digits_density() -> DiscreteImages:
    return load_density_dataset("digits")


def settings(**changes: object) -> TrainSettings:
    base = TrainSettings(
        optimizer="adam",
        learning_rate=0.05,
        batch_size=64,
        steps=60,
        eval_every=20,
        checkpoint_every=10,
        log_every=5,
    )
    return dataclasses.replace(base, **changes)


def test_the_pixel_gaussian_learns_and_lands_near_the_categorical_baseline(
    digits_density: DiscreteImages, tmp_path: Path
) -> None:
    torch.manual_seed(0)
    outcome = train_density(
        PixelGaussian((1, 8, 8)),
        digits_density,
        settings(steps=150, eval_samples=4),
        checkpoint_path=tmp_path / "last.pt",
        progress=False,
    )
    uniform = math.log2(17)
    baseline = float(
        fit_pixel_categorical(digits_density.train, 17).bits_per_dim(digits_density.test).mean()
    )
    first, last = outcome.history[0]["test_bpd"], outcome.final["test_bpd"]
    assert last < first < uniform + 1  # it learns
    assert baseline - 0.5 < last < uniform  # an independent-pixel model: about the baseline
    assert outcome.final["test_bpd_iw"] < last and outcome.final["iw_samples"] == 4


def test_resume_after_a_kill_reproduces_the_uninterrupted_run(
    digits_density: DiscreteImages, tmp_path: Path
) -> None:
    data = digits_density.subset(256, 64)
    run = settings(grad_clip=1.0, ema_decay=0.9, warmup_steps=10)
    torch.manual_seed(0)
    whole = train_density(
        PixelGaussian((1, 8, 8)), data, run, checkpoint_path=tmp_path / "a.pt", progress=False
    )

    def kill(step: int) -> None:
        if step == 33:
            raise Interrupted

    torch.manual_seed(0)
    with pytest.raises(Interrupted):
        train_density(
            PixelGaussian((1, 8, 8)),
            data,
            run,
            checkpoint_path=tmp_path / "b.pt",
            progress=False,
            after_step=kill,
        )
    assert load_checkpoint(tmp_path / "b.pt")["step"] == 30
    torch.manual_seed(123)  # a different fresh init: everything must come from the checkpoint
    resumed = train_density(
        PixelGaussian((1, 8, 8)),
        data,
        run,
        checkpoint_path=tmp_path / "b.pt",
        resume=True,
        progress=False,
    )
    assert resumed.resumed_from_step == 30
    assert resumed.final["test_bpd"] == whole.final["test_bpd"]
    for a, b in zip(
        whole.evaluation_model.parameters(), resumed.evaluation_model.parameters(), strict=True
    ):
        assert torch.equal(a, b)


def test_a_nan_loss_stops_with_the_step_and_the_kept_checkpoint(
    digits_density: DiscreteImages, tmp_path: Path
) -> None:
    model = PixelGaussian((1, 8, 8))

    def poison(step: int) -> None:
        if step == 12:
            with torch.no_grad():
                model.log_std.fill_(float("nan"))

    with pytest.raises(TrainingDivergedError, match=r"step 13.*last good checkpoint.*step 10"):
        train_density(
            model,
            digits_density.subset(256, 64),
            settings(),
            checkpoint_path=tmp_path / "last.pt",
            progress=False,
            after_step=poison,
        )


def test_warmup_is_linear_and_ema_follows_its_formula() -> None:
    warm = settings(warmup_steps=4)
    assert [learning_rate_at(s, warm) for s in range(5)] == pytest.approx(
        [0.0125, 0.025, 0.0375, 0.05, 0.05]
    )
    model = nn.Linear(2, 1)
    ema = ExponentialMovingAverage(0.9)
    ema.update(model)
    start = model.weight.detach().clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    ema.update(model)
    torch.testing.assert_close(ema.module.weight, start + 0.1)


def test_flowpp_with_its_variational_dequantizer_and_dropout_resumes_exactly(
    digits_density: DiscreteImages, tmp_path: Path
) -> None:
    """The dequantizer's noise (seeded per step) and dropout (global RNG, checkpointed) make
    no difference between a killed-and-resumed run and an uninterrupted one."""
    data = digits_density.subset(128, 32)
    run = settings(steps=8, eval_every=4, checkpoint_every=4, log_every=2, ema_decay=0.9)
    tiny = {
        "filters": 8,
        "blocks": 1,
        "components": 2,
        "heads": 2,
        "dequant_filters": 8,
        "dequant_blocks": 1,
        "dropout": 0.2,
    }

    def build() -> nn.Module:
        return flows.create("flowpp_cifar10", in_channels=1, image_size=8, **tiny)

    torch.manual_seed(0)
    whole = train_density(build(), data, run, checkpoint_path=tmp_path / "a.pt", progress=False)

    def kill(step: int) -> None:
        if step == 6:
            raise Interrupted

    torch.manual_seed(0)
    with pytest.raises(Interrupted):
        train_density(
            build(), data, run, checkpoint_path=tmp_path / "b.pt", progress=False, after_step=kill
        )
    torch.manual_seed(99)
    resumed = train_density(
        build(), data, run, checkpoint_path=tmp_path / "b.pt", resume=True, progress=False
    )
    assert resumed.resumed_from_step == 4
    assert resumed.final["test_bpd"] == whole.final["test_bpd"]
    assert math.isfinite(whole.final["test_bpd"])
