"""The VAE table: ELBO and importance-weighted log p(x) in nats, over seeds, beside the IAF
paper's MNIST Table 1.

Every seed's latest finished run is kept (:func:`benchmarks.reporting.record.latest_runs` with
``per_seed=True``). Per (model, dataset, profile): the mean and sample standard deviation over
seeds of the test ELBO (one posterior draw per image) and of log p(x) (k importance samples),
the per-seed ELBOs, and the paired ELBO difference to the plain VAE (first model of the
config) on the same seed with the number of seeds where the flow posterior is better; then
log p(x) against k from the same draws.

Example:
    >>> from benchmarks.config import load_config
    >>> from benchmarks.tables import load_published
    >>> table = build_vae_table(load_config("configs/vae.yaml"), pd.DataFrame(),
    ...                         load_published())
    >>> sorted(set(table["profile"])), len(table)
    (['not run'], 6)
"""

from __future__ import annotations

import math
import re
import statistics

import pandas as pd

from benchmarks.config import PROFILES, Config
from benchmarks.reporting.gpu_cost import GPU_HOURS_HEADER, GpuCosts
from benchmarks.reporting.markdown import (
    NOT_RUN,
    generated_line,
    markdown_row,
    mean_std,
    number,
    spread,
)
from flows.registry import get_info

__all__ = ["build_vae_table", "render_vae_markdown"]

COLUMNS = [
    "model",
    "paper_row",
    "dataset",
    "profile",
    "published_elbo",
    "published_log_px",
    "seeds",
    "elbo_mean",
    "elbo_std",
    "elbo_per_seed",
    "log_px_mean",
    "log_px_std",
    "iw_samples",
    "vs_vae_mean",
    "vs_vae_std",
    "better_than_vae",
    "params",
    "steps",
    "wall_time_s",
    "device_name",
    "run_ids",
]
_CURVE = re.compile(r"^metrics\.test_log_px_k(\d+)$")
DATASET_TITLES = {"mnist": "MNIST", "digits": "digits (8x8, binarised)"}


def _values(runs: pd.DataFrame, metric: str) -> list[float]:
    column = f"metrics.{metric}"
    return [float(v) for v in runs[column]] if column in runs.columns else []


def build_vae_table(config: Config, runs: pd.DataFrame, published: dict) -> pd.DataFrame:
    """One row per (model, dataset, profile) over its seeds; *not run* for published cells."""
    reference = {row["model"]: row for row in published.get(config.name, {}).get("rows", [])}
    rows = []
    for model in config.models:
        entry = reference.get(model, {})
        model_runs = runs[runs["tags.model"] == model] if not runs.empty else runs
        trained = [] if model_runs.empty else list(model_runs["tags.dataset"].unique())
        for dataset in list(config.datasets) + [d for d in trained if d not in config.datasets]:
            published_cell = dataset in config.datasets
            base = {
                "model": model,
                "paper_row": entry.get("row", get_info(model).row),
                "dataset": dataset,
                "published_elbo": float(entry.get("elbo", math.nan))
                if published_cell
                else math.nan,
                "published_log_px": float(entry.get("log_px", math.nan))
                if published_cell
                else math.nan,
            }
            found = model_runs[model_runs["tags.dataset"] == dataset] if trained else model_runs
            if found.empty:
                rows.append({**base, "profile": NOT_RUN})
                continue
            for profile in sorted(found["tags.profile"].unique(), key=PROFILES.index):
                chosen = found[found["tags.profile"] == profile].sort_values(
                    "tags.seed", key=lambda s: s.astype(int)
                )
                rows.append({**base, **_summary(config, runs, chosen, model, dataset, profile)})
    integers = {"params": "Int64", "steps": "Int64", "iw_samples": "Int64"}
    return pd.DataFrame(rows, columns=COLUMNS).astype(integers)


def _summary(
    config: Config, runs: pd.DataFrame, chosen: pd.DataFrame, model: str, dataset: str, profile: str
) -> dict[str, object]:
    seeds = [int(seed) for seed in chosen["tags.seed"]]
    elbo, log_px = _values(chosen, "test_elbo"), _values(chosen, "test_log_px")
    plain = config.models[0]
    paired: list[float] = []
    if model != plain:
        same = runs[
            (runs["tags.model"] == plain)
            & (runs["tags.dataset"] == dataset)
            & (runs["tags.profile"] == profile)
        ]
        seeds_of_plain = [int(s) for s in same["tags.seed"]]
        reference = dict(zip(seeds_of_plain, _values(same, "test_elbo"), strict=True))
        paired = [e - reference[s] for s, e in zip(seeds, elbo, strict=True) if s in reference]
    return {
        "profile": profile,
        "seeds": " ".join(str(seed) for seed in seeds),
        "elbo_mean": statistics.fmean(elbo),
        "elbo_std": spread(elbo),
        "elbo_per_seed": " / ".join(f"{value:.2f}" for value in elbo),
        "log_px_mean": statistics.fmean(log_px) if log_px else math.nan,
        "log_px_std": spread(log_px),
        "iw_samples": int(_values(chosen, "iw_samples")[0]) if log_px else pd.NA,
        "vs_vae_mean": statistics.fmean(paired) if paired else math.nan,
        "vs_vae_std": spread(paired),
        "better_than_vae": f"{sum(d > 0 for d in paired)} of {len(paired)}" if paired else "",
        "params": int(_values(chosen, "params")[0]),
        "steps": int(_values(chosen, "steps")[0]),
        "wall_time_s": statistics.fmean(_values(chosen, "wall_time_s")),
        "device_name": chosen["tags.device_name"].iloc[0] if "tags.device_name" in chosen else "",
        "run_ids": " ".join(chosen["run_id"]),
    }


