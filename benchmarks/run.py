"""Run a config: one tracked run per model, dataset and seed, the same for every task family.

The config's task (:data:`benchmarks.tasks.TASKS`) says how its data load, how its models train and
what they report; this module does the rest the same way for all: the checks before any work, the
MLflow run with its tags, params and resolved settings, the checkpoint folder and ``--resume``, the
final metrics, figures and summary line. Every run is recorded with its model, dataset, profile,
device, steps, seed, git revision and wall time, so that the table compiler can say exactly where
each number came from. Checkpoints live in
``runs/<config>/<model>-<dataset>-<profile>-seed<seed>/last.pt``; ``resume=True`` continues a killed
run there (and its MLflow run) to the same final result, after checking that the checkpoint's
settings match (a refused resume leaves the MLflow run as it was).

Before the first run trains, :func:`run_config` locks the folder of every run it will train
(one process per folder) and refuses, without ``resume``, a folder that holds a checkpoint of
an earlier run. SIGTERM, like Ctrl-C, ends the run KILLED after a checkpoint at the current step
(:mod:`benchmarks.core.lifecycle`).

Example:
    >>> import tempfile
    >>> folder = tempfile.mkdtemp()
    >>> records = run_config(RunRequest("configs/cifar.yaml", profile="smoke", models=["resnet32"],
    ...     runs_dir=folder, tracking_uri=f"sqlite:///{folder}/mlflow.db", progress=False))
    ... # doctest: +ELLIPSIS
    resnet32 on digits [smoke, cpu]: top-1 error ...
    >>> records[0].dataset
    'digits'
"""

from __future__ import annotations

import dataclasses
import difflib
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
import yaml

from benchmarks.config import Config, ResolvedConfig, TrainSettings, load_config
from benchmarks.core.checkpoint import CheckpointWarning, has_checkpoint, load_checkpoint
from benchmarks.core.datasets import TaskData
from benchmarks.core.device import resolve_device
from benchmarks.core.distributed import Shard, init_distributed
from benchmarks.core.lifecycle import check_fresh_start, claim_run_folders, interrupt_on_signals
from benchmarks.core.resume import check_same_settings
from benchmarks.errors import ConfigError
from benchmarks.preflight import check_run, fetch_datasets
from benchmarks.reporting.tracking import (
    TrackedRun,
    check_tracking_uri,
    environment_tags,
    resolve_tracking_uri,
    tracking_uri_source,
)
from benchmarks.request import RunRecord, RunRequest
from benchmarks.tasks import Task, task_of
from benchmarks.tasks.base import ReferenceRun, RunSummary
from flows.registry import create, get_info

__all__ = [
    "check_models",
    "checkpoint_path_for",
    "open_run",
    "provenance_tags",
    "resolved_yaml",
    "resumed_run_id",
    "run_config",
    "run_label",
    "run_tags",
]


def run_config(request: RunRequest) -> list[RunRecord]:
    """Train every requested model of the config on every requested dataset, once per seed
    (``request.seeds``, else the profile's ``seeds``).

    Under ``torchrun`` every process runs this; they train together (see
    :mod:`benchmarks.core.distributed`) and rank 0 alone logs, checkpoints and returns records.
    The tracking store and the run folders (locked by rank 0 for the whole command, see
    :func:`~benchmarks.core.lifecycle.claim_run_folders`) are checked first, so a refusal costs no
    training time. SIGINT and SIGTERM raise :class:`~benchmarks.core.lifecycle.Interrupted`.
    """
    config = load_config(request.config_path)
    resolved = config.resolve(request.profile)
    if request.overrides:
        resolved = resolved.with_training_overrides(request.overrides)
    check_run(request, resolved)  # every input, before any folder, MLflow run or training
    shard, device = init_distributed(resolve_device(request.device))
    if shard.is_main:
        uri = request.tracking_uri
        check_tracking_uri(resolve_tracking_uri(uri), source=tracking_uri_source(uri))
    fetch_datasets(request, resolved)  # --download: every dataset now, before any training
    request = dataclasses.replace(request, device=str(device), shard=shard)
    seeds = request.seeds if request.seeds is not None else resolved.seeds
    planned = _planned_checkpoints(request, resolved, seeds)
    records = []
    with interrupt_on_signals(), claim_run_folders(planned, request.resume, shard.is_main):
        for seed in seeds:
            records += _run_seed(dataclasses.replace(request, seed=seed), resolved)
    return records


