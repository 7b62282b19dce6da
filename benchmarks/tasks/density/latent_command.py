"""``python -m benchmarks latent-figures CONFIG --model NAME``: the Glow paper's qualitative
figures (:mod:`benchmarks.tasks.density.latent_figures`) for a trained run of a config.

The weights are those of the latest FINISHED MLflow run of the committed config's row
(model, dataset, profile, seed 0; its ``checkpoint`` tag names the file, and the evaluated
weights, the EMA where the recipe keeps one, are used), or of ``--checkpoint PATH``. The three
figures go to ``results/density_<figure>_<model>_<dataset>_<profile>.png`` and, for a found
run, are logged to that run as artifacts (``latent/<figure>.png``), with the bits/dim of the
samples at each temperature as metrics. Every input is checked before anything is loaded
(the caller checks ``--out`` and the tracking store first, as the CLI and ``bench`` do).

Example:
    >>> request = LatentRequest("configs/density.yaml", "glow_cifar10")  # doctest: +SKIP
    >>> run_latent_figures(request)  # doctest: +SKIP
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from benchmarks.config import ResolvedConfig, load_config
from benchmarks.core.checkpoint import load_checkpoint
from benchmarks.core.files import write_bytes_atomic
from benchmarks.errors import BenchmarkError, CheckpointError
from benchmarks.reporting.record import committed_config, store_runs
from benchmarks.reporting.tracking import quiet_mlflow, resolve_tracking_uri
from benchmarks.tasks.density.data import DENSITY_SHAPES, check_density_source, load_density_dataset
from benchmarks.tasks.density.latent_figures import digit_labels, draw_latent_figures
from flows.models.image_flow import ImageFlow
from flows.registry import create, get_info

__all__ = ["LatentRequest", "check_latent_request", "figure_path", "run_latent_figures"]


@dataclass(frozen=True)
class LatentRequest:
    """Which trained model to draw, and where from and to."""

    config_path: str
    model: str
    profile: str = "quick"
    dataset: str | None = None  # default: the profile's first dataset
    checkpoint: Path | None = None  # default: the latest finished run's
    data_dir: Path | None = None
    out: Path = Path("results")
    tracking_uri: str | None = None


@dataclass(frozen=True)
class _Plan:
    resolved: ResolvedConfig
    dataset: str
    checkpoint: Path
    run_id: str | None


def figure_path(out: Path, figure: str, model: str, dataset: str, profile: str) -> Path:
    """``out/density_<figure>_<model>_<dataset>_<profile>.png``."""
    return out / f"density_{figure}_{model}_{dataset}_{profile}.png"


def check_latent_request(request: LatentRequest) -> _Plan:
    """Check every input (one :class:`BenchmarkError` naming the problem and its fix)."""
    config = load_config(request.config_path)
    if config.task != "density":
        raise BenchmarkError(
            f"{request.config_path} is a {config.task} config: latent figures need a density "
            "config such as configs/density.yaml"
        )
    if request.model not in config.models:
        raise BenchmarkError(
            f"--model {request.model} is not a row of {request.config_path}; its models: "
            f"{', '.join(config.models)}"
        )
    resolved = config.resolve(request.profile)
    dataset = request.dataset or resolved.datasets[0]
    if dataset not in DENSITY_SHAPES:
        raise BenchmarkError(
            f"--dataset {dataset}: no density dataset of that name; choose one of "
            f"{', '.join(DENSITY_SHAPES)}"
        )
    check_density_source(dataset, request.data_dir, download=False)
    if request.checkpoint is not None:
        if not Path(request.checkpoint).is_file():
            raise CheckpointError(f"--checkpoint {request.checkpoint}: no such file")
        return _Plan(resolved, dataset, Path(request.checkpoint), None)
    run_id, checkpoint = _latest_finished_run(request, config.name, dataset)
    return _Plan(resolved, dataset, checkpoint, run_id)


def _latest_finished_run(
    request: LatentRequest, config_name: str, dataset: str
) -> tuple[str, Path]:
    """The latest FINISHED run of the committed config's row and its checkpoint file."""
    import mlflow

    quiet_mlflow()
    uri = resolve_tracking_uri(request.tracking_uri)
    config = committed_config(request.config_path)
    runs = store_runs(uri, config_name)
    train_hint = (
        f"train it with `python -m benchmarks run {request.config_path} --profile "
        f"{request.profile} --models {request.model}` (or pass --checkpoint PATH)"
    )
    if config is None or runs.empty:
        raise BenchmarkError(
            f"no finished run of {request.model} on {dataset} ({request.profile}) of the "
            f"committed {request.config_path} in {uri}: {train_hint}"
        )
    chosen = runs[
        (runs["tags.kind"] == "train")
        & (runs["tags.model"] == request.model)
        & (runs["tags.dataset"] == dataset)
        & (runs["tags.profile"] == request.profile)
        & (runs["tags.seed"].astype(str) == "0")
    ].sort_values("end_time", ascending=False)
    digest = config.resolve(request.profile).row_digest(request.model, dataset)
    for _, run in chosen.iterrows():
        if run.get("tags.config_digest") != digest:  # a run of other settings
            continue
        tags = mlflow.MlflowClient(uri).get_run(run["run_id"]).data.tags
        checkpoint = Path(tags.get("checkpoint", ""))
        if checkpoint.is_file():
            return str(run["run_id"]), checkpoint
        raise CheckpointError(
            f"the latest finished run {run['run_id']} of {request.model} names the checkpoint "
            f"{checkpoint}, which is not there: {train_hint}"
        )
    raise BenchmarkError(
        f"no finished run of {request.model} on {dataset} ({request.profile}) with the "
        f"committed settings of {request.config_path} in {uri}: {train_hint}"
    )