def _curve(config: Config, runs: pd.DataFrame) -> list[tuple[str, str, str, dict[int, tuple]]]:
    if runs.empty:
        return []
    sizes = sorted(
        (int(match.group(1)), name) for name in runs.columns if (match := _CURVE.match(name))
    )
    lines = []
    for model in config.models:
        for (dataset, profile), group in runs[runs["tags.model"] == model].groupby(
            ["tags.dataset", "tags.profile"]
        ):
            if profile == "smoke":
                continue
            points = {}
            for size, name in sizes:
                values = [float(v) for v in group[name].dropna()]
                if values:
                    points[size] = (statistics.fmean(values), spread(values))
            lines.append((model, dataset, profile, points))
    return lines


def render_vae_markdown(
    config: Config,
    table: pd.DataFrame,
    runs: pd.DataFrame,
    record: str,
    published: dict,
    costs: GpuCosts | None = None,
) -> str:
    """The table, the log p(x)-against-k table and what each number is, as Markdown."""
    costs = costs or GpuCosts()
    section = published.get(config.name, {})
    lines = [
        f"# {config.title}",
        "",
        generated_line(record, config.path, str(section.get("source", config.source))) + ".",
        "",
        "- ELBO: `E_q[log p(x|z) + log p(z) - log q(z|x)]` on the test split, one posterior "
        "draw per image; log p(x): the importance-weighted bound with k draws; both in nats "
        "per image, higher is better.",
        "- mean ± sample standard deviation over the seeds listed; per seed in seed order. "
        "Δ ELBO vs VAE: the row's ELBO minus the plain VAE's on the same seed, with the number "
        "of seeds where the flow posterior is better.",
        f"- Only `paper` rows on MNIST compare with the published figures; digits rows are 8x8 "
        f"images (64 binary pixels), a different scale. *{NOT_RUN}*: no finished run.",
        f"- {GPU_HOURS_HEADER}, on the paper datasets' rows: the `paper` profile's training "
        "(one seed) at the throughput `python -m benchmarks gpu-report` measured "
        "(results/gpu.md).",
        "",
        "| posterior | model | dataset | profile | published ELBO | published log p(x) | seeds "
        "| ELBO | per seed | log p(x) (k) | Δ ELBO vs VAE | better | params | steps | mean wall "
        f"time | device | {GPU_HOURS_HEADER} |",
        "|---|---|---|---|--:|--:|---|--:|---|--:|--:|---|--:|--:|--:|---|---|",
    ]
    for row in table.itertuples(index=False):
        ran = row.profile != NOT_RUN
        log_px = "—"
        if ran and not pd.isna(row.iw_samples):
            log_px = f"{mean_std(row.log_px_mean, row.log_px_std, 2)} ({int(row.iw_samples)})"
        delta = "—"
        if ran and not math.isnan(row.vs_vae_mean):
            delta = number(row.vs_vae_mean, 2, signed=True)
            if not math.isnan(row.vs_vae_std):
                delta += f" ± {row.vs_vae_std:.2f}"
        lines.append(
            markdown_row(
                [
                    str(row.paper_row),
                    f"`{row.model}`",
                    DATASET_TITLES.get(row.dataset, row.dataset),
                    f"`{row.profile}`" if ran else f"*{NOT_RUN}*",
                    number(row.published_elbo, 2),
                    number(row.published_log_px, 2),
                    row.seeds if ran else "—",
                    mean_std(row.elbo_mean, row.elbo_std, 2) if ran else "—",
                    row.elbo_per_seed if ran else "—",
                    log_px,
                    delta,
                    (row.better_than_vae or "—") if ran else "—",
                    "—" if pd.isna(row.params) else f"{int(row.params):,}",
                    "—" if pd.isna(row.steps) else str(int(row.steps)),
                    f"{row.wall_time_s:.0f} s" if ran else "—",
                    row.device_name if ran else "—",
                    costs.cell(config.name, row.model)
                    if row.dataset in config.datasets and row.profile in (NOT_RUN, "paper")
                    else "—",
                ]
            )
        )
    if section.get("note"):
        lines += ["", f"Published figures: {' '.join(str(section['note']).split())}"]
    curve = _curve(config, runs)
    if curve:
        sizes = sorted({size for *_, points in curve for size in points})
        lines += [
            "",
            "## log p(x) against the number of importance samples k",
            "",
            "From the same k_max draws per test image: the value at k averages the bound over "
            "the k_max / k disjoint groups of k draws. Mean ± std over seeds (nats).",
            "",
            "| posterior | dataset | profile | " + " | ".join(f"k = {s}" for s in sizes) + " |",
            "|---|---|---|" + "--:|" * len(sizes),
        ]
        for model, dataset, profile, points in curve:
            cells = [mean_std(*points[s], 2) if s in points else "—" for s in sizes]
            title = DATASET_TITLES.get(dataset, dataset)
            lines.append(markdown_row([get_info(model).row, title, f"`{profile}`", *cells]))
    return "\n".join(lines) + "\n"
