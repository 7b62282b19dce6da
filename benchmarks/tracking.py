"""MLflow logging: one MLflow run per (model, dataset, profile, seed) training run.

The tracking URI is, in order: the ``--tracking-uri`` flag, the ``MLFLOW_TRACKING_URI``
environment variable (so a team can share a tracking server), or an SQLite store
``mlflow.db`` in the working directory (git-ignored; browse it with
``mlflow ui --backend-store-uri sqlite:///mlflow.db``).

Example:
    >>> with TrackedRun("sqlite:///mlflow.db", experiment="cifar", run_name="demo") as run:
    ...     run.log_metrics({"test_error": 4.2}, step=10)
"""

from __future__ import annotations

import logging
import os
import platform
import subprocess
import time
from pathlib import Path
from types import TracebackType

import torch

__all__ = ["TrackedRun", "environment_tags", "git_revision", "resolve_tracking_uri"]

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"


def resolve_tracking_uri(explicit: str | None = None) -> str:
    """The tracking URI in force: flag, then ``MLFLOW_TRACKING_URI``, then local SQLite."""
    return explicit or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


def git_revision(repository: Path | None = None) -> str:
    """Commit hash of the working tree, suffixed ``-dirty`` when it has uncommitted changes."""
    cwd = repository or Path(__file__).resolve().parent.parent

    def git(*arguments: str) -> str:
        done = subprocess.run(["git", *arguments], cwd=cwd, capture_output=True, text=True)
        if done.returncode:
            raise OSError(done.stderr)
        return done.stdout.strip()

    try:
        commit = git("rev-parse", "--short=12", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except OSError:
        return "unknown"
    return commit + ("-dirty" if dirty else "")


def device_name(device: torch.device) -> str:
    """Human-readable name of the device that trained a run."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({_cpu_model()}, {torch.get_num_threads()} threads)"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment_tags(device: torch.device) -> dict[str, str]:
    """Tags that say where a number came from."""
    return {
        "device": device.type,
        "device_name": device_name(device),
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "git_revision": git_revision(),
    }


def _quiet_mlflow() -> None:
    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)


class TrackedRun:
    """A context manager around one MLflow run; marks it FAILED if the block raises.

    Args:
        tracking_uri: MLflow tracking URI.
        experiment: experiment name (the suite uses the config name, e.g. ``"cifar"``).
        run_name: display name of the run.
        run_id: continue this existing run (used by ``--resume``).
    """

    def __init__(
        self, tracking_uri: str, experiment: str, run_name: str, run_id: str | None = None
    ) -> None:
        import mlflow

        _quiet_mlflow()
        self._mlflow = mlflow
        self._client = mlflow.MlflowClient(tracking_uri)
        found = self._client.get_experiment_by_name(experiment)
        experiment_id = found.experiment_id if found else self._client.create_experiment(experiment)
        if run_id is not None:
            self.run_id = run_id
            self._client.update_run(run_id, status="RUNNING")
        else:
            run = self._client.create_run(experiment_id, run_name=run_name)
            self.run_id = run.info.run_id

    def __enter__(self) -> TrackedRun:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        if kind is None:
            status = "FINISHED"
        elif issubclass(kind, KeyboardInterrupt):
            status = "KILLED"
        else:
            status = "FAILED"
        self._client.set_terminated(self.run_id, status=status)

    def log_params(self, params: dict[str, object]) -> None:
        from mlflow.entities import Param

        existing = self._client.get_run(self.run_id).data.params  # a resumed run has them
        fresh = [Param(k, str(v)) for k, v in params.items() if k not in existing]
        self._client.log_batch(self.run_id, params=fresh)

    def set_tags(self, tags: dict[str, str]) -> None:
        from mlflow.entities import RunTag

        self._client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        from mlflow.entities import Metric

        timestamp = int(time.time() * 1000)
        entries = [Metric(k, float(v), timestamp, step or 0) for k, v in metrics.items()]
        self._client.log_batch(self.run_id, metrics=entries)

    def log_text(self, text: str, artifact_file: str) -> None:
        self._client.log_text(self.run_id, text, artifact_file)

    def log_artifact(self, path: str | Path) -> None:
        self._client.log_artifact(self.run_id, str(path))

    def log_figure(self, figure: object, artifact_file: str) -> None:
        self._client.log_figure(self.run_id, figure, artifact_file)
