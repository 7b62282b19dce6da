"""The memory benchmark: its probes agree with each other and with the architecture."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import mlflow
import pandas as pd
import pytest

from benchmarks.cli import main
from benchmarks.measure.flow_memory import check_flow_claims
from benchmarks.measure.memory_report import check_claims, memory_frame
from benchmarks.measure.step_memory import (
    CHECKPOINT,
    GLOW,
    GLOW_PLAIN,
    RESNET,
    REVNET,
    REVNET_PLAIN,
    MemoryCase,
    glow_cases,
    measure_cases,
    sweep_cases,
)
from flows.models.resnet import BasicBranch
from flows.models.revnet import RevNet


@pytest.fixture(scope="module")
def sweep_rows() -> list[dict]:
    """Two depths (14 and 26) of each family, on tiny images, measured in one process."""
    cases = sweep_cases([1, 2])
    plain = [
        MemoryCase(
            f"RevNet-{12 * n + 2}, plain autograd",
            REVNET_PLAIN,
            12 * n + 2,
            "sweep",
            f"ResNet-{12 * n + 2}",
            lambda n=n: RevNet(BasicBranch, (n,) * 3, (32, 64, 128), memory_saving=False),
        )
        for n in (1, 2)
    ]
    return measure_cases(cases + plain, batch_size=4, resolution=8, repeats=1)


def by_case(rows: list[dict]) -> dict[str, dict]:
    return {row["case"]: row for row in rows}


def test_allocator_and_autograd_counts_agree(sweep_rows: list[dict]) -> None:
    for row in sweep_rows:
        if row["family"] != CHECKPOINT:
            assert row["held_bytes"] == pytest.approx(row["saved_bytes"], rel=0.1), row["case"]
        assert row["peak_bytes"] >= row["held_bytes"] > 0
        assert row["state_bytes"] >= 2 * 4 * row["params"]  # weights + momentum, float32


def test_memory_grows_with_depth_only_without_recomputation(sweep_rows: list[dict]) -> None:
    rows = by_case(sweep_rows)
    growth = {
        family: rows[f"{name}-26{suffix}"]["held_bytes"] / rows[f"{name}-14{suffix}"]["held_bytes"]
        for family, name, suffix in [
            (RESNET, "ResNet", ""),
            (REVNET, "RevNet", ""),
            (REVNET_PLAIN, "RevNet", ", plain autograd"),
        ]
    }
    assert growth[REVNET] < 1.1  # recomputation: flat in depth
    assert growth[RESNET] > 1.5 and growth[REVNET_PLAIN] > 1.5
    revnet, plain = rows["RevNet-26"], rows["RevNet-26, plain autograd"]
    assert revnet["held_bytes"] < 0.75 * plain["held_bytes"]  # one of two units per stage


def test_time_ratios_are_against_the_plain_resnet_of_equal_depth(sweep_rows: list[dict]) -> None:
    rows = by_case(sweep_rows)
    assert rows["ResNet-26"]["time_ratio"] == 1.0
    expected = rows["RevNet-26"]["step_time_s"] / rows["ResNet-26"]["step_time_s"]
    assert rows["RevNet-26"]["time_ratio"] == pytest.approx(expected)


def synthetic(held: dict[str, float], times: dict[str, float]) -> pd.DataFrame:
    rows = []
    for case, value in held.items():
        family = REVNET if case.startswith("RevNet") else RESNET
        baseline = {"RevNet-38": "ResNet-32"}.get(case, case.replace("RevNet", "ResNet"))
        rows.append(
            {
                "case": case,
                "family": family,
                "depth": 0,
                "group": "paper",
                "baseline": baseline,
                "held_bytes": value,
                "saved_bytes": value,
                "peak_bytes": value,
                "state_bytes": 1.0,
                "step_time_s": times[case],
                "forward_time_s": times[case] / 3,
                "time_ratio": 0.0,
            }
        )
    frame = memory_frame(rows)
    frame["time_ratio"] = frame.step_time_s / frame.baseline.map(
        dict(zip(frame.case, frame.step_time_s, strict=True))
    )
    return frame


def test_claims_pass_and_fail_on_the_numbers() -> None:
    held = {
        "ResNet-32": 100.0,
        "ResNet-110": 340.0,
        "ResNet-164": 1000.0,
        "RevNet-38": 50.0,
        "RevNet-110": 51.0,
        "RevNet-164": 150.0,
    }
    times = dict.fromkeys(held, 1.0) | {"RevNet-110": 1.4, "RevNet-164": 1.7}
    verdicts = {c.statement: c.passed for c in check_claims(synthetic(held, times))}
    assert verdicts["RevNet-38 -> RevNet-110: activation memory grows by less than 5%"]
    assert verdicts["RevNet-164 needs at most 1/5 of ResNet-164's activation memory"]
    assert verdicts["RevNet-110 step time at most 1.5x ResNet-110"]
    assert not verdicts["RevNet-164 step time at most 1.5x ResNet-164"]
    held["RevNet-110"] = 60.0
    verdicts = {c.statement: c.passed for c in check_claims(synthetic(held, times))}
    assert not verdicts["RevNet-38 -> RevNet-110: activation memory grows by less than 5%"]


def test_memory_command_writes_report_and_logs_mlflow(
    tmp_path: Path, tracking_uri: str, capsys: pytest.CaptureFixture[str]
) -> None:
    status = main(
        [
            "memory",
            "--no-paper",
            "--sweep",
            "1",
            "--batch-size",
            "2",
            "--resolution",
            "8",
            "--repeats",
            "1",
            "--device",
            "cpu",
            "--out",
            str(tmp_path),
            "--tracking-uri",
            tracking_uri,
        ]
    )
    assert status == 0
    table = pd.read_csv(tmp_path / "memory.csv")
    assert list(table.case) == ["ResNet-14", "ResNet-14 + checkpoint", "RevNet-14"]
    assert (tmp_path / "memory.png").stat().st_size > 1000
    markdown = (tmp_path / "memory.md").read_text()
    assert "| RevNet-14 | RevNet | 14 |" in markdown and "batch 2, 8x8" in markdown
    client = mlflow.MlflowClient(tracking_uri)
    (run,) = client.search_runs([client.get_experiment_by_name("memory").experiment_id])
    assert run.data.params["batch_size"] == "2"
    assert "revnet_14.held_mib" in run.data.metrics
    assert {a.path for a in client.list_artifacts(run.info.run_id)} >= {
        "memory.md",
        "memory.csv",
        "memory.png",
    }


@pytest.fixture(scope="module")
def glow_rows() -> list[dict]:
    """A tiny Glow (L=2, width 16, 8x8 images) at K = 2, 5, 8, memory saving on and off, and
    normflows' Glow at the same sizes where installed, measured in one process."""
    peer = importlib.util.find_spec("normflows") is not None
    cases = glow_cases([2, 5, 8], levels=2, width=16, image_size=8, peer=peer)
    return measure_cases(cases, batch_size=4, resolution=8, repeats=1)


