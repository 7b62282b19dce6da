"""The ablation study table: each variant's bound over several seeds, beside the paper's figure.

For a config with ``layout: ablation`` (``configs/dequantization.yaml``) every seed's latest
finished run is kept (:func:`benchmarks.reporting.record.latest_runs` with ``per_seed=True``). Per
(model, dataset, profile) the table gives the mean and the sample standard deviation over
seeds of the one-sample test bound (the ELBO in bits/dim) and of the importance-weighted bound
with S samples, the per-seed values, and the paired difference to the full model (first model
of the config) on the same seed, with how many seeds it favours the full model. A second table
gives the bound against S (from the same draws, see
:func:`benchmarks.tasks.density.training.importance_weighted_curve`) and a figure plots it.

Example:
    >>> from benchmarks.config import load_config
    >>> from benchmarks.tables import load_published
    >>> table = build_ablation_table(load_config("configs/dequantization.yaml"),
    ...                              pd.DataFrame(), load_published())
    >>> sorted(set(table["profile"])), len(table)
    (['not run'], 4)
"""

from __future__ import annotations

import math
import re
import statistics
from pathlib import Path

import pandas as pd

from benchmarks.config import PROFILES, Config
from benchmarks.reporting.markdown import (
    NOT_RUN,
    generated_line,
    markdown_row,
    mean_std,
    number,
    spread,
)
from benchmarks.reporting.plots import importance_weighted_bound_plot
from benchmarks.tasks.density.baseline import BASELINE
from benchmarks.tasks.density.table import DATASET_TITLES
from flows.registry import get_info

__all__ = [
    "build_ablation_table",
    "build_bound_curve",
    "render_ablation_markdown",
    "write_bound_figure",
]

COLUMNS = [
    "model",
    "paper_row",
    "dataset",
    "profile",
    "published_bpd",
    "published_params",
    "seeds",
    "bpd_mean",
    "bpd_std",
    "bpd_per_seed",
    "iw_samples",
    "iw_mean",
    "iw_std",
    "vs_full_mean",
    "vs_full_std",
    "full_better_seeds",
    "baseline_bpd",
    "params",
    "steps",
    "wall_time_s",
    "device_name",
    "git_revision",
    "run_ids",
]
_CURVE_METRIC = re.compile(r"^metrics\.test_bpd_iw_s(\d+)$")


def _published(published: dict, config: Config) -> dict[str, dict]:
    return {row["model"]: row for row in published.get(config.name, {}).get("rows", [])}


def _column(runs: pd.DataFrame, name: str) -> pd.Series:
    column = f"metrics.{name}"
    return runs[column] if column in runs.columns else pd.Series(math.nan, index=runs.index)


def build_ablation_table(config: Config, runs: pd.DataFrame, published: dict) -> pd.DataFrame:
    """One row per (model, dataset, profile) with the seeds' mean and spread; *not run* rows
    for the published dataset of every model without a run."""
    reference = _published(published, config)
    full = config.models[0]
    rows = []
    for model in config.models:
        model_runs = runs[runs["tags.model"] == model] if not runs.empty else runs
        trained = [] if model_runs.empty else list(model_runs["tags.dataset"].unique())
        for dataset in list(config.datasets) + [d for d in trained if d not in config.datasets]:
            base = {
                "model": model,
                "paper_row": reference.get(model, {}).get("row", get_info(model).row)
                if dataset in config.datasets
                else get_info(model).row,
                "dataset": dataset,
                "published_bpd": float(reference.get(model, {}).get("bpd", math.nan))
                if dataset in config.datasets
                else math.nan,
                "published_params": float(reference.get(model, {}).get("params", math.nan))
                if dataset in config.datasets
                else math.nan,
            }
            found = model_runs[model_runs["tags.dataset"] == dataset] if trained else model_runs
            if found.empty:
                rows.append({**base, "profile": NOT_RUN})
                continue
            for profile in sorted(found["tags.profile"].unique(), key=PROFILES.index):
                rows.append({**base, **_summary(runs, found, full, dataset, profile)})
    integers = {"params": "Int64", "steps": "Int64", "iw_samples": "Int64"}
    return pd.DataFrame(rows, columns=COLUMNS).astype(integers)


