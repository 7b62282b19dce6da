"""What every training loop shares: the learning-rate schedule, the optimizers of the
recipes, the checkpointed state and its restoration, and the guard against a diverging loss.

The loop itself is :func:`benchmarks.fitting.fit`; :mod:`benchmarks.classifier_training`,
:mod:`benchmarks.density_training` and :mod:`benchmarks.vae_training` define what it trains.

Example:
    >>> from benchmarks.config import TrainSettings
    >>> settings = TrainSettings(optimizer="sgd", learning_rate=0.1, batch_size=32, steps=100,
    ...                          lr_milestones=[50], lr_decay=0.1)
    >>> learning_rate_at(49, settings), round(learning_rate_at(50, settings), 6)
    (0.1, 0.01)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from benchmarks.checkpoint import has_checkpoint, load_checkpoint
from benchmarks.config import TrainSettings
from benchmarks.errors import BenchmarkError, TrainingDivergedError

__all__ = [
    "RUNTIME_SETTINGS",
    "TrainingOutcome",
    "check_same_settings",
    "learning_rate_at",
    "make_optimizer",
    "progress_bar",
    "restore_training_state",
    "stop_if_diverged",
    "training_state",
]

MetricsLogger = Callable[[dict[str, float], int], None]
RUNTIME_SETTINGS = frozenset({"precision", "channels_last", "compile"})


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
        if has_checkpoint(checkpoint_path)
        else "no checkpoint had been written yet"
    )
    raise TrainingDivergedError(
        f"training diverged: loss is {value} at step {step}; {kept}. Lower the learning rate "
        f"or check the input data, then move the run folder {checkpoint_path.parent} away to "
        "start over (or rerun with --resume to continue from the checkpoint, same settings only)."
    )


def check_same_settings(saved: dict[str, Any], settings: TrainSettings, path: Path) -> None:
    """Refuse to resume under settings that change what is computed (how a step runs, i.e.
    :data:`RUNTIME_SETTINGS`, may change, as may the number of processes)."""
    current = dataclasses.asdict(settings)
    changed = {
        k: (saved.get(k), v)
        for k, v in current.items()
        if k not in RUNTIME_SETTINGS and saved.get(k) != v
    }
    if changed:
        described = ", ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in changed.items())
        raise BenchmarkError(
            f"cannot resume from {path}: it was written with other settings ({described}). "
            "Restore the original settings, or move or delete the run folder "
            f"{Path(path).parent} (or choose another --runs-dir) to start over."
        )