def test_glow_memory_is_flat_in_k_only_with_the_memory_saving_backward(
    glow_rows: list[dict],
) -> None:
    rows = by_case(glow_rows)
    saving = [rows[f"Glow K={k}"]["held_bytes"] for k in (2, 5, 8)]
    plain = [rows[f"Glow K={k}, plain autograd"]["held_bytes"] for k in (2, 5, 8)]
    assert max(saving) / min(saving) < 1.05  # each level keeps its output only
    # plain autograd keeps every step's activations: the same bytes for each added step, so
    # held memory is affine in K (equal increments from K=2 to 5 and from 5 to 8) ...
    assert plain[2] - plain[1] == pytest.approx(plain[1] - plain[0], rel=0.05)
    assert plain[2] / plain[0] > 2.5  # ... and dominated by the steps (K x4 here)
    assert saving[2] < 0.2 * plain[2]
    for row in glow_rows:
        assert row["peak_bytes"] >= row["held_bytes"] > 0
    if "normflows Glow K=2" in rows:  # a peer's Glow with plain autograd grows with K too
        assert (
            rows["normflows Glow K=8"]["held_bytes"]
            > 2.5 * rows["normflows Glow K=2"]["held_bytes"]
        )


def test_glow_time_ratios_are_against_plain_autograd_at_the_same_k(
    glow_rows: list[dict],
) -> None:
    rows = by_case(glow_rows)
    plain = rows["Glow K=8, plain autograd"]
    assert plain["time_ratio"] == 1.0
    assert rows["Glow K=8"]["time_ratio"] == pytest.approx(
        rows["Glow K=8"]["step_time_s"] / plain["step_time_s"]
    )


