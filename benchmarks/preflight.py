"""Checks of a command's inputs that run before any training, measuring or writing.

Each function checks one thing and raises a :class:`~benchmarks.errors.BenchmarkError` whose
message says what is wrong and how to fix it; the CLI prints it as one ``error:`` line and
exits with status 2. None of them leaves anything behind (the folder probe's temporary file
is gone when it returns), so a rejected command leaves no trace.

``run`` calls :func:`check_run` (seeds, workers, ``--runs-dir``, datasets, the tracking URI's
scheme, ``--compile`` and every model built on the ``meta`` device); ``tables``, ``probe`` and
``memory`` call :func:`check_tracking`; every command that writes results calls
:func:`check_writable_folder` on its ``--out``; ``flow-speed`` and ``memory`` call
:func:`check_replacement` before they overwrite a result measured with other settings.

Example:
    >>> check_seeds([0, 1])
    >>> check_seeds([0, 0])
    Traceback (most recent call last):
    ...
    benchmarks.errors.ConfigError: --seed 0 0: give each seed once
    >>> model_pattern("glow"), model_pattern("resnet*")
    ('*glow*', 'resnet*')
"""

from __future__ import annotations

import contextlib
import csv
import random
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from benchmarks.config import MAX_SEED, load_config
from benchmarks.core.device import check_device
from benchmarks.errors import BenchmarkError, ConfigError, TrackingError
from benchmarks.reporting.tracking import (
    check_tracking_uri,
    mask_credentials,
    resolve_tracking_uri,
    tracking_uri_source,
)
from benchmarks.tasks import task_of

if TYPE_CHECKING:
    from benchmarks.config import ResolvedConfig
    from benchmarks.request import RunRequest

__all__ = [
    "check_compile_backends",
    "check_configs_dir",
    "check_datasets",
    "check_device",
    "check_model_builds",
    "check_replacement",
    "check_run",
    "check_seeds",
    "check_tracking",
    "check_tracking_scheme",
    "check_workers",
    "check_writable_folder",
    "fetch_datasets",
    "model_pattern",
]

_GLOB_CHARACTERS = "*?["


def check_run(request: RunRequest, resolved: ResolvedConfig) -> None:
    """Every input of ``python -m benchmarks run`` that can be checked without training.

    The reachability of the tracking store is checked by the runner itself (rank 0 only).
    """
    check_device(request.device)
    check_seeds(request.seeds)
    check_workers(request.workers)
    check_writable_folder(request.runs_dir, "--runs-dir")
    datasets = [request.dataset] if request.dataset else resolved.datasets
    check_datasets(resolved, datasets, request.data_dir, request.download)
    check_tracking_scheme(request.tracking_uri)
    models = [name for name in request.models or resolved.models if name in resolved.config.models]
    check_compile_backends(resolved, models, request.overrides)
    check_model_builds(resolved, models, datasets)


def check_seeds(seeds: Sequence[int] | None) -> None:
    """``--seed``: integers from 0 to 2**63 - 1, each given once."""
    if seeds is None:
        return
    shown = " ".join(str(seed) for seed in seeds)
    if any(not 0 <= seed <= MAX_SEED for seed in seeds):
        raise ConfigError(f"--seed {shown}: seeds must be integers from 0 to 2**63 - 1")
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seed {shown}: give each seed once")


def check_workers(workers: int | None) -> None:
    """``--workers``: a number of processes, 0 (decode in the training process) or more."""
    if workers is not None and workers < 0:
        raise ConfigError(
            f"--workers {workers}: must be 0 (decode images in the training process) or more"
        )


def check_writable_folder(path: str | Path, flag: str) -> None:
    """``path`` is a folder this process can write in, or can be created as one.

    The nearest existing folder on the way (``path`` itself, else a parent) is probed with a
    temporary file (unnamed on Linux, deleted at once elsewhere); ``path`` is not created.
    """
    path = Path(path)
    existing = path
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    if not existing.is_dir():
        raise BenchmarkError(
            f"{flag} {path}: {existing} is a file, not a folder; pass a folder path for {flag}"
        )
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise BenchmarkError(
            f"{flag} {path}: cannot write in {existing} ({reason}); make it writable or pass "
            f"another folder as {flag}"
        ) from None


