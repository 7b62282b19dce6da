"""End to end through the CLI: train on digits, check the MLflow records and compiled table.

The module trains ResNet-32 once with the ``quick`` profile (about 15 s on 2 cores) and checks
that it really learns: at least 90% test accuracy on the embedded digits.
"""

from __future__ import annotations

from pathlib import Path

import mlflow
import pandas as pd
import pytest

from benchmarks.cli import main
from tests.conftest import REPO_ROOT

CONFIG = str(REPO_ROOT / "configs" / "cifar.yaml")


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("quick")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    status = main(
        [
            "run",
            CONFIG,
            "--profile",
            "quick",
            "--models",
            "resnet32",
            "--device",
            "cpu",
            "--runs-dir",
            str(root / "runs"),
            "--tracking-uri",
            uri,
            "--no-progress",
        ]
    )
    assert status == 0
    return {"root": root, "uri": uri}


@pytest.mark.slow
def test_resnet32_quick_profile_learns_digits(quick_run: dict) -> None:
    client = mlflow.MlflowClient(quick_run["uri"])
    (run,) = client.search_runs([client.get_experiment_by_name("cifar").experiment_id])
    assert 100.0 - run.data.metrics["test_error"] >= 90.0


@pytest.mark.slow
def test_mlflow_records_config_environment_metrics_and_artifacts(quick_run: dict) -> None:
    client = mlflow.MlflowClient(quick_run["uri"])
    (run,) = client.search_runs([client.get_experiment_by_name("cifar").experiment_id])
    assert run.info.status == "FINISHED"
    tags, params, metrics = run.data.tags, run.data.params, run.data.metrics
    assert (tags["model"], tags["dataset"], tags["profile"], tags["device"]) == (
        "resnet32",
        "digits",
        "quick",
        "cpu",
    )
    assert tags["reproduction"] == "no" and tags["torch_version"] and tags["git_revision"]
    assert params["training.steps"] == "240" and params["training.batch_size"] == "100"
    assert params["training.lr_milestones"] == "[120, 180]"
    assert "digits" in params["profile_note"]
    assert metrics["params"] == 463_866 and metrics["steps"] == 240
    assert metrics["wall_time_s"] > 0 and metrics["train_images_per_s"] > 0
    assert metrics["activation_bytes"] > 0
    curve = client.get_metric_history(run.info.run_id, "test_error")
    assert [m.step for m in curve] == [100, 200, 240, 240]
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "learning_curve.png"} <= artifacts
    checkpoint = quick_run["root"] / "runs" / "cifar" / "resnet32-digits-quick-seed0" / "last.pt"
    assert checkpoint.exists()


@pytest.mark.slow
def test_tables_put_measured_rows_beside_published_and_not_run(
    quick_run: dict, capsys: pytest.CaptureFixture[str]
) -> None:
    out = quick_run["root"] / "results"
    assert (
        main(
            [
                "tables",
                "--configs-dir",
                str(REPO_ROOT / "configs"),
                "--out",
                str(out),
                "--tracking-uri",
                quick_run["uri"],
            ]
        )
        == 0
    )
    table = pd.read_csv(out / "cifar.csv")
    measured = table[(table.model == "resnet32") & (table.dataset == "digits")].iloc[0]
    assert measured.profile == "quick" and measured.steps == 240
    assert pd.isna(measured.difference) and pd.isna(measured.published_error)
    cifar10 = table[(table.model == "resnet32") & (table.dataset == "cifar10")].iloc[0]
    assert cifar10.profile == "not run" and cifar10.published_error == 7.14
    assert set(table.model) == {
        "resnet32",
        "resnet110",
        "resnet164",
        "revnet38",
        "revnet110",
        "revnet164",
        "irevnet_cifar",
    }
    revnet = table[(table.model == "revnet164") & (table.dataset == "cifar100")].iloc[0]
    assert revnet.profile == "not run" and revnet.published_error == 23.69
    markdown = (out / "cifar.md").read_text()
    assert "| resnet32 | 32 (38) | cifar10 | *not run* | 7.14 |" in markdown
    assert "**not** CIFAR reproductions" in markdown
    assert f"{measured.measured_error:.2f}" in markdown


def test_smoke_run_then_resume_continues_the_same_mlflow_run(
    tmp_path: Path, tracking_uri: str
) -> None:
    arguments = [
        "run",
        CONFIG,
        "--profile",
        "smoke",
        "--models",
        "resnet32",
        "--device",
        "cpu",
        "--runs-dir",
        str(tmp_path / "runs"),
        "--tracking-uri",
        tracking_uri,
        "--no-progress",
    ]
    assert main(arguments) == 0
    assert main([*arguments, "--resume"]) == 0
    client = mlflow.MlflowClient(tracking_uri)
    runs = client.search_runs([client.get_experiment_by_name("cifar").experiment_id])
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        (["--models", "resnet33"], "model 'resnet33' is not a row of"),
        (["--dataset", "cifar10", "--data-dir", "{tmp}"], "cifar10 not found under --data-dir"),
        (["--device", "tpu"], "unknown device 'tpu'"),
    ],
)
def test_user_errors_exit_2_with_one_clear_line(
    arguments: list[str],
    expected: str,
    tmp_path: Path,
    tracking_uri: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    arguments = [a.replace("{tmp}", str(tmp_path)) for a in arguments]
    status = main(
        [
            "run",
            CONFIG,
            "--profile",
            "smoke",
            "--tracking-uri",
            tracking_uri,
            "--runs-dir",
            str(tmp_path / "runs"),
            "--no-progress",
            *arguments,
        ]
    )
    assert status == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and expected in err and "Traceback" not in err


def test_list_shows_models_and_configs(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list", "resnet*", "--configs-dir", str(REPO_ROOT / "configs")]) == 0
    out = capsys.readouterr().out
    assert "resnet164" in out and "1.70M" in out and "configs/cifar.yaml" in out


def test_an_unreachable_tracking_server_fails_before_any_training(
    tmp_path, monkeypatch, capsys
) -> None:
    import socket
    import time

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{port}")
    started = time.perf_counter()
    status = main(
        ["run", "configs/cifar.yaml", "--profile", "smoke", "--runs-dir", str(tmp_path / "runs")]
    )
    assert status == 2
    assert time.perf_counter() - started < 10
    assert "MLFLOW_TRACKING_URI" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()  # no training time was spent