def run_label(model: str, dataset: str, profile: str, seed: int) -> str:
    """The name of a training run: its MLflow run name and the folder of its checkpoint."""
    return f"{model}-{dataset}-{profile}-seed{seed}"


def checkpoint_path_for(request: RunRequest, config_name: str, label: str) -> Path:
    """``<runs_dir>/<config>/<label>/last.pt``."""
    return Path(request.runs_dir) / config_name / label / "last.pt"


def _planned_checkpoints(
    request: RunRequest, resolved: ResolvedConfig, seeds: list[int]
) -> list[Path]:
    """The checkpoint of every training run :func:`run_config` will start, in order."""
    models = request.models or resolved.models
    datasets = [request.dataset] if request.dataset else resolved.datasets
    return [
        checkpoint_path_for(
            request, resolved.config.name, run_label(model, dataset, resolved.profile, seed)
        )
        for seed in seeds
        for dataset in datasets
        for model in models
    ]


def _run_seed(request: RunRequest, resolved: ResolvedConfig) -> list[RunRecord]:
    """Every requested model on every requested dataset, for the seed ``request.seed``: the
    task's reference run (if any) first on each dataset, then one tracked run per model."""
    config = resolved.config
    models = request.models or resolved.models
    check_models(models, config)
    task = task_of(config)
    datasets = [request.dataset] if request.dataset else resolved.datasets
    device = resolve_device(request.device)
    tracking_uri = resolve_tracking_uri(request.tracking_uri)
    records = []
    for dataset_name in datasets:
        data = task.load_data(
            dataset_name, request.data_dir, request.download, resolved.training, request.workers
        )
        wanted = request.reference and request.shard.is_main
        reference = task.reference_run(data) if wanted else None
        if reference is not None:
            records.append(_log_reference(reference, data, resolved, request, device, tracking_uri))
        for model_name in models:
            records.append(
                _train_one(task, model_name, data, resolved, request, device, tracking_uri)
            )
    return records


def check_models(models: Sequence[str], config: Config) -> None:
    """Every name in ``models`` is a row of ``config`` (else one error naming the closest)."""
    for name in models:
        if name not in config.models:
            close = difflib.get_close_matches(name, config.models, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(
                f"model {name!r} is not a row of {config.path}{hint}; its models: "
                f"{', '.join(config.models)}"
            )


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


def _log_reference(
    reference: ReferenceRun,
    data: TaskData,
    resolved: ResolvedConfig,
    request: RunRequest,
    device: torch.device,
    tracking_uri: str,
) -> RunRecord:
    """Log a task's reference model (tag ``kind=baseline``), fitted without training."""
    label = f"{reference.model}-{data.name}-{resolved.profile}"
    with TrackedRun(tracking_uri, resolved.config.name, run_name=label) as run:
        run.set_tags(
            {
                **run_tags(device, reference.model, data.name, resolved, request, "baseline"),
                "table_row": reference.row,
            }
        )
        run.log_params(reference.params)
        run.log_metrics(reference.metrics)
    print(reference.summary)
    return RunRecord(
        reference.model,
        data.name,
        resolved.profile,
        device.type,
        request.seed,
        0,
        run.run_id,
        reference.metrics,
    )


def _train_one(
    task: Task,
    model_name: str,
    data: TaskData,
    resolved: ResolvedConfig,
    request: RunRequest,
    device: torch.device,
    tracking_uri: str,
) -> RunRecord:
    """One tracked training run: check the run folder (no checkpoint without ``--resume``;
    with it, the checkpoint's settings), build the model with the profile's ``model_args``,
    open (or reopen) its MLflow run, log tags, params and the resolved config, measure the
    untrained model, train, log the final metrics and the task's figures (the first also
    beside the checkpoint), and print the task's summary line."""
    config, settings = resolved.config, resolved.training_for(model_name)
    info = get_info(model_name)
    label = run_label(model_name, data.name, resolved.profile, request.seed)
    checkpoint_path = checkpoint_path_for(request, config.name, label)
    run_id = resumed_run_id(checkpoint_path, request, settings)
    torch.manual_seed(request.seed)
    model_args = resolved.model_kwargs(model_name)
    model = create(model_name, **task.model_inputs(data), **model_args)
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
                **task.extra_params(data),
                "seed": request.seed,
            }
        )
        run.log_text(resolved_yaml(resolved, model_name, data.name), "config.yaml")
        measured = task.before_training(model, data, settings, device)
        run.log_metrics(measured)
        outcome = task.train(
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
            **measured,
            "wall_time_s": outcome.wall_time_s,
            "steps": float(outcome.steps),
            "train_images_per_s": outcome.train_images_per_s,
        }
        run.log_metrics(final, step=outcome.steps)
        if request.shard.is_main:
            title = f"{model_name} on {data.name} ({resolved.profile}, {outcome.steps} steps)"
            evaluated = outcome.evaluation_model or model
            figures = task.figures(evaluated, outcome, title, request.seed)
            for index, (name, figure) in enumerate(figures.items()):
                if index == 0:
                    figure.savefig(checkpoint_path.parent / name, dpi=110)
                run.log_figure(figure, name)
    if request.shard.is_main:
        summary = RunSummary(
            model_name,
            data.name,
            resolved.profile,
            device.type,
            request.seed,
            final,
            outcome.resumed_from_step,
        )
        print(task.summary(summary))
    return RunRecord(
        model=model_name,
        dataset=data.name,
        profile=resolved.profile,
        device=device.type,
        seed=request.seed,
        steps=outcome.steps,
        run_id=run.run_id,
        metrics=final,
    )


