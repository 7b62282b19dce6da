"""Training throughput of the paper rows in the real training loop, and what a paper run costs.

For every model of a config's ``paper`` profile, the family's own trainer
(:meth:`~benchmarks.tasks.base.Task.train`, i.e. :func:`benchmarks.core.loop.fit` with the
family's loss, optimizer, schedule, EMA and augmentation) runs ``3 x log_every`` steps of the
documented settings on random data of the paper dataset's shape
(:meth:`~benchmarks.tasks.base.Task.synthetic_data`; no file decoding, so an ImageNet figure is
the model's throughput, not the input pipeline's). The loop's own ``train_images_per_s`` is
kept: the median of its logging intervals after the first (which holds cuDNN's kernel search).
The estimated hours of a paper run are ``steps / steps_per_s / 3600``: training only, without
the periodic evaluations and checkpoints.

Example:
    >>> rows = measure_paper_throughput(["configs/vae.yaml"], "cpu", profile="smoke",
    ...                                 log_every=1, models=["vae_mnist"])
    >>> [(row["model"], row["profile"]) for row in rows]
    [('vae_mnist', 'smoke')]
"""

from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from benchmarks.config import load_config
from benchmarks.tasks import task_of
from flows.registry import create

__all__ = ["PAPER_CONFIGS", "measure_paper_throughput"]

PAPER_CONFIGS = (
    "configs/cifar.yaml",
    "configs/imagenet.yaml",
    "configs/density.yaml",
    "configs/vae.yaml",
)


def measure_paper_throughput(
    config_paths: Sequence[str | Path],
    device: torch.device | str,
    *,
    profile: str = "paper",
    log_every: int = 5,
    precision: str | None = None,
    channels_last: bool = False,
    models: Sequence[str] | None = None,
    progress: Callable[[str], None] | None = None,
) -> list[dict[str, object]]:
    """One row per model of each config's ``profile`` (first dataset), trained for
    ``3 * log_every`` steps; ``precision`` and ``channels_last`` override the settings'."""
    device = torch.device(device)
    rows = []
    for path in config_paths:
        config = load_config(path)
        resolved = config.resolve(profile)
        task = task_of(config)
        dataset = resolved.datasets[0]
        for name in resolved.models:
            if models is not None and name not in models:
                continue
            settings = resolved.training_for(name)
            steps = 3 * log_every
            timed = dataclasses.replace(
                settings,
                steps=steps,
                log_every=log_every,
                eval_every=steps,
                checkpoint_every=steps,
                eval_samples=1,
                train_examples=None,
                test_examples=settings.batch_size,
                precision=precision or settings.precision,
                channels_last=channels_last or settings.channels_last,
            )
            if progress is not None:
                progress(f"throughput of {name} ({config.name}, {timed.precision})")
            data = task.synthetic_data(dataset, 2 * settings.batch_size, settings)
            torch.manual_seed(0)
            model = create(name, **task.model_inputs(data), **resolved.model_kwargs(name))
            with tempfile.TemporaryDirectory() as folder:
                outcome = task.train(
                    model,
                    data,
                    timed,
                    checkpoint_path=Path(folder) / "last.pt",
                    device=device,
                    progress=False,
                )
            images_per_s = outcome.train_images_per_s
            steps_per_s = images_per_s / settings.batch_size
            rows.append(
                {
                    "config": config.name,
                    "model": name,
                    "dataset": dataset,
                    "profile": profile,
                    "precision": timed.precision,
                    "channels_last": timed.channels_last,
                    "ema": settings.ema_decay is not None,
                    "batch_size": settings.batch_size,
                    "steps_per_s": steps_per_s,
                    "images_per_s": images_per_s,
                    "profile_steps": settings.steps,
                    "estimated_hours": settings.steps / steps_per_s / 3600,
                    "device": device.type,
                }
            )
            del model, outcome, data
            if device.type == "cuda":
                torch.cuda.empty_cache()
    return rows
