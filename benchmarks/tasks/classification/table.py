"""The CIFAR table: test error of the ResNets and RevNets beside the RevNet paper's.

For each model of the config the table lists every dataset of the published table and every
dataset the model was trained on. Each row holds the published error, the latest run of each
profile (measured error, parameters, throughput, activation memory, device, steps, wall time,
seed, git revision, MLflow run id) and, only where the comparison is meaningful (``paper``
profile on the published dataset), the difference. A published cell without a run shows as
*not run*.

Example:
    >>> from benchmarks.config import load_config
    >>> table = build_table(load_config("configs/cifar.yaml"), pd.DataFrame(), {})
    >>> sorted(set(table["profile"]))
    ['not run']
"""

from __future__ import annotations

import math

import pandas as pd
import torch

from benchmarks.config import PROFILES, Config
from benchmarks.reporting.gpu_cost import GPU_HOURS_HEADER, GpuCosts
from benchmarks.reporting.markdown import (
    NOT_RUN,
    generated_line,
    markdown_row,
    number,
    published_notes,
)
from benchmarks.tasks.classification.data import DATASETS
from flows.registry import create, get_info

__all__ = ["COLUMNS", "build_table", "render_markdown"]

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
    config: Config,
    table: pd.DataFrame,
    record: str,
    published: dict | None = None,
    costs: GpuCosts | None = None,
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
        f"- {GPU_HOURS_HEADER}, on the paper datasets' rows: the `paper` profile's training "
        "at the throughput `python -m benchmarks gpu-report` measured (results/gpu.md).",
        "",
        "| model | paper row | dataset | profile | published error % | measured error % | "
        "Δ (pp) | published params | params (code) | train img/s | activations MiB | "
        f"device | steps | wall time | {GPU_HOURS_HEADER} |",
        "|---|---|---|---|--:|--:|--:|--:|--:|--:|--:|---|--:|--:|---|",
    ]
    costs = costs or GpuCosts()
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
                    number(row.published_error, 2),
                    number(row.measured_error, 2) if ran else "—",
                    number(row.difference, 2) if ran else "—",
                    _millions(row.published_params),
                    _millions(float(row.params)),
                    number(row.train_images_per_s, 0) if ran else "—",
                    number(row.activation_mib, 1) if ran else "—",
                    row.device_name if ran else "—",
                    str(int(row.steps)) if ran else "—",
                    _duration(row.wall_time_s) if ran else "—",
                    costs.cell(config.name, row.model)
                    if row.dataset in config.datasets and row.profile in (NOT_RUN, "paper")
                    else "—",
                ]
            )
        )
    lines += published_notes(published, config.name)
    return "\n".join(lines) + "\n"
