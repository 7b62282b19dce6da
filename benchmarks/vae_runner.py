"""Run the latent-variable rows of a config: each VAE on each dataset, logged to MLflow.

Each model is built with the profile's ``model_args`` for the dataset's image shape, trained
by :func:`~benchmarks.vae_training.train_vae`, and a grid of 64 samples (Bernoulli means of
``p(x | z)``, ``z ~ N(0, I)``) is logged as ``samples.png``.

Example:
    >>> import tempfile
    >>> from benchmarks.config import load_config
    >>> folder = tempfile.mkdtemp()
    >>> request = RunRequest("configs/vae.yaml", profile="smoke", models=["vae_mnist"],
    ...                      runs_dir=folder, tracking_uri=f"sqlite:///{folder}/mlflow.db",
    ...                      progress=False)
    >>> records = run_vae_config(request, load_config(request.config_path).resolve("smoke"))
    ... # doctest: +ELLIPSIS
    vae_mnist on digits [smoke, cpu, seed 0]: test ELBO ... nats | log p(x) ...
    >>> [record.model for record in records]
    ['vae_mnist']
"""

from __future__ import annotations

import torch
from matplotlib.figure import Figure
from torch import nn

from benchmarks.config import ResolvedConfig
from benchmarks.generative_runner import train_tracked
from benchmarks.plots import sample_grid
from benchmarks.runner import RunRecord, RunRequest, resolve_device
from benchmarks.tracking import resolve_tracking_uri
from benchmarks.training import TrainingOutcome
from benchmarks.vae_data import BinaryImages, load_binary_dataset
from benchmarks.vae_training import train_vae

__all__ = ["run_vae_config"]


def run_vae_config(request: RunRequest, resolved: ResolvedConfig) -> list[RunRecord]:
    """Train every requested VAE on every requested dataset (one seed: ``request.seed``)."""
    models = request.models or resolved.models
    datasets = [request.dataset] if request.dataset else resolved.datasets
    device = resolve_device(request.device)
    tracking_uri = resolve_tracking_uri(request.tracking_uri)
    records = []
    for dataset_name in datasets:
        settings = resolved.training
        data = load_binary_dataset(dataset_name, request.data_dir, request.download).subset(
            settings.train_examples, settings.test_examples
        )
        for model_name in models:
            records.append(_train_one(model_name, data, resolved, request, device, tracking_uri))
    return records


def _train_one(
    model_name: str,
    data: BinaryImages,
    resolved: ResolvedConfig,
    request: RunRequest,
    device: torch.device,
    tracking_uri: str,
) -> RunRecord:
    def figures(model: nn.Module, outcome: TrainingOutcome, title: str) -> dict[str, Figure]:
        torch.manual_seed(request.seed)
        samples = model.eval().sample(64).cpu()
        return {"samples.png": sample_grid({1.0: samples}, title)}

    record = train_tracked(
        model_name, data, resolved, request, device, tracking_uri, train_vae, figures
    )
    final = record.metrics
    if request.shard.is_main:
        print(
            f"{model_name} on {data.name} [{resolved.profile}, {device.type}, "
            f"seed {request.seed}]: test ELBO {final['test_elbo']:.2f} nats | log p(x) "
            f"{final['test_log_px']:.2f} (k={int(final['iw_samples'])}) | "
            f"{int(final['params']):,} params | {final['wall_time_s']:.0f} s"
        )
    return record
