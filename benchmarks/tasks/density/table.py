"""The bits/dim table: the lecture's published table (flows and autoregressive models) and the
rows measured here, each beside the per-pixel categorical baseline of the same split.

Published rows come from ``results/published.yaml`` (section ``density``) and are shown as
references; measured rows come from the finished MLflow runs of the density config (latest per
model, dataset and profile). Every model of the config gets a *not run* row for each published
dataset it has no run on. Sample grids logged by the runs are copied next to the table.

Example:
    >>> from benchmarks.config import load_config
    >>> from benchmarks.tables import load_published
    >>> table = build_density_table(load_config("configs/density.yaml"), pd.DataFrame(),
    ...                             load_published())
    >>> sorted(set(table["profile"]))
    ['not run']
"""

from __future__ import annotations

import math
import shutil
import tempfile
from pathlib import Path

import pandas as pd

from benchmarks.config import PROFILES, Config
from benchmarks.reporting.gpu_cost import GPU_HOURS_HEADER, GpuCosts
from benchmarks.reporting.markdown import (
    NOT_RUN,
    generated_line,
    markdown_row,
    number,
    published_notes,
)
from benchmarks.tasks.density.baseline import BASELINE
from flows.registry import get_info

__all__ = ["build_density_table", "copy_sample_grids", "render_density_markdown"]

COLUMNS = [
    "model",
    "paper_row",
    "dataset",
    "profile",
    "published_bpd",
    "test_bpd",
    "test_bpd_iw",
    "iw_samples",
    "difference",
    "baseline_bpd",
    "beats_baseline",
    "params",
    "train_images_per_s",
    "device_name",
    "steps",
    "wall_time_s",
    "seed",
    "git_revision",
    "run_id",
]
DATASET_TITLES = {
    "cifar10": "CIFAR-10",
    "imagenet32": "ImageNet 32x32",
    "imagenet64": "ImageNet 64x64",
    "digits": "digits (8x8, 17 levels)",
}


def _published_rows(published: dict) -> list[dict]:
    return published.get("density", {}).get("rows", [])


def _published_bpd(published: dict, model: str, dataset: str) -> float:
    for row in _published_rows(published):
        if row.get("model") == model:
            return float(row.get("bpd", {}).get(dataset, math.nan))
    return math.nan


def _metric(run: pd.Series, name: str) -> float:
    column = f"metrics.{name}"
    return float(run[column]) if column in run.index and pd.notna(run[column]) else math.nan


def build_density_table(config: Config, runs: pd.DataFrame, published: dict) -> pd.DataFrame:
    """Measured and *not run* rows of the config's models, and the baseline runs."""
    baselines = runs[runs["tags.model"] == BASELINE] if not runs.empty else pd.DataFrame()

    def baseline_bpd(dataset: str, profile: str) -> float:
        if baselines.empty:
            return math.nan
        found = baselines[
            (baselines["tags.dataset"] == dataset) & (baselines["tags.profile"] == profile)
        ]
        return math.nan if found.empty else _metric(found.iloc[0], "test_bpd")

    rows = []
    for model in [*config.models, BASELINE]:
        model_runs = runs[runs["tags.model"] == model] if not runs.empty else runs
        trained_on = [] if model_runs.empty else list(model_runs["tags.dataset"].unique())
        expected = [] if model == BASELINE else list(config.datasets)
        for dataset in expected + [d for d in trained_on if d not in expected]:
            base = {
                "model": model,
                "paper_row": "per-pixel categorical (baseline)"
                if model == BASELINE
                else get_info(model).row,
                "dataset": dataset,
                "published_bpd": _published_bpd(published, model, dataset),
            }
            found = (
                model_runs[model_runs["tags.dataset"] == dataset]
                if not model_runs.empty
                else model_runs
            )
            if found.empty:
                rows.append({**base, "profile": NOT_RUN})
                continue
            for profile in sorted(found["tags.profile"], key=PROFILES.index):
                run = found[found["tags.profile"] == profile].iloc[0]
                test_bpd = _metric(run, "test_bpd")
                reference = baseline_bpd(dataset, profile) if model != BASELINE else math.nan
                comparable = profile == "paper" and dataset in config.datasets
                rows.append(
                    {
                        **base,
                        "profile": profile,
                        "test_bpd": test_bpd,
                        "test_bpd_iw": _metric(run, "test_bpd_iw"),
                        "iw_samples": _metric(run, "iw_samples"),
                        "difference": test_bpd - base["published_bpd"] if comparable else math.nan,
                        "baseline_bpd": reference,
                        "beats_baseline": (test_bpd < reference)
                        if not math.isnan(reference)
                        else None,
                        "params": _metric(run, "params"),
                        "train_images_per_s": _metric(run, "train_images_per_s"),
                        "device_name": run.get("tags.device_name", ""),
                        "steps": _metric(run, "steps"),
                        "wall_time_s": _metric(run, "wall_time_s"),
                        "seed": int(run["tags.seed"]) if "tags.seed" in run.index else None,
                        "git_revision": run.get("tags.git_revision", ""),
                        "run_id": run["run_id"],
                    }
                )
    integers = {"params": "Int64", "steps": "Int64", "seed": "Int64", "iw_samples": "Int64"}
    return pd.DataFrame(rows, columns=COLUMNS).astype(integers)


