"""The latent-variable family: VAEs with and without inverse autoregressive flow.

Each model is built with the profile's ``model_args`` for the dataset's image shape, trained
by :func:`~benchmarks.tasks.vae.training.train_vae` (ELBO; importance-weighted log-likelihood
at the end), and a grid of 64 samples (Bernoulli means of ``p(x | z)``, ``z ~ N(0, I)``) is
logged as ``samples.png``. The table gives mean and spread over the seeds, beside Kingma et al.
(2016), and the posterior figure of ``python -m benchmarks posterior-figure`` when it exists.

Example:
    >>> task = VAETask()
    >>> task.builder_inputs("mnist")
    {'in_channels': 1, 'image_size': 28}
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import torch
from matplotlib.figure import Figure
from torch import nn

from benchmarks.config import Config, TrainSettings
from benchmarks.core.loop import TrainingOutcome
from benchmarks.reporting.gpu_cost import load_gpu_costs
from benchmarks.reporting.plots import sample_grid
from benchmarks.reporting.record import latest_runs
from benchmarks.tasks.base import RunSummary, TableRender, Task
from benchmarks.tasks.vae.data import (
    BINARY_DATASETS,
    BINARY_SHAPES,
    BinaryImages,
    check_binary_source,
    fetch_mnist,
    load_binary_dataset,
)
from benchmarks.tasks.vae.table import build_vae_table, render_vae_markdown
from benchmarks.tasks.vae.training import train_vae

__all__ = ["POSTERIOR_FIGURE", "VAETask"]

POSTERIOR_FIGURE = "vae_posteriors.png"  # under results/, by ``posterior-figure``


class VAETask(Task):
    """Variational autoencoders on binarised images (see the module docstring)."""

    name = "latent-variable"
    gate_metrics = ("test_elbo", "test_log_px")
    trainer = staticmethod(train_vae)

    @property
    def dataset_names(self) -> Sequence[str]:
        return list(BINARY_DATASETS)

    def builder_inputs(self, dataset: str) -> dict[str, int]:
        channels, size = BINARY_SHAPES[dataset]
        return {"in_channels": channels, "image_size": size}

    def check_source(self, dataset: str, data_dir: str | Path | None, download: bool) -> bool:
        return check_binary_source(dataset, data_dir, download)

    def fetch(self, dataset: str, data_dir: str | Path) -> None:
        if dataset == "mnist":
            fetch_mnist(data_dir)

    def load_data(
        self,
        dataset: str,
        data_dir: str | Path | None,
        download: bool,
        settings: TrainSettings,
        workers: int | None = None,
    ) -> BinaryImages:
        return load_binary_dataset(dataset, data_dir, download).subset(
            settings.train_examples, settings.test_examples
        )

    def synthetic_data(self, dataset: str, examples: int, settings: TrainSettings) -> BinaryImages:
        channels, side = BINARY_SHAPES[dataset]
        generator = torch.Generator().manual_seed(0)
        shape = (examples, channels, side, side)
        return BinaryImages(
            name=dataset,
            train=torch.rand(shape, generator=generator),
            test=torch.rand(shape, generator=generator).round(),
            description=f"random {channels}x{side}x{side} intensities in {dataset}'s shape "
            "(timing only)",
        )

    def model_inputs(self, data: BinaryImages) -> dict[str, int]:
        return {"in_channels": data.channels, "image_size": data.image_size}

    def figures(
        self, model: nn.Module, outcome: TrainingOutcome, title: str, seed: int
    ) -> dict[str, Figure]:
        torch.manual_seed(seed)
        samples = model.eval().sample(64).cpu()
        return {"samples.png": sample_grid({1.0: samples}, title)}

    def summary(self, run: RunSummary) -> str:
        final = run.final
        return (
            f"{run.model} on {run.dataset} [{run.profile}, {run.device}, "
            f"seed {run.seed}]: test ELBO {final['test_elbo']:.2f} nats | log p(x) "
            f"{final['test_log_px']:.2f} (k={int(final['iw_samples'])}) | "
            f"{int(final['params']):,} params | {final['wall_time_s']:.0f} s"
        )

    def render_table(
        self, config: Config, runs: pd.DataFrame, out: Path, tracking_uri: str, published: dict
    ) -> TableRender:
        seed_runs = latest_runs(runs, per_seed=True)
        table = build_vae_table(config, seed_runs, published)
        markdown = render_vae_markdown(
            config, table, seed_runs, f"runs/{config.name}.csv", published, load_gpu_costs(out)
        )
        figure = out / POSTERIOR_FIGURE
        if figure.exists():
            markdown += (
                "\n## Posteriors of a 2-D latent VAE on four data points\n\n"
                "`python -m benchmarks posterior-figure` (the lecture's figure, Kingma et al. "
                "2016 Fig. 2): factorised Gaussian against IAF posteriors, posterior samples "
                "of each data point in its colour, beside the prior.\n\n"
                f"![posteriors]({figure.name})\n"
            )
        return TableRender(markdown, table, [])
