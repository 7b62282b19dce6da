"""Compile the result tables: the record's runs beside the papers' numbers.

``tables`` first merges the finished runs of the MLflow store into the results record
(:mod:`benchmarks.record`: only runs of the committed config, never dropping a committed row),
then renders every table from the record alone, so that a fresh clone with an empty store
renders the committed tables unchanged.

For each config (one table) the compiler lists, per model, every dataset of the published
table and every dataset the model was trained on. Each row holds the published error, the
latest run of each profile (measured error, parameters, throughput, activation memory,
device, steps, wall time, seed, git revision, MLflow run id) and, only where the comparison
is meaningful (``paper`` profile on the published dataset), the difference. A published cell
without a run shows as *not run*; the section *Where the rows come from* lists every run.

Example:
    >>> paths = compile_tables(configs_dir="configs", out_dir="results")  # doctest: +SKIP
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import torch
import yaml

from benchmarks.architecture_report import (
    build_architecture_table,
    render_architecture_markdown,
)
from benchmarks.checkpoint import write_text_atomic
from benchmarks.config import PROFILES, Config, load_config
from benchmarks.data import DATASETS
from benchmarks.markdown import NOT_RUN, generated_line, markdown_row, published_notes
from benchmarks.record import (
    committed_config,
    latest_runs,
    load_record,
    merge_runs,
    provenance_markdown,
    record_path,
    store_runs,
    write_record,
)
from benchmarks.tracking import resolve_tracking_uri
from flows.registry import create, get_info

__all__ = ["build_table", "compile_tables", "load_published", "render_markdown"]

REPO_ROOT = Path(__file__).resolve().parents[1]
PUBLISHED_PATH = REPO_ROOT / "results" / "published.yaml"
COLUMNS = [
    "model",
    "paper_row",
    "dataset",
    "profile",
    "published_error",
    "measured_error",
    "difference",
    "published_params",
    "params",
    "train_images_per_s",
    "activation_mib",
    "device",
    "device_name",
    "steps",
    "wall_time_s",
    "seed",
    "git_revision",
    "run_id",
]


def load_published(path: str | Path = PUBLISHED_PATH) -> dict:
    """The papers' numbers, keyed by table name."""
    return yaml.safe_load(Path(path).read_text()) or {}


def _params_of(model: str, dataset: str) -> int:
    """Parameters of ``model`` built for ``dataset``, counted on the meta device (no memory,
    no initialisation cost)."""
    spec = DATASETS[dataset]
    with torch.device("meta"):
        built = create(model, num_classes=spec.num_classes, in_channels=spec.channels)
    return sum(p.numel() for p in built.parameters())


def build_table(config: Config, runs: pd.DataFrame, published: dict) -> pd.DataFrame:
    """One row per (model, dataset, profile run), plus *not run* rows for published cells."""
    table_published = published.get(config.name, {}).get("models", {})
    rows = []
    for model in config.models:
        entry = table_published.get(model, {})
        model_runs = runs[runs["tags.model"] == model] if not runs.empty else runs
        trained_on = [] if model_runs.empty else list(model_runs["tags.dataset"].unique())
        datasets = list(config.datasets) + [d for d in trained_on if d not in config.datasets]
        for dataset in datasets:
            base = {
                "model": model,
                "paper_row": entry.get("row", get_info(model).row),
                "dataset": dataset,
                "published_error": entry.get("error", {}).get(dataset, math.nan),
                "published_params": entry.get("params", math.nan),
            }
            found = (
                model_runs[model_runs["tags.dataset"] == dataset]
                if not model_runs.empty
                else model_runs
            )
            profiles = [] if found.empty else list(found["tags.profile"])
            if not profiles:
                rows.append({**base, "profile": NOT_RUN, "params": _params_of(model, dataset)})
                continue
            for profile in sorted(profiles, key=PROFILES.index):
                run = found[found["tags.profile"] == profile].iloc[0]
                measured = float(run["metrics.test_error"])
                comparable = profile == "paper" and dataset in config.datasets
                rows.append(
                    {
                        **base,
                        "profile": profile,
                        "measured_error": measured,
                        "difference": measured - base["published_error"]
                        if comparable
                        else math.nan,
                        "params": int(run["metrics.params"]),
                        "train_images_per_s": float(run["metrics.train_images_per_s"]),
                        "activation_mib": float(run["metrics.activation_bytes"]) / 2**20,
                        "device": run["tags.device"],
                        "device_name": run["tags.device_name"],
                        "steps": int(run["metrics.steps"]),
                        "wall_time_s": float(run["metrics.wall_time_s"]),
                        "seed": int(run["tags.seed"]),
                        "git_revision": run["tags.git_revision"],
                        "run_id": run["run_id"],
                    }
                )
    integers = {"params": "Int64", "steps": "Int64", "seed": "Int64"}  # NaN-able integers
    return pd.DataFrame(rows, columns=COLUMNS).astype(integers)


def _number(value: float, digits: int = 2, suffix: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value:.{digits}f}{suffix}"


def _millions(value: float) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value / 1e6:.3f}M"


