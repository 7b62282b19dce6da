"""Rows shared among worker processes give the runs of one process, row for row.

``run CONFIG... --jobs N`` (and ``bench``) hand each row to a worker with ``CPUs // N``
threads. A row's numbers must not depend on which process trained it: the records of two
workers equal, bit for bit, those of one process with as many threads as each worker had.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from benchmarks.errors import ConfigError
from benchmarks.request import RunRecord, RunRequest
from benchmarks.workers import planned_rows, run_configs

CONFIGS = ["configs/vae.yaml", "configs/density.yaml"]


def _requests(folder: Path, name: str, models: list[str] | None = None) -> list[RunRequest]:
    return [
        RunRequest(
            config,
            profile="smoke",
            models=models,
            runs_dir=folder / name,
            tracking_uri=f"sqlite:///{folder / name}.db",
            progress=False,
        )
        for config in CONFIGS
    ]


def _by_row(records: list[RunRecord]) -> dict[tuple[str, str, int], dict[str, float]]:
    timings = {"wall_time_s", "train_images_per_s"}
    return {
        (r.model, r.dataset, r.seed): {k: v for k, v in r.metrics.items() if k not in timings}
        for r in records
    }


def test_planned_rows_log_each_reference_once_per_dataset_and_seed() -> None:
    rows = planned_rows(_requests(Path("unused"), "plan"))
    density = [row for row in rows if row.config_path == "configs/density.yaml"]
    assert [row.models[0] for row in density] == [
        "realnvp_cifar10",
        "glow_cifar10",
        "flowpp_cifar10",
    ]
    assert [row.reference for row in density] == [True, False, False]
    vae = [(row.models[0], row.seeds[0]) for row in rows if row.config_path == "configs/vae.yaml"]
    assert len(vae) == len(set(vae)) == 6  # three VAEs, two seeds


def test_two_workers_give_the_records_of_one_process(tmp_path: Path) -> None:
    threads = max(1, (os.cpu_count() or 1) // 2)
    models = ["vae_mnist", "glow_cifar10", "realnvp_cifar10"]
    shared = run_configs(_requests(tmp_path, "pool", models), jobs=2)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        alone = run_configs(_requests(tmp_path, "alone", models), jobs=1)
    finally:
        torch.set_num_threads(before)
    assert _by_row(shared) == _by_row(alone)
    assert [r.model for r in shared].count("pixel_categorical") == 1


def test_models_are_picked_from_the_configs_that_have_them(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="resnet33: not a row of any of"):
        run_configs(_requests(tmp_path, "bad", ["vae_mnist", "resnet33"]), jobs=2)
    with pytest.raises(ConfigError, match="--jobs 0"):
        run_configs(_requests(tmp_path, "zero"), jobs=0)


def test_bench_measures_trains_and_compiles_in_one_command(tmp_path: Path) -> None:
    from benchmarks.cli import main

    out = tmp_path / "results"
    status = main(
        [
            "bench",
            "--configs",
            "configs/vae.yaml",
            "--probe-configs",
            "--profile",
            "smoke",
            "--jobs",
            "2",
            "--runs-dir",
            str(tmp_path / "runs"),
            "--memory-batch-size",
            "2",
            "--memory-sweep",
            "--memory-repeats",
            "1",
            "--out",
            str(out),
            "--tracking-uri",
            f"sqlite:///{tmp_path}/bench.db",
        ]
    )
    assert status == 0
    assert (out / "memory.csv").is_file() and (out / "vae.md").is_file()
    record = (out / "runs" / "vae.csv").read_text()
    assert record.count(",smoke,") == 6  # three VAEs, two seeds, each trained once
