"""What a task family (classification, density, latent-variable models) tells the runner.

A config names its family with the key ``task``; :data:`benchmarks.tasks.TASKS` maps that name
to one :class:`Task`, and every layer that used to branch on the family (the run, the tables,
the checks before a run, the regression gate) asks the task instead. A task knows its datasets
(names, shapes before loading, where they come from), how to train one of its models on them,
what a finished run reports (figures, the summary line) and how its table is drawn from the
results record. The tracked run around it (MLflow run, checkpoint folder, resume, tags) is
:mod:`benchmarks.run`'s and the same for every task.

Adding a family: a folder ``benchmarks/tasks/<family>/`` whose ``task.py`` subclasses
:class:`Task`, and one line in :data:`benchmarks.tasks.TASKS`.

Example:
    >>> from benchmarks.tasks import TASKS
    >>> task = TASKS["density"]
    >>> task.name, list(task.dataset_names), task.builder_inputs("digits")
    ('density', ['digits', 'cifar10', 'celeba'], {'in_channels': 1, 'image_size': 8})
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Unpack

import pandas as pd
import torch
from matplotlib.figure import Figure
from torch import nn

from benchmarks.config import Config, TrainSettings
from benchmarks.core.loop import FitOptions, TrainingOutcome
from benchmarks.core.profiling import count_parameters

__all__ = ["ReferenceRun", "RunSummary", "TableRender", "Task"]


@dataclass(frozen=True)
class ReferenceRun:
    """A model fitted without training beside a family's rows (the density baseline)."""

    model: str
    row: str  # its row in the table
    params: dict[str, object]
    metrics: dict[str, float]
    summary: str  # the line printed when it is logged


@dataclass(frozen=True)
class RunSummary:
    """What the summary line of a finished training run says about it."""

    model: str
    dataset: str
    profile: str
    device: str  # "cpu" or "cuda"
    seed: int
    final: dict[str, float]
    resumed_from_step: int | None = None


@dataclass(frozen=True)
class TableRender:
    """One config's table: Markdown, the CSV frame, and the figures written beside them."""

    markdown: str
    table: pd.DataFrame
    figures: list[Path]


class Task(ABC):
    """One family of models: its datasets, its training, its report and its table."""

    name: str  # the config's ``task`` value
    gate_metrics: tuple[str, ...]  # the final metrics the regression gate keeps
    gates_first_losses: bool = False  # the gate also keeps the losses of the first two steps
    # ``(model, data, settings, *, checkpoint_path, seed, device, **FitOptions) -> outcome``
    trainer: Callable[..., TrainingOutcome]

    # --- data ------------------------------------------------------------------------------
    @property
    @abstractmethod
    def dataset_names(self) -> Sequence[str]:
        """The datasets this family's runs can load."""

    @abstractmethod
    def builder_inputs(self, dataset: str) -> dict[str, int]:
        """What the run passes a model builder for ``dataset`` besides ``model_args``, known
        before the dataset is loaded (e.g. ``in_channels``)."""

    @abstractmethod
    def check_source(self, dataset: str, data_dir: str | Path | None, download: bool) -> bool:
        """Raise :class:`~benchmarks.errors.DatasetNotFoundError` if ``dataset`` cannot be read
        (without loading it); True if ``download`` will write into ``data_dir``."""

    def fetch(self, dataset: str, data_dir: str | Path) -> None:  # noqa: B027 (optional hook)
        """Download ``dataset`` into ``data_dir`` now (``--download``); most have nothing to."""

    @abstractmethod
    def load_data(
        self,
        dataset: str,
        data_dir: str | Path | None,
        download: bool,
        settings: TrainSettings,
        workers: int | None = None,
    ) -> Any:
        """The dataset cut to the settings' ``train_examples`` and ``test_examples``."""

    @abstractmethod
    def synthetic_data(self, dataset: str, examples: int, settings: TrainSettings) -> Any:
        """Random data of ``dataset``'s shape and type (``examples`` train and test images),
        for timing the real training loop where the dataset is absent (``gpu-report``)."""

    # --- training --------------------------------------------------------------------------
    @abstractmethod
    def model_inputs(self, data: Any) -> dict[str, int]:
        """What a model builder gets from the loaded ``data`` besides ``model_args``."""

    def extra_params(self, data: Any) -> dict[str, object]:
        """MLflow params a run of this family logs beside its settings."""
        return {}

    def reference_run(self, data: Any) -> ReferenceRun | None:
        """A model fitted beside the rows of each dataset (None: the family has none)."""
        return None

    def before_training(
        self, model: nn.Module, data: Any, settings: TrainSettings, device: torch.device
    ) -> dict[str, float]:
        """What is measured of the untrained model (at least its ``params``)."""
        return {"params": float(count_parameters(model))}

    def train(
        self,
        model: nn.Module,
        data: Any,
        settings: TrainSettings,
        *,
        checkpoint_path: str | Path,
        seed: int = 0,
        device: torch.device | str = "cpu",
        **options: Unpack[FitOptions],
    ) -> TrainingOutcome:
        """Train ``model`` on ``data`` with the family's :attr:`trainer` (each one a
        :class:`~benchmarks.core.loop.FitTask` on the shared loop,
        :func:`benchmarks.core.loop.fit`)."""
        return type(self).trainer(
            model,
            data,
            settings,
            checkpoint_path=checkpoint_path,
            seed=seed,
            device=device,
            **options,
        )

    @abstractmethod
    def figures(
        self, model: nn.Module, outcome: TrainingOutcome, title: str, seed: int
    ) -> dict[str, Figure]:
        """``artifact name -> figure`` of the evaluated model (the first is also written
        beside the checkpoint)."""

    @abstractmethod
    def summary(self, run: RunSummary) -> str:
        """The line printed when a run finishes."""

    def inversion_errors(self, model: nn.Module, data: Any) -> dict[str, float]:
        """Float64 reconstruction errors of a trained model for the regression gate, e.g.
        ``{"inversion_error": ...}`` (empty: nothing of this family inverts)."""
        return {}

    # --- table -----------------------------------------------------------------------------
    @abstractmethod
    def render_table(
        self, config: Config, runs: pd.DataFrame, out: Path, tracking_uri: str, published: dict
    ) -> TableRender:
        """The config's table from its record's runs (:mod:`benchmarks.reporting.record`)."""
