"""Every bad input: one ``error:`` line naming the problem and the fix, exit status 2, found
before anything trains, measures or writes, and nothing left behind.

No test touches the network: downloads fail through a patched ``urllib.request.urlopen``,
and the unreachable tracking server is a loopback port nothing listens on.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from benchmarks import preflight
from benchmarks.cli import main
from benchmarks.errors import BenchmarkError
from benchmarks.measure.flow_speed import model_names
from tests.conftest import REPO_ROOT

CIFAR = str(REPO_ROOT / "configs" / "cifar.yaml")
DENSITY = str(REPO_ROOT / "configs" / "density.yaml")
VAE = str(REPO_ROOT / "configs" / "vae.yaml")
IMAGENET = str(REPO_ROOT / "configs" / "imagenet.yaml")
CONFIGS = str(REPO_ROOT / "configs")


def fails(capsys: pytest.CaptureFixture[str], argv: list[str], *expected: str) -> str:
    """Run the CLI; check status 2, one ``error:`` line holding ``expected``, no training."""
    status = main(argv)
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert status == 2, captured.err
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    for text in expected:
        assert text in lines[0], lines[0]
    assert "top-1 error" not in captured.out and "measuring" not in captured.out
    return lines[0]


def run_args(tmp_path: Path, *extra: str, config: str = CIFAR) -> list[str]:
    """``run`` of one smoke row into ``tmp_path`` (store and checkpoints)."""
    return [
        "run",
        config,
        "--profile",
        "smoke",
        "--device",
        "cpu",
        "--runs-dir",
        str(tmp_path / "runs"),
        "--tracking-uri",
        f"sqlite:///{tmp_path / 'mlflow.db'}",
        "--no-progress",
        *extra,
    ]


def nothing_written(tmp_path: Path) -> bool:
    """No checkpoint folder and no MLflow store: nothing started."""
    return not (tmp_path / "runs").exists() and not (tmp_path / "mlflow.db").exists()


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every URL torchvision opens fails as without network; returns the URLs tried."""
    tried: list[str] = []

    def no_network(request: object, *args: object, **kwargs: object) -> None:
        tried.append(getattr(request, "full_url", str(request)))
        raise urllib.error.URLError(socket.gaierror(-2, "Name or service not known"))

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    return tried


