"""The training loop shared by the likelihood models (flows in bits/dim, VAEs in nats).

A :class:`FitTask` says what differs between them: the batches, the loss of one step, what an
evaluation measures and what the end adds. :func:`fit` does the rest, the same way for all:
the learning-rate schedule (:func:`~benchmarks.training.learning_rate_at`), gradient clipping
by global norm (its mean logged as ``grad_norm``), the optimizer step, an optional exponential
moving average of the weights used for evaluation, logging every ``log_every`` steps,
evaluation every ``eval_every``, atomic checkpoints every ``checkpoint_every`` and at the end,
exact ``--resume`` (model, optimizer, EMA, RNG, history and wall time come from the
checkpoint) and the NaN guard of :func:`~benchmarks.training.stop_if_diverged`.

Example:
    >>> import tempfile, torch
    >>> from benchmarks.config import TrainSettings
    >>> model = torch.nn.Linear(1, 1)
    >>> task = FitTask(
    ...     batches=lambda start: iter(lambda: torch.ones(4, 1), None),
    ...     loss=lambda model, x, step: (model(x).pow(2).mean(),) * 2,
    ...     evaluate=lambda model: {"test_loss": model(torch.ones(1, 1)).item() ** 2},
    ...     metric="train_loss")
    >>> settings = TrainSettings(optimizer="sgd", learning_rate=0.1, batch_size=4, steps=3)
    >>> outcome = fit(model, settings, task, checkpoint_path=tempfile.mkdtemp() + "/last.pt",
    ...               progress=False)
    >>> outcome.steps, sorted(outcome.final)
    (3, ['learning_rate', 'test_loss', 'train_images_per_s', 'train_loss'])
"""

from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from benchmarks.checkpoint import save_checkpoint
from benchmarks.config import TrainSettings
from benchmarks.training import (
    TrainingOutcome,
    learning_rate_at,
    make_optimizer,
    progress_bar,
    restore_training_state,
    stop_if_diverged,
    training_state,
)

__all__ = ["ExponentialMovingAverage", "FitTask", "fit"]

MetricsLogger = Callable[[dict[str, float], int], None]


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


@dataclass
class FitTask:
    """What one kind of model trains on and measures.

    Args:
        batches: ``start_step -> iterator`` of training batches from that step on.
        loss: ``(model, batch, step) -> (objective, reported)``: the scalar to minimise and
            the scalar logged as ``metric`` (``sign`` times its mean over the interval).
        evaluate: ``evaluated model -> metrics`` at every evaluation.
        metric: name of the logged training metric (``train_bpd``, ``train_elbo``).
        sign: +1, or -1 to log the negated loss (the ELBO of a negative-ELBO loss).
        finish: ``evaluated model -> extra final metrics`` (importance-weighted bounds).
    """

    batches: Callable[[int], Iterator[torch.Tensor]]
    loss: Callable[[nn.Module, torch.Tensor, int], tuple[torch.Tensor, torch.Tensor]]
    evaluate: Callable[[nn.Module], dict[str, float]]
    metric: str
    sign: float = 1.0
    finish: Callable[[nn.Module], dict[str, float]] = field(default=lambda model: {})


def fit(
    model: nn.Module,
    settings: TrainSettings,
    task: FitTask,
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
    """Train ``model`` on ``task`` with ``settings``; see the module docstring.

    The final metrics are those of the last evaluation plus ``task.finish``. The model keeps
    the trained (not averaged) weights; ``evaluation_model`` of the outcome is the evaluated
    one (the EMA when ``ema_decay`` is set).
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
    batches = task.batches(start_step)

    def evaluated() -> nn.Module:
        return ema.module if ema is not None and ema.module is not None else model

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
        objective, reported = task.loss(model, next(batches), step)
        optimizer.zero_grad(set_to_none=True)
        objective.backward()
        if settings.grad_clip is not None:
            norm = torch.nn.utils.clip_grad_norm_(model.parameters(), settings.grad_clip)
        else:
            norm = torch.zeros(())
        optimizer.step()
        if ema is not None:
            ema.update(model)
        pending.append((reported.detach(), norm.detach()))
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
                task.metric: task.sign * losses.mean().item(),
                "learning_rate": lr,
                "train_images_per_s": rates[-1],
            }
            if settings.grad_clip is not None:
                metrics["grad_norm"] = norms.mean().item()
            pending.clear()
            bar.set_postfix(loss=f"{losses.mean().item():.3f}", img_s=f"{rates[-1]:.0f}")
            if evaluate_now:
                metrics.update(task.evaluate(evaluated()))
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
        final = dict(history[-1]) if history else dict(task.evaluate(evaluated()))
        final.pop("step", None)
    final.update(task.finish(evaluated()))
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
