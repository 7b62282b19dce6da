"""Compile the result tables: the record's runs beside the papers' numbers.

``tables`` first merges the finished runs of the MLflow store into the results record
(:mod:`benchmarks.reporting.record`: only runs of the committed config, never dropping a committed
row), then renders every table from the record alone, so that a fresh clone with an empty store
renders the committed tables unchanged.

Each config is one table, drawn by its task (:data:`benchmarks.tasks.TASKS`, e.g.
:mod:`benchmarks.tasks.classification.table`); every table ends with the section *Where the
rows come from*, one line per run of the record. Nothing here imports the run
(:mod:`benchmarks.run`): rendering trains nothing.

Example:
    >>> paths = compile_tables(configs_dir="configs", out_dir="results")  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import yaml

from benchmarks.config import load_config
from benchmarks.core.files import write_text_atomic
from benchmarks.reporting.record import (
    committed_config,
    load_record,
    merge_runs,
    provenance_markdown,
    record_path,
    store_runs,
    write_record,
)
from benchmarks.reporting.tracking import resolve_tracking_uri
from benchmarks.tasks import task_of

__all__ = ["compile_tables", "load_published"]

REPO_ROOT = Path(__file__).resolve().parents[1]
PUBLISHED_PATH = REPO_ROOT / "results" / "published.yaml"


def load_published(path: str | Path = PUBLISHED_PATH) -> dict:
    """The papers' numbers, keyed by table name."""
    return yaml.safe_load(Path(path).read_text()) or {}


def compile_tables(
    configs_dir: str | Path = "configs",
    out_dir: str | Path = "results",
    tracking_uri: str | None = None,
    published_path: str | Path | None = None,
    log: Callable[[str], None] | None = None,
) -> list[Path]:
    """Merge the store's runs into each table's record, then render ``<out_dir>/<name>.md``
    and ``.csv`` from the record; return the paths written (the record's only if it changed).

    ``log`` receives one summary per table (rows added or replaced, local runs left out).
    """
    uri = resolve_tracking_uri(tracking_uri)
    out = Path(out_dir)
    published = load_published(published_path or PUBLISHED_PATH)
    written = []
    for config_path in sorted(Path(configs_dir).glob("*.yaml")):
        config = load_config(config_path)
        committed = committed_config(config_path)
        path = record_path(out, config.name)
        record = load_record(path)
        runs, report = merge_runs(record, store_runs(uri, config.name), committed)
        if log is not None:
            log(report.summary())
        if report.added or report.replaced:
            write_record(path, runs)
            written.append(path)
        rendered = task_of(committed or config).render_table(
            committed or config, runs, out, uri, published
        )
        markdown = rendered.markdown + "\n".join(provenance_markdown(runs, committed)) + "\n"
        table, figures = rendered.table, rendered.figures
        markdown_path, csv_path = out / f"{config.name}.md", out / f"{config.name}.csv"
        write_text_atomic(markdown_path, markdown)
        write_text_atomic(csv_path, table.to_csv(index=False, lineterminator="\n"))
        written += [*figures, markdown_path, csv_path]
    return written
