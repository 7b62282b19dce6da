"""The classification family: ResNets, RevNets and i-RevNets on CIFAR, ImageNet and digits.

Each run profiles one training step of the untrained model (parameters, activation memory,
step time: :func:`benchmarks.core.profiling.profile_training_step`), trains with the RevNet
recipe (:func:`~benchmarks.tasks.classification.training.train_classifier`), and reports top-1
and top-5 test error. Its table is the CIFAR error table, or, for a config with a ``probe``
section (ImageNet), the architecture table beside the probes of
:mod:`benchmarks.measure.architecture_probe`.

Example:
    >>> task = ClassificationTask()
    >>> task.builder_inputs("cifar100")
    {'num_classes': 100, 'in_channels': 3}
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from matplotlib.figure import Figure
from torch import nn

from benchmarks.config import Config, TrainSettings
from benchmarks.core.datasets import fetch_cifar
from benchmarks.core.loop import TrainingOutcome
from benchmarks.core.profiling import profile_training_step
from benchmarks.reporting.gpu_cost import load_gpu_costs
from benchmarks.reporting.plots import learning_curve
from benchmarks.reporting.record import latest_runs
from benchmarks.tasks.base import RunSummary, TableRender, Task
from benchmarks.tasks.classification.architecture_table import (
    build_architecture_table,
    render_architecture_markdown,
)
from benchmarks.tasks.classification.data import DATASETS, check_dataset_source, load_dataset
from benchmarks.tasks.classification.images import Augmentation, ImageData
from benchmarks.tasks.classification.table import build_table, render_markdown
from benchmarks.tasks.classification.training import train_classifier
from flows.reversible import ReversibleSequence

__all__ = ["ClassificationTask"]


class ClassificationTask(Task):
    """Image classifiers: cross-entropy training, top-1/top-5 error (see the module docstring)."""

    name = "classification"
    # the train loss of the last step, not the test loss after a few steps: that is the loss of
    # eval-mode BatchNorm with running statistics of a few batches (2.6 to 457,000 nats, moving
    # by up to 10x between kernels, too chaotic to gate on)
    gate_metrics = ("test_error", "train_loss")
    trainer = staticmethod(train_classifier)
    gates_first_losses = True

    @property
    def dataset_names(self) -> Sequence[str]:
        return list(DATASETS)

    def builder_inputs(self, dataset: str) -> dict[str, int]:
        spec = DATASETS[dataset]
        return {"num_classes": spec.num_classes, "in_channels": spec.channels}

    def check_source(self, dataset: str, data_dir: str | Path | None, download: bool) -> bool:
        return check_dataset_source(dataset, data_dir, download)

    def fetch(self, dataset: str, data_dir: str | Path) -> None:
        if dataset in ("cifar10", "cifar100"):
            fetch_cifar(dataset, data_dir)

    def load_data(
        self,
        dataset: str,
        data_dir: str | Path | None,
        download: bool,
        settings: TrainSettings,
        workers: int | None = None,
    ) -> Any:
        data = load_dataset(dataset, data_dir, download, image_size=settings.image_size).subset(
            settings.train_examples, settings.test_examples
        )
        if workers is not None and hasattr(data, "workers"):
            data = dataclasses.replace(data, workers=workers)
        return data

    def synthetic_data(self, dataset: str, examples: int, settings: TrainSettings) -> ImageData:
        spec = DATASETS[dataset]
        side = settings.image_size or spec.image_size
        generator = torch.Generator().manual_seed(0)
        shape = (examples, spec.channels, side, side)
        return ImageData(
            name=dataset,
            train_images=torch.randn(shape, generator=generator),
            train_labels=torch.randint(0, spec.num_classes, (examples,), generator=generator),
            test_images=torch.randn(shape, generator=generator),
            test_labels=torch.randint(0, spec.num_classes, (examples,), generator=generator),
            num_classes=spec.num_classes,
            augmentation=Augmentation(crop_padding=2, hflip=True),  # the CIFAR recipe's
            description=f"random {spec.channels}x{side}x{side} images in {dataset}'s shape "
            "(timing only; held in memory, no decoding)",
        )

    def model_inputs(self, data: Any) -> dict[str, int]:
        return {"num_classes": data.num_classes, "in_channels": data.channels}

    def before_training(
        self, model: nn.Module, data: Any, settings: TrainSettings, device: torch.device
    ) -> dict[str, float]:
        images, labels = data.probe_batch(settings.batch_size)
        return profile_training_step(model.to(device), images.to(device), labels.to(device))

    def figures(
        self, model: nn.Module, outcome: TrainingOutcome, title: str, seed: int
    ) -> dict[str, Figure]:
        return {"learning_curve.png": learning_curve(outcome.history, title)}

    def summary(self, run: RunSummary) -> str:
        final = run.final
        resumed = f" | resumed from step {run.resumed_from_step}" if run.resumed_from_step else ""
        return (
            f"{run.model} on {run.dataset} [{run.profile}, {run.device}]: "
            f"top-1 error {final['test_error']:.2f}% (top-5 {final['test_top5_error']:.2f}%) | "
            f"{int(final['params']):,} params | "
            f"{final['train_images_per_s']:.0f} img/s | {final['wall_time_s']:.0f} s{resumed}"
        )

    def inversion_errors(self, model: nn.Module, data: Any) -> dict[str, float]:
        """``max |inverse(forward(x)) - x|`` over the reversible parts (the whole i-RevNet)."""
        images = next(data.test_batches(4))[0].double()
        errors = list(_reversible_part_errors(model.double().eval(), images))
        return {"inversion_error": max(errors)} if errors else {}

    def render_table(
        self, config: Config, runs: pd.DataFrame, out: Path, tracking_uri: str, published: dict
    ) -> TableRender:
        record = f"runs/{config.name}.csv"
        trained = latest_runs(runs)
        costs = load_gpu_costs(out)
        if config.probe is None:
            table = build_table(config, trained, published)
            markdown = render_markdown(config, table, record, published, costs)
            return TableRender(markdown, table, [])
        probes = latest_runs(runs, kind="probe")
        table = build_architecture_table(config, trained, probes, published)
        markdown = render_architecture_markdown(config, table, record, published, costs)
        return TableRender(markdown, table, [])


def _reversible_part_errors(model: nn.Module, images: torch.Tensor) -> Iterator[float]:
    """``max |inverse(forward(x)) - x|`` of every reversible part, on the inputs it sees."""
    with torch.no_grad():
        if callable(getattr(model, "representation", None)):  # i-RevNet: the whole network
            yield float((model.inverse(model.representation(images)) - images).abs().max())
            return
        seen: list[tuple[ReversibleSequence, torch.Tensor]] = []
        hooks = [
            module.register_forward_pre_hook(lambda m, args: seen.append((m, args[0])))
            for module in model.modules()
            if isinstance(module, ReversibleSequence)
        ]
        model(images)
        for hook in hooks:
            hook.remove()
        for sequence, x in seen:
            yield float((sequence.inverse(sequence(x)) - x).abs().max())
