"""The training loop of every model of the suite: classifiers, flows (bits/dim) and VAEs.

A :class:`FitTask` says what differs between them: the batches, the loss of one step, what an
evaluation measures and what the end adds. :func:`fit` does the rest, the same way for all:
the learning-rate schedule (:func:`~benchmarks.core.optim.learning_rate_at`), gradient clipping
by global norm (its mean logged as ``grad_norm``), the optimizer step, an optional exponential
moving average of the weights used for evaluation, logging every ``log_every`` steps,
evaluation every ``eval_every``, atomic checkpoints every ``checkpoint_every`` and at the end,
exact ``--resume`` (model, optimizer, EMA, RNG, history, wall time and the scalars of a
partly logged interval come from the checkpoint) and the NaN guard of
:func:`stop_if_diverged`.

SIGINT and SIGTERM stop the loop at the end of the current step (see
:class:`~benchmarks.core.lifecycle.StopAtStepEnd`): it writes a checkpoint at that step, so a resume
continues exactly from there, then raises :class:`~benchmarks.core.lifecycle.Interrupted`. Under
``torchrun`` the processes agree to stop at the next logging step.

How a step runs is set by ``precision`` (:data:`PRECISION_POLICY`; evaluation stays in
float32), ``channels_last`` and ``compile`` (a ``torch.compile`` backend) of the
settings, and by the :class:`~benchmarks.core.distributed.Shard`: under ``torchrun`` the loss runs
inside DistributedDataParallel on this process's rows of each global batch, rank 0 alone
writes checkpoints, and every process evaluates the whole test split (the same numbers).

Example:
    >>> import tempfile, torch
    >>> from benchmarks.config import TrainSettings
    >>> model = torch.nn.Linear(1, 1)
    >>> def squared(model, x, step, shard):
    ...     loss = model(x).pow(2).mean()
    ...     return loss, {"train_loss": loss}
    >>> task = FitTask(
    ...     batches=lambda start, shard: iter(lambda: torch.ones(4, 1), None),
    ...     loss=squared,
    ...     evaluate=lambda model: {"test_loss": model(torch.ones(1, 1)).item() ** 2})
    >>> settings = TrainSettings(optimizer="sgd", learning_rate=0.1, batch_size=4, steps=3)
    >>> outcome = fit(model, settings, task, checkpoint_path=tempfile.mkdtemp() + "/last.pt",
    ...               progress=False)
    >>> outcome.steps, sorted(outcome.final)
    (3, ['learning_rate', 'test_loss', 'train_images_per_s', 'train_loss'])
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from benchmarks.config import TrainSettings
from benchmarks.core.checkpoint import has_checkpoint, load_checkpoint, save_checkpoint
from benchmarks.core.distributed import (
    Shard,
    check_same_start,
    convert_batch_norm,
    initialise_on_global_batch,
    needs_data_init,
)
from benchmarks.core.lifecycle import StopAtStepEnd
from benchmarks.core.optim import ExponentialMovingAverage, learning_rate_at, make_optimizer
from benchmarks.core.resume import restore_training_state, training_state
from benchmarks.core.seeds import SeedStream, mix_seeds
from benchmarks.errors import TrainingDivergedError
from flows.precision import float32_mode

__all__ = [
    "PRECISION_POLICY",
    "FitOptions",
    "FitTask",
    "MetricsLogger",
    "TrainingOutcome",
    "fit",
    "progress_bar",
    "stop_if_diverged",
    "uses_bf16",
    "uses_tf32",
]

MetricsLogger = Callable[[dict[str, float], int], None]
Reported = dict[str, torch.Tensor]


@dataclass
class TrainingOutcome:
    """What a finished training run reports."""

    steps: int
    final: dict[str, float]
    history: list[dict[str, float]] = field(default_factory=list)
    wall_time_s: float = 0.0
    train_images_per_s: float = float("nan")
    resumed_from_step: int | None = None
    evaluation_model: nn.Module | None = None  # the weights evaluated (an EMA, if any)


@dataclass
class FitTask:
    """What one kind of model trains on and measures.

    Args:
        batches: ``(start_step, shard) -> iterator`` of this process's rows of the training
            batches from that step on.
        loss: ``(model, batch, step, shard) -> (objective, reported)``: the scalar to minimise
            and the scalars logged (their mean over the interval), e.g. ``{"train_bpd": bpd}``.
            Noise that belongs to examples is drawn through ``shard.draw``.
        evaluate: ``evaluated model -> metrics`` at every evaluation.
        finish: ``evaluated model -> extra final metrics`` (importance-weighted bounds).
    """

    batches: Callable[[int, Shard], Iterator[Any]]
    loss: Callable[[nn.Module, Any, int, Shard], tuple[torch.Tensor, Reported]]
    evaluate: Callable[[nn.Module], dict[str, float]]
    finish: Callable[[nn.Module], dict[str, float]] = field(default=lambda model: {})


@dataclass
class _Interval:
    """The scalars of the steps since the last logging step, averaged when it is logged.

    A checkpoint written between logging steps (on SIGTERM) keeps them, so that the resumed
    run logs the same means as an uninterrupted one.
    """

    objectives: list[torch.Tensor] = field(default_factory=list)
    pending: list[Reported] = field(default_factory=list)
    norms: list[torch.Tensor] = field(default_factory=list)

    def state(self) -> dict[str, list[Any]]:
        return {
            "objectives": list(self.objectives),
            "pending": list(self.pending),
            "norms": list(self.norms),
        }

    @classmethod
    def restore(cls, state: dict[str, list[Any]] | None, device: torch.device) -> _Interval:
        """The interval saved by :meth:`state` (empty for checkpoints that have none)."""
        if not state:
            return cls()
        return cls(
            objectives=[value.to(device) for value in state["objectives"]],
            pending=[{k: v.to(device) for k, v in entry.items()} for entry in state["pending"]],
            norms=[value.to(device) for value in state["norms"]],
        )


class _StepLoss(nn.Module):
    """The task's loss as a module, so that DistributedDataParallel sees it as ``forward``
    (DDP only prepares gradient reduction for calls of ``forward``)."""

    def __init__(self, model: nn.Module, task: FitTask, shard: Shard) -> None:
        super().__init__()
        self.model, self.task, self.shard = model, task, shard

    def forward(self, batch: Any, step: int) -> tuple[torch.Tensor, Reported]:
        return self.task.loss(self.model, batch, step, self.shard)


class FitOptions(TypedDict, total=False):
    """How :func:`fit` runs, passed through unchanged by ``train_classifier``,
    ``train_density`` and ``train_vae`` (see :func:`fit` for each)."""

    resume: bool
    log_metrics: MetricsLogger | None
    extra_state: dict[str, Any] | None
    progress: bool
    after_step: Callable[[int], None] | None
    shard: Shard | None


def progress_bar(settings: TrainSettings, start_step: int, enabled: bool) -> tqdm:
    """The per-step progress bar of a training loop (only on a terminal: logs stay readable)."""
    return tqdm(
        total=settings.steps,
        initial=start_step,
        disable=None if enabled else True,
        unit="step",
        dynamic_ncols=True,
        leave=False,
    )


def stop_if_diverged(losses: torch.Tensor, first_step: int, checkpoint_path: Path) -> None:
    bad = (~torch.isfinite(losses)).nonzero()
    if len(bad) == 0:
        return
    step = first_step + int(bad[0]) + 1
    value = losses[int(bad[0])].item()
    kept = (
        f"the last good checkpoint is kept at {checkpoint_path} (step "
        f"{load_checkpoint(checkpoint_path)['step']})"
        if has_checkpoint(checkpoint_path)
        else "no checkpoint had been written yet"
    )
    raise TrainingDivergedError(
        f"training diverged: loss is {value} at step {step}; {kept}. Lower the learning rate "
        f"or check the input data, then move the run folder {checkpoint_path.parent} away to "
        "start over (or rerun with --resume to continue from the checkpoint, same settings only)."
    )


PRECISION_POLICY = {
    "auto": "fp32: measured on an H200 (issue 16), bf16 autocast made every CIFAR network "
    "slower (ResNet-110 15.0 against 23.1 steps/s, RevNet-164 7.5 against 8.8) and Glow no "
    "faster (0.355 against 0.363 s/step): the networks are launch-bound at these sizes",
    "fp32": "IEEE float32 for the whole step (TF32 off for convolutions and matmuls)",
    "tf32": "TF32 allowed (Ampere and later GPUs) except where a model must invert exactly: "
    "reversible sequences, i-RevNets and density flows scope IEEE float32 themselves "
    "(flows.precision)",
    "bf16": "bf16 autocast around the forward pass; RevNets keep their additive stream in float32",
}


def uses_bf16(settings: TrainSettings) -> bool:
    """``precision: bf16``: the forward pass runs under bf16 autocast."""
    return settings.precision == "bf16"


def uses_tf32(settings: TrainSettings) -> bool:
    """``precision: tf32``: float32 convolutions and matmuls may use TF32 on GPUs (outside the
    parts that scope :func:`flows.precision.exact_float32`); otherwise IEEE float32."""
    return settings.precision == "tf32"


def _channels_last(batch: Any) -> Any:
    if isinstance(batch, tuple):
        return tuple(_channels_last(part) for part in batch)
    if isinstance(batch, torch.Tensor) and batch.ndim == 4:
        return batch.contiguous(memory_format=torch.channels_last)
    return batch


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
    shard: Shard | None = None,
) -> TrainingOutcome:
    """Train ``model`` on ``task`` with ``settings``; see the module docstring.

    Args:
        checkpoint_path: where the atomic checkpoint is written every ``checkpoint_every``
            steps and at the end (the one before is kept beside it).
        seed: seeds the global torch RNG (the task seeds its batches and noise itself).
        device: where to train.
        resume: continue from ``checkpoint_path`` (or the previous one) if it exists.
        log_metrics: called as ``log_metrics(metrics, step)`` at every log/eval point.
        extra_state: stored in the checkpoint (the runner keeps its MLflow run id there).
        progress: show a tqdm progress bar.
        after_step: called with the number of completed steps after each step.
        shard: this process's part of each batch under ``torchrun`` (default: all of it).

    The final metrics are those of the last evaluation plus ``task.finish``. The model keeps
    the trained (not averaged) weights; ``evaluation_model`` of the outcome is the evaluated
    one (the EMA when ``ema_decay`` is set).
    """
    device = torch.device(device)
    shard = shard or Shard()
    shard.local_size(settings.batch_size)  # the global batch must split evenly
    checkpoint_path = Path(checkpoint_path)
    log = log_metrics or (lambda metrics, step: None)
    torch.manual_seed(seed)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input shapes: pick the fastest kernels
    model.to(device).train()
    if settings.channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(model, settings)
    ema = ExponentialMovingAverage(settings.ema_decay) if settings.ema_decay else None
    start_step, history, elapsed_before, resumed_from = 0, [], 0.0, None
    interval = _Interval()
    if resume and has_checkpoint(checkpoint_path):
        state = restore_training_state(checkpoint_path, settings, model, optimizer)
        if ema is not None:
            ema.load_state_dict(model, state["ema"])
        start_step, history = state["step"], state["history"]
        elapsed_before, resumed_from = state["wall_time_s"], state["step"]
        interval = _Interval.restore(state.get("interval"), device)
    check_same_start(shard, start_step, checkpoint_path)
    if shard.rank > 0:  # dropout: an independent stream per process
        torch.manual_seed(mix_seeds(seed, start_step, SeedStream.DROPOUT + shard.rank))
    step_loss: nn.Module = _StepLoss(model, task, shard)
    if shard.distributed:
        if needs_data_init(model):
            first = next(task.batches(start_step, Shard()))
            initialise_on_global_batch(
                model, lambda: task.loss(model, first, start_step, Shard()), device
            )
        convert_batch_norm(model)
        step_loss = DistributedDataParallel(
            step_loss,
            device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=any(
                getattr(module, "allocates_unused_parameters", False) for module in model.modules()
            ),
        )
    if settings.compile:
        step_loss = torch.compile(step_loss, backend=settings.compile)
    bf16 = uses_bf16(settings)
    batches = task.batches(start_step, shard)

    def evaluated() -> nn.Module:
        return ema.module if ema is not None and ema.module is not None else model

    def checkpoint(step: int) -> None:
        if not shard.is_main:
            return
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
            interval=interval.state(),
        )
        save_checkpoint(checkpoint_path, state)

    started = time.perf_counter()
    interval_start, rates = started, []
    objectives, pending, norms = interval.objectives, interval.pending, interval.norms
    untimed = len(objectives)  # steps of a restored interval, run before this process started
    final: dict[str, float] = {}
    bar = progress_bar(settings, start_step, progress and shard.is_main)
    with StopAtStepEnd() as stop, bar, float32_mode(tf32=uses_tf32(settings)):
        for step in range(start_step, settings.steps):
            lr = learning_rate_at(step, settings)
            for group in optimizer.param_groups:
                group["lr"] = lr
            batch = next(batches)
            if settings.channels_last:
                batch = _channels_last(batch)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                objective, reported = step_loss(batch, step)
            optimizer.zero_grad(set_to_none=True)
            objective.backward()
            if settings.grad_clip is not None:
                norms.append(
                    torch.nn.utils.clip_grad_norm_(model.parameters(), settings.grad_clip).detach()
                )
            optimizer.step()
            if ema is not None:
                ema.update(model)
            objectives.append(objective.detach().float())
            pending.append({name: value.detach().float() for name, value in reported.items()})
            done = step + 1
            bar.update(1)
            is_last = done == settings.steps
            evaluate_now = done % settings.eval_every == 0 or is_last
            checkpoint_now = done % settings.checkpoint_every == 0 or is_last
            log_now = done % settings.log_every == 0 or evaluate_now or checkpoint_now
            if log_now:
                stop_if_diverged(
                    torch.stack(objectives).cpu(), done - len(objectives), checkpoint_path
                )
                now = time.perf_counter()
                timed = len(objectives) - untimed
                rates.append(timed * settings.batch_size / (now - interval_start))
                untimed = 0
                metrics = {
                    name: torch.stack([entry[name] for entry in pending]).mean().item()
                    for name in pending[0]
                }
                metrics.update(learning_rate=lr, train_images_per_s=rates[-1])
                if norms:
                    metrics["grad_norm"] = torch.stack(norms).mean().item()
                loss = torch.stack(objectives).mean().item()
                bar.set_postfix(loss=f"{loss:.3f}", img_s=f"{rates[-1]:.0f}")
                objectives.clear()
                pending.clear()
                norms.clear()
                if evaluate_now:
                    metrics.update(task.evaluate(evaluated()))
                    history.append({"step": done, **metrics})
                    final = dict(metrics)
                if shard.is_main:
                    log(metrics, done)
                if checkpoint_now:
                    checkpoint(done)
                interval_start = time.perf_counter()
            if after_step is not None:
                after_step(done)
            # under torchrun the processes decide together, at logging steps (already synced)
            if (log_now or not shard.distributed) and stop.requested(shard.distributed, device):
                if not checkpoint_now:
                    checkpoint(done)
                raise stop.interruption()
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
