"""The density family: RealNVP, Glow and Flow++ in bits/dim, beside a per-pixel baseline.

For every dataset the independent per-pixel categorical baseline
(:mod:`benchmarks.tasks.density.baseline`) is fitted and logged first (model
``pixel_categorical``, tag ``kind=baseline``), so that every flow row has its reference
measured on the same split. Each flow is trained by
:func:`~benchmarks.tasks.density.training.train_density`, and its sample grids at temperatures
0.7 and 1.0 are drawn from the evaluated weights (``samples.png``, also written beside the
checkpoint). The table is the bits/dim table, or for a config with ``layout: ablation`` the
Flow++ ablation and dequantization table with its importance-weighted bound curve.

Example:
    >>> task = DensityTask()
    >>> task.builder_inputs("cifar10")
    {'in_channels': 3, 'image_size': 32}
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
from benchmarks.reporting.plots import bits_per_dim_curve, sample_grid
from benchmarks.reporting.record import latest_runs
from benchmarks.tasks.base import ReferenceRun, RunSummary, TableRender, Task
from benchmarks.tasks.density.ablation_table import (
    build_ablation_table,
    build_bound_curve,
    render_ablation_markdown,
    write_bound_figure,
)
from benchmarks.tasks.density.baseline import BASELINE, fit_pixel_categorical
from benchmarks.tasks.density.bits import uniform_dequantize
from benchmarks.tasks.density.data import (
    DENSITY_DATASETS,
    DENSITY_LEVELS,
    DENSITY_SHAPES,
    DiscreteImages,
    check_density_source,
    load_density_dataset,
)
from benchmarks.tasks.density.table import (
    build_density_table,
    copy_sample_grids,
    render_density_markdown,
)
from benchmarks.tasks.density.training import train_density
from flows.testing import brute_force_logdet

__all__ = ["SAMPLE_TEMPERATURES", "DensityTask"]

SAMPLE_TEMPERATURES = (0.7, 1.0)


class DensityTask(Task):
    """Flows trained by maximum likelihood on dequantized images (see the module docstring)."""

    name = "density"
    gate_metrics = ("test_bpd", "test_bpd_iw")
    trainer = staticmethod(train_density)

    @property
    def dataset_names(self) -> Sequence[str]:
        return list(DENSITY_DATASETS)

    def builder_inputs(self, dataset: str) -> dict[str, int]:
        channels, size = DENSITY_SHAPES[dataset]
        return {"in_channels": channels, "image_size": size}

    def check_source(self, dataset: str, data_dir: str | Path | None, download: bool) -> bool:
        return check_density_source(dataset, data_dir, download)

    def load_data(
        self,
        dataset: str,
        data_dir: str | Path | None,
        download: bool,
        settings: TrainSettings,
        workers: int | None = None,
    ) -> DiscreteImages:
        return load_density_dataset(dataset, data_dir, download).subset(
            settings.train_examples, settings.test_examples
        )

    def synthetic_data(
        self, dataset: str, examples: int, settings: TrainSettings
    ) -> DiscreteImages:
        channels, side = DENSITY_SHAPES[dataset]
        levels = DENSITY_LEVELS[dataset]
        generator = torch.Generator().manual_seed(0)
        shape = (examples, channels, side, side)
        return DiscreteImages(
            name=dataset,
            train=torch.randint(0, levels, shape, generator=generator, dtype=torch.uint8),
            test=torch.randint(0, levels, shape, generator=generator, dtype=torch.uint8),
            levels=levels,
            hflip=True,
            description=f"random {channels}x{side}x{side} images of {levels} levels in "
            f"{dataset}'s shape (timing only)",
        )

    def model_inputs(self, data: DiscreteImages) -> dict[str, int]:
        return {"in_channels": data.channels, "image_size": data.image_size}

    def extra_params(self, data: DiscreteImages) -> dict[str, object]:
        return {"levels": data.levels}

    def reference_run(self, data: DiscreteImages) -> ReferenceRun:
        baseline = fit_pixel_categorical(data.train, data.levels)
        metrics = {
            "test_bpd": float(baseline.bits_per_dim(data.test).mean()),
            "train_bpd": float(baseline.bits_per_dim(data.train).mean()),
            "params": float(baseline.log_probs.numel()),
        }
        return ReferenceRun(
            model=BASELINE,
            row="per-pixel categorical (baseline)",
            params={
                "levels": data.levels,
                "smoothing": 1.0,
                "dataset": data.name,
                "dataset_description": data.description,
            },
            metrics=metrics,
            summary=f"{BASELINE} on {data.name}: test {metrics['test_bpd']:.3f} bits/dim",
        )

    def figures(
        self, model: nn.Module, outcome: TrainingOutcome, title: str, seed: int
    ) -> dict[str, Figure]:
        drawn = {"samples.png": _sample_figure(model, title, seed)}
        if outcome.history:
            drawn["learning_curve.png"] = bits_per_dim_curve(outcome.history, title)
        return drawn

    def summary(self, run: RunSummary) -> str:
        final = run.final
        iw = (
            f" | IW bound (S={int(final['iw_samples'])}) {final['test_bpd_iw']:.3f}"
            if "test_bpd_iw" in final
            else ""
        )
        return (
            f"{run.model} on {run.dataset} [{run.profile}, {run.device}]: "
            f"test {final['test_bpd']:.3f} bits/dim{iw} | {int(final['params']):,} params | "
            f"{final['train_images_per_s']:.0f} img/s | {final['wall_time_s']:.0f} s"
        )

    def inversion_errors(self, model: nn.Module, data: DiscreteImages) -> dict[str, float]:
        """Float64 ``max |decode(encode(y)) - y|`` and log-det error against the brute-force
        Jacobian on two dequantized test images."""
        model = model.double().eval()
        x = next(data.test_batches(2))
        y = uniform_dequantize(x, data.levels, torch.Generator().manual_seed(0)).double()
        with torch.no_grad():
            z, logdet = model.encode(y)
            back = model.decode(z)
        reference = brute_force_logdet(lambda v: model.encode(v)[0], y)
        return {
            "inversion_error": float((back - y).abs().max()),
            "logdet_error": float((logdet - reference).abs().max()),
        }

    def render_table(
        self, config: Config, runs: pd.DataFrame, out: Path, tracking_uri: str, published: dict
    ) -> TableRender:
        record = f"runs/{config.name}.csv"
        if config.layout == "ablation":
            seed_runs = latest_runs(runs, per_seed=True)
            table = build_ablation_table(config, seed_runs, published)
            curve = build_bound_curve(config, seed_runs)
            out.mkdir(parents=True, exist_ok=True)
            figure = write_bound_figure(curve, out / f"{config.name}_iw_bound.png")
            markdown = render_ablation_markdown(config, table, curve, record, published, figure)
            return TableRender(markdown, table, [figure] if figure is not None else [])
        table = build_density_table(config, latest_runs(runs), published)
        grids = copy_sample_grids(table, tracking_uri, out)
        costs = load_gpu_costs(out)
        markdown = render_density_markdown(config, table, record, published, grids, costs)
        files = [path for figures in grids.values() for path in figures.values()]
        return TableRender(markdown, table, files)


@torch.no_grad()
def _sample_figure(model: nn.Module, title: str, seed: int) -> Figure:
    model.eval()
    torch.manual_seed(seed)
    samples = {t: model.sample(64, temperature=t) for t in SAMPLE_TEMPERATURES}
    return sample_grid(samples, title)
