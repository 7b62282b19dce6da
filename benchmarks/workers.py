"""Several configs' rows at once: one run per row, shared among worker processes.

``python -m benchmarks run CONFIG [CONFIG ...] --jobs N`` checks every config and every run
folder first, then hands the rows (one model on one dataset with one seed) to ``N`` worker
processes, each training one row at a time with ``max(1, CPUs // N)`` threads. A row is trained
exactly as ``run`` trains it alone (:func:`benchmarks.run.run_config`); with one thread per
worker its numbers are those of a one-thread run, whatever the number of workers. The rows
whose wall time the results record holds go first, longest first, so that the workers finish
together. ``N = 1`` runs the configs one after the other in this process.

Each table's reference row (the density baseline) is logged once per dataset and seed, with
the first model of that dataset. SIGINT and SIGTERM stop every worker after a checkpoint at its
current step; the command then exits as ``run`` does (130 or 143), and ``--resume`` continues.

Example:
    >>> import tempfile
    >>> folder = tempfile.mkdtemp()
    >>> requests = [RunRequest(c, profile="smoke", runs_dir=folder, progress=False,
    ...     tracking_uri=f"sqlite:///{folder}/mlflow.db") for c in ["configs/vae.yaml"]]
    >>> len(planned_rows(requests))  # 3 VAEs x 2 seeds of the smoke profile
    6
"""

from __future__ import annotations

import dataclasses
import math
import multiprocessing
import os
import signal
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.config import load_config
from benchmarks.core.lifecycle import Interrupted, check_fresh_start, interrupt_on_signals
from benchmarks.errors import ConfigError
from benchmarks.measure.architecture_probe import (
    ProbeRequest,
    check_probe,
    describe_probe,
    run_probes,
)
from benchmarks.preflight import check_run
from benchmarks.reporting.record import load_record, record_path
from benchmarks.reporting.tracking import (
    check_tracking_uri,
    prepare_experiments,
    resolve_tracking_uri,
    tracking_uri_source,
)
from benchmarks.request import RunRecord, RunRequest
from benchmarks.run import check_models, checkpoint_path_for, run_config, run_label

__all__ = ["check_requests", "planned_rows", "run_configs"]

RESULTS = Path("results")


def planned_rows(requests: Sequence[RunRequest]) -> list[RunRequest]:
    """One request per row (model, dataset, seed) of every request, in the configs' order;
    the first model of each dataset and seed also logs the table's reference row."""
    rows = []
    for request in requests:
        resolved = load_config(request.config_path).resolve(request.profile)
        models = request.models or resolved.models
        datasets = [request.dataset] if request.dataset else resolved.datasets
        seeds = request.seeds if request.seeds is not None else resolved.seeds
        for seed in seeds:
            for dataset in datasets:
                rows += [
                    dataclasses.replace(
                        request, models=[model], dataset=dataset, seeds=[seed], reference=i == 0
                    )
                    for i, model in enumerate(models)
                ]
    return rows


def check_requests(
    requests: Sequence[RunRequest], probes: Sequence[ProbeRequest] = (), jobs: int = 1
) -> list[RunRequest]:
    """Every input of every config and probe, and every run folder, before any work; the
    requests with ``--models`` split among the configs."""
    if jobs < 1:
        raise ConfigError(f"--jobs {jobs}: give a number of worker processes, 1 or more")
    if jobs > 1 and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ConfigError("--jobs runs one process per row; under torchrun use --jobs 1")
    requests = _models_per_config(requests)
    for request in requests:
        resolved = load_config(request.config_path).resolve(request.profile)
        check_models(request.models or [], resolved.config)
        if request.overrides:
            resolved = resolved.with_training_overrides(request.overrides)
        check_run(request, resolved)
    for row in planned_rows(requests):  # a finished run's folder is refused before any row
        check_fresh_start(_checkpoint_of(row), row.resume)
    for probe in probes:
        check_probe(probe)
    return requests


def run_configs(
    requests: Sequence[RunRequest], jobs: int = 1, probes: Sequence[ProbeRequest] = ()
) -> list[RunRecord]:
    """Run every request: one after the other here (``jobs == 1``), else row by row in
    ``jobs`` worker processes (see the module docstring). ``probes`` (architecture probes,
    which measure bytes and errors, no time) share the workers with the rows."""
    requests = check_requests(requests, probes, jobs)
    if jobs == 1:
        records = [record for request in requests for record in run_config(request)]
        for probe in probes:
            _probe(probe)
        return records
    uri = requests[0].tracking_uri if requests else probes[0].tracking_uri
    check_tracking_uri(resolve_tracking_uri(uri), source=tracking_uri_source(uri))
    names = [load_config(request.config_path).name for request in requests]
    names += [load_config(probe.config_path).name for probe in probes]
    prepare_experiments(resolve_tracking_uri(uri), names)  # before the workers share it
    work: list[Work] = [(_probe, probe) for probe in probes]
    rows = _longest_first(planned_rows(requests))
    work += [(_train_row, dataclasses.replace(row, progress=False)) for row in rows]
    return _run_in_workers(work, jobs)