def check_tracking(explicit_uri: str | None) -> None:
    """The MLflow store in force (flag, environment or default) is usable: a scheme MLflow
    knows, its database driver installed, and the server or folder reachable and writable."""
    check_tracking_scheme(explicit_uri)
    check_tracking_uri(resolve_tracking_uri(explicit_uri), source=tracking_uri_source(explicit_uri))


def check_tracking_scheme(explicit_uri: str | None) -> None:
    """The scheme of the tracking URI in force is one of MLflow's tracking stores (http,
    https, file or a path, sqlite, postgresql, mysql, mssql with an optional ``+driver``,
    databricks, ...), and a database's Python driver is installed."""
    uri = resolve_tracking_uri(explicit_uri)
    where = {"flag": "--tracking-uri", "environment": "MLFLOW_TRACKING_URI"}.get(
        tracking_uri_source(explicit_uri), "the default"
    )
    problem = _unknown_scheme_problem(uri) or _database_driver_problem(uri)
    if problem is not None:
        reason, fix = problem
        raise TrackingError(
            f"MLflow tracking URI {mask_credentials(uri)} (from {where}): {reason}; {fix}"
        )


_Problem = tuple[str, str]  # (what is wrong, what to do about it)


def _unknown_scheme_problem(uri: str) -> _Problem | None:
    """Why MLflow has no tracking store for ``uri``'s scheme, or ``None``."""
    try:
        from mlflow.tracking._tracking_service.utils import _tracking_store_registry
    except ImportError:  # another MLflow layout: MLflow itself will say it later
        return None
    try:
        _tracking_store_registry.get_store_builder(uri)
    except Exception:  # MLflow's UnsupportedModelRegistryStoreURIException
        schemes = sorted(scheme for scheme in _tracking_store_registry._registry if scheme)
        return (
            f"MLflow has no tracking store for the scheme {urlsplit(uri).scheme!r}",
            f"give a URI of scheme {', '.join(schemes)} (a database may name its driver, e.g. "
            "postgresql+psycopg2://) or a folder path",
        )
    return None


def _database_driver_problem(uri: str) -> _Problem | None:
    """Why SQLAlchemy cannot load the driver of a server database URI, or ``None``."""
    if not urlsplit(uri).scheme.lower().startswith(("postgresql", "mysql", "mssql")):
        return None
    try:
        from sqlalchemy.engine import make_url

        make_url(uri).get_dialect().import_dbapi()
    except ImportError as error:
        return (
            f"its database driver is not installed ({error})",
            "install that package into the venv, or give another tracking URI",
        )
    except Exception as error:  # SQLAlchemy's ArgumentError, NoSuchModuleError
        return f"not a database URI SQLAlchemy can use ({error})", "fix its dialect+driver part"
    return None


def check_compile_backends(
    resolved: ResolvedConfig, models: Sequence[str], overrides: Mapping[str, object]
) -> None:
    """Every ``compile`` backend the models train with is one ``torch.compile`` knows."""
    backends = {resolved.training_for(name).compile for name in models} - {""}
    if not backends:
        return
    import torch
    import torch._dynamo

    known = torch._dynamo.list_backends(exclude_tags=())
    for backend in sorted(backends):
        if backend not in known:
            source = "--compile" if overrides.get("compile") == backend else "key 'compile' of"
            where = "--compile" if source == "--compile" else f"{source} {resolved.config.path}"
            raise ConfigError(
                f"{where}: {backend!r} is not a torch.compile backend of torch "
                f"{torch.__version__}; use one of {', '.join(torch._dynamo.list_backends())} "
                "(or eager, aot_eager to debug)"
            )


def check_datasets(
    resolved: ResolvedConfig,
    datasets: Sequence[str],
    data_dir: str | Path | None,
    download: bool,
) -> None:
    """Each dataset suits the config's task and can be read from ``data_dir`` (or, with
    ``download``, fetched into a writable ``data_dir``), without loading it."""
    task, path = task_of(resolved.config), resolved.config.path
    known = task.dataset_names
    for name in datasets:
        if name not in known:
            raise ConfigError(
                f"--dataset {name}: not a dataset of {task.name} models ({path}); use one of "
                f"{', '.join(known)}"
            )
        if task.check_source(name, data_dir, download):
            check_writable_folder(data_dir, "--data-dir")  # --download will write there


