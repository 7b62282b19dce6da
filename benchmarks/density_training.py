"""The density training loop: maximum likelihood in bits/dim, uniform or variational
dequantization.

Each step dequantizes an integer batch (``y = (x + u) / L``, with the noise drawn from a
generator seeded by the seed and the step: ``u ~ U[0, 1)``, or ``u ~ q(u | x)`` from the
model's ``dequantizer`` when it has one, Flow++), minimises the mean bits/dim (the negative
ELBO ``-E_q[log p(y) - log q(u | x)]`` in bits/dim) of :func:`benchmarks.metrics.bits_per_dim`
with the config's optimizer (Adam for RealNVP, Adamax for Glow), a linear learning-rate warm-up,
optional gradient clipping by global norm, optional L2 on weight-norm scales (RealNVP) and an
optional exponential moving average of the weights used for evaluation. As for the classifiers,
checkpoints are atomic, ``--resume`` reproduces the uninterrupted run, and a NaN or infinite
loss stops the run with a message naming the step and the checkpoint kept.

Evaluation reports the one-sample bound in bits/dim on the test split (``test_bpd``, with
fixed noise so that equal weights give equal numbers) and, at the end, the
importance-weighted bound with ``eval_samples`` samples (``test_bpd_iw``, with ``S`` logged)
and, from the same draws, the bound for S = 1, 2, 4, ... (``test_bpd_iw_s<S>``).

Example:
    >>> import tempfile, flows
    >>> from benchmarks.config import TrainSettings
    >>> from benchmarks.density_data import load_density_dataset
    >>> settings = TrainSettings(optimizer="adamax", learning_rate=1e-3, batch_size=32, steps=2)
    >>> model = flows.create("glow_cifar10", in_channels=1, image_size=8, levels=2, steps=1,
    ...                      width=8)
    >>> outcome = train_density(model, load_density_dataset("digits").subset(64, 64), settings,
    ...                         checkpoint_path=tempfile.mkdtemp() + "/last.pt", progress=False)
    >>> outcome.steps, outcome.final["test_bpd"] > 0
    (2, True)
"""

from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from benchmarks.checkpoint import save_checkpoint
from benchmarks.config import TrainSettings
from benchmarks.data import mix_seeds
from benchmarks.density_data import DiscreteImages
from benchmarks.metrics import (
    Dequantizer,
    bits_per_dim,
    dequantization_bound,
    dequantize_with,
    importance_weighted_bits_per_dim,
    log_importance_weights,
)
from benchmarks.training import (
    TrainingOutcome,
    learning_rate_at,
    make_optimizer,
    progress_bar,
    restore_training_state,
    stop_if_diverged,
    training_state,
)

__all__ = [
    "ExponentialMovingAverage",
    "dequantizer_of",
    "evaluate_density",
    "importance_weighted_curve",
    "train_density",
    "weight_norm_scales",
]

MetricsLogger = Callable[[dict[str, float], int], None]
_NOISE_STREAM, _EVAL_STREAM = 5, 6


