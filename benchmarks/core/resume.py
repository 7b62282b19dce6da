"""What a checkpoint holds for an exact ``--resume``, and the check that a resume keeps the
settings that change what is computed.

:func:`training_state` is the state :func:`~benchmarks.core.loop.fit` saves (model, optimizer,
RNG, step, history, wall time, settings, seed); :func:`restore_training_state` loads it back
after :func:`check_same_settings` has compared the settings.

Example:
    >>> from benchmarks.config import TrainSettings
    >>> settings = TrainSettings(optimizer="sgd", learning_rate=0.1, batch_size=32, steps=10)
    >>> saved = dataclasses.asdict(settings)
    >>> check_same_settings(saved, dataclasses.replace(settings, precision="fp32"), Path("x"))
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch
from torch import nn

from benchmarks.config import TrainSettings
from benchmarks.core.checkpoint import load_checkpoint
from benchmarks.errors import BenchmarkError

__all__ = ["RUNTIME_SETTINGS", "check_same_settings", "restore_training_state", "training_state"]

# Settings that change how a step runs, not what it computes: a resume may change them.
RUNTIME_SETTINGS = frozenset({"precision", "channels_last", "compile"})


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
