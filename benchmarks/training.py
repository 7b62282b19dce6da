"""The classification training loop: SGD with step decay, periodic evaluation, atomic
checkpoints, exact resume and a guard against a diverging loss.

The recipe is that of the RevNet paper's official code (``revnet-public``): SGD with momentum,
a piecewise-constant learning rate, and L2 weight decay on convolution and linear weights only
(TensorFlow's ``wd * l2_loss(w)`` has the gradient ``wd * w``, which is PyTorch's
``weight_decay=wd``). Everything random is derived from the seed and the step number, so
``--resume`` after a kill reproduces the uninterrupted run exactly (on the same device).

Example:
    >>> import flows, tempfile
    >>> from benchmarks.config import TrainSettings
    >>> from benchmarks.data import load_dataset
    >>> settings = TrainSettings(optimizer="sgd", learning_rate=0.1, batch_size=32, steps=2)
    >>> outcome = train_classifier(flows.create("resnet32", in_channels=1), load_dataset("digits"),
    ...     settings, checkpoint_path=tempfile.mkdtemp() + "/last.pt", progress=False)
    >>> outcome.steps
    2
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from benchmarks.checkpoint import load_checkpoint, save_checkpoint
from benchmarks.config import TrainSettings
from benchmarks.data import Batch, TrainingData
from benchmarks.errors import BenchmarkError, TrainingDivergedError

__all__ = [
    "TrainingOutcome",
    "check_same_settings",
    "evaluate",
    "learning_rate_at",
    "make_optimizer",
    "progress_bar",
    "restore_training_state",
    "stop_if_diverged",
    "train_classifier",
    "training_state",
]

MetricsLogger = Callable[[dict[str, float], int], None]


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


def learning_rate_at(step: int, settings: TrainSettings) -> float:
    """Linear warm-up over ``warmup_steps`` (Glow, Flow++), then piecewise constant:
    ``lr * lr_decay ** (milestones passed)``."""
    passed = sum(step >= milestone for milestone in settings.lr_milestones)
    warmup = min(1.0, (step + 1) / settings.warmup_steps) if settings.warmup_steps else 1.0
    return warmup * settings.learning_rate * settings.lr_decay**passed


def make_optimizer(model: nn.Module, settings: TrainSettings) -> torch.optim.Optimizer:
    """The config's optimizer; weight decay on conv and linear weights (ndim > 1) only.

    ``sgd`` (with ``momentum``) is the classifiers' recipe; ``adam`` and ``adamax`` (default
    betas 0.9, 0.999) are the flows' (RealNVP: Adam; Glow: Adamax).
    """
    decayed = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
    plain = [p for p in model.parameters() if p.requires_grad and p.ndim <= 1]
    groups = [
        {"params": decayed, "weight_decay": settings.weight_decay},
        {"params": plain, "weight_decay": 0.0},
    ]
    if settings.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=settings.learning_rate, momentum=settings.momentum)
    optimizer = {"adam": torch.optim.Adam, "adamax": torch.optim.Adamax}[settings.optimizer]
    return optimizer(groups, lr=settings.learning_rate)


@torch.no_grad()
def evaluate(model: nn.Module, batches: Iterable[Batch]) -> dict[str, float]:
    """Test loss (nats), top-1 and top-5 error (%) of ``model`` in eval mode.

    Top-5 counts a prediction as right when the label is among the five largest logits (with
    fewer than five classes it equals top-1 over all classes, i.e. 0).
    """
    was_training = model.training
    model.eval()
    total_loss, wrong, wrong_top5, count = 0.0, 0, 0, 0
    for images, labels in batches:
        logits = model(images)
        total_loss += F.cross_entropy(logits, labels, reduction="sum").item()
        top5 = logits.topk(min(5, logits.shape[1]), dim=1).indices
        wrong += int((top5[:, 0] != labels).sum())
        wrong_top5 += int((top5 != labels[:, None]).all(dim=1).sum())
        count += len(labels)
    model.train(was_training)
    return {
        "test_loss": total_loss / count,
        "test_error": 100.0 * wrong / count,
        "test_top5_error": 100.0 * wrong_top5 / count,
    }


def train_classifier(
    model: nn.Module,
    data: TrainingData,
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
    """Train ``model`` on ``data`` with ``settings``; return the final test metrics.

    Args:
        model: a classifier returning logits.
        data: the dataset (delivered to ``device`` here).
        settings: the resolved training settings.
        checkpoint_path: where the atomic checkpoint is written every ``checkpoint_every``
            steps and at the end.
        seed: seeds the batch order and augmentation (and the global torch RNG).
        device: where to train.
        resume: continue from ``checkpoint_path`` if it exists.
        log_metrics: called as ``log_metrics(metrics, step)`` at every log/eval point.
        extra_state: stored in the checkpoint (the runner keeps its MLflow run id there).
        progress: show a tqdm progress bar.
        after_step: called with the number of completed steps after each step.

    Raises:
        TrainingDivergedError: the loss became NaN or infinite; the last good checkpoint is
            kept and named in the message.
    """
    device = torch.device(device)
    checkpoint_path = Path(checkpoint_path)
    log = log_metrics or (lambda metrics, step: None)
    torch.manual_seed(seed)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input shapes: pick the fastest kernels
    model.to(device).train()
    optimizer = make_optimizer(model, settings)
    start_step, history, elapsed_before = 0, [], 0.0
    resumed_from = None
    if resume and checkpoint_path.exists():
        state = restore_training_state(checkpoint_path, settings, model, optimizer)
        start_step, history = state["step"], state["history"]
        elapsed_before = state["wall_time_s"]
        resumed_from = start_step
    data = data.to(device)
    batches = data.train_batches(settings.batch_size, seed, start_step, settings.augment)
    eval_batch_size = 2 * settings.batch_size  # no activations kept: twice fits

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
        )
        save_checkpoint(checkpoint_path, state)

    started = time.perf_counter()
    interval_start, rates = started, []
    pending: list[tuple[torch.Tensor, torch.Tensor]] = []
    bar = progress_bar(settings, start_step, progress)
    final: dict[str, float] = {}
    for step in range(start_step, settings.steps):
        lr = learning_rate_at(step, settings)
        for group in optimizer.param_groups:
            group["lr"] = lr
        images, labels = next(batches)
        logits = model(images)
        loss = F.cross_entropy(logits, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        pending.append((loss.detach(), (logits.argmax(1) != labels).float().mean().detach()))
        done = step + 1
        bar.update(1)
        is_last = done == settings.steps
        evaluate_now = done % settings.eval_every == 0 or is_last
        checkpoint_now = done % settings.checkpoint_every == 0 or is_last
        if done % settings.log_every == 0 or evaluate_now or checkpoint_now:
            losses, errors = (torch.stack(column).cpu() for column in zip(*pending, strict=True))
            stop_if_diverged(losses, done - len(pending), checkpoint_path)
            now = time.perf_counter()
            rates.append(len(pending) * settings.batch_size / (now - interval_start))
            metrics = {
                "train_loss": losses.mean().item(),
                "train_error": 100.0 * errors.mean().item(),
                "learning_rate": lr,
                "train_images_per_s": rates[-1],
            }
            pending.clear()
            bar.set_postfix(
                loss=f"{metrics['train_loss']:.3f}",
                acc=f"{100 - metrics['train_error']:.1f}%",
                img_s=f"{rates[-1]:.0f}",
            )
            if evaluate_now:
                metrics.update(evaluate(model, data.test_batches(eval_batch_size)))
                history.append({"step": done, **metrics})
                final = metrics
            log(metrics, done)
            if checkpoint_now:
                checkpoint(done)
            interval_start = time.perf_counter()
        if after_step is not None:
            after_step(done)
    bar.close()
    if not final:  # resumed from a finished run: report its last evaluation
        final = (
            dict(history[-1]) if history else evaluate(model, data.test_batches(eval_batch_size))
        )
        final.pop("step", None)
    steady = rates[1:] or rates
    return TrainingOutcome(
        steps=settings.steps,
        final=final,
        history=history,
        wall_time_s=elapsed_before + time.perf_counter() - started,
        train_images_per_s=statistics.median(steady) if steady else float("nan"),
        resumed_from_step=resumed_from,
    )


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


def training_state(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    *,
    step: int,
    history: list[dict[str, float]],
    wall_time_s: float,
    settings: TrainSettings,
    seed: int,
    extra: dict[str, Any] | None,
    **more: Any,
) -> dict[str, Any]:
    """Everything a checkpoint holds for an exact resume (``more``: e.g. EMA weights)."""
    return {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "torch_rng": torch.get_rng_state(),
        "step": step,
        "history": history,
        "wall_time_s": wall_time_s,
        "settings": dataclasses.asdict(settings),
        "seed": seed,
        "extra": extra or {},
        **more,
    }


def restore_training_state(
    path: Path, settings: TrainSettings, model: nn.Module, optimizer: torch.optim.Optimizer
) -> dict[str, Any]:
    """Load a checkpoint written with the same settings into ``model`` and ``optimizer``."""
    state = load_checkpoint(path)
    check_same_settings(state["settings"], settings, path)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["torch_rng"])
    return state


def stop_if_diverged(losses: torch.Tensor, first_step: int, checkpoint_path: Path) -> None:
    bad = (~torch.isfinite(losses)).nonzero()
    if len(bad) == 0:
        return
    step = first_step + int(bad[0]) + 1
    value = losses[int(bad[0])].item()
    kept = (
        f"the last good checkpoint is kept at {checkpoint_path} (step "
        f"{load_checkpoint(checkpoint_path)['step']})"
        if checkpoint_path.exists()
        else "no checkpoint had been written yet"
    )
    raise TrainingDivergedError(
        f"training diverged: loss is {value} at step {step}; {kept}. Lower the learning rate "
        "or check the input data, then rerun (with --resume to continue from the checkpoint)."
    )


def check_same_settings(saved: dict[str, Any], settings: TrainSettings, path: Path) -> None:
    current = dataclasses.asdict(settings)
    changed = {k: (saved.get(k), v) for k, v in current.items() if saved.get(k) != v}
    if changed:
        described = ", ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in changed.items())
        raise BenchmarkError(
            f"cannot resume from {path}: it was written with other settings ({described}). "
            "Run without --resume to start over, or restore the original settings."
        )