class _UntrackedRun:
    """What a process other than rank 0 logs: nothing (same interface as TrackedRun)."""

    run_id = ""

    def __enter__(self) -> _UntrackedRun:
        return self

    def __exit__(self, *exc_info: object) -> None:
        return None

    def __getattr__(self, name: str) -> Callable[..., None]:
        return lambda *args, **kwargs: None


def open_run(
    shard: Shard,
    tracking_uri: str,
    experiment: str,
    run_name: str,
    run_id: str | None,
    checkpoint_path: Path | None = None,
) -> TrackedRun | _UntrackedRun:
    """The MLflow run of a training run on rank 0 (tagged ``checkpoint`` with the absolute
    path of its checkpoint); a silent stand-in on the other ranks."""
    if not shard.is_main:
        return _UntrackedRun()
    tags = {"checkpoint": str(checkpoint_path.resolve())} if checkpoint_path else None
    return TrackedRun(tracking_uri, experiment, run_name=run_name, run_id=run_id, tags=tags)


def resumed_run_id(
    checkpoint_path: Path, request: RunRequest, settings: TrainSettings
) -> str | None:
    """The MLflow run a ``--resume`` continues (kept in the checkpoint), if any.

    Checked here, before the MLflow run is reopened, so that a refusal leaves it untouched:
    without ``--resume`` the run folder must hold no checkpoint, and with it the checkpoint
    must load and have been written with ``settings`` (the training loop loads it again).

    Raises:
        RunFolderError: no ``--resume`` and a checkpoint exists.
        CheckpointError: neither the checkpoint nor the previous one loads.
        BenchmarkError: the checkpoint was written with other settings.
    """
    check_fresh_start(checkpoint_path, request.resume)
    if not (request.resume and request.shard.is_main and has_checkpoint(checkpoint_path)):
        return None
    with warnings.catch_warnings():  # the training loop's load warns about a fallback
        warnings.simplefilter("ignore", CheckpointWarning)
        state = load_checkpoint(checkpoint_path)
    check_same_settings(state["settings"], settings, checkpoint_path)
    return state["extra"].get("mlflow_run_id")


def resolved_yaml(resolved: ResolvedConfig, model: str, dataset: str) -> str:
    """The settings one row trains with, as logged with its run (``config.yaml``)."""
    document = {
        "config": resolved.config.path,
        "config_digest": resolved.row_digest(model, dataset),
        **resolved.row_document(model, dataset),
    }
    return yaml.safe_dump(document, sort_keys=False)


def provenance_tags(resolved: ResolvedConfig, model: str, dataset: str) -> dict[str, str]:
    """The tags that tie a run to its config: the file and the digest of the row's resolved
    settings, which the results record compares with the committed config's."""
    return {
        "config": resolved.config.path,
        "config_digest": resolved.row_digest(model, dataset),
    }
