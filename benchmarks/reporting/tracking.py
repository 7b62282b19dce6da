"""MLflow logging: one MLflow run per (model, dataset, profile, seed) training run.

The tracking URI is, in order: the ``--tracking-uri`` flag, the ``MLFLOW_TRACKING_URI``
environment variable (so a team can share a tracking server), or an SQLite store
``mlflow.db`` in the working directory (git-ignored; browse it with
``mlflow ui --backend-store-uri sqlite:///mlflow.db``).

:func:`check_tracking_uri` runs before any training: an unreachable tracking server or an
unwritable store fails at once with a :class:`~benchmarks.errors.TrackingError` instead of
after minutes of MLflow's retries.

Every run carries MLflow's source tags (``mlflow.source.git.commit``: the full commit hash,
``mlflow.source.name``, ``mlflow.source.type``), so the UI's source and version columns are
filled; :func:`environment_tags` adds ``git_revision`` (short hash, ``-dirty`` for uncommitted
changes), which the tables read. A run reopened by ``--resume`` keeps its metrics: a point at a
step the run already has for that metric is not logged again (see :class:`TrackedRun`).

Example:
    >>> check_tracking_uri("sqlite:///mlflow.db")
    >>> mask_credentials("https://alice:secret@mlflow.example.org")
    'https://***@mlflow.example.org'
    >>> with TrackedRun("sqlite:///mlflow.db", experiment="cifar", run_name="demo") as run:
    ...     run.log_metrics({"test_error": 4.2}, step=10)
"""

from __future__ import annotations

import http.client
import logging
import os
import platform
import re
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType
from typing import Literal
from urllib.parse import SplitResult, urlsplit, urlunsplit
from urllib.request import url2pathname

import torch

from benchmarks.errors import TrackingError

__all__ = [
    "SOURCE_NAME",
    "TrackedRun",
    "check_tracking_uri",
    "environment_tags",
    "git_commit",
    "git_revision",
    "mask_credentials",
    "prepare_experiments",
    "quiet_mlflow",
    "resolve_tracking_uri",
    "tracking_uri_source",
]

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
SOURCE_NAME = "python -m benchmarks"
_REPOSITORY = Path(__file__).resolve().parent.parent


def resolve_tracking_uri(explicit: str | None = None) -> str:
    """The tracking URI in force: flag, then ``MLFLOW_TRACKING_URI``, then local SQLite."""
    return explicit or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


UriSource = Literal["flag", "environment", "default"]

_SOURCE_TEXT: dict[UriSource, str] = {
    "flag": "from the --tracking-uri flag",
    "environment": "from the MLFLOW_TRACKING_URI environment variable",
    "default": "the default",
}


def tracking_uri_source(explicit: str | None = None) -> UriSource:
    """Where :func:`resolve_tracking_uri` takes the URI from for the same ``explicit`` flag."""
    if explicit:
        return "flag"
    return "environment" if os.environ.get("MLFLOW_TRACKING_URI") else "default"


def _guess_source(uri: str) -> UriSource:
    """The source of ``uri`` when the caller did not say: the environment if it holds ``uri``."""
    if os.environ.get("MLFLOW_TRACKING_URI") == uri:
        return "environment"
    return "default" if uri == DEFAULT_TRACKING_URI else "flag"


_CREDENTIALS = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://)[^/?#]*@")  # scheme://user:password@


def mask_credentials(uri: str) -> str:
    """``uri`` with any ``user:password@`` replaced by ``***@`` (safe to print)."""
    return _CREDENTIALS.sub(r"\1***@", uri)


_Problem = tuple[str, str | None]  # (what is wrong, the first thing to do about it)