def _trained_flow(request: LatentRequest, plan: _Plan) -> nn.Module:
    """The model of the row with the checkpoint's evaluated weights (its EMA, if kept)."""
    channels, side = DENSITY_SHAPES[plan.dataset]
    model = create(
        request.model,
        in_channels=channels,
        image_size=side,
        **plan.resolved.model_kwargs(request.model),
    )
    if not isinstance(model, ImageFlow):
        raise BenchmarkError(f"--model {request.model} is not an image flow with encode/decode")
    state = load_checkpoint(plan.checkpoint)
    weights = state.get("ema") or state.get("model")
    try:
        model.load_state_dict(weights)
    except (RuntimeError, TypeError) as error:
        raise CheckpointError(
            f"{plan.checkpoint}: not weights of {request.model} with the {request.profile} "
            f"profile's settings ({str(error).splitlines()[0]})"
        ) from None
    return model.eval()


def run_latent_figures(request: LatentRequest) -> list[Path]:
    """Draw, write and (for a found run) log the three figures; returns the files written."""
    plan = check_latent_request(request)
    model = _trained_flow(request, plan)
    data = load_density_dataset(plan.dataset, request.data_dir)
    row = get_info(request.model).row
    title = f"{row} ({request.model}) on {plan.dataset}, {request.profile} profile"
    drawn = draw_latent_figures(model, data, digit_labels(data), title)
    request.out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, figure in drawn.figures.items():
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=110)
        path = figure_path(request.out, name, request.model, plan.dataset, request.profile)
        write_bytes_atomic(path, buffer.getvalue())
        written.append(path)
    if plan.run_id is not None:
        _log_to_run(request, plan.run_id, drawn.figures, drawn.metrics)
    return written


def _log_to_run(request: LatentRequest, run_id: str, figures: dict, metrics: dict) -> None:
    import mlflow

    client = mlflow.MlflowClient(resolve_tracking_uri(request.tracking_uri))
    for name, figure in figures.items():
        client.log_figure(run_id, figure, f"latent/{name}.png")
    for key, value in metrics.items():
        client.log_metric(run_id, f"latent_{key}", value)