def _published_markdown(published: dict) -> list[str]:
    section = published.get("density", {})
    datasets = section.get("datasets", [])
    lines = [
        "| family | model | " + " | ".join(DATASET_TITLES.get(d, d) for d in datasets) + " |",
        "|---|---|" + "--:|" * len(datasets),
    ]
    for row in _published_rows(published):
        cells = [number(row.get("bpd", {}).get(d, math.nan), 2) for d in datasets]
        lines.append(markdown_row([row["family"], f"{row['row']} ({row['paper']})", *cells]))
    notes = [
        f"- {row['row']}: {' '.join(row['note'].split())}"
        for row in _published_rows(published)
        if row.get("note")
    ]
    return lines + (["", *notes] if notes else [])


def render_density_markdown(
    config: Config,
    table: pd.DataFrame,
    record: str,
    published: dict,
    sample_grids: dict[str, dict[str, Path]] | None = None,
    costs: GpuCosts | None = None,
) -> str:
    """The published table, the measured rows with their baseline, and the sample grids."""
    costs = costs or GpuCosts()
    lines = [
        f"# {config.title}",
        "",
        generated_line(
            record, config.path, published.get("density", {}).get("source", config.source)
        )
        + ".",
        "",
        "## Published (bits/dim on the test sets; references, not run here)",
        "",
        *_published_markdown(published),
        "",
        "## Measured here",
        "",
        "- bits/dim = (-log p(y) + log q(u|x) + D log L) / (D log 2) with y = (x + u) / L the "
        "dequantized image in [0,1] and L its number of levels (256 for 8-bit images, 17 for "
        "the digits); u is uniform (log q = 0) for RealNVP and Glow and drawn from Flow++'s "
        "variational dequantizer q(u|x); the one-sample bound, and the importance-weighted "
        "bound with S samples where given (`benchmarks/tasks/density/bits.py`).",
        "- baseline: independent per-pixel categorical distributions fitted to the same "
        "training split (add-one smoothing), an exact discrete likelihood; a flow row must beat "
        "it.",
        "- Only `paper` rows on a published dataset reproduce the paper (Δ filled). `digits` "
        "rows are CPU-sized `quick` runs on the embedded 8x8 digits; `smoke` rows are pipeline "
        f"checks, never results. *{NOT_RUN}*: no finished run.",
        f"- {GPU_HOURS_HEADER}, on the paper datasets' rows: the `paper` profile's training "
        "at the throughput `python -m benchmarks gpu-report` measured (results/gpu.md).",
        "",
        "| model | paper row | dataset | profile | published bpd | test bpd | IW bound (S) | "
        "Δ | baseline bpd | beats baseline | params | train img/s | device | steps | "
        f"wall time | {GPU_HOURS_HEADER} |",
        "|---|---|---|---|--:|--:|--:|--:|--:|---|--:|--:|---|--:|--:|---|",
    ]
    for row in table.itertuples(index=False):
        ran = row.profile != NOT_RUN
        iw = "—"
        if ran and not pd.isna(row.iw_samples):
            iw = f"{row.test_bpd_iw:.3f} ({int(row.iw_samples)})"
        beats = (
            "—"
            if row.beats_baseline is None or pd.isna(row.beats_baseline)
            else ("yes" if row.beats_baseline else "**no**")
        )
        lines.append(
            markdown_row(
                [
                    row.model,
                    str(row.paper_row),
                    DATASET_TITLES.get(row.dataset, row.dataset),
                    f"`{row.profile}`" if ran else f"*{NOT_RUN}*",
                    number(row.published_bpd, 2),
                    number(row.test_bpd),
                    iw,
                    number(row.difference, 2),
                    number(row.baseline_bpd),
                    beats,
                    "—" if pd.isna(row.params) else f"{int(row.params):,}",
                    number(row.train_images_per_s, 0),
                    row.device_name if ran else "—",
                    "—" if pd.isna(row.steps) else str(int(row.steps)),
                    "—" if pd.isna(row.wall_time_s) else f"{row.wall_time_s:.0f} s",
                    costs.cell(config.name, row.model)
                    if row.dataset in config.datasets and row.profile in (NOT_RUN, "paper")
                    else "—",
                ]
            )
        )
    lines += published_notes(published, config.name)
    for label, figures in (sample_grids or {}).items():
        if "samples" in figures:
            lines += [
                "",
                f"### Samples: {label}",
                "",
                f"![samples of {label}]({figures['samples'].name})",
            ]
        latent = [
            kind for kind in ("interpolation", "attributes", "temperature") if kind in figures
        ]
        if latent:
            lines += ["", f"### Latent space: {label}", "", LATENT_NOTE, ""]
            lines += [f"![{kind} of {label}]({figures[kind].name})" for kind in latent]
    return "\n".join(lines) + "\n"


