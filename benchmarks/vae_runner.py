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

from pathlib import Path

import torch

from benchmarks.checkpoint import load_checkpoint
from benchmarks.config import ResolvedConfig
from benchmarks.plots import sample_grid
from benchmarks.profiling import count_parameters
from benchmarks.runner import RunRecord, RunRequest, resolve_device, resolved_yaml
from benchmarks.tracking import TrackedRun, environment_tags, resolve_tracking_uri
from benchmarks.vae_data import BinaryImages, load_binary_dataset
from benchmarks.vae_training import train_vae
from flows.registry import create, get_info

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
    config, settings = resolved.config, resolved.training_for(model_name)
    info = get_info(model_name)
    label = f"{model_name}-{data.name}-{resolved.profile}-seed{request.seed}"
    checkpoint_path = Path(request.runs_dir) / config.name / label / "last.pt"
    run_id = None
    if request.resume and checkpoint_path.exists():
        run_id = load_checkpoint(checkpoint_path)["extra"].get("mlflow_run_id")
    torch.manual_seed(request.seed)
    model_args = resolved.model_kwargs(model_name)
    model = create(model_name, in_channels=data.channels, image_size=data.image_size, **model_args)
    reproduction = resolved.profile == "paper" and data.name in config.datasets
    with TrackedRun(tracking_uri, config.name, run_name=label, run_id=run_id) as run:
        run.set_tags(
            {
                **environment_tags(device),
                "kind": "train",
                "model": model_name,
                "dataset": data.name,
                "profile": resolved.profile,
                "seed": str(request.seed),
                "table": config.name,
                "table_row": info.row,
                "task": info.task,
                "paper": info.paper,
                "reproduction": "yes" if reproduction else "no",
            }
        )
        run.log_params(
            {
                **resolved.as_params(model_name),
                **{f"model.{key}": value for key, value in model_args.items()},
                "model": model_name,
                "dataset": data.name,
                "dataset_description": data.description,
                "seed": request.seed,
            }
        )
        run.log_text(resolved_yaml(resolved, model_name, data.name), "config.yaml")
        params = count_parameters(model)
        outcome = train_vae(
            model,
            data,
            settings,
            checkpoint_path=checkpoint_path,
            seed=request.seed,
            device=device,
            resume=request.resume,
            log_metrics=run.log_metrics,
            extra_state={"mlflow_run_id": run.run_id},
            progress=request.progress,
        )
        final = {
            **outcome.final,
            "params": float(params),
            "wall_time_s": outcome.wall_time_s,
            "steps": float(outcome.steps),
            "train_images_per_s": outcome.train_images_per_s,
        }
        run.log_metrics(final, step=outcome.steps)
        evaluated = outcome.evaluation_model or model
        torch.manual_seed(request.seed)
        samples = evaluated.eval().sample(64).cpu()
        title = f"{model_name} on {data.name} ({resolved.profile}, {outcome.steps} steps)"
        figure = sample_grid({1.0: samples}, title)
        figure.savefig(checkpoint_path.parent / "samples.png", dpi=110)
        run.log_figure(figure, "samples.png")
    print(
        f"{model_name} on {data.name} [{resolved.profile}, {device.type}, seed {request.seed}]: "
        f"test ELBO {final['test_elbo']:.2f} nats | log p(x) {final['test_log_px']:.2f} "
        f"(k={int(final['iw_samples'])}) | {params:,} params | {final['wall_time_s']:.0f} s"
    )
    return RunRecord(
        model_name,
        data.name,
        resolved.profile,
        device.type,
        request.seed,
        outcome.steps,
        run.run_id,
        final,
    )
