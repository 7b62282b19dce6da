"""One tracked training run of a generative model (a flow or a VAE), shared by their runners.

:func:`train_tracked` checks the run folder (no checkpoint without ``--resume``; with it, the
checkpoint's settings; see :func:`~benchmarks.runner.resumed_run_id`), builds the model with the
profile's ``model_args``, opens (or, with ``--resume``, reopens) its MLflow run, tagged with the
checkpoint's path, logs tags, params and the resolved config, trains it with
the given function (:func:`~benchmarks.density_training.train_density` or
:func:`~benchmarks.vae_training.train_vae`), logs the final metrics and the figures the caller
draws from the evaluated model (saving the first beside the checkpoint), and returns the
:class:`~benchmarks.runner.RunRecord`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from matplotlib.figure import Figure
from torch import nn

from benchmarks.config import ResolvedConfig
from benchmarks.profiling import count_parameters
from benchmarks.runner import (
    RunRecord,
    RunRequest,
    checkpoint_path_for,
    open_run,
    provenance_tags,
    resolved_yaml,
    resumed_run_id,
    run_label,
)
from benchmarks.tracking import environment_tags
from benchmarks.training import TrainingOutcome
from flows.registry import create, get_info

__all__ = ["FigureMaker", "run_tags", "train_tracked"]

FigureMaker = Callable[[nn.Module, TrainingOutcome, str], dict[str, Figure]]


def run_tags(
    device: torch.device,
    model: str,
    dataset: str,
    resolved: ResolvedConfig,
    request: RunRequest,
    kind: str,
) -> dict[str, str]:
    """The MLflow tags every run of a table carries (environment, row, profile, seed)."""
    reproduction = resolved.profile == "paper" and dataset in resolved.config.datasets
    return {
        **environment_tags(device),
        "kind": kind,
        "model": model,
        "dataset": dataset,
        "profile": resolved.profile,
        "seed": str(request.seed),
        "table": resolved.config.name,
        "reproduction": "yes" if reproduction and kind == "train" else "no",
        **provenance_tags(resolved, model, dataset),
    }


def train_tracked(
    model_name: str,
    data: Any,
    resolved: ResolvedConfig,
    request: RunRequest,
    device: torch.device,
    tracking_uri: str,
    train: Callable[..., TrainingOutcome],
    figures: FigureMaker,
    extra_params: dict[str, object] | None = None,
) -> RunRecord:
    """Train ``model_name`` on ``data`` (see the module docstring); ``figures`` gets the
    evaluated model, the outcome and a title, and returns ``artifact name -> figure``."""
    config, settings = resolved.config, resolved.training_for(model_name)
    info = get_info(model_name)
    label = run_label(model_name, data.name, resolved.profile, request.seed)
    checkpoint_path = checkpoint_path_for(request, config.name, label)
    run_id = resumed_run_id(checkpoint_path, request, settings)
    torch.manual_seed(request.seed)
    model_args = resolved.model_kwargs(model_name)
    model = create(model_name, in_channels=data.channels, image_size=data.image_size, **model_args)
    with open_run(request.shard, tracking_uri, config.name, label, run_id, checkpoint_path) as run:
        run.set_tags(
            {
                **run_tags(device, model_name, data.name, resolved, request, "train"),
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
                **(extra_params or {}),
                "seed": request.seed,
            }
        )
        run.log_text(resolved_yaml(resolved, model_name, data.name), "config.yaml")
        params = count_parameters(model)
        outcome = train(
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
            shard=request.shard,
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
        evaluated = outcome.evaluation_model or model
        drawn = figures(evaluated, outcome, title) if request.shard.is_main else {}
        for index, (name, figure) in enumerate(drawn.items()):
            if index == 0:
                figure.savefig(checkpoint_path.parent / name, dpi=110)
            run.log_figure(figure, name)
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