def _duration(seconds: float) -> str:
    if isinstance(seconds, float) and math.isnan(seconds):
        return "—"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m" if hours else f"{minutes}m {secs:02d}s"


def render_markdown(
    config: Config, table: pd.DataFrame, record: str, published: dict | None = None
) -> str:
    """The table as Markdown, with the notes that say what each number is."""
    published = published or {}
    lines = [
        f"# {config.title}",
        "",
        generated_line(record, config.path, config.source) + ".",
        "",
        "- Only rows with profile `paper` on a published dataset reproduce the paper; the "
        "difference column is filled for those alone.",
        "- Rows on `digits` are trained on scikit-learn's bundled 8x8 handwritten digits "
        "(1 channel, 10 classes, 1,437 train / 360 test images, CPU-sized `quick` profile): "
        "they show that the pipeline and the model learn, they are **not** CIFAR reproductions, "
        "and their parameter counts differ slightly (1 input channel).",
        "- `smoke` rows are pipeline checks of a few steps and never results. "
        f"*{NOT_RUN}* means no finished run exists for that cell.",
        "- Params (code) is counted on the model this suite builds; activations are the bytes "
        "autograd holds for backward in one training step at the run's batch size.",
        "",
        "| model | paper row | dataset | profile | published error % | measured error % | "
        "Δ (pp) | published params | params (code) | train img/s | activations MiB | "
        "device | steps | wall time |",
        "|---|---|---|---|--:|--:|--:|--:|--:|--:|--:|---|--:|--:|",
    ]
    for row in table.itertuples(index=False):
        ran = row.profile != NOT_RUN
        profile = f"*{NOT_RUN}*" if not ran else f"`{row.profile}`"
        lines.append(
            markdown_row(
                [
                    row.model,
                    str(row.paper_row),
                    row.dataset,
                    profile,
                    _number(row.published_error),
                    _number(row.measured_error) if ran else "—",
                    _number(row.difference, suffix="") if ran else "—",
                    _millions(row.published_params),
                    _millions(float(row.params)),
                    _number(row.train_images_per_s, 0) if ran else "—",
                    _number(row.activation_mib, 1) if ran else "—",
                    row.device_name if ran else "—",
                    str(int(row.steps)) if ran else "—",
                    _duration(row.wall_time_s) if ran else "—",
                ]
            )
        )
    lines += published_notes(published, config.name)
    return "\n".join(lines) + "\n"


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
        markdown, table, figures = _render(committed or config, runs, out, uri, published)
        markdown += "\n".join(provenance_markdown(runs, committed)) + "\n"
        markdown_path, csv_path = out / f"{config.name}.md", out / f"{config.name}.csv"
        write_text_atomic(markdown_path, markdown)
        write_text_atomic(csv_path, table.to_csv(index=False, lineterminator="\n"))
        written += [*figures, markdown_path, csv_path]
    return written


def _render(
    config: Config, runs: pd.DataFrame, out: Path, uri: str, published: dict
) -> tuple[str, pd.DataFrame, list[Path]]:
    """Markdown, table and figures of one config from its record's runs."""
    record = f"runs/{config.name}.csv"
    trained = latest_runs(runs)
    if config.task == "latent-variable":
        from benchmarks.vae_table import build_vae_table, render_vae_markdown

        seed_runs = latest_runs(runs, per_seed=True)
        table = build_vae_table(config, seed_runs, published)
        markdown = render_vae_markdown(config, table, seed_runs, record, published)
        figure = out / "vae_posteriors.png"
        if figure.exists():
            markdown += (
                "\n## Posteriors of a 2-D latent VAE on four data points\n\n"
                "`python -m benchmarks posterior-figure` (the lecture's figure, Kingma et al. "
                "2016 Fig. 2): factorised Gaussian against IAF posteriors, posterior samples "
                "of each data point in its colour, beside the prior.\n\n"
                f"![posteriors]({figure.name})\n"
            )
        return markdown, table, []
    if config.layout == "ablation":
        from benchmarks.ablation_table import (
            build_ablation_table,
            build_bound_curve,
            render_ablation_markdown,
            write_bound_figure,
        )

        seed_runs = latest_runs(runs, per_seed=True)
        table = build_ablation_table(config, seed_runs, published)
        curve = build_bound_curve(config, seed_runs)
        out.mkdir(parents=True, exist_ok=True)
        figure = write_bound_figure(curve, out / f"{config.name}_iw_bound.png")
        markdown = render_ablation_markdown(config, table, curve, record, published, figure)
        return markdown, table, [figure] if figure is not None else []
    if config.task == "density":
        from benchmarks.density_table import (
            build_density_table,
            copy_sample_grids,
            render_density_markdown,
        )

        table = build_density_table(config, trained, published)
        grids = copy_sample_grids(table, uri, out)
        markdown = render_density_markdown(config, table, record, published, grids)
        return markdown, table, list(grids.values())
    if config.probe is None:
        table = build_table(config, trained, published)
        return render_markdown(config, table, record, published), table, []
    probes = latest_runs(runs, kind="probe")
    table = build_architecture_table(config, trained, probes, published)
    return render_architecture_markdown(config, table, record, published), table, []