class ExponentialMovingAverage:
    """A copy of a model whose floating-point parameters and buffers follow
    ``ema = decay * ema + (1 - decay) * current`` (other buffers are copied).

    The copy is taken at the first :meth:`update`, i.e. after the first optimizer step, so it
    starts from data-dependent initialisations (actnorm) rather than from the defaults.
    """

    def __init__(self, decay: float) -> None:
        self.decay = decay
        self.module: nn.Module | None = None

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        if self.module is None:
            self.module = copy.deepcopy(model)
            return
        current = model.state_dict()
        for name, value in self.module.state_dict().items():
            if value.is_floating_point():
                value.lerp_(current[name], 1 - self.decay)
            else:
                value.copy_(current[name])

    def state_dict(self) -> dict[str, torch.Tensor] | None:
        return None if self.module is None else self.module.state_dict()

    def load_state_dict(self, model: nn.Module, state: dict[str, torch.Tensor] | None) -> None:
        if state is not None:
            self.module = copy.deepcopy(model)
            self.module.load_state_dict(state)


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
    generator = torch.Generator().manual_seed(mix_seeds(seed, samples, _EVAL_STREAM))
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
    (:func:`~benchmarks.metrics.importance_weighted_bits_per_dim`). The draws are those of
    :func:`evaluate_density` with the same ``samples`` and ``seed``, so the last point equals
    it.
    """
    was_training = model.training
    model.eval()
    generator = torch.Generator().manual_seed(mix_seeds(seed, samples, _EVAL_STREAM))
    sizes = sorted({2**k for k in range(samples.bit_length()) if 2**k <= samples} | {samples})
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
    resume: bool = False,
    log_metrics: MetricsLogger | None = None,
    extra_state: dict[str, Any] | None = None,
    progress: bool = True,
    after_step: Callable[[int], None] | None = None,
) -> TrainingOutcome:
    """Train a density model (``log_prob(y)`` in nats) on integer images; see the module doc.

    Returns the final metrics: ``test_bpd`` (one-sample bound), ``test_bpd_iw`` and
    ``iw_samples`` when ``eval_samples > 1``, and ``train_bpd`` of the last logged interval.
    The model returned in place holds the trained (not averaged) weights; ``evaluation_model``
    of the outcome is the one evaluated (the EMA when ``ema_decay`` is set).
    """
    device = torch.device(device)
    checkpoint_path = Path(checkpoint_path)
    log = log_metrics or (lambda metrics, step: None)
    torch.manual_seed(seed)
    model.to(device).train()
    optimizer = make_optimizer(model, settings)
    ema = ExponentialMovingAverage(settings.ema_decay) if settings.ema_decay else None
    start_step, history, elapsed_before, resumed_from = 0, [], 0.0, None
    if resume and checkpoint_path.exists():
        state = restore_training_state(checkpoint_path, settings, model, optimizer)
        if ema is not None:
            ema.load_state_dict(model, state["ema"])
        start_step, history = state["step"], state["history"]
        elapsed_before, resumed_from = state["wall_time_s"], state["step"]
    data = data.to(device)
    batches = data.train_batches(settings.batch_size, seed, start_step, settings.augment)
    scales = weight_norm_scales(model)

    def evaluated() -> nn.Module:
        return ema.module if ema is not None and ema.module is not None else model

    def test_bpd(samples: int = 1) -> float:
        batches = data.test_batches(settings.batch_size)
        return evaluate_density(evaluated(), batches, data.levels, samples, seed)

    def checkpoint(step: int) -> None:
        elapsed = elapsed_before + time.perf_counter() - started
        state = training_state(
            model,
            optimizer,
            step=step,
            history=history,
            wall_time_s=elapsed,
            settings=settings,
            seed=seed,
            extra=extra_state,
            ema=ema.state_dict() if ema is not None else None,
        )
        save_checkpoint(checkpoint_path, state)

    started = time.perf_counter()
    interval_start, rates = started, []
    pending: list[tuple[torch.Tensor, torch.Tensor]] = []
    final: dict[str, float] = {}
    bar = progress_bar(settings, start_step, progress)
    for step in range(start_step, settings.steps):
        lr = learning_rate_at(step, settings)
        for group in optimizer.param_groups:
            group["lr"] = lr
        x = next(batches)
        noise = torch.Generator().manual_seed(mix_seeds(seed, step, _NOISE_STREAM))
        y, log_q = dequantize_with(dequantizer_of(model), x, data.levels, noise)
        loss = bits_per_dim(model.log_prob(y), data.num_dims, data.levels, log_q).mean()
        objective = loss
        if settings.weight_norm_l2 and scales:
            objective = loss + settings.weight_norm_l2 * sum((g**2).sum() for g in scales) / 2
        optimizer.zero_grad(set_to_none=True)
        objective.backward()
        if settings.grad_clip is not None:
            norm = torch.nn.utils.clip_grad_norm_(model.parameters(), settings.grad_clip)
        else:
            norm = torch.zeros(())
        optimizer.step()
        if ema is not None:
            ema.update(model)
        pending.append((loss.detach(), norm.detach()))
        done = step + 1
        bar.update(1)
        is_last = done == settings.steps
        evaluate_now = done % settings.eval_every == 0 or is_last
        checkpoint_now = done % settings.checkpoint_every == 0 or is_last
        if done % settings.log_every == 0 or evaluate_now or checkpoint_now:
            losses, norms = (torch.stack(column).cpu() for column in zip(*pending, strict=True))
            stop_if_diverged(losses, done - len(pending), checkpoint_path)
            now = time.perf_counter()
            rates.append(len(pending) * settings.batch_size / (now - interval_start))
            metrics = {
                "train_bpd": losses.mean().item(),
                "learning_rate": lr,
                "train_images_per_s": rates[-1],
            }
            if settings.grad_clip is not None:
                metrics["grad_norm"] = norms.mean().item()
            pending.clear()
            bar.set_postfix(bpd=f"{metrics['train_bpd']:.3f}", img_s=f"{rates[-1]:.0f}")
            if evaluate_now:
                metrics["test_bpd"] = test_bpd()
                history.append({"step": done, **metrics})
                final = dict(metrics)
            log(metrics, done)
            if checkpoint_now:
                checkpoint(done)
            interval_start = time.perf_counter()
        if after_step is not None:
            after_step(done)
    bar.close()
    if not final:  # resumed from a finished run
        final = dict(history[-1]) if history else {"test_bpd": test_bpd()}
        final.pop("step", None)
    if settings.eval_samples > 1:
        batches = data.test_batches(settings.batch_size)
        curve = importance_weighted_curve(
            evaluated(), batches, data.levels, settings.eval_samples, seed
        )
        final["test_bpd_iw"] = curve[settings.eval_samples]
        final["iw_samples"] = float(settings.eval_samples)
        final.update({f"test_bpd_iw_s{size}": value for size, value in curve.items()})
    steady = rates[1:] or rates
    return TrainingOutcome(
        steps=settings.steps,
        final=final,
        history=history,
        wall_time_s=elapsed_before + time.perf_counter() - started,
        train_images_per_s=statistics.median(steady) if steady else float("nan"),
        resumed_from_step=resumed_from,
        evaluation_model=evaluated(),
    )
