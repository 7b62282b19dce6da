"""The results record: nothing a user runs erases, replaces or fakes a committed result.

- a fresh clone compiling the tables from an empty MLflow store leaves every committed file
  of ``results/`` byte for byte as it is;
- a run from a modified or private config never replaces a published row;
- a run of the committed config adds or replaces exactly its own row, with its provenance;
- the merge rules (newer wins, the store's absence drops nothing, local runs never shadow a
  publishable one) on hand-made runs.
"""

from __future__ import annotations

import filecmp
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import yaml

from benchmarks.cli import main
from benchmarks.config import load_config
from benchmarks.reporting.record import (
    committed_config,
    latest_runs,
    load_record,
    merge_runs,
    record_path,
    write_record,
)
from benchmarks.tables import compile_tables

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS = REPO_ROOT / "results"
CIFAR = REPO_ROOT / "configs" / "cifar.yaml"


def _copy_results(tmp_path: Path) -> Path:
    out = tmp_path / "results"
    shutil.copytree(RESULTS, out)
    return out


def _differences(left: Path, right: Path) -> list[str]:
    """Files that differ, or exist on one side only, between two folder trees."""
    found = []
    for path in sorted({p.relative_to(left) for p in left.rglob("*") if p.is_file()}):
        if not (right / path).is_file() or not filecmp.cmp(left / path, right / path, False):
            found.append(str(path))
    extra = {p.relative_to(right) for p in right.rglob("*") if p.is_file()}
    extra -= {p.relative_to(left) for p in left.rglob("*") if p.is_file()}
    return found + [f"new: {p}" for p in sorted(extra)]


def test_the_committed_record_holds_every_measured_row_of_the_tables() -> None:
    """Every table's measured (not *not run*) cells come from a run in its record."""
    for config_path in sorted((REPO_ROOT / "configs").glob("*.yaml")):
        name = load_config(config_path).name
        record = load_record(record_path(RESULTS, name))
        assert not record.empty, f"results/runs/{name}.csv is missing or empty"
        assert record["run_id"].notna().all() and record["tags.config_digest"].notna().all()
        assert record["tags.git_revision"].notna().all() and record["end_time"].notna().all()
        assert record["tags.device_name"].notna().all()
        tags = record[[c for c in record.columns if c.startswith("tags.")]]
        assert not tags.map(lambda v: str(v).startswith("/")).any().any()  # no machine paths
        tracked = subprocess.run(
            ["git", "ls-files", "--error-unmatch", f"results/runs/{name}.csv"],
            cwd=REPO_ROOT,
            capture_output=True,
        )
        inside_git = (REPO_ROOT / ".git").exists()
        assert tracked.returncode == 0 or not inside_git, f"results/runs/{name}.csv is not in git"
        markdown = (RESULTS / f"{name}.md").read_text()
        for run_id in record["run_id"]:
            assert run_id in markdown  # the provenance section lists every run


@pytest.mark.slow
def test_a_fresh_clone_compiling_tables_from_an_empty_store_changes_nothing(
    tmp_path: Path,
) -> None:
    out = _copy_results(tmp_path)
    paths = compile_tables(REPO_ROOT / "configs", out, f"sqlite:///{tmp_path / 'empty.db'}")
    assert paths  # it did render every table ...
    assert _differences(RESULTS, out) == []  # ... to exactly the committed bytes


def _run_quick_resnet32(config: Path, tmp_path: Path, uri: str) -> None:
    common = ["--runs-dir", str(tmp_path / "runs"), "--tracking-uri", uri, "--no-progress"]
    arguments = ["run", str(config), "--profile", "quick", "--models", "resnet32", *common]
    assert main(arguments) == 0


