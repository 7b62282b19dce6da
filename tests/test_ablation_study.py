"""The Flow++ ablation study: one run per seed through the CLI, and the table's statistics
(mean, sample spread, paired differences, bound against S) checked against hand computation."""

from __future__ import annotations

import math
import statistics
from pathlib import Path

import pandas as pd
import pytest

from benchmarks.cli import main
from benchmarks.config import load_config
from benchmarks.errors import ConfigError
from benchmarks.tables import load_published
from benchmarks.tasks.density.ablation_table import build_ablation_table, build_bound_curve
from tests.conftest import REPO_ROOT

CONFIG = REPO_ROOT / "configs" / "dequantization.yaml"


def _run(model: str, seed: int, bpd: float, iw: float, curve: dict[int, float]) -> dict:
    return {
        "tags.model": model,
        "tags.dataset": "digits",
        "tags.profile": "quick",
        "tags.seed": str(seed),
        "tags.device_name": "cpu",
        "tags.git_revision": "abc",
        "run_id": f"{model}-{seed}",
        "metrics.test_bpd": bpd,
        "metrics.test_bpd_iw": iw,
        "metrics.iw_samples": 4.0,
        "metrics.params": 1000.0,
        "metrics.steps": 400.0,
        "metrics.wall_time_s": 60.0,
        **{f"metrics.test_bpd_iw_s{s}": v for s, v in curve.items()},
    }


def test_table_statistics_are_mean_sample_spread_and_paired_differences() -> None:
    full = [2.00, 2.10, 1.90]
    uniform = [2.05, 2.12, 1.99]
    runs = pd.DataFrame(
        [_run("flowpp_cifar10", s, b, b - 0.1, {1: b, 4: b - 0.1}) for s, b in enumerate(full)]
        + [
            _run("flowpp_cifar10_uniform", s, b, b - 0.2, {1: b, 4: b - 0.2})
            for s, b in enumerate(uniform)
        ]
        + [
            {
                "tags.model": "pixel_categorical",
                "tags.dataset": "digits",
                "tags.profile": "quick",
                "tags.seed": "0",
                "run_id": "base",
                "metrics.test_bpd": 2.4,
            }
        ]
    )
    config = load_config(CONFIG)
    table = build_ablation_table(config, runs, load_published())
    row = table[(table.model == "flowpp_cifar10_uniform") & (table.dataset == "digits")].iloc[0]
    differences = [u - f for u, f in zip(uniform, full, strict=True)]
    assert row.bpd_mean == pytest.approx(statistics.fmean(uniform))
    assert row.bpd_std == pytest.approx(statistics.stdev(uniform))
    assert row.vs_full_mean == pytest.approx(statistics.fmean(differences))
    assert row.vs_full_std == pytest.approx(statistics.stdev(differences))
    assert row.full_better_seeds == "3 of 3" and row.seeds == "0 1 2"
    assert row.bpd_per_seed == "2.050 / 2.120 / 1.990" and row.baseline_bpd == 2.4
    assert row.iw_mean == pytest.approx(statistics.fmean(uniform) - 0.2)
    full_row = table[(table.model == "flowpp_cifar10") & (table.dataset == "digits")].iloc[0]
    assert math.isnan(full_row.vs_full_mean) and full_row.full_better_seeds == ""
    cifar = table[(table.model == "flowpp_cifar10_uniform") & (table.dataset == "cifar10")]
    assert cifar.iloc[0].profile == "not run" and cifar.iloc[0].published_bpd == 3.292
    curve = build_bound_curve(config, runs)
    point = curve[(curve.model == "flowpp_cifar10") & (curve.samples == 4)].iloc[0]
    assert point["mean"] == pytest.approx(statistics.fmean(full) - 0.1) and point.seeds == 3


def test_seeds_are_validated(tmp_path: Path) -> None:
    text = CONFIG.read_text().replace("seeds: [0, 1, 2]", "seeds: [0, 0]")
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match="distinct seeds"):
        load_config(path)
    assert load_config(CONFIG).resolve("quick").seeds == [0, 1, 2]
    assert load_config(CONFIG).resolve("paper").seeds == [0]


@pytest.mark.slow
def test_smoke_study_runs_every_seed_and_compiles_the_study_table(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    arguments = ["--runs-dir", str(tmp_path / "runs"), "--tracking-uri", uri, "--no-progress"]
    models = ["--models", "flowpp_cifar10", "flowpp_cifar10_uniform"]
    assert main(["run", str(CONFIG), "--profile", "smoke", *models, *arguments]) == 0
    out = tmp_path / "results"
    tables = ["tables", "--configs-dir", str(REPO_ROOT / "configs"), "--out", str(out)]
    assert main([*tables, "--tracking-uri", uri]) == 0
    table = pd.read_csv(out / "dequantization.csv")
    smoke = table[(table.dataset == "digits") & (table.profile == "smoke")]
    assert set(smoke.model) == {"flowpp_cifar10", "flowpp_cifar10_uniform"}
    assert set(smoke.seeds) == {"0 1"}  # the smoke profile's two seeds, one run each
    assert (smoke.iw_samples == 4).all()
    markdown = (out / "dequantization.md").read_text()
    assert (
        "| uniform dequantization | `flowpp_cifar10_uniform` | CIFAR-10 | *not run* | 3.292 "
        "| 32.3M |" in markdown
    )
    assert "not yet checked against the paper" not in markdown  # Table 2 was checked
    assert (tmp_path / "runs" / "dequantization").is_dir()
    assert len(list((tmp_path / "runs" / "dequantization").glob("flowpp_cifar10-*"))) == 2
    one = ["--models", "flowpp_cifar10_uniform", "--seed", "7"]
    assert main(["run", str(CONFIG), "--profile", "smoke", *one, *arguments]) == 0
    runs = sorted(p.name for p in (tmp_path / "runs" / "dequantization").glob("*uniform*"))
    assert runs == [f"flowpp_cifar10_uniform-digits-smoke-seed{s}" for s in (0, 1, 7)]