def check_tracking_uri(uri: str, timeout_s: float = 5.0, source: UriSource | None = None) -> None:
    """Fail fast if the MLflow tracking store at ``uri`` cannot be reached or written.

    ``http(s)`` URIs: one request to ``<uri>/health``; any HTTP answer below 500 counts as
    reachable (a 404 from a server without ``/health`` too), while a 5xx answer (e.g. a proxy
    whose tracking server is down) fails, as MLflow would retry it for minutes.
    ``sqlite:///path``: the database's folder exists and is writable. ``file:`` URIs and plain
    paths: the folder (or its nearest existing parent) is writable. Other schemes
    (``databricks``, ...) are not checked.

    Args:
        uri: the tracking URI in force (see :func:`resolve_tracking_uri`).
        timeout_s: how long to wait for the server to connect and to answer.
        source: where ``uri`` came from (see :func:`tracking_uri_source`); by default the
            environment if ``MLFLOW_TRACKING_URI`` holds ``uri``, else the flag.

    Raises:
        TrackingError: the store is unreachable or unwritable; the message names the URI
            (credentials masked), where it came from, the reason and how to fix it.
    """
    problem = _syntax_problem(uri) or _store_problem(uri, timeout_s)
    if problem is not None:
        reason, fix = problem
        raise TrackingError(_tracking_error_message(uri, source or _guess_source(uri), reason, fix))


def _syntax_problem(uri: str) -> _Problem | None:
    """Why ``uri`` cannot be parsed (a bad IPv6 address, a port not a number), or ``None``."""
    try:
        parts = urlsplit(uri)
        if parts.scheme.lower() in ("http", "https"):
            parts.port  # noqa: B018 (raises ValueError for a port that is not a number)
    except ValueError as error:
        return f"not a valid URI ({error})", None
    return None


def _store_problem(uri: str, timeout_s: float) -> _Problem | None:
    """Why the store of a well-formed ``uri`` cannot be used, or ``None`` (or not checked)."""
    scheme = urlsplit(uri).scheme.lower()
    if scheme in ("http", "https"):
        return _http_problem(uri, timeout_s)
    if scheme == "sqlite":
        return _sqlite_problem(uri)
    if scheme == "file" or len(scheme) <= 1:  # a path; one letter is a Windows drive
        return _folder_problem(_file_store_folder(uri))
    return None


def _tracking_error_message(uri: str, source: UriSource, reason: str, fix: str | None) -> str:
    """``"MLflow tracking URI <uri> (<source>): <reason>. To fix it: <fix>; or <fix>."``"""
    fixes = [fix] if fix else []
    if source == "environment":
        fixes.append("fix or unset MLFLOW_TRACKING_URI")
    elif source == "flag":
        fixes.append("fix the --tracking-uri value")
    if uri != DEFAULT_TRACKING_URI:
        fixes.append(f"pass --tracking-uri {DEFAULT_TRACKING_URI} for a local store")
    else:
        fixes.append("pass --tracking-uri sqlite:////WRITABLE/FOLDER/mlflow.db")
    return (
        f"MLflow tracking URI {mask_credentials(uri)} ({_SOURCE_TEXT[source]}): {reason}. "
        f"To fix it: {'; or '.join(fixes)}."
    )


def _health_url(uri: str) -> str:
    """``<uri>/health`` without credentials (urllib cannot send ``user:password@`` URLs)."""
    parts = urlsplit(uri)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, host, parts.path.rstrip("/") + "/health", "", ""))


def _http_problem(uri: str, timeout_s: float) -> _Problem | None:
    """Why the tracking server at ``uri`` cannot be used, or ``None`` if it answers."""
    url = _health_url(uri)
    request = urllib.request.Request(url, headers={"User-Agent": "benchmarks-tracking-check"})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            status = response.status
    except urllib.error.HTTPError as error:
        status = error.code
    except (OSError, http.client.HTTPException, ValueError) as error:
        reason = _network_reason(error, urlsplit(url), timeout_s)
        return (
            f"the server is unreachable: {reason}",
            "start the tracking server (mlflow server --host HOST --port PORT)",
        )
    if status >= 500:
        return (
            f"the server is unusable: {url} answered HTTP {status}",
            "check the tracking server (or the proxy in front of it) and its logs",
        )
    return None