def _summary(
    runs: pd.DataFrame, found: pd.DataFrame, full: str, dataset: str, profile: str
) -> dict[str, object]:
    chosen = found[found["tags.profile"] == profile].sort_values(
        "tags.seed", key=lambda s: s.astype(int)
    )
    seeds = [int(seed) for seed in chosen["tags.seed"]]
    bpd = [float(v) for v in _column(chosen, "test_bpd")]
    iw = [float(v) for v in _column(chosen, "test_bpd_iw")]
    same = runs[(runs["tags.dataset"] == dataset) & (runs["tags.profile"] == profile)]
    full_runs = same[same["tags.model"] == full]
    full_bpd = {
        int(s): float(v)
        for s, v in zip(full_runs["tags.seed"], _column(full_runs, "test_bpd"), strict=True)
    }
    paired = [
        value - full_bpd[seed] for seed, value in zip(seeds, bpd, strict=True) if seed in full_bpd
    ]
    baselines = same[same["tags.model"] == BASELINE]
    samples = _column(chosen, "iw_samples").dropna()
    return {
        "profile": profile,
        "seeds": " ".join(str(seed) for seed in seeds),
        "bpd_mean": statistics.fmean(bpd),
        "bpd_std": spread(bpd),
        "bpd_per_seed": " / ".join(f"{value:.3f}" for value in bpd),
        "iw_samples": int(samples.iloc[0]) if not samples.empty else pd.NA,
        "iw_mean": statistics.fmean(iw) if not samples.empty else math.nan,
        "iw_std": spread(iw) if not samples.empty else math.nan,
        "vs_full_mean": statistics.fmean(paired)
        if paired and found["tags.model"].iloc[0] != full
        else math.nan,
        "vs_full_std": spread(paired) if found["tags.model"].iloc[0] != full else math.nan,
        "full_better_seeds": f"{sum(d > 0 for d in paired)} of {len(paired)}"
        if paired and found["tags.model"].iloc[0] != full
        else "",
        "baseline_bpd": float(_column(baselines, "test_bpd").iloc[0])
        if not baselines.empty
        else math.nan,
        "params": int(_column(chosen, "params").iloc[0]),
        "steps": int(_column(chosen, "steps").iloc[0]),
        "wall_time_s": statistics.fmean(float(v) for v in _column(chosen, "wall_time_s")),
        "device_name": chosen["tags.device_name"].iloc[0] if "tags.device_name" in chosen else "",
        "git_revision": chosen["tags.git_revision"].iloc[0]
        if "tags.git_revision" in chosen
        else "",
        "run_ids": " ".join(chosen["run_id"]),
    }


def build_bound_curve(config: Config, runs: pd.DataFrame) -> pd.DataFrame:
    """Mean and spread over seeds of the S-sample bound per (model, dataset, profile, S)."""
    columns = ["model", "dataset", "profile", "samples", "mean", "std", "seeds"]
    if runs.empty:
        return pd.DataFrame(columns=columns)
    sizes = sorted(
        (int(match.group(1)), name) for name in runs.columns if (match := _CURVE_METRIC.match(name))
    )
    rows = []
    groups = runs.groupby(["tags.model", "tags.dataset", "tags.profile"])
    for (model, dataset, profile), group in sorted(
        groups,
        key=lambda item: config.models.index(item[0][0]) if item[0][0] in config.models else -1,
    ):
        if model not in config.models or profile == "smoke":
            continue
        for size, name in sizes:
            values = [float(v) for v in group[name].dropna()]
            if values:
                rows.append(
                    {
                        "model": model,
                        "dataset": dataset,
                        "profile": profile,
                        "samples": size,
                        "mean": statistics.fmean(values),
                        "std": spread(values),
                        "seeds": len(values),
                    }
                )
    return pd.DataFrame(rows, columns=columns)


def write_bound_figure(curve: pd.DataFrame, path: Path) -> Path | None:
    """Plot the bound against S (one line per model and dataset); None when there is none."""
    if curve.empty:
        return None
    lines = {}
    for (model, dataset, profile), group in curve.groupby(
        ["model", "dataset", "profile"], sort=False
    ):
        label = f"{get_info(model).row if model != BASELINE else model} ({dataset}, {profile})"
        lines[label] = [
            (int(r.samples), float(r.mean), 0.0 if math.isnan(r.std) else float(r.std))
            for r in group.itertuples()
        ]
    figure = importance_weighted_bound_plot(
        lines, "Importance-weighted bound vs S (mean and std over seeds)"
    )
    temporary = path.with_name(f".{path.name}.tmp.png")
    figure.savefig(temporary, dpi=110)
    temporary.replace(path)
    return path


