"""``python -m benchmarks gpu-report`` and the GPU-hours column it feeds.

The measurements themselves need a CUDA device; on a CPU ``--tiny`` runs every section of the
command at tiny sizes (the code path, not a measurement), and the refusal without a GPU, the
overhead arithmetic and the tables' column are checked against hand-made inputs.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

from benchmarks.cli import main
from benchmarks.measure.gpu_report import recompute_rows
from benchmarks.measure.step_memory import RESNET, REVNET, REVNET_PLAIN
from benchmarks.reporting.gpu_cost import load_gpu_costs
from benchmarks.tables import compile_tables

REPO_ROOT = Path(__file__).resolve().parents[1]


def test_without_a_gpu_the_report_is_refused_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status = main(["gpu-report", "--device", "cpu", "--out", str(tmp_path)])
    lines = capsys.readouterr().err.splitlines()
    assert status == 2
    assert len(lines) == 1 and lines[0].startswith("error: ") and "CUDA machine" in lines[0]
    assert not any(tmp_path.iterdir())


def test_tiny_report_runs_every_section_and_names_where_it_came_from(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["gpu-report", "--tiny", "--device", "cpu", "--out", str(tmp_path)]
    assert main([*argv, "--revision", "abc123"]) == 0
    markdown = (tmp_path / "gpu.md").read_text()
    for section in ("Exactness", "Recomputation overhead", "normflows", "real training loop"):
        assert section in markdown
    assert "not a measurement" in markdown and "`abc123`" in markdown
    assert "**fail**" not in markdown.split("## Recomputation")[0]  # exact on the CPU
    costs = pd.read_csv(tmp_path / "gpu.csv")
    assert set(costs["model"]) == {"realnvp_cifar10", "glow_cifar10", "flowpp_cifar10"}
    assert set(costs["profile"]) == {"smoke"} and set(costs["revision"]) == {"abc123"}
    assert (costs["steps_per_s"] > 0).all()
    # a report from another device is not replaced silently
    costs.assign(device_name="NVIDIA H200").to_csv(tmp_path / "gpu.csv", index=False)
    capsys.readouterr()
    assert main(argv) == 2
    assert "device_name" in capsys.readouterr().err


def test_recomputation_overhead_is_against_plain_step_plus_one_forward() -> None:
    def row(case, family, step, forward=0.0, held=1.0):
        return {
            "case": case,
            "family": family,
            "depth": 110,
            "baseline": "ResNet-110",
            "step_time_s": step,
            "forward_time_s": forward,
            "held_bytes": held,
        }

    rows = [
        row("ResNet-110", RESNET, 0.040, held=600.0),
        row("RevNet-110, plain autograd", REVNET_PLAIN, 0.044, forward=0.014),
        row("RevNet-110", REVNET, 0.0609, held=100.0),
    ]
    (overhead,) = recompute_rows(rows)
    assert overhead["ideal_step_s"] == pytest.approx(0.058)
    assert overhead["vs_ideal"] == pytest.approx(0.0609 / 0.058)
    assert overhead["vs_resnet"] == pytest.approx(0.0609 / 0.040)
    assert overhead["held_ratio"] == pytest.approx(6.0)


def test_the_tables_show_the_paper_rows_gpu_hours_from_the_latest_report(tmp_path: Path) -> None:
    out = tmp_path / "results"
    shutil.copytree(REPO_ROOT / "results", out)
    assert load_gpu_costs(out).hours == {} or (out / "gpu.csv").is_file()
    pd.DataFrame(
        [
            {
                "config": "cifar",
                "model": "revnet110",
                "profile": "paper",
                "estimated_hours": 1.93,
                "device_name": "NVIDIA H200",
            },
            {
                "config": "density",
                "model": "glow_cifar10",
                "profile": "paper",
                "estimated_hours": 121.4,
                "device_name": "NVIDIA H200",
            },
            {
                "config": "cifar",
                "model": "resnet110",
                "profile": "smoke",
                "estimated_hours": 0.01,
                "device_name": "NVIDIA H200",
            },
        ]
    ).to_csv(out / "gpu.csv", index=False)
    compile_tables(REPO_ROOT / "configs", out, f"sqlite:///{tmp_path / 'empty.db'}")
    cifar = (out / "cifar.md").read_text().splitlines()
    revnet_rows = [line for line in cifar if line.startswith("| revnet110 |")]
    assert [line.split("|")[3].strip() for line in revnet_rows] == ["cifar10", "cifar100", "digits"]
    assert [line.split("|")[-2].strip() for line in revnet_rows] == [
        "1.9 (NVIDIA H200)",
        "1.9 (NVIDIA H200)",
        "—",  # a quick row on digits has no paper-profile cost
    ]
    resnet = next(line for line in cifar if line.startswith("| resnet110 | 110 | cifar10"))
    assert resnet.split("|")[-2].strip() == "not measured"  # only a smoke row was reported
    density = (out / "density.md").read_text()
    assert "121.4 (NVIDIA H200)" in density