def _network_reason(error: BaseException, parts: SplitResult, timeout_s: float) -> str:
    """A short human reason why a request to ``parts`` (the URL, split) failed."""
    if isinstance(error, urllib.error.URLError):
        if not isinstance(error.reason, BaseException):
            return str(error.reason)
        error = error.reason
    if isinstance(error, ConnectionRefusedError):
        return f"connection refused (nothing is listening on {parts.netloc})"
    if isinstance(error, TimeoutError):
        return f"no answer from {parts.netloc} within {timeout_s:g} s"
    if isinstance(error, socket.gaierror):
        return f"the host name {parts.hostname!r} cannot be resolved ({error.strerror})"
    if isinstance(error, ssl.SSLError):
        return f"TLS error ({error.reason or error})"
    if isinstance(error, ValueError | http.client.InvalidURL):
        return f"not a valid URL ({error})"
    if isinstance(error, http.client.HTTPException | ConnectionError):
        name = type(error).__name__
        return f"{parts.netloc} closed the connection without an HTTP answer ({name})"
    return getattr(error, "strerror", None) or str(error) or type(error).__name__


def _sqlite_database(uri: str) -> Path | None:
    """The database file of ``sqlite:///relative.db`` or ``sqlite:////absolute.db``.

    ``None`` for an in-memory database.
    """
    path = uri.split("://", 1)[1].split("?", 1)[0] if "://" in uri else ""
    if path in ("", "/", "/:memory:"):
        return None
    return Path(url2pathname(path[1:]) if path.startswith("/") else path)


def _sqlite_problem(uri: str) -> _Problem | None:
    """Why an SQLite store cannot be created or written, or ``None``."""
    if "://" not in uri:
        return (
            "not an SQLite URI",
            "write sqlite:///relative/path.db or sqlite:////absolute/path.db",
        )
    database = _sqlite_database(uri)
    if database is None:
        return None
    folder = database.parent
    if not folder.is_dir():
        return (
            f"the folder {folder} of the SQLite database {database} does not exist",
            f"create it (mkdir -p {folder})",
        )
    if not os.access(folder, os.W_OK | os.X_OK):
        return (
            f"the folder {folder} of the SQLite database {database} is not writable",
            f"make {folder} writable",
        )
    if database.is_dir() or (database.exists() and not os.access(database, os.W_OK)):
        return (
            f"the SQLite database {database} is not a writable file",
            f"make {database} a writable file or choose another path",
        )
    return None


def _file_store_folder(uri: str) -> Path:
    """The folder of a ``file:`` URI or a plain path."""
    parts = urlsplit(uri)
    if parts.scheme.lower() == "file":
        return Path(url2pathname(parts.path))
    return Path(uri)


def _folder_problem(folder: Path) -> _Problem | None:
    """Why MLflow cannot create or write a file store in ``folder``, or ``None``."""
    existing = folder
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent  # MLflow creates the missing folders
    if not existing.is_dir():
        return f"{existing} is not a folder", f"remove {existing} or choose another folder"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"the folder {existing} is not writable", f"make {existing} writable"
    return None


def _git(repository: Path | None, *arguments: str) -> str:
    """The output of ``git <arguments>`` in ``repository`` (default: this suite's checkout)."""
    done = subprocess.run(  # raises OSError (FileNotFoundError) when git is not installed
        ["git", *arguments], cwd=repository or _REPOSITORY, capture_output=True, text=True
    )
    if done.returncode:
        raise OSError(done.stderr)
    return done.stdout.strip()


def git_revision(repository: Path | None = None) -> str:
    """Commit hash of the working tree, suffixed ``-dirty`` when it has uncommitted changes
    outside ``results/`` (the record the suite writes itself: ``make bench`` rewrites the
    memory report before it trains, which marked every row it trained dirty)."""
    try:
        commit = _git(repository, "rev-parse", "--short=12", "HEAD")
        dirty = _git(
            repository, "status", "--porcelain", "--untracked-files=no", "--", ".", ":!results"
        )
    except OSError:
        return "unknown"
    return commit + ("-dirty" if dirty else "")


def git_commit(repository: Path | None = None) -> str | None:
    """The full hash of the checked-out commit (``None`` outside a git checkout)."""
    try:
        return _git(repository, "rev-parse", "HEAD") or None
    except OSError:
        return None