def fetch_datasets(request: RunRequest, resolved: ResolvedConfig) -> None:
    """With ``--download``, fetch every dataset of the run that is fetched from the network
    now, so that a failed download stops the run before its first row trains (not after)."""
    if not request.download:
        return
    task = task_of(resolved.config)
    for name in [request.dataset] if request.dataset else resolved.datasets:
        task.fetch(name, request.data_dir)


def check_model_builds(
    resolved: ResolvedConfig, models: Sequence[str], datasets: Sequence[str]
) -> None:
    """Build every model once per dataset with its ``model_args``, on the ``meta`` device
    (no memory, no computation): a value the builder cannot use fails here, not after
    another row has trained."""
    import torch

    from flows.registry import create

    for dataset in datasets:
        inputs = task_of(resolved.config).builder_inputs(dataset)
        for name in models:
            model_args = resolved.model_kwargs(name)
            try:
                with _random_state_kept(), torch.device("meta"):
                    create(name, **inputs, **model_args)
            except Exception as error:
                reason = " ".join(str(error).split()) or type(error).__name__
                raise ConfigError(
                    f"{resolved.config.path}: model {name} cannot be built for {dataset} "
                    f"(profile {resolved.profile}) with model_args {model_args or '{}'}: "
                    f"{type(error).__name__}: {reason[:300]}; fix its model_args"
                ) from None


@contextlib.contextmanager
def _random_state_kept() -> Iterator[None]:
    """Restore torch's, NumPy's and Python's global random state after the block."""
    import numpy as np
    import torch

    python_state, numpy_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        try:
            yield
        finally:
            random.setstate(python_state)
            np.random.set_state(numpy_state)


def check_configs_dir(path: str | Path, flag: str = "--configs-dir") -> list[Path]:
    """The folder holds at least one ``*.yaml`` config and every one of them is valid."""
    path = Path(path)
    if not path.is_dir():
        what = "is a file" if path.exists() else "does not exist"
        raise ConfigError(f"{flag} {path}: {what}; pass the folder holding the YAML configs")
    configs = sorted(path.glob("*.yaml"))
    if not configs:
        raise ConfigError(f"{flag} {path}: no *.yaml config in it; pass the configs/ folder")
    for config in configs:
        task_of(load_config(config))
    return configs


def model_pattern(pattern: str) -> str:
    """A shell pattern for ``list``: a plain word (no ``*``, ``?``, ``[``) matches as a
    substring, so ``glow`` lists ``glow_cifar10`` and the other Glows."""
    if any(character in pattern for character in _GLOB_CHARACTERS):
        return pattern
    return f"*{pattern}*"


def check_replacement(
    csv_path: Path,
    settings: Mapping[str, object],
    rows: set[str],
    row_key: Callable[[Mapping[str, str]], str],
    replace: bool,
) -> None:
    """Refuse to overwrite a result measured with other settings unless ``replace``.

    ``csv_path`` is the result's CSV, one row per measured case. ``settings`` are the
    columns every row holds (e.g. ``batch_size``) and their new values; a column the old file
    lacks is not compared. ``rows`` are the keys (``row_key`` of a CSV row) of the rows the
    command will write: a different set of cases is another setting too.
    """
    if replace or not csv_path.is_file():
        return
    with csv_path.open(newline="") as handle:
        old_rows = list(csv.DictReader(handle))
    differences = []
    for column, value in settings.items():
        old = sorted({row[column] for row in old_rows if column in row})
        if old and old != [str(value)]:
            differences.append(f"{column} {'/'.join(old)}, now {value}")
    old_keys = {row_key(row) for row in old_rows}
    if old_keys - rows:
        differences.append(f"rows {', '.join(sorted(old_keys - rows))} would be dropped")
    if rows - old_keys:
        differences.append(f"rows {', '.join(sorted(rows - old_keys))} would be added")
    if differences:
        raise BenchmarkError(
            f"{csv_path} holds a result measured with other settings ({'; '.join(differences)})"
            f"; pass --out DIR to write elsewhere, or --replace to overwrite it"
        )