LATENT_NOTE = (
    "The Glow paper's figures (`python -m benchmarks latent-figures`): decoded straight lines "
    "between two test images' latents (all latents, the coarsest only, and pixels), attribute "
    "manipulation `z + alpha v` with `v` the difference of the mean latents with and without "
    "the attribute, and samples by temperature with the bits/dim the model gives them."
)


# artifact of a run -> the figure's kind (the file in out_dir: density_<kind>_<row>.png)
RUN_FIGURES = {
    "samples.png": "samples",
    "latent/interpolation.png": "interpolation",
    "latent/attributes.png": "attributes",
    "latent/temperature.png": "temperature",
}


def copy_sample_grids(
    table: pd.DataFrame, tracking_uri: str, out_dir: Path
) -> dict[str, dict[str, Path]]:
    """Copy each measured run's figures (its ``samples.png`` and, where ``latent-figures``
    logged them, the latent-space figures) to ``out_dir``; label -> kind -> path. A figure no
    longer in the store keeps the file committed with the row."""
    import os

    import mlflow

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    client = mlflow.MlflowClient(tracking_uri)
    out_dir.mkdir(parents=True, exist_ok=True)
    copied: dict[str, dict[str, Path]] = {}
    measured = table[(table["profile"] != NOT_RUN) & (table["model"] != BASELINE)]
    for row in measured.itertuples(index=False):
        if row.profile == "smoke":
            continue
        label = f"{row.model} on {row.dataset} ({row.profile})"
        for artifact, kind in RUN_FIGURES.items():
            target = out_dir / f"density_{kind}_{row.model}_{row.dataset}_{row.profile}.png"
            if _copy_artifact(client, row.run_id, artifact, target) or target.exists():
                copied.setdefault(label, {})[kind] = target
    return copied


def _copy_artifact(client: object, run_id: str, artifact: str, target: Path) -> bool:
    """Copy ``artifact`` of ``run_id`` to ``target`` atomically; False if the store lacks it
    (a committed row's run, a run killed before the end, or figures never drawn)."""
    with tempfile.TemporaryDirectory() as folder:
        try:
            local = client.download_artifacts(run_id, artifact, folder)
        except Exception:
            return False
        temporary = target.with_name(f".{target.name}.tmp")
        shutil.copyfile(local, temporary)
        temporary.replace(target)
    return True