def source_tags() -> dict[str, str]:
    """MLflow's own source tags: what ran (``mlflow.source.name``, ``mlflow.source.type``)
    and at which commit (``mlflow.source.git.commit``, the full hash; uncommitted changes show
    in the ``git_revision`` tag only)."""
    tags = {"mlflow.source.name": SOURCE_NAME, "mlflow.source.type": "LOCAL"}
    commit = git_commit()
    if commit is not None:
        tags["mlflow.source.git.commit"] = commit
    return tags


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


def quiet_mlflow() -> None:
    """MLflow and its migrations log at WARNING and above only (no INFO lines on stderr)."""
    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)


def prepare_experiments(tracking_uri: str, experiments: Iterable[str]) -> None:
    """Create the store and each experiment now, in this process, so that several processes
    logging to one SQLite store later neither migrate it nor create an experiment at once."""
    import mlflow

    quiet_mlflow()
    client = mlflow.MlflowClient(tracking_uri)
    for name in dict.fromkeys(experiments):
        if client.get_experiment_by_name(name) is None:
            client.create_experiment(name)


class TrackedRun:
    """A context manager around one MLflow run.

    The block's outcome sets the run's status: FINISHED, KILLED for a ``KeyboardInterrupt``
    (Ctrl-C, or SIGTERM as :class:`~benchmarks.core.lifecycle.Interrupted`), FAILED otherwise.

    Reopening a run (``run_id``, for ``--resume``) sets it RUNNING again, so check everything
    that can refuse the resume first. A killed process may have logged metrics after its last
    checkpoint, which the resumed process computes and logs again: to keep every (metric,
    step) once, :meth:`log_metrics` skips a point whose step is at or below the last step the
    run already had for that metric when it was reopened (a retrained step gives the same
    value; only timings such as ``train_images_per_s`` could differ, and the first one stays).

    Args:
        tracking_uri: MLflow tracking URI.
        experiment: experiment name (the suite uses the config name, e.g. ``"cifar"``).
        run_name: display name of the run.
        run_id: continue this existing run (used by ``--resume``).
        tags: set when the run is created or reopened (beside :func:`source_tags`).
    """

    def __init__(
        self,
        tracking_uri: str,
        experiment: str,
        run_name: str,
        run_id: str | None = None,
        tags: dict[str, str] | None = None,
    ) -> None:
        import mlflow

        quiet_mlflow()
        self._mlflow = mlflow
        self._client = mlflow.MlflowClient(tracking_uri)
        found = self._client.get_experiment_by_name(experiment)
        experiment_id = found.experiment_id if found else self._client.create_experiment(experiment)
        tags = {**source_tags(), **(tags or {})}
        self._logged_through: dict[str, int] = {}
        if run_id is not None:
            self.run_id = run_id
            self._logged_through = self._last_logged_steps()
            self._client.update_run(run_id, status="RUNNING")
            self.set_tags(tags)
        else:
            run = self._client.create_run(experiment_id, run_name=run_name, tags=tags)
            self.run_id = run.info.run_id

    def _last_logged_steps(self) -> dict[str, int]:
        """The highest step logged so far for each metric of the run."""
        keys = self._client.get_run(self.run_id).data.metrics
        return {
            key: max(point.step for point in self._client.get_metric_history(self.run_id, key))
            for key in keys
        }

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
        """Log ``metrics`` at ``step`` (default 0), except those the reopened run already has
        at this step or a later one."""
        from mlflow.entities import Metric

        step = step or 0
        timestamp = int(time.time() * 1000)
        entries = [
            Metric(k, float(v), timestamp, step)
            for k, v in metrics.items()
            if step > self._logged_through.get(k, -1)
        ]
        if entries:
            self._client.log_batch(self.run_id, metrics=entries)

    def log_text(self, text: str, artifact_file: str) -> None:
        self._client.log_text(self.run_id, text, artifact_file)

    def log_artifact(self, path: str | Path) -> None:
        self._client.log_artifact(self.run_id, str(path))

    def log_figure(self, figure: object, artifact_file: str) -> None:
        self._client.log_figure(self.run_id, figure, artifact_file)
