"""The results record: every run behind a published table, with where it came from.

``results/`` is the project's record, not a cache of the local MLflow store. Each table's runs
live in ``results/runs/<table>.csv``, one row per run (training runs and architecture probes),
with its key (kind, model, dataset, profile, seed), its provenance (config file, digest of the
row's resolved settings, git revision, device, end time, MLflow run id) and its metrics. The
Markdown tables are rendered from it.

:func:`merge_runs` brings finished runs of the local store into the record under one rule: a
run enters only if it is a run of the *committed* config (the version of the config file at
git ``HEAD``, or the file itself outside a git checkout) — the same resolved settings
(:meth:`~benchmarks.config.ResolvedConfig.row_digest`) and a model, dataset and seed the
profile lists. It adds a row for a new key and replaces a row of the same key only with a
newer run. A committed row is never dropped because the store lacks it; a run of a modified or
private config is reported as a local run and left out.

Example:
    >>> import pandas as pd
    >>> from benchmarks.config import load_config
    >>> config = load_config("configs/cifar.yaml")
    >>> merged, report = merge_runs(pd.DataFrame(), pd.DataFrame(), config)
    >>> merged.empty, report.summary()
    (True, 'cifar: record unchanged (0 rows)')
"""

from __future__ import annotations

import subprocess
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path

import pandas as pd

from benchmarks.config import PROFILES, Config, content_digest, load_config
from benchmarks.core.files import write_text_atomic
from benchmarks.errors import BenchmarkError, ConfigError

__all__ = [
    "KEY",
    "MergeReport",
    "committed_config",
    "expected_digest",
    "latest_runs",
    "load_record",
    "merge_runs",
    "probe_digest",
    "provenance_markdown",
    "record_path",
    "store_runs",
    "write_record",
]

KEY = ["tags.kind", "tags.model", "tags.dataset", "tags.profile", "tags.seed"]
PROVENANCE = [
    "run_id",
    "end_time",
    "tags.config",
    "tags.config_digest",
    "tags.git_revision",
    "tags.device",
    "tags.device_name",
]
_TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
_KEPT_MLFLOW_TAGS = ("tags.mlflow.source.git.commit",)
# Not kept: the registry's metadata (not the run's), and the checkpoint's path on the machine
# that trained (local state; the MLflow run keeps it).
_UNKEPT_TAGS = ("tags.paper", "tags.table_row", "tags.task", "tags.checkpoint")


def record_path(out_dir: str | Path, table: str) -> Path:
    """Where the record of ``table`` lives: ``<out_dir>/runs/<table>.csv``."""
    return Path(out_dir) / "runs" / f"{table}.csv"


def _normalise(runs: pd.DataFrame) -> pd.DataFrame:
    """Runs as the record keeps them: key, provenance, the suite's tags and the metrics, with
    times as UTC text, tags as text and the classifier's untagged kind as ``train``."""
    if runs.empty:
        return pd.DataFrame(columns=[*PROVENANCE[:2], *KEY])
    runs = runs.copy()
    if "end_time" in runs and pd.api.types.is_datetime64_any_dtype(runs["end_time"]):
        runs["end_time"] = runs["end_time"].dt.tz_convert("UTC").dt.strftime(_TIME_FORMAT)
    for column in KEY:
        if column not in runs:
            runs[column] = None
    runs["tags.kind"] = runs["tags.kind"].fillna("train")
    tags = sorted(
        c
        for c in runs.columns
        if c.startswith("tags.")
        and c not in _UNKEPT_TAGS
        and (not c.startswith("tags.mlflow.") or c in _KEPT_MLFLOW_TAGS)
    )
    metrics = sorted(c for c in runs.columns if c.startswith("metrics."))
    columns = ["run_id", "end_time", *KEY, *(t for t in tags if t not in KEY), *metrics]
    kept = runs[columns]
    kept[tags] = kept[tags].astype(object).where(kept[tags].notna(), None)
    return kept.reset_index(drop=True)


def load_record(path: str | Path) -> pd.DataFrame:
    """The record at ``path`` as an MLflow-shaped frame (empty when there is none yet)."""
    path = Path(path)
    if not path.exists():
        return pd.DataFrame()
    try:
        raw = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError) as error:
        raise BenchmarkError(
            f"{path} is not a readable results record ({error}); restore it with "
            f"`git checkout -- {path}`"
        ) from None
    for column in raw.columns:
        if column.startswith("metrics."):
            raw[column] = pd.to_numeric(raw[column].replace("", None), errors="coerce")
        else:
            raw[column] = raw[column].astype(object).where(raw[column] != "", None)
    return raw