@pytest.fixture
def closed_port() -> int:
    """A loopback port nothing listens on (bound, then closed)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# --download without network ------------------------------------------------------------------


@pytest.mark.parametrize("existing", [False, True])
def test_a_failed_cifar_download_is_one_line_and_leaves_nothing(
    existing: bool, tmp_path: Path, offline: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data" / "cifar"
    if existing:
        data.mkdir(parents=True)
        (data / "mine.txt").write_text("kept")
    argv = run_args(tmp_path, "--models", "resnet32", "--dataset", "cifar10")
    line = fails(capsys, [*argv, "--data-dir", str(data), "--download"], "downloading cifar10")
    assert "network" in line and "DIR/cifar-10-batches-py/" in line and "without --download" in line
    assert offline and all("cifar-10" in url for url in offline)
    if existing:
        assert sorted(p.name for p in data.iterdir()) == ["mine.txt"]  # only what was there
    else:
        assert not (tmp_path / "data").exists()  # the folders the download made are gone
    assert nothing_written(tmp_path)


def test_a_failed_mnist_download_leaves_no_empty_folder_that_breaks_the_next_run(
    tmp_path: Path, offline: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    argv = run_args(tmp_path, "--models", "vae_mnist", "--dataset", "mnist", config=VAE)
    line = fails(capsys, [*argv, "--data-dir", str(data), "--download"], "downloading mnist")
    assert "DIR/MNIST/raw/{train-images-idx3-ubyte, " in line and "extracted" in line
    assert list(data.iterdir()) == []  # no MNIST/raw left behind
    fails(capsys, [*argv, "--data-dir", str(data)], "MNIST not found", "--download")
    (data / "MNIST" / "raw").mkdir(parents=True)  # a folder without the files
    fails(capsys, [*argv, "--data-dir", str(data)], "incomplete", "t10k-labels-idx1-ubyte")
    assert nothing_written(tmp_path)


def test_download_into_an_unwritable_data_dir_fails_before_any_download(
    tmp_path: Path, offline: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "file").write_text("")
    argv = run_args(tmp_path, "--models", "resnet32", "--dataset", "cifar10", "--download")
    fails(capsys, [*argv, "--data-dir", str(tmp_path / "file" / "data")], "--data-dir", "a file")
    assert offline == []


# Folders that cannot be written ----------------------------------------------------------------


def test_a_runs_dir_under_a_file_fails_before_training(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "file").write_text("")
    argv = run_args(tmp_path, "--models", "resnet32")
    argv[argv.index("--runs-dir") + 1] = str(tmp_path / "file" / "runs")
    fails(capsys, argv, "--runs-dir", "is a file, not a folder")
    assert not (tmp_path / "mlflow.db").exists()


@pytest.mark.skipif(
    sys.platform == "win32" or os.geteuid() == 0, reason="root writes in read-only folders"
)
def test_a_read_only_runs_dir_fails_before_training(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    runs = tmp_path / "runs"
    runs.mkdir()
    runs.chmod(0o555)
    try:
        fails(capsys, run_args(tmp_path, "--models", "resnet32"), "--runs-dir", "cannot write")
    finally:
        runs.chmod(0o755)
    assert list(runs.iterdir()) == []


def test_the_folder_probe_creates_nothing(tmp_path: Path) -> None:
    preflight.check_writable_folder(tmp_path / "a" / "b", "--out")
    assert list(tmp_path.iterdir()) == []
    if sys.platform.startswith("linux"):  # /proc takes no files, not even from root
        with pytest.raises(BenchmarkError, match="cannot write in /proc"):
            preflight.check_writable_folder("/proc/benchmarks-results", "--out")


@pytest.mark.parametrize(
    "command",
    [
        ["tables", "--configs-dir", CONFIGS],
        ["memory", "--no-paper", "--sweep", "1", "--repeats", "1"],
        ["probe", IMAGENET],
        ["flow-speed", "--no-peer"],
        ["posterior-figure", "--steps", "1"],
    ],
    ids=lambda command: command[0],
)
def test_an_out_folder_that_cannot_be_written_fails_up_front(
    command: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "results").write_text("a file where the folder should be")
    uri = ["--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"]
    tracked = command[0] in ("tables", "memory", "probe")
    started = time.perf_counter()
    fails(
        capsys, [*command, "--out", str(tmp_path / "results"), *(uri if tracked else [])], "--out"
    )
    assert time.perf_counter() - started < 10  # nothing was measured
    assert not (tmp_path / "mlflow.db").exists()


# The tracking store ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "command",
    [
        ["tables", "--configs-dir", CONFIGS],
        ["probe", IMAGENET],
        ["memory", "--no-paper", "--sweep", "1", "--repeats", "1"],
    ],
    ids=lambda command: command[0],
)
def test_an_unreachable_tracking_server_fails_within_seconds(
    command: list[str], closed_port: int, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    started = time.perf_counter()
    argv = [*command, "--out", str(tmp_path), "--tracking-uri", f"http://127.0.0.1:{closed_port}"]
    fails(capsys, argv, "unreachable", "connection refused", "--tracking-uri")
    assert time.perf_counter() - started < 10
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "command",
    [
        ["tables", "--configs-dir", CONFIGS],
        ["probe", IMAGENET],
        ["memory", "--no-paper", "--sweep", "1"],
        ["run", CIFAR, "--profile", "smoke", "--models", "resnet32"],
    ],
    ids=lambda command: command[0],
)
def test_a_tracking_uri_scheme_mlflow_cannot_use_is_rejected(
    command: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [*command, "--tracking-uri", "foo://bar"]
    argv += ["--runs-dir", str(tmp_path / "runs")] if command[0] == "run" else []
    argv += [] if command[0] == "run" else ["--out", str(tmp_path / "out")]
    line = fails(capsys, argv, "foo://bar", "scheme 'foo'", "--tracking-uri")
    assert "sqlite" in line and "http" in line and "postgresql+psycopg2://" in line
    assert list(tmp_path.iterdir()) == []


def test_the_schemes_mlflow_supports_pass(tmp_path: Path) -> None:
    for uri in (f"sqlite:///{tmp_path}/m.db", str(tmp_path / "mlruns"), f"file://{tmp_path}"):
        preflight.check_tracking_scheme(uri)
    preflight.check_tracking_scheme("databricks")  # not reached: only its scheme is checked


def test_a_database_uri_without_its_driver_names_the_missing_package(
    capsys: pytest.CaptureFixture[str],
) -> None:
    pytest.importorskip("sqlalchemy")
    try:
        import psycopg2  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("psycopg2 is installed")
    fails(
        capsys,
        ["tables", "--tracking-uri", "postgresql+psycopg2://user:secret@db.example/mlflow"],
        "driver is not installed",
        "psycopg2",
        "***@db.example",
    )


# Config values and flags ----------------------------------------------------------------------


def _density_config(tmp_path: Path, old: str, new: str) -> Path:
    text = Path(DENSITY).read_text()
    assert old in text
    path = tmp_path / "density.yaml"
    path.write_text(text.replace(old, new))
    return path


def test_a_model_args_value_of_the_wrong_type_fails_before_the_baseline_row(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _density_config(
        tmp_path,
        "glow_cifar10: {levels: 2, steps: 1, width: 8}",
        'glow_cifar10: {levels: 2, steps: 1, width: "8"}',
    )
    fails(
        capsys,
        run_args(tmp_path, config=str(config)),
        str(config),
        "profiles.smoke.model_args.glow_cifar10.width",
        "expected an integer, got str '8'",
    )
    assert nothing_written(tmp_path)  # the per-pixel baseline did not train either


def test_a_model_args_value_the_builder_rejects_fails_before_the_baseline_row(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _density_config(
        tmp_path,
        "glow_cifar10: {levels: 2, steps: 1, width: 8}",
        "glow_cifar10: {levels: 5, steps: 1, width: 8}",
    )
    fails(
        capsys,
        run_args(tmp_path, config=str(config)),
        "model glow_cifar10 cannot be built for digits",
        "'levels': 5",
        "not divisible by 2 ** levels",
        "fix its model_args",
    )
    assert nothing_written(tmp_path)


@pytest.mark.parametrize("config", sorted(p.name for p in (REPO_ROOT / "configs").glob("*.yaml")))
def test_every_shipped_row_builds_on_the_meta_device(config: str) -> None:
    """The meta-device check accepts every model of every profile and dataset of a config
    (the flows' paper sizes take seconds even on meta: their quick rows use the same code)."""
    from benchmarks.config import PROFILES, load_config

    loaded = load_config(REPO_ROOT / "configs" / config)
    for profile in PROFILES:
        if profile == "paper" and loaded.task == "density":
            continue
        resolved = loaded.resolve(profile)
        preflight.check_model_builds(resolved, resolved.models, resolved.datasets)


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (["--workers", "-1"], ["--workers -1", "0"]),
        (["--seed", "-1"], ["--seed -1", "from 0"]),
        (["--seed", "0", "0"], ["--seed 0 0", "once"]),
        (["--compile", "bogus"], ["'bogus' is not a torch.compile backend", "inductor"]),
        (["--dataset", "mnist"], ["--dataset mnist", "classification", "cifar10"]),
        (["--dataset", "svhn"], ["--dataset", "invalid choice", "--help"]),
        (["--bogus"], ["unrecognized arguments: --bogus"]),
        (["--models", "resnet33"], ["'resnet33' is not a row of", "resnet32"]),
    ],
)
def test_bad_run_flags_are_refused_before_training(
    extra: list[str], expected: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fails(capsys, run_args(tmp_path, "--models", "resnet32", *extra), *expected)
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    "command", [["run", CIFAR], ["memory"], ["probe", IMAGENET], ["flow-speed", "--no-peer"]]
)
def test_a_device_string_torch_cannot_parse_is_one_line(
    command: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [*command, "--device", "cuda:abc", "--out", str(tmp_path)]
    if command[0] == "run":
        argv = [*run_args(tmp_path, "--models", "resnet32"), "--device", "cuda:abc"]
    fails(capsys, argv, "unknown device 'cuda:abc'", "cuda:N")


def test_a_gpu_index_beyond_the_machine_s_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    preflight.check_device("cuda:1")
    with pytest.raises(BenchmarkError, match="has 2 CUDA device\\(s\\), cuda:0 to cuda:1"):
        preflight.check_device("cuda:2")


def test_mnist_is_a_dataset_the_vae_config_accepts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = run_args(tmp_path, "--models", "vae_mnist", "--dataset", "mnist", config=VAE)
    fails(capsys, argv, "'mnist' needs --data-dir DIR")  # parsed; the data is what is missing


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, "is a folder, not a YAML file"),
        (b"a: [1\n", "not valid YAML: line 2, column 1"),
        (b"\x00\xff\xfe", "cannot be read as a YAML text file"),
        (b"- a list\n", "expected a mapping"),
    ],
)
def test_a_config_that_is_not_yaml_is_one_line(
    content: bytes | None, expected: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "config.yaml"
    config.mkdir() if content is None else config.write_bytes(content)
    fails(capsys, run_args(tmp_path, config=str(config)), expected)


@pytest.mark.parametrize("command", ["tables", "list", "regress"])
def test_a_configs_dir_without_configs_is_refused(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    uri = ["--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"] if command == "tables" else []
    missing = tmp_path / "nonexistent"
    fails(capsys, [command, "--configs-dir", str(missing), *uri], str(missing), "does not exist")
    (tmp_path / "empty").mkdir()
    fails(capsys, [command, "--configs-dir", str(tmp_path / "empty"), *uri], "no *.yaml config")
    broken = tmp_path / "broken"
    shutil.copytree(CONFIGS, broken)
    (broken / "zz.yaml").write_text("name: [")
    fails(capsys, [command, "--configs-dir", str(broken), *uri], "zz.yaml: not valid YAML")
    assert not (tmp_path / "mlflow.db").exists()


# list -------------------------------------------------------------------------------------------


def test_list_matches_a_plain_word_anywhere_in_a_name(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list", "glow", "--configs-dir", CONFIGS]) == 0
    models = capsys.readouterr().out.split("\nconfigs:")[0]
    names = [line.split()[0] for line in models.splitlines()[1:] if line.strip()]
    assert names == ["glow_cifar10", "glow_imagenet32", "glow_imagenet64"]
    assert main(["list", "resnet1*", "--configs-dir", CONFIGS]) == 0  # a glob: whole names
    assert "resnet32" not in capsys.readouterr().out.split("\nconfigs:")[0]


def test_list_of_a_word_nothing_contains_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    fails(capsys, ["list", "nothing-matches", "--configs-dir", CONFIGS], "'nothing-matches'")


# Results made with other settings ----------------------------------------------------------------


FLOW_SPEED = ["flow-speed", "--no-peer", "--levels", "1", "--steps", "1", "--width", "4"]


def _fake_flow_speed(settings: object, peer: bool, device: object) -> list[dict]:
    """Rows as measure_flow_speed returns them, without timing anything."""
    from dataclasses import asdict

    return [
        {
            "model": name,
            "params": 1,
            "step_time_s": 1.0,
            "train_images_per_s": 1.0,
            **asdict(settings),
            "device": "cpu",
            "step_time_vs_our_glow": 1.0,
        }
        for name in model_names(peer)
    ]


def test_flow_speed_keeps_a_result_made_with_other_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("benchmarks.measure.flow_speed.measure_flow_speed", _fake_flow_speed)
    out = ["--out", str(tmp_path)]
    assert main([*FLOW_SPEED, *out]) == 0
    assert main([*FLOW_SPEED, *out]) == 0  # the same settings replace it
    capsys.readouterr()
    before = {p.name: p.read_text() for p in tmp_path.iterdir()}
    line = fails(capsys, [*FLOW_SPEED, "--width", "8", *out], "flow_speed.csv", "width 4, now 8")
    assert "--out DIR" in line and "--replace" in line
    fails(
        capsys, ["flow-speed", "--no-peer", "--steps", "1", "--width", "4", *out], "levels 1, now 3"
    )
    assert {p.name: p.read_text() for p in tmp_path.iterdir()} == before
    assert main([*FLOW_SPEED, "--width", "8", "--replace", *out]) == 0
    assert ",8," in (tmp_path / "flow_speed.csv").read_text()


def test_flow_speed_defaults_are_the_committed_result_s_settings() -> None:
    """``make flow-speed`` (the defaults, with normflows) may rewrite results/flow_speed.*."""
    committed = REPO_ROOT / "results" / "flow_speed.csv"
    defaults = {"levels": 3, "steps": 8, "width": 128, "batch_size": 16, "repeats": 5}
    key = lambda row: row["model"]  # noqa: E731
    preflight.check_replacement(committed, defaults, set(model_names(True)), key, False)
    with pytest.raises(BenchmarkError, match="glow \\(normflows\\) would be dropped"):
        preflight.check_replacement(committed, defaults, set(model_names(False)), key, False)


def test_memory_keeps_a_result_made_with_other_settings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shutil.copy(REPO_ROOT / "results" / "memory.csv", tmp_path / "memory.csv")
    uri = ["--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}", "--out", str(tmp_path)]
    # the committed file is `make memory`'s: batch 32, --sweep 3 9; the CLI defaults differ
    line = fails(capsys, ["memory", *uri], "memory.csv", "batch_size 32, now 128")
    assert "sweep/ResNet-218" in line and "--replace" in line
    fails(capsys, ["memory", "--batch-size", "32", "--no-paper", "--sweep", "3", "9", *uri],
          "rows paper/ResNet-110")  # fmt: skip
    assert not (tmp_path / "mlflow.db").exists()


def test_memory_with_make_memory_s_settings_may_replace_the_committed_result() -> None:
    from benchmarks.measure.step_memory import paper_cases, sweep_cases

    cases = paper_cases() + sweep_cases([3, 9])
    preflight.check_replacement(
        REPO_ROOT / "results" / "memory.csv",
        {"batch_size": 32, "resolution": 32, "repeats": 3},
        {f"{case.group}/{case.name}" for case in cases},
        lambda row: f"{row['group']}/{row['case']}",
        False,
    )


def test_memory_flows_defaults_are_the_committed_result_s_settings(tmp_path: Path) -> None:
    """``make memory-flows`` (the --flows defaults, with normflows) may rewrite
    results/memory_flows.*; without normflows' rows it would drop them and stops."""
    from benchmarks.measure.flow_memory import FlowMemoryRequest, check_flow_memory

    shutil.copy(REPO_ROOT / "results" / "memory_flows.csv", tmp_path / "memory_flows.csv")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    if importlib.util.find_spec("normflows") is not None:
        check_flow_memory(FlowMemoryRequest(out=tmp_path, tracking_uri=uri))
    dropped = "rows normflows Glow K=32, normflows Glow K=8 would be dropped"
    with pytest.raises(BenchmarkError, match=dropped):
        check_flow_memory(FlowMemoryRequest(out=tmp_path, peer=False, tracking_uri=uri))
    with pytest.raises(BenchmarkError, match="batch_size 4, now 8"):
        request = FlowMemoryRequest(out=tmp_path, batch_size=8, peer=False, tracking_uri=uri)
        check_flow_memory(request)
