"""The VAE training loop: maximise the ELBO (optionally with free bits) on binarised images.

Each step draws a dynamically binarised batch and one posterior sample per image (noise from a
generator seeded by the seed and the step), and minimises the negative ELBO

    -E_q[log p(x | z) + log p(z) - log q(z | x)]

or, with ``free_bits = lambda > 0`` (the IAF paper's Sec. 5 / Appendix C), the free-bits
objective ``-E[log p(x | z)] + sum_j max(lambda, E_batch[KL_j])`` over ``free_bits_groups``
groups of latent dimensions (``KL_j`` the single-sample estimate of the group's KL terms). The
optimizer, warm-up, clipping, EMA, checkpoints, ``--resume`` and the NaN guard are the shared
loop of :mod:`benchmarks.core.loop`.

Evaluation (eval mode, fixed noise): ``test_elbo`` (one sample per image, nats, higher is
better) at every ``eval_every``; at the end ``test_log_px``, the importance-weighted bound
``log (1/k) sum_i p(x, z_i) / q(z_i | x)`` with ``k = eval_samples`` (128 in the IAF paper),
and ``test_log_px_k<K>`` for K = 1, 2, 4, ... from the same draws, ``test_elbo_k`` the mean of
those draws' ELBO.

Example:
    >>> import tempfile, flows
    >>> from benchmarks.config import TrainSettings
    >>> from benchmarks.tasks.vae.data import load_binary_dataset
    >>> settings = TrainSettings(optimizer="adamax", learning_rate=2e-3, batch_size=32, steps=2,
    ...                          eval_samples=4)
    >>> model = flows.create("vae_mnist", image_size=8)
    >>> outcome = train_vae(model, load_binary_dataset("digits").subset(64, 32), settings,
    ...                     checkpoint_path=tempfile.mkdtemp() + "/last.pt", progress=False)
    >>> outcome.steps, outcome.final["test_log_px"] >= outcome.final["test_elbo_k"]
    (2, True)
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path
from typing import Unpack

import torch
from torch import nn

from benchmarks.config import TrainSettings
from benchmarks.core.distributed import Shard
from benchmarks.core.importance import log_mean_exp_groups, sample_sizes
from benchmarks.core.loop import FitOptions, FitTask, TrainingOutcome, fit
from benchmarks.core.seeds import SeedStream, mix_seeds
from benchmarks.tasks.vae.data import BinaryImages

__all__ = ["evaluate_vae", "train_vae", "vae_objective"]


def _noise(
    model: nn.Module,
    x: torch.Tensor,
    k: int,
    generator: torch.Generator,
    shard: Shard | None = None,
) -> torch.Tensor:
    """Posterior noise ``(k, N, latents)``; with a ``shard``, this process's rows (dim 1) of
    the global batch's noise."""
    shape = (k, len(x), model.latent_dim)
    return (shard or Shard()).draw(torch.randn, shape, generator, dim=1).to(x.device)


def vae_objective(
    model: nn.Module,
    x: torch.Tensor,
    noise: torch.Tensor,
    free_bits: float = 0.0,
    groups: int = 1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(objective to minimise, per-example ELBO (N,))`` from one posterior draw per image."""
    z, _, log_q_dims = model.posterior(x, 1, noise)
    reconstruction = model.log_likelihood(x, z)[0]
    kl_dims = (log_q_dims + 0.5 * (z**2 + math.log(2 * math.pi)))[0]
    elbo = reconstruction - kl_dims.sum(-1)
    if free_bits <= 0:
        return -elbo.mean(), elbo
    if kl_dims.shape[-1] % groups:
        raise ValueError(f"free_bits_groups={groups} does not divide {kl_dims.shape[-1]} latents")
    kl_groups = kl_dims.view(len(x), groups, -1).sum(-1).mean(0)
    return -(reconstruction.mean() - kl_groups.clamp(min=free_bits).sum()), elbo


@torch.no_grad()
def evaluate_vae(
    model: nn.Module, batches: Iterable[torch.Tensor], k: int = 1, seed: int = 0
) -> dict[int, float]:
    """Mean over the test images of the k'-sample bound for k' = 1, 2, 4, ... and k (nats)."""
    was_training = model.training
    model.eval()
    generator = torch.Generator().manual_seed(mix_seeds(seed, k, SeedStream.VAE_EVALUATION))
    sizes = sample_sizes(k)
    totals, count = dict.fromkeys(sizes, 0.0), 0
    for x in batches:
        z, log_q, _ = model.posterior(x, k, _noise(model, x, k, generator))
        prior = -0.5 * (z**2 + math.log(2 * math.pi)).sum(-1)
        weights = model.log_likelihood(x, z) + prior - log_q
        for size in sizes:
            totals[size] += float(log_mean_exp_groups(weights, size).sum())
        count += len(x)
    model.train(was_training)
    return {size: total / count for size, total in totals.items()}


def train_vae(
    model: nn.Module,
    data: BinaryImages,
    settings: TrainSettings,
    *,
    checkpoint_path: str | Path,
    seed: int = 0,
    device: torch.device | str = "cpu",
    **options: Unpack[FitOptions],
) -> TrainingOutcome:
    """Train a VAE on binarised images; see the module doc. Final metrics: ``test_elbo``,
    ``test_log_px`` (k = ``eval_samples``), ``test_log_px_k<K>``, ``test_elbo_k``, ``iw_samples``
    and ``train_elbo`` of the last logged interval. The loop is :func:`benchmarks.core.loop.fit`."""
    data = data.to(device)

    def loss(
        model: nn.Module, x: torch.Tensor, step: int, shard: Shard
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        generator = torch.Generator().manual_seed(mix_seeds(seed, step, SeedStream.VAE_NOISE))
        noise = _noise(model, x, 1, generator, shard)
        objective, elbo = vae_objective(
            model, x, noise, settings.free_bits, settings.free_bits_groups
        )
        return objective, {"train_elbo": elbo.mean()}

    def bounds(model: nn.Module, k: int) -> dict[int, float]:
        return evaluate_vae(model, data.test_batches(settings.batch_size), k, seed)

    def finish(model: nn.Module) -> dict[str, float]:
        k = max(settings.eval_samples, 1)
        curve = bounds(model, k)
        return {
            "test_log_px": curve[k],
            "test_elbo_k": curve[1],
            "iw_samples": float(k),
            **{f"test_log_px_k{size}": value for size, value in curve.items()},
        }

    task = FitTask(
        batches=lambda start, shard: data.train_batches(
            settings.batch_size, seed, start, shard=shard
        ),
        loss=loss,
        evaluate=lambda model: {"test_elbo": bounds(model, 1)[1]},
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