def write_record(path: str | Path, runs: pd.DataFrame) -> None:
    """Write the record atomically, rows sorted by key so that diffs show changed rows only."""
    ordered = _normalise(runs).sort_values(KEY, na_position="first", kind="stable")
    write_text_atomic(path, ordered.to_csv(index=False, lineterminator="\n"))


def store_runs(tracking_uri: str, experiment: str) -> pd.DataFrame:
    """Every FINISHED run of ``experiment`` in the MLflow store, normalised; empty if none."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri)
    if client.get_experiment_by_name(experiment) is None:
        return pd.DataFrame()
    mlflow.set_tracking_uri(tracking_uri)
    runs = mlflow.search_runs(
        experiment_names=[experiment], filter_string="attributes.status = 'FINISHED'"
    )
    return pd.DataFrame() if runs.empty else _normalise(runs)


def committed_config(path: str | Path) -> Config | None:
    """The config file as committed: its version at git ``HEAD`` inside a git checkout
    (``None`` when it is not committed there), the file itself outside one."""
    path = Path(path).resolve()
    inside = _git(path.parent, "rev-parse", "--show-toplevel")
    if inside is None:
        return load_config(path)
    relative = path.relative_to(Path(inside.strip()).resolve()).as_posix()
    text = _git(path.parent, "show", f"HEAD:{relative}")
    if text is None:
        return None
    with tempfile.TemporaryDirectory() as folder:
        copy = Path(folder) / path.name
        copy.write_text(text)
        try:
            config = load_config(copy)
        except ConfigError:
            return None
    return _with_path(config, path)


def _with_path(config: Config, path: Path) -> Config:
    """``config`` named by ``path`` (relative to the working folder where possible)."""
    try:
        shown = path.relative_to(Path.cwd()).as_posix()
    except ValueError:
        shown = str(path)
    return replace(config, path=shown)


def _git(folder: Path, *arguments: str) -> str | None:
    """Output of ``git <arguments>`` run in ``folder``, or ``None`` if git fails or is absent."""
    try:
        done = subprocess.run(["git", *arguments], cwd=folder, capture_output=True, text=True)
    except OSError:
        return None
    return done.stdout if done.returncode == 0 else None


def probe_digest(config: Config, model: str) -> str:
    """The digest of an architecture probe's settings (the config's ``probe`` section)."""
    probe = vars(config.probe) if config.probe is not None else {}
    return content_digest({"table": config.name, "model": model, "probe": probe})


def expected_digest(config: Config, run: pd.Series) -> str | None:
    """The digest a run of ``config`` with ``run``'s key must carry, or ``None`` when the
    committed config has no such row: an unknown profile or model, or a dataset or seed that
    the profile does not list (``--dataset``/``--seed`` outside them make local runs)."""
    model, kind = run.get("tags.model"), run.get("tags.kind")
    if kind == "probe":
        has_probe = config.probe is not None and model in config.models
        return probe_digest(config, model) if has_probe else None
    profile = run.get("tags.profile")
    if profile not in PROFILES:
        return None
    resolved = config.resolve(profile)
    try:
        seed = int(run.get("tags.seed"))
    except (TypeError, ValueError):
        return None
    listed = kind == "baseline" or (kind == "train" and model in resolved.models)
    dataset = run.get("tags.dataset")
    if not listed or dataset not in resolved.datasets or seed not in resolved.seeds:
        return None
    return resolved.row_digest(model, dataset)


@dataclass
class MergeReport:
    """What :func:`merge_runs` did with the store's runs of one table."""

    table: str
    rows: int = 0
    added: list[str] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)
    older: list[str] = field(default_factory=list)
    local: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One line for the console, then one line per local run left out."""
        changes = [
            f"{len(items)} {what}"
            for items, what in (
                (self.added, "added"),
                (self.replaced, "replaced"),
                (self.older, "older than the record's row, not taken"),
            )
            if items
        ]
        head = (
            f"{self.table}: record "
            + (", ".join(changes) if changes else "unchanged")
            + f" ({self.rows} rows)"
        )
        lines = [head] + [f"  replaced {label}" for label in self.replaced]
        if self.local:
            lines.append(
                f"  {len(self.local)} local run(s) left out (not a run of the committed config):"
            )
            lines += [f"    {label}" for label in self.local]
        return "\n".join(lines)


def _label(run: pd.Series) -> str:
    parts = [run.get(k) for k in KEY[1:]]
    kind = run.get("tags.kind")
    seed = f" seed {parts[3]}" if parts[3] is not None else ""
    what = f"{parts[0]} on {parts[1]}" if parts[1] is not None else f"{parts[0]}"
    return f"{what} [{kind}, {parts[2]}{seed}] run {run.get('run_id')}"


def _key(run: pd.Series) -> tuple:
    return tuple(None if pd.isna(run.get(k)) else str(run.get(k)) for k in KEY)


def merge_runs(
    record: pd.DataFrame, store: pd.DataFrame, config: Config | None
) -> tuple[pd.DataFrame, MergeReport]:
    """The record with the store's publishable runs merged in (see the module docstring).

    Args:
        record: the committed record of the table (:func:`load_record`).
        store: finished runs of the table's experiment (:func:`store_runs`).
        config: the committed config (:func:`committed_config`); ``None`` takes no run.
    """
    name = config.name if config is not None else "?"
    report = MergeReport(name)
    rows = {_key(run): run for _, run in _normalise(record).iterrows()} if not record.empty else {}
    latest = store.sort_values("end_time", ascending=False) if not store.empty else store
    seen: set[tuple] = set()
    for _, run in latest.iterrows():
        expected = expected_digest(config, run) if config is not None else None
        if expected is None or run.get("tags.config_digest") != expected:
            why = "no such row in the committed config" if expected is None else "other settings"
            report.local.append(f"{_label(run)} ({why})")
            continue
        key = _key(run)
        if key in seen:  # an older run of a key already taken from the store
            continue
        seen.add(key)
        current = rows.get(key)
        if current is None:
            report.added.append(_label(run))
        elif current.get("run_id") == run.get("run_id") and current.get("end_time") == run.get(
            "end_time"
        ):
            continue
        elif str(run.get("end_time")) >= str(current.get("end_time")):
            report.replaced.append(f"{_label(current)} by {run.get('run_id')}")
        else:
            report.older.append(_label(run))
            continue
        rows[key] = run
    merged = pd.DataFrame(list(rows.values())) if rows else pd.DataFrame()
    report.rows = len(merged)
    return (_normalise(merged) if not merged.empty else merged), report


def latest_runs(runs: pd.DataFrame, kind: str = "train", per_seed: bool = False) -> pd.DataFrame:
    """The latest run per (model, dataset, profile), and per seed with ``per_seed``, of one
    kind (``train`` also keeps the density table's ``baseline`` runs); what tables show."""
    if runs.empty:
        return runs
    kinds = {"train", "baseline"} if kind == "train" else {kind}
    chosen = runs[runs["tags.kind"].isin(kinds)]
    if chosen.empty:
        return chosen
    keys = ["tags.model", "tags.dataset", "tags.profile"] + (["tags.seed"] if per_seed else [])
    ordered = chosen.sort_values("end_time", ascending=False, kind="stable")
    return ordered.drop_duplicates(keys).reset_index(drop=True)


def provenance_markdown(runs: pd.DataFrame, config: Config | None) -> list[str]:
    """The section that says where every row of a table comes from: one line per run of
    the record, with its end time, device, revision, settings digest and MLflow run id."""
    lines = ["", "## Where the rows come from", ""]
    if runs.empty:
        return [*lines, "No run is in the record yet: every measured cell is *not run*."]
    lines += [
        "Each run in the record (`runs/<table>.csv` beside this file). *settings*: the digest "
        "of the row's resolved config; *current* when it equals the committed config's, *older "
        "config* when the config has changed since the run (the row stays until a run of the "
        "current config replaces it).",
        "",
        "| kind | model | dataset | profile | seed | finished (UTC) | device | revision | "
        "settings | MLflow run |",
        "|---|---|---|---|--:|---|---|---|---|---|",
    ]
    ordered = runs.sort_values(KEY, na_position="first", kind="stable")
    for _, run in ordered.iterrows():
        digest = run.get("tags.config_digest") or ""
        current = config is not None and digest and expected_digest(config, run) == digest
        settings = f"`{digest[:8]}` {'current' if current else 'older config'}" if digest else "—"
        cells = [
            run.get("tags.kind"),
            run.get("tags.model"),
            run.get("tags.dataset"),
            run.get("tags.profile"),
            run.get("tags.seed"),
            str(run.get("end_time") or "").replace("T", " ").rstrip("Z"),
            run.get("tags.device_name"),
            run.get("tags.git_revision"),
            settings,
            f"`{run.get('run_id')}`",
        ]
        lines.append("| " + " | ".join("—" if c is None else str(c) for c in cells) + " |")
    return lines
