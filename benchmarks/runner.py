"""Run a config: for each dataset and model, profile one step, train, evaluate, log to MLflow.

Every run is recorded with its model, dataset, profile, device, steps, seed, git revision and
wall time, so that the table compiler can say exactly where each number came from. Checkpoints
live in ``runs/<config>/<model>-<dataset>-<profile>-seed<seed>/last.pt``; ``resume=True``
continues a killed run there (and its MLflow run) to the same final result, after checking that
the checkpoint's settings match (a refused resume leaves the MLflow run as it was).

Before the first run trains, :func:`run_config` locks the folder of every run it will train
(one process per folder) and refuses, without ``resume``, a folder that holds a checkpoint of
an earlier run. SIGTERM, like Ctrl-C, ends the run KILLED after a checkpoint at the current step
(:mod:`benchmarks.lifecycle`).

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
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import yaml

from benchmarks.checkpoint import CheckpointWarning, has_checkpoint, load_checkpoint
from benchmarks.classifier_training import train_classifier
from benchmarks.config import ResolvedConfig, TrainSettings, load_config
from benchmarks.data import TrainingData, load_dataset
from benchmarks.distributed import Shard, init_distributed
from benchmarks.errors import ConfigError, DeviceError
from benchmarks.lifecycle import check_fresh_start, claim_run_folders, interrupt_on_signals
from benchmarks.plots import learning_curve
from benchmarks.preflight import check_run, fetch_datasets
from benchmarks.profiling import profile_training_step
from benchmarks.tracking import (
    TrackedRun,
    check_tracking_uri,
    environment_tags,
    resolve_tracking_uri,
    tracking_uri_source,
)
from benchmarks.training import check_same_settings
from flows.registry import create, get_info

__all__ = [
    "RunRecord",
    "RunRequest",
    "checkpoint_path_for",
    "open_run",
    "provenance_tags",
    "resolve_device",
    "resolved_yaml",
    "resumed_run_id",
    "run_config",
    "run_label",
]


@dataclass
class RunRequest:
    """What the user asked ``python -m benchmarks run`` to do."""

    config_path: str | Path
    profile: str = "quick"
    models: list[str] | None = None
    dataset: str | None = None
    device: str = "auto"
    data_dir: str | Path | None = None
    download: bool = False
    seed: int = 0  # the seed of one run; run_config sets it from ``seeds``
    seeds: list[int] | None = None  # None: the profile's seeds (config key ``seeds``, default [0])
    resume: bool = False
    runs_dir: str | Path = "runs"
    tracking_uri: str | None = None
    progress: bool = True
    workers: int | None = None
    shard: Shard = field(default_factory=Shard)  # set by run_config under torchrun
    overrides: dict[str, object] = field(default_factory=dict)  # runtime keys: precision, ...


@dataclass
class RunRecord:
    """The outcome of one trained model, as logged to MLflow."""

    model: str
    dataset: str
    profile: str
    device: str
    seed: int
    steps: int
    run_id: str
    metrics: dict[str, float] = field(default_factory=dict)


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present; asking for an absent CUDA device is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise DeviceError(
            f"--device {name} requested but no CUDA device is available "
            f"(torch {torch.__version__}); use --device cpu or --device auto"
        )
    if name != "cpu" and not name.startswith("cuda"):
        raise DeviceError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N")
    return torch.device(name)


def run_config(request: RunRequest) -> list[RunRecord]:
    """Train every requested model of the config on every requested dataset, once per seed
    (``request.seeds``, else the profile's ``seeds``).

    Under ``torchrun`` every process runs this; they train together (see
    :mod:`benchmarks.distributed`) and rank 0 alone logs, checkpoints and returns records.
    The tracking store and the run folders (locked by rank 0 for the whole command, see
    :func:`~benchmarks.lifecycle.claim_run_folders`) are checked first, so a refusal costs no
    training time. SIGINT and SIGTERM raise :class:`~benchmarks.lifecycle.Interrupted`.
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
    config = resolved.config
    models = request.models or resolved.models
    for name in models:
        if name not in config.models:
            close = difflib.get_close_matches(name, config.models, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(
                f"model {name!r} is not a row of {config.path}{hint}; its models: "
                f"{', '.join(config.models)}"
            )
    if config.task == "density":
        from benchmarks.density_runner import run_density_config

        return run_density_config(request, resolved)
    if config.task == "latent-variable":
        from benchmarks.vae_runner import run_vae_config

        return run_vae_config(request, resolved)
    datasets = [request.dataset] if request.dataset else resolved.datasets
    device = resolve_device(request.device)
    tracking_uri = resolve_tracking_uri(request.tracking_uri)
    records = []
    for dataset_name in datasets:
        settings = resolved.training
        data = load_dataset(
            dataset_name, request.data_dir, request.download, image_size=settings.image_size
        ).subset(settings.train_examples, settings.test_examples)
        if request.workers is not None and hasattr(data, "workers"):
            data = dataclasses.replace(data, workers=request.workers)
        for model_name in models:
            records.append(_train_one(model_name, data, resolved, request, device, tracking_uri))
    return records


def _train_one(
    model_name: str,
    data: TrainingData,
    resolved: ResolvedConfig,
    request: RunRequest,
    device: torch.device,
    tracking_uri: str,
) -> RunRecord:
    config, settings = resolved.config, resolved.training
    info = get_info(model_name)
    label = run_label(model_name, data.name, resolved.profile, request.seed)
    checkpoint_path = checkpoint_path_for(request, config.name, label)
    run_id = resumed_run_id(checkpoint_path, request, settings)
    torch.manual_seed(request.seed)
    model = create(
        model_name,
        num_classes=data.num_classes,
        in_channels=data.channels,
        **resolved.model_kwargs(model_name),
    )
    reproduction = resolved.profile == "paper" and data.name in config.datasets
    with open_run(request.shard, tracking_uri, config.name, label, run_id, checkpoint_path) as run:
        run.set_tags(
            {
                **environment_tags(device),
                "model": model_name,
                "dataset": data.name,
                "profile": resolved.profile,
                "seed": str(request.seed),
                "table": info.table,
                "table_row": info.row,
                "task": info.task,
                "paper": info.paper,
                "reproduction": "yes" if reproduction else "no",
                "kind": "train",
                **provenance_tags(resolved, model_name, data.name),
            }
        )
        run.log_params(
            {
                **resolved.as_params(model_name),
                "model": model_name,
                "dataset": data.name,
                "dataset_description": data.description,
                "seed": request.seed,
            }
        )
        run.log_text(resolved_yaml(resolved, model_name, data.name), "config.yaml")
        probe_images, probe_labels = data.probe_batch(settings.batch_size)
        probe = profile_training_step(
            model.to(device), probe_images.to(device), probe_labels.to(device)
        )
        run.log_metrics(probe)
        outcome = train_classifier(
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
            **probe,
            "wall_time_s": outcome.wall_time_s,
            "steps": float(outcome.steps),
            "train_images_per_s": outcome.train_images_per_s,
        }
        run.log_metrics(final, step=outcome.steps)
        run.log_figure(
            learning_curve(outcome.history, f"{model_name} on {data.name} ({resolved.profile})"),
            "learning_curve.png",
        )
    if request.shard.is_main:
        print(
            f"{model_name} on {data.name} [{resolved.profile}, {device.type}]: "
            f"top-1 error {final['test_error']:.2f}% (top-5 {final['test_top5_error']:.2f}%) | "
            f"{int(probe['params']):,} params | "
            f"{final['train_images_per_s']:.0f} img/s | {final['wall_time_s']:.0f} s"
            + (
                f" | resumed from step {outcome.resumed_from_step}"
                if outcome.resumed_from_step
                else ""
            )
        )
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
