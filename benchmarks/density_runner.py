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

from pathlib import Path

import torch

from benchmarks.baselines import fit_pixel_categorical
from benchmarks.checkpoint import load_checkpoint
from benchmarks.config import ResolvedConfig
from benchmarks.density_data import DiscreteImages, load_density_dataset
from benchmarks.density_training import train_density
from benchmarks.plots import bits_per_dim_curve, sample_grid
from benchmarks.profiling import count_parameters
from benchmarks.runner import RunRecord, RunRequest, resolve_device, resolved_yaml
from benchmarks.tracking import TrackedRun, environment_tags, resolve_tracking_uri
from flows.registry import create, get_info

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
        records.append(_baseline(data, resolved, request, device, tracking_uri))
        for model_name in models:
            records.append(_train_one(model_name, data, resolved, request, device, tracking_uri))
    return records


def _tags(
    device: torch.device,
    model: str,
    data: DiscreteImages,
    resolved: ResolvedConfig,
    request: RunRequest,
    kind: str,
) -> dict[str, str]:
    reproduction = resolved.profile == "paper" and data.name in resolved.config.datasets
    return {
        **environment_tags(device),
        "kind": kind,
        "model": model,
        "dataset": data.name,
        "profile": resolved.profile,
        "seed": str(request.seed),
        "table": resolved.config.name,
        "reproduction": "yes" if reproduction and kind == "train" else "no",
    }


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
                **_tags(device, BASELINE, data, resolved, request, "baseline"),
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
    with TrackedRun(tracking_uri, config.name, run_name=label, run_id=run_id) as run:
        run.set_tags(
            {
                **_tags(device, model_name, data, resolved, request, "train"),
                "table_row": info.row,
                "task": info.task,
                "paper": info.paper,
            }
        )
        run.log_params(
            {
                **resolved.as_params(model_name),
                **{f"model.{key}": value for key, value in model_args.items()},
                "model": model_name,
                "dataset": data.name,
                "dataset_description": data.description,
                "levels": data.levels,
                "seed": request.seed,
            }
        )
        run.log_text(resolved_yaml(resolved, model_name, data.name), "config.yaml")
        params = count_parameters(model)
        outcome = train_density(
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
        title = f"{model_name} on {data.name} ({resolved.profile}, {outcome.steps} steps)"
        figure = _sample_figure(outcome.evaluation_model or model, title, request.seed)
        figure.savefig(checkpoint_path.parent / "samples.png", dpi=110)
        run.log_figure(figure, "samples.png")
        if outcome.history:
            run.log_figure(bits_per_dim_curve(outcome.history, title), "learning_curve.png")
    iw = (
        f" | IW bound (S={int(final['iw_samples'])}) {final['test_bpd_iw']:.3f}"
        if "test_bpd_iw" in final
        else ""
    )
    print(
        f"{model_name} on {data.name} [{resolved.profile}, {device.type}]: "
        f"test {final['test_bpd']:.3f} bits/dim{iw} | {params:,} params | "
        f"{final['train_images_per_s']:.0f} img/s | {final['wall_time_s']:.0f} s"
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
