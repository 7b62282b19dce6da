"""Run the density rows of a config: the per-pixel baseline, then each flow; log to MLflow.

For every dataset the independent per-pixel categorical baseline
(:mod:`benchmarks.baselines`) is fitted and logged first (model ``pixel_categorical``, tag
``kind=baseline``), so that every flow row has its reference measured on the same split. Each
flow is then built with the profile's ``model_args``, trained by
:func:`~benchmarks.density_training.train_density`, and its sample grids at temperatures 0.7 and
1.0 are drawn from the evaluated weights and logged as ``samples.png`` (also written beside the
checkpoint).

Example:
    >>> import tempfile
    >>> from benchmarks.config import load_config
    >>> folder = tempfile.mkdtemp()
    >>> request = RunRequest("configs/density.yaml", profile="smoke", models=["glow_cifar10"],
    ...                      runs_dir=folder, tracking_uri=f"sqlite:///{folder}/mlflow.db",
    ...                      progress=False)
    >>> records = run_density_config(request, load_config(request.config_path).resolve("smoke"))
    ... # doctest: +ELLIPSIS
    pixel_categorical on digits: test ... bits/dim
    glow_cifar10 on digits [smoke, cpu]: test ... bits/dim ...
    >>> [record.model for record in records]
    ['pixel_categorical', 'glow_cifar10']
"""

from __future__ import annotations

import torch
from matplotlib.figure import Figure
from torch import nn

from benchmarks.baselines import fit_pixel_categorical
from benchmarks.config import ResolvedConfig
from benchmarks.density_data import DiscreteImages, load_density_dataset
from benchmarks.density_training import train_density
from benchmarks.generative_runner import run_tags, train_tracked
from benchmarks.plots import bits_per_dim_curve, sample_grid
from benchmarks.runner import RunRecord, RunRequest, resolve_device
from benchmarks.tracking import TrackedRun, resolve_tracking_uri
from benchmarks.training import TrainingOutcome

__all__ = ["BASELINE", "SAMPLE_TEMPERATURES", "run_density_config"]

BASELINE = "pixel_categorical"
SAMPLE_TEMPERATURES = (0.7, 1.0)


def run_density_config(request: RunRequest, resolved: ResolvedConfig) -> list[RunRecord]:
    """Fit the baseline and train every requested flow on every requested dataset."""
    models = request.models or resolved.models
    datasets = [request.dataset] if request.dataset else resolved.datasets
    device = resolve_device(request.device)
    tracking_uri = resolve_tracking_uri(request.tracking_uri)
    records = []
    for dataset_name in datasets:
        settings = resolved.training
        data = load_density_dataset(dataset_name, request.data_dir, request.download).subset(
            settings.train_examples, settings.test_examples
        )
        if request.shard.is_main:
            records.append(_baseline(data, resolved, request, device, tracking_uri))
        for model_name in models:
            records.append(_train_one(model_name, data, resolved, request, device, tracking_uri))
    return records


def _baseline(
    data: DiscreteImages,
    resolved: ResolvedConfig,
    request: RunRequest,
    device: torch.device,
    tracking_uri: str,
) -> RunRecord:
    baseline = fit_pixel_categorical(data.train, data.levels)
    metrics = {
        "test_bpd": float(baseline.bits_per_dim(data.test).mean()),
        "train_bpd": float(baseline.bits_per_dim(data.train).mean()),
        "params": float(baseline.log_probs.numel()),
    }
    label = f"{BASELINE}-{data.name}-{resolved.profile}"
    with TrackedRun(tracking_uri, resolved.config.name, run_name=label) as run:
        run.set_tags(
            {
                **run_tags(device, BASELINE, data.name, resolved, request, "baseline"),
                "table_row": "per-pixel categorical (baseline)",
            }
        )
        run.log_params(
            {
                "levels": data.levels,
                "smoothing": 1.0,
                "dataset": data.name,
                "dataset_description": data.description,
            }
        )
        run.log_metrics(metrics)
    print(f"{BASELINE} on {data.name}: test {metrics['test_bpd']:.3f} bits/dim")
    return RunRecord(
        BASELINE, data.name, resolved.profile, device.type, request.seed, 0, run.run_id, metrics
    )


@torch.no_grad()
def _sample_figure(model: torch.nn.Module, title: str, seed: int) -> object:
    model.eval()
    torch.manual_seed(seed)
    samples = {t: model.sample(64, temperature=t) for t in SAMPLE_TEMPERATURES}
    return sample_grid(samples, title)


def _train_one(
    model_name: str,
    data: DiscreteImages,
    resolved: ResolvedConfig,
    request: RunRequest,
    device: torch.device,
    tracking_uri: str,
) -> RunRecord:
    def figures(model: nn.Module, outcome: TrainingOutcome, title: str) -> dict[str, Figure]:
        drawn = {"samples.png": _sample_figure(model, title, request.seed)}
        if outcome.history:
            drawn["learning_curve.png"] = bits_per_dim_curve(outcome.history, title)
        return drawn

    record = train_tracked(
        model_name,
        data,
        resolved,
        request,
        device,
        tracking_uri,
        train_density,
        figures,
        {"levels": data.levels},
    )
    final, params = record.metrics, int(record.metrics["params"])
    iw = (
        f" | IW bound (S={int(final['iw_samples'])}) {final['test_bpd_iw']:.3f}"
        if "test_bpd_iw" in final
        else ""
    )
    if request.shard.is_main:
        print(
            f"{model_name} on {data.name} [{resolved.profile}, {device.type}]: "
            f"test {final['test_bpd']:.3f} bits/dim{iw} | {params:,} params | "
            f"{final['train_images_per_s']:.0f} img/s | {final['wall_time_s']:.0f} s"
        )
    return record