def _models_per_config(requests: Sequence[RunRequest]) -> list[RunRequest]:
    """With several configs, ``--models`` picks from each config the rows it has; a name that
    is a row of none of them is an error."""
    names = requests[0].models if requests else None
    if len(requests) < 2 or not names:
        return list(requests)
    rows = {r.config_path: load_config(r.config_path).models for r in requests}
    unknown = [name for name in names if not any(name in models for models in rows.values())]
    if unknown:
        raise ConfigError(
            f"--models {' '.join(unknown)}: not a row of any of {', '.join(map(str, rows))}; "
            "`python -m benchmarks list` shows every model with its table"
        )
    picked = []
    for request in requests:
        mine = [name for name in names if name in rows[request.config_path]]
        if mine:
            picked.append(dataclasses.replace(request, models=mine))
    return picked


@dataclass(frozen=True)
class _Stopped:
    """What a worker returns when SIGINT or SIGTERM stopped its row (after its checkpoint)."""

    signal_number: int


def _checkpoint_of(row: RunRequest) -> Path:
    resolved = load_config(row.config_path).resolve(row.profile)
    label = run_label(row.models[0], row.dataset, row.profile, row.seeds[0])
    return checkpoint_path_for(row, resolved.config.name, label)


def _recorded_seconds(row: RunRequest) -> float:
    """The wall time of the row's last recorded run (``results/runs/``); NaN when unknown."""
    config = load_config(row.config_path)
    record = load_record(record_path(RESULTS, config.name))
    if record.empty:
        return math.nan
    same = record[
        (record["tags.model"] == row.models[0])
        & (record["tags.dataset"] == row.dataset)
        & (record["tags.profile"] == row.profile)
    ]
    if same.empty or "metrics.wall_time_s" not in same:
        return math.nan
    return float(same["metrics.wall_time_s"].astype(float).max())


def _longest_first(rows: list[RunRequest]) -> list[RunRequest]:
    """Rows of unknown length first (in order), then the known ones, longest first."""
    seconds = [_recorded_seconds(row) for row in rows]
    order = sorted(range(len(rows)), key=lambda i: (not math.isnan(seconds[i]), -seconds[i]))
    return [rows[i] for i in order]


def _start_worker(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def _train_row(row: RunRequest) -> list[RunRecord] | _Stopped:
    try:
        return run_config(row)
    except Interrupted as stop:  # its checkpoint is written; the parent stops the others
        return _Stopped(stop.signal_number)


def _probe(request: ProbeRequest) -> list[RunRecord] | _Stopped:
    """Probe a config's architectures and print what ``probe`` prints (no training records)."""
    try:
        rows, figure = run_probes(request)
    except Interrupted as stop:
        return _Stopped(stop.signal_number)
    for row in rows:
        print(describe_probe(row), flush=True)
    if figure is not None:
        print(f"wrote {figure}", flush=True)
    return []


Work = tuple[Callable[[Any], list[RunRecord] | _Stopped], Any]


def _run_in_workers(work: list[Work], jobs: int) -> list[RunRecord]:
    threads = max(1, (os.cpu_count() or 1) // jobs)
    context = multiprocessing.get_context("spawn")
    with (
        interrupt_on_signals(),
        ProcessPoolExecutor(
            jobs, mp_context=context, initializer=_start_worker, initargs=(threads,)
        ) as pool,
    ):
        futures = [pool.submit(function, argument) for function, argument in work]
        try:
            done, pending = wait(futures, return_when=FIRST_EXCEPTION)
        except Interrupted as stop:
            for future in futures:
                future.cancel()
            if stop.signal_number != signal.SIGINT:  # Ctrl-C reaches the workers itself
                _signal_workers(pool, stop.signal_number)
            raise
        failed = [future for future in done if future.exception() is not None]
        if failed:
            for future in pending:
                future.cancel()
            raise failed[0].exception()
        return _collect(futures)


def _collect(futures: list[Future]) -> list[RunRecord]:
    """The records of the finished rows in order; a stopped row stops the command."""
    records = []
    for future in futures:
        outcome = future.result()
        if isinstance(outcome, _Stopped):
            raise Interrupted(outcome.signal_number)
        records += outcome
    return records


def _signal_workers(pool: ProcessPoolExecutor, number: int) -> None:
    """Pass a stop signal on to the running workers (each stops after a checkpoint)."""
    for process in list(getattr(pool, "_processes", {}).values()):
        if process.is_alive():
            os.kill(process.pid, number)
