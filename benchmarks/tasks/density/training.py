"""The density training loop: maximum likelihood in bits/dim, uniform or variational
dequantization.

Each step dequantizes an integer batch (``y = (x + u) / L``, with the noise drawn from a
generator seeded by the seed and the step: ``u ~ U[0, 1)``, or ``u ~ q(u | x)`` from the
model's ``dequantizer`` when it has one, Flow++), minimises the mean bits/dim (the negative
ELBO ``-E_q[log p(y) - log q(u | x)]`` in bits/dim) of
:func:`benchmarks.tasks.density.bits.bits_per_dim` with the config's optimizer (Adam for
RealNVP, Adamax for Glow), a linear learning-rate warm-up, optional gradient clipping by global
norm, optional L2 on weight-norm scales (RealNVP) and an optional exponential moving average of
the weights used for evaluation. As for the classifiers, checkpoints are atomic, ``--resume``
reproduces the uninterrupted run, and a NaN or infinite loss stops the run with a message naming
the step and the checkpoint kept.

Evaluation reports the one-sample bound in bits/dim on the test split (``test_bpd``, with
fixed noise so that equal weights give equal numbers) and, at the end, the
importance-weighted bound with ``eval_samples`` samples (``test_bpd_iw``, with ``S`` logged)
and, from the same draws, the bound for S = 1, 2, 4, ... (``test_bpd_iw_s<S>``).

Example:
    >>> import tempfile, flows
    >>> from benchmarks.config import TrainSettings
    >>> from benchmarks.tasks.density.data import load_density_dataset
    >>> settings = TrainSettings(optimizer="adamax", learning_rate=1e-3, batch_size=32, steps=2)
    >>> model = flows.create("glow_cifar10", in_channels=1, image_size=8, levels=2, steps=1,
    ...                      width=8)
    >>> outcome = train_density(model, load_density_dataset("digits").subset(64, 64), settings,
    ...                         checkpoint_path=tempfile.mkdtemp() + "/last.pt", progress=False)
    >>> outcome.steps, outcome.final["test_bpd"] > 0
    (2, True)
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Unpack

import torch
from torch import nn

from benchmarks.config import TrainSettings
from benchmarks.core.distributed import Shard
from benchmarks.core.importance import sample_sizes
from benchmarks.core.loop import FitOptions, FitTask, TrainingOutcome, fit
from benchmarks.core.optim import ExponentialMovingAverage
from benchmarks.core.seeds import SeedStream, mix_seeds
from benchmarks.tasks.density.bits import (
    Dequantizer,
    bits_per_dim,
    dequantization_bound,
    dequantize_with,
    importance_weighted_bits_per_dim,
    log_importance_weights,
)
from benchmarks.tasks.density.data import DiscreteImages

__all__ = [
    "ExponentialMovingAverage",
    "dequantizer_of",
    "evaluate_density",
    "importance_weighted_curve",
    "train_density",
    "weight_norm_scales",
]


def dequantizer_of(model: nn.Module) -> Dequantizer | None:
    """The model's variational dequantizer (Flow++), or None for uniform dequantization."""
    return getattr(model, "dequantizer", None)


def weight_norm_scales(model: nn.Module) -> list[torch.Tensor]:
    """The magnitude parameters ``g`` of weight-normalised layers (``weight_norm``'s
    ``original0``), on which RealNVP puts its L2 penalty."""
    return [p for name, p in model.named_parameters() if name.endswith("weight.original0")]


@torch.no_grad()
def evaluate_density(
    model: nn.Module,
    batches: Iterable[torch.Tensor],
    levels: int,
    samples: int = 1,
    seed: int = 0,
) -> float:
    """Mean bits/dim of the uniform-dequantization bound with ``samples`` samples (eval mode).

    The noise comes from a generator seeded by ``seed``: the same weights give the same number.
    """
    was_training = model.training
    model.eval()
    generator = torch.Generator().manual_seed(
        mix_seeds(seed, samples, SeedStream.DENSITY_EVALUATION)
    )
    total, count = 0.0, 0
    for x in batches:
        bpd = dequantization_bound(
            model.log_prob, x, levels, samples, generator, dequantizer_of(model)
        )
        total += float(bpd.sum())
        count += len(x)
    model.train(was_training)
    return total / count