@pytest.mark.slow
def test_a_run_of_a_modified_config_never_replaces_a_published_row(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    raw = yaml.safe_load(CIFAR.read_text())
    raw["profiles"]["quick"]["steps"] = 2  # a private copy: resnet32's quick row in 2 steps
    raw["profiles"]["quick"]["lr_milestones"] = []
    private = tmp_path / "my_cifar.yaml"
    private.write_text(yaml.safe_dump(raw))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    _run_quick_resnet32(private, tmp_path, uri)
    out = _copy_results(tmp_path)
    capsys.readouterr()
    assert main(["tables", "--configs-dir", str(REPO_ROOT / "configs"), "--out", str(out),
                 "--tracking-uri", uri]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    assert "cifar: record unchanged" in printed
    assert "1 local run(s) left out" in printed and "resnet32 on digits" in printed
    assert _differences(RESULTS, out) == []


def _fake_run(run_id: str, end: str, digest: str, seed: str = "0", **tags: str) -> dict:
    row = {
        "run_id": run_id,
        "end_time": end,
        "tags.kind": "train",
        "tags.model": "resnet32",
        "tags.dataset": "digits",
        "tags.profile": "quick",
        "tags.seed": seed,
        "tags.config": "configs/cifar.yaml",
        "tags.config_digest": digest,
        "tags.git_revision": "abc",
        "tags.device": "cpu",
        "tags.device_name": "CPU",
        "metrics.test_error": 5.0,
    }
    return row | {f"tags.{k}": v for k, v in tags.items()}


def test_merge_adds_replaces_by_newer_runs_and_never_drops_a_row() -> None:
    config = load_config(CIFAR)
    digest = config.resolve("quick").row_digest("resnet32", "digits")
    other = config.resolve("quick").row_digest("revnet38", "digits")
    committed = [
        _fake_run("old", "2026-01-01T00:00:00Z", digest),
        _fake_run("kept", "2026-01-01T00:00:00Z", other, model="revnet38"),
    ]
    record = pd.DataFrame(committed)
    newer = _fake_run("new", "2026-02-01T00:00:00Z", digest)
    merged, report = merge_runs(record, pd.DataFrame([newer]), config)
    assert sorted(merged["run_id"]) == ["kept", "new"]  # revnet38's row stays without a run
    assert len(report.replaced) == 1 and not report.added and not report.local
    older = _fake_run("older", "2025-12-01T00:00:00Z", digest)
    merged, report = merge_runs(record, pd.DataFrame([older]), config)
    assert sorted(merged["run_id"]) == ["kept", "old"] and len(report.older) == 1
    merged, report = merge_runs(pd.DataFrame(), pd.DataFrame([newer]), config)
    assert list(merged["run_id"]) == ["new"] and len(report.added) == 1


def test_merge_leaves_out_runs_that_the_committed_config_would_not_make() -> None:
    config = load_config(CIFAR)
    digest = config.resolve("quick").row_digest("resnet32", "digits")
    record = pd.DataFrame([_fake_run("published", "2026-01-01T00:00:00Z", digest)])
    strays = [
        _fake_run("other-settings", "2026-03-01T00:00:00Z", "0123456789abcdef"),
        _fake_run("extra-seed", "2026-03-01T00:00:00Z", digest, seed="7"),
        _fake_run("other-dataset", "2026-03-01T00:00:00Z", digest, dataset="cifar10"),
        _fake_run("untagged", "2026-03-01T00:00:00Z", None),
    ]
    merged, report = merge_runs(record, pd.DataFrame(strays), config)
    assert list(merged["run_id"]) == ["published"]
    assert len(report.local) == 4 and not report.added and not report.replaced
    # A later local run does not hide an earlier run of the committed config.
    good = _fake_run("good", "2026-02-01T00:00:00Z", digest)
    merged, _ = merge_runs(record, pd.DataFrame([strays[0], good]), config)
    assert list(merged["run_id"]) == ["good"]
    # Without committed config content no run is taken.
    merged, report = merge_runs(record, pd.DataFrame([good]), None)
    assert list(merged["run_id"]) == ["published"] and len(report.local) == 1


def test_the_record_round_trips_and_latest_runs_pick_the_newest(tmp_path: Path) -> None:
    config = load_config(CIFAR)
    digest = config.resolve("quick").row_digest("resnet32", "digits")
    runs = pd.DataFrame(
        [
            _fake_run("a", "2026-01-01T00:00:00Z", digest),
            _fake_run("b", "2026-02-01T00:00:00Z", digest, seed="1"),
        ]
    )
    path = tmp_path / "runs" / "cifar.csv"
    write_record(path, runs)
    loaded = load_record(path)
    assert list(loaded["run_id"]) == ["a", "b"] and loaded["metrics.test_error"].tolist() == [5, 5]
    assert loaded["tags.seed"].tolist() == ["0", "1"]  # tags stay text, as MLflow gives them
    assert latest_runs(loaded)["run_id"].tolist() == ["b"]
    assert sorted(latest_runs(loaded, per_seed=True)["run_id"]) == ["a", "b"]


def test_the_committed_config_is_the_version_at_head(tmp_path: Path) -> None:
    def git(*arguments: str) -> None:
        subprocess.run(["git", *arguments], cwd=tmp_path, check=True, capture_output=True)

    git("init", "-q")
    configs = tmp_path / "configs"
    configs.mkdir()
    shutil.copy(CIFAR, configs / "cifar.yaml")
    git("add", "configs/cifar.yaml")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "config")
    edited = (configs / "cifar.yaml").read_text().replace("steps: 4\n", "steps: 3\n")
    (configs / "cifar.yaml").write_text(edited)
    committed = committed_config(configs / "cifar.yaml")
    assert committed is not None and committed.resolve("smoke").training.steps == 4
    assert load_config(configs / "cifar.yaml").resolve("smoke").training.steps == 3
    shutil.copy(CIFAR, configs / "private.yaml")  # never committed: no run of it is published
    assert committed_config(configs / "private.yaml") is None