def render_ablation_markdown(
    config: Config,
    table: pd.DataFrame,
    curve: pd.DataFrame,
    record: str,
    published: dict,
    figure: Path | None = None,
) -> str:
    """The ablation table, the bound-vs-S table and the figure, with what each number is."""
    section = published.get(config.name, {})
    checked = section.get("checked_against_paper", False)
    lines = [
        f"# {config.title}",
        "",
        generated_line(record, config.path, str(section.get("source", config.source)))
        + ("" if checked else " (**not yet checked against the paper**)")
        + ".",
        "",
        "- bound: bits/dim of the one-sample bound `E_q[log p((x+u)/L) - log q(u|x)]` on the "
        "test split (the ELBO; uniform dequantization is q = U[0,1)); IW (S): the "
        "importance-weighted bound with S samples, lower is tighter.",
        "- mean ± sample standard deviation over the seeds listed; per seed in seed order. "
        "Δ vs full: the variant's bound minus the full Flow++ bound on the same seed (positive: "
        "the removed component helped), with the number of seeds where the full model is "
        "better.",
        "- The `paper` profile widens the ablations to at least the full model's parameter "
        "count, as the official ablation scripts do; on digits the uniform variant keeps the "
        "full model's flow (same model, only the dequantizer differs) and the affine one is "
        "widened (params column; the config's note says how).",
        f"- Only `paper` rows on CIFAR-10 compare with the published figures. *{NOT_RUN}*: no "
        "finished run.",
        "",
        "| variant | model | dataset | profile | published bpd | published params | seeds | "
        "bound | per seed | IW bound (S) | Δ vs full | full better | baseline | params | steps | "
        "mean wall time | device |",
        "|---|---|---|---|--:|--:|---|--:|---|--:|--:|---|--:|--:|--:|--:|---|",
    ]
    for row in table.itertuples(index=False):
        ran = row.profile != NOT_RUN
        iw = "—"
        if ran and not pd.isna(row.iw_samples):
            iw = f"{mean_std(row.iw_mean, row.iw_std)} ({int(row.iw_samples)})"
        delta = "—"
        if ran and not math.isnan(row.vs_full_mean):
            delta = number(row.vs_full_mean, signed=True)
            if not math.isnan(row.vs_full_std):
                delta += f" ± {row.vs_full_std:.3f}"
        lines.append(
            markdown_row(
                [
                    str(row.paper_row),
                    f"`{row.model}`",
                    DATASET_TITLES.get(row.dataset, row.dataset),
                    f"`{row.profile}`" if ran else f"*{NOT_RUN}*",
                    number(row.published_bpd, 3),
                    "—"
                    if math.isnan(row.published_params)
                    else f"{row.published_params / 1e6:.1f}M",
                    row.seeds if ran else "—",
                    mean_std(row.bpd_mean, row.bpd_std) if ran else "—",
                    row.bpd_per_seed if ran else "—",
                    iw,
                    delta,
                    row.full_better_seeds or "—" if ran else "—",
                    number(row.baseline_bpd),
                    "—" if pd.isna(row.params) else f"{int(row.params):,}",
                    "—" if pd.isna(row.steps) else str(int(row.steps)),
                    "—" if not ran else f"{row.wall_time_s:.0f} s",
                    row.device_name if ran else "—",
                ]
            )
        )
    if section.get("note"):
        lines += ["", f"Published figures: {' '.join(str(section['note']).split())}"]
    if not curve.empty:
        sizes = sorted(curve["samples"].unique())
        lines += [
            "",
            "## Bound against the number of importance samples S",
            "",
            "From the same S_max draws per test image: the value at S averages the bound over "
            "the S_max / S disjoint groups of S draws. Mean ± std over seeds.",
            "",
            "| variant | dataset | profile | " + " | ".join(f"S = {s}" for s in sizes) + " |",
            "|---|---|---|" + "--:|" * len(sizes),
        ]
        for (model, dataset, profile), group in curve.groupby(
            ["model", "dataset", "profile"], sort=False
        ):
            by_size = {int(r.samples): (r.mean, r.std) for r in group.itertuples()}
            cells = [mean_std(*by_size[s]) if s in by_size else "—" for s in sizes]
            lines.append(
                markdown_row(
                    [
                        get_info(model).row,
                        DATASET_TITLES.get(dataset, dataset),
                        f"`{profile}`",
                        *cells,
                    ]
                )
            )
    if figure is not None:
        lines += ["", f"![bound against S]({figure.name})"]
    return "\n".join(lines) + "\n"