@torch.no_grad()
def importance_weighted_curve(
    model: nn.Module,
    batches: Iterable[torch.Tensor],
    levels: int,
    samples: int,
    seed: int = 0,
) -> dict[int, float]:
    """Mean bits/dim of the S-sample bound for S = 1, 2, 4, ... up to ``samples`` (and
    ``samples`` itself), all from the same ``samples`` draws per example (eval mode).

    Each S < ``samples`` averages over the disjoint groups of S draws
    (:func:`~benchmarks.tasks.density.bits.importance_weighted_bits_per_dim`). The draws are those
    of :func:`evaluate_density` with the same ``samples`` and ``seed``, so the last point equals it.
    """
    was_training = model.training
    model.eval()
    generator = torch.Generator().manual_seed(
        mix_seeds(seed, samples, SeedStream.DENSITY_EVALUATION)
    )
    sizes = sample_sizes(samples)
    totals, count = dict.fromkeys(sizes, 0.0), 0
    for x in batches:
        weights = log_importance_weights(
            model.log_prob, x, levels, samples, generator, dequantizer_of(model)
        )
        for size in sizes:
            bpd = importance_weighted_bits_per_dim(weights, x[0].numel(), levels, size)
            totals[size] += float(bpd.sum())
        count += len(x)
    model.train(was_training)
    return {size: total / count for size, total in totals.items()}


def train_density(
    model: nn.Module,
    data: DiscreteImages,
    settings: TrainSettings,
    *,
    checkpoint_path: str | Path,
    seed: int = 0,
    device: torch.device | str = "cpu",
    **options: Unpack[FitOptions],
) -> TrainingOutcome:
    """Train a density model (``log_prob(y)`` in nats) on integer images; see the module doc.

    Returns the final metrics: ``test_bpd`` (one-sample bound), ``test_bpd_iw``,
    ``iw_samples`` and ``test_bpd_iw_s<S>`` when ``eval_samples > 1``, and ``train_bpd`` of
    the last logged interval. The model returned in place holds the trained (not averaged)
    weights; ``evaluation_model`` of the outcome is the one evaluated (the EMA when
    ``ema_decay`` is set). The loop itself is :func:`benchmarks.core.loop.fit`.
    """
    data = data.to(device)
    scales = weight_norm_scales(model)

    def loss(
        model: nn.Module, x: torch.Tensor, step: int, shard: Shard
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        noise = torch.Generator().manual_seed(mix_seeds(seed, step, SeedStream.DEQUANTIZATION))
        y, log_q = dequantize_with(dequantizer_of(model), x, data.levels, noise, shard)
        bpd = bits_per_dim(model.log_prob(y), data.num_dims, data.levels, log_q).mean()
        if settings.weight_norm_l2 and scales:
            penalty = settings.weight_norm_l2 * sum((g**2).sum() for g in scales) / 2
            return bpd + penalty, {"train_bpd": bpd}
        return bpd, {"train_bpd": bpd}

    def evaluate(model: nn.Module) -> dict[str, float]:
        batches = data.test_batches(settings.batch_size)
        return {"test_bpd": evaluate_density(model, batches, data.levels, 1, seed)}

    def finish(model: nn.Module) -> dict[str, float]:
        if settings.eval_samples <= 1:
            return {}
        samples = settings.eval_samples
        batches = data.test_batches(settings.batch_size)
        curve = importance_weighted_curve(model, batches, data.levels, samples, seed)
        return {
            "test_bpd_iw": curve[samples],
            "iw_samples": float(samples),
            **{f"test_bpd_iw_s{size}": value for size, value in curve.items()},
        }

    task = FitTask(
        batches=lambda start, shard: data.train_batches(
            settings.batch_size, seed, start, settings.augment, shard
        ),
        loss=loss,
        evaluate=evaluate,
        finish=finish,
    )
    return fit(
        model,
        settings,
        task,
        checkpoint_path=checkpoint_path,
        seed=seed,
        device=device,
        **options,
    )