def flow_frame(held: dict[str, float], ratio: dict[str, float]) -> pd.DataFrame:
    families = {"plain": GLOW_PLAIN, "Glow": GLOW}
    rows = [
        {
            "case": case,
            "family": families["plain" if "plain" in case else "Glow"],
            "depth": int(case.split("K=")[1].split(",")[0]),
            "group": "flows",
            "held_bytes": value,
            "saved_bytes": value,
            "peak_bytes": value,
            "state_bytes": 1.0,
            "step_time_s": 1.0,
            "forward_time_s": 0.4,
            "time_ratio": ratio.get(case, 1.0),
        }
        for case, value in held.items()
    ]
    return memory_frame(rows)


def test_glow_claims_pass_and_fail_on_the_numbers() -> None:
    held = {
        "Glow K=8, plain autograd": 100.0,
        "Glow K=8": 10.0,
        "Glow K=32, plain autograd": 390.0,
        "Glow K=32": 11.0,
    }
    ratio = {"Glow K=8": 1.6, "Glow K=32": 1.4}
    verdicts = {c.statement: c.passed for c in check_flow_claims(flow_frame(held, ratio))}
    flat = "Glow K=8 -> K=32, memory-saving backward: activations held grow by less than 20%"
    grows = (
        "Glow K=8 -> K=32, plain autograd: activations held grow roughly with K (x4.00; within 30%)"
    )
    assert verdicts[flat] and verdicts[grows]
    assert verdicts["Glow K=32 step time at most 1.5x plain autograd at the same K"]
    assert not verdicts["Glow K=8 step time at most 1.5x plain autograd at the same K"]
    measured = {c.statement: c.measured for c in check_flow_claims(flow_frame(held, ratio))}
    overhead = "recompute overhead vs plain autograd (ideal: one extra forward, from the measured"
    assert (
        measured[f"Glow K=32 {overhead} forward/backward split)"] == "1.40x measured, 1.40x ideal"
    )
    held |= {"Glow K=32": 12.5, "Glow K=32, plain autograd": 200.0}
    verdicts = {c.statement: c.passed for c in check_flow_claims(flow_frame(held, ratio))}
    assert not verdicts[flat] and not verdicts[grows]


def test_memory_flows_command_writes_the_glow_section_alone(
    tmp_path: Path, tracking_uri: str
) -> None:
    arguments = ["memory", "--flows", "--no-paper", "--sweep", "--flows-steps", "1", "2"]
    arguments += ["--flows-batch-size", "2", "--no-peer", "--repeats", "1", "--device", "cpu"]
    status = main([*arguments, "--out", str(tmp_path), "--tracking-uri", tracking_uri])
    assert status == 0
    assert not (tmp_path / "memory.csv").exists()
    table = pd.read_csv(tmp_path / "memory_flows.csv")
    assert list(table.case) == [
        "Glow K=1, plain autograd",
        "Glow K=1",
        "Glow K=2, plain autograd",
        "Glow K=2",
    ]
    assert set(table.width) == {512} and set(table.levels) == {3} and set(table.batch_size) == {2}
    markdown = (tmp_path / "memory_flows.md").read_text()
    assert "batch of 2 random 3x32x32 images" in markdown
    assert "| Glow K=2 | 2 |" in markdown
    client = mlflow.MlflowClient(tracking_uri)
    (run,) = client.search_runs([client.get_experiment_by_name("memory").experiment_id])
    assert "glow_k_2.held_mib" in run.data.metrics
