"""The life of a training run around its numbers.

- its run folder is never overwritten by a run without ``--resume``, and one process at a time
  uses it (a lock that a dead process does not hold);
- a refused ``--resume`` leaves the earlier MLflow run as it was;
- SIGTERM and SIGINT end the run KILLED after a checkpoint at the current step, exit 143 / 130
  with one line naming ``--resume``, and the resumed run ends where an uninterrupted one ends;
- a resume after a crash logs every (metric, step) once;
- the MLflow run carries its checkpoint's path and MLflow's source tags.

The runs are the smoke profile of ``vae_mnist`` on the embedded digits (a second each); one
MLflow store serves the module, since creating one takes seconds.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import mlflow
import pytest
import torch
from mlflow.entities import Run

import benchmarks.tasks.vae.training as vae_training
from benchmarks.cli import main
from benchmarks.config import TrainSettings
from benchmarks.core.checkpoint import load_checkpoint
from benchmarks.core.lifecycle import (
    LOCK_NAME,
    Interrupted,
    RunFolderError,
    RunFolderLock,
    StopAtStepEnd,
    interrupt_on_signals,
)
from benchmarks.core.loop import FitTask, fit
from benchmarks.errors import BenchmarkError
from benchmarks.reporting.tracking import TrackedRun
from benchmarks.request import RunRequest
from benchmarks.run import run_config
from tests.conftest import REPO_ROOT

CONFIG = str(REPO_ROOT / "configs" / "vae.yaml")
LABEL = "vae_mnist-digits-smoke-seed{seed}"
TIMINGS = {"train_images_per_s", "wall_time_s"}  # differ between runs by nature


def _arguments(runs_dir: Path, uri: str, *more: str) -> list[str]:
    return [
        "run",
        CONFIG,
        "--profile",
        "smoke",
        "--models",
        "vae_mnist",
        "--device",
        "cpu",
        "--runs-dir",
        str(runs_dir),
        "--tracking-uri",
        uri,
        "--no-progress",
        *(more or ("--seed", "0")),
    ]


def _checkpoint(runs_dir: Path, seed: int = 0) -> Path:
    return runs_dir / "vae" / LABEL.format(seed=seed) / "last.pt"


def _run_of(uri: str, checkpoint: Path) -> Run:
    """The MLflow run whose id the checkpoint keeps."""
    run_id = load_checkpoint(checkpoint)["extra"]["mlflow_run_id"]
    return mlflow.MlflowClient(uri).get_run(run_id)


def _points(uri: str, run: Run) -> collections.Counter[tuple[str, int]]:
    """How often each (metric, step) was logged to ``run``."""
    client = mlflow.MlflowClient(uri)
    return collections.Counter(
        (key, point.step)
        for key in run.data.metrics
        for point in client.get_metric_history(run.info.run_id, key)
    )


def _run_count(uri: str) -> int:
    client = mlflow.MlflowClient(uri)
    experiment = client.get_experiment_by_name("vae")
    return len(client.search_runs([experiment.experiment_id])) if experiment else 0


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


@pytest.fixture(scope="module")
def finished(store: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The runs folder of one finished smoke run (seed 0); tests must leave it as it is."""
    runs_dir = tmp_path_factory.mktemp("finished") / "runs"
    assert main(_arguments(runs_dir, store)) == 0
    return runs_dir


class _Unhandled(Exception):
    """A signal reached the test's own handler: the code under test did not handle it."""


@pytest.fixture(autouse=True)
def _sigterm_never_kills_pytest() -> Iterator[None]:
    """SIGTERM meets this handler (a test failure, not the death of pytest) where the code
    under test installs none."""

    def unhandled(number: int, frame: object) -> None:
        raise _Unhandled(signal.Signals(number).name)

    previous = signal.signal(signal.SIGTERM, unhandled)
    yield
    signal.signal(signal.SIGTERM, previous)


@pytest.fixture
def signal_at_step(monkeypatch: pytest.MonkeyPatch) -> Callable[[int, int], None]:
    """``signal_at_step(step, signal)``: the runner's VAE training sends itself ``signal``
    after ``step``."""
    real_fit = vae_training.fit

    def arm(step: int, number: int) -> None:
        def fit_then_signal(*args: object, **kwargs: object) -> object:
            def after_step(done: int) -> None:
                if done == step:
                    signal.raise_signal(number)

            return real_fit(*args, **kwargs, after_step=after_step)

        monkeypatch.setattr(vae_training, "fit", fit_then_signal)

    return arm


# --- the run folder ---------------------------------------------------------------------------


def test_a_rerun_without_resume_refuses_before_training(
    finished: Path, store: str, capsys: pytest.CaptureFixture[str]
) -> None:
    checkpoint = _checkpoint(finished)
    before = {p.name: p.read_bytes() for p in checkpoint.parent.iterdir()}
    runs = _run_count(store)
    assert main(_arguments(finished, store)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and "Traceback" not in err
    assert str(checkpoint.parent) in err and "--resume" in err and "--runs-dir" in err
    assert {p.name: p.read_bytes() for p in checkpoint.parent.iterdir()} == before
    assert _run_count(store) == runs  # no MLflow run was created


def test_every_run_folder_is_checked_before_the_first_run_trains(
    finished: Path, store: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Seed 1 trains after seed 0; its old checkpoint refuses the command before seed 0 runs."""
    runs_dir = tmp_path / "runs"
    old = _checkpoint(runs_dir, seed=1).parent
    shutil.copytree(_checkpoint(finished).parent, old)
    before = sorted(p.name for p in old.iterdir())
    assert main(_arguments(runs_dir, store, "--seed", "0", "1")) == 2
    assert "--resume" in capsys.readouterr().err
    assert not _checkpoint(runs_dir, seed=0).parent.exists()  # nothing trained, nothing left
    assert sorted(p.name for p in old.iterdir()) == before


def test_a_run_folder_in_use_refuses_a_second_run(
    store: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    runs_dir = tmp_path / "runs"
    folder = _checkpoint(runs_dir).parent
    runs = _run_count(store)
    with RunFolderLock(folder):  # another run holds it
        assert main(_arguments(runs_dir, store)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"the run folder {folder} is in use by another run" in err
    assert _run_count(store) == runs
    assert not folder.exists()  # the holder created the folder, and removed it


_HOLD_LOCK = """
import fcntl, os, sys, time
handle = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
os.write(handle, f"{os.getpid()}\\n".encode())
print("locked", flush=True)
time.sleep(60)
"""


def test_a_lock_is_refused_while_its_process_lives_and_free_once_it_died(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "run"
    folder.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD_LOCK, str(folder / LOCK_NAME)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline() == "locked\n"
        with pytest.raises(RunFolderError) as refused:
            RunFolderLock(folder).acquire()
        assert str(folder) in str(refused.value)
        assert f"(process {holder.pid})" in str(refused.value)
    finally:
        holder.kill()  # SIGKILL: no cleanup, the lock file stays
        holder.wait()
    assert (folder / LOCK_NAME).exists()
    with RunFolderLock(folder) as lock:
        assert lock.path.read_text() == f"{os.getpid()}\n"
    assert list(folder.iterdir()) == []  # released: the lock file is gone, the folder stays


# --- MLflow ---------------------------------------------------------------------------------


def test_the_run_carries_its_checkpoint_and_mlflow_source_tags(finished: Path, store: str) -> None:
    checkpoint = _checkpoint(finished)
    tags = _run_of(store, checkpoint).data.tags
    commit = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    assert len(commit) == 40
    assert tags["mlflow.source.git.commit"] == commit
    assert tags["mlflow.source.type"] == "LOCAL" and tags["mlflow.source.name"]
    assert tags["git_revision"].startswith(commit[:12])  # the tables still read it
    assert tags["checkpoint"] == str(checkpoint.resolve())


def test_a_refused_resume_leaves_the_finished_run_untouched(finished: Path, store: str) -> None:
    checkpoint = _checkpoint(finished)
    before = _run_of(store, checkpoint)
    points = _points(store, before)
    request = RunRequest(
        CONFIG,
        profile="smoke",
        models=["vae_mnist"],
        seeds=[0],
        device="cpu",
        runs_dir=finished,
        tracking_uri=store,
        progress=False,
        resume=True,
        overrides={"learning_rate": 0.5},
    )
    with pytest.raises(BenchmarkError, match=r"other settings \(learning_rate: "):
        run_config(request)
    after = _run_of(store, checkpoint)
    assert after.info.status == "FINISHED"  # it used to become FAILED and leave the tables
    assert after.info.end_time == before.info.end_time
    assert after.data.tags == before.data.tags
    assert _points(store, after) == points


@pytest.mark.parametrize("number", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_ends_the_run_killed_after_a_checkpoint_and_resume_finishes_it(
    number: int,
    finished: Path,
    store: str,
    tmp_path: Path,
    signal_at_step: Callable[[int, int], None],
    capsys: pytest.CaptureFixture[str],
) -> None:
    runs_dir = tmp_path / "runs"
    checkpoint = _checkpoint(runs_dir)
    signal_at_step(2, number)  # the smoke profile checkpoints at step 3 only
    assert main(_arguments(runs_dir, store)) == 128 + number
    err = capsys.readouterr().err
    assert "Traceback" not in err
    (line,) = [line for line in err.splitlines() if line.startswith("interrupted")]
    assert signal.Signals(number).name in line and "--resume" in line
    assert load_checkpoint(checkpoint)["step"] == 2
    assert _run_of(store, checkpoint).info.status == "KILLED"
    assert not (checkpoint.parent / LOCK_NAME).exists()

    signal_at_step(-1, number)
    assert main(_arguments(runs_dir, store, "--seed", "0", "--resume")) == 0
    resumed, whole = _run_of(store, checkpoint), _run_of(store, _checkpoint(finished))
    assert resumed.info.status == "FINISHED"
    assert _points(store, resumed) == _points(store, whole)
    for key, value in whole.data.metrics.items():
        if key not in TIMINGS:
            assert resumed.data.metrics[key] == value, key


class _Crash(BaseException):
    """Stands in for SIGKILL: the process ends at once, without a checkpoint."""


def test_a_resume_after_a_crash_logs_every_metric_step_once(
    store: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The crashed process logged steps 4 and 5 after its checkpoint at step 3; the resumed
    one trains them again and must not log them twice."""
    request = RunRequest(
        CONFIG,
        profile="smoke",
        models=["vae_mnist"],
        seeds=[0],
        device="cpu",
        runs_dir=tmp_path / "crashed",
        tracking_uri=store,
        progress=False,
        overrides={"steps": 6, "checkpoint_every": 3, "eval_every": 6, "log_every": 1},
    )
    real_fit = vae_training.fit

    def crash_after_five(*args: object, **kwargs: object) -> object:
        def after_step(done: int) -> None:
            if done == 5:
                raise _Crash

        return real_fit(*args, **kwargs, after_step=after_step)

    monkeypatch.setattr(vae_training, "fit", crash_after_five)
    with pytest.raises(_Crash):
        run_config(request)
    checkpoint = _checkpoint(request.runs_dir)
    assert load_checkpoint(checkpoint)["step"] == 3
    crashed = _points(store, _run_of(store, checkpoint))
    assert crashed[("train_elbo", 4)] == crashed[("train_elbo", 5)] == 1
    monkeypatch.setattr(vae_training, "fit", real_fit)

    run_config(dataclasses.replace(request, resume=True))
    whole_request = dataclasses.replace(request, runs_dir=tmp_path / "whole")
    run_config(whole_request)
    resumed = _run_of(store, checkpoint)
    whole = _run_of(store, _checkpoint(whole_request.runs_dir))
    points = _points(store, resumed)
    assert [points[("train_elbo", step)] for step in range(1, 6)] == [1, 1, 1, 1, 1]
    assert points == _points(store, whole)  # (the final metrics repeat the last step's)
    client = mlflow.MlflowClient(store)
    for key in ("train_elbo", "learning_rate"):
        assert [m.value for m in client.get_metric_history(resumed.info.run_id, key)] == [
            m.value for m in client.get_metric_history(whole.info.run_id, key)
        ], key


def test_a_reopened_run_skips_only_steps_it_already_has(store: str) -> None:
    """Per metric, points at or below the last step logged before the reopen are skipped;
    a process may still log one step twice itself (the final metrics repeat the last step)."""
    with TrackedRun(store, "tracked", run_name="first") as run:
        run.log_metrics({"loss": 1.0, "lr": 0.1}, step=1)
        run.log_metrics({"loss": 2.0}, step=2)
    with TrackedRun(store, "tracked", run_name="first", run_id=run.run_id) as reopened:
        reopened.log_metrics({"loss": 9.0, "lr": 0.2}, step=2)  # loss: kept from before
        reopened.log_metrics({"loss": 3.0, "new": 5.0}, step=3)
        reopened.log_metrics({"loss": 3.5}, step=3)
    client = mlflow.MlflowClient(store)
    history = {
        key: [(m.step, m.value) for m in client.get_metric_history(run.run_id, key)]
        for key in ("loss", "lr", "new")
    }
    assert sorted(history["loss"]) == [(1, 1.0), (2, 2.0), (3, 3.0), (3, 3.5)]
    assert sorted(history["lr"]) == [(1, 0.1), (2, 0.2)]
    assert history["new"] == [(3, 5.0)]
    assert client.get_run(run.run_id).info.status == "FINISHED"


# --- the training loop on a signal ---------------------------------------------------------------


def _linear_task() -> FitTask:
    """A linear model on batches that depend on the step only (a resume sees the same ones)."""

    def batches(start: int, shard: object) -> Iterator[torch.Tensor]:
        step = start
        while True:
            yield torch.randn(4, 3, generator=torch.Generator().manual_seed(step))
            step += 1

    def loss(model: torch.nn.Module, x: torch.Tensor, step: int, shard: object) -> tuple:
        value = (model(x) - x.sum(1, keepdim=True)).pow(2).mean()
        return value, {"train_loss": value}

    return FitTask(batches=batches, loss=loss, evaluate=lambda model: {"test": 0.0})


def _fit_linear(path: Path, resume: bool = False, stop_at: int | None = None) -> tuple:
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    settings = TrainSettings(
        optimizer="sgd", learning_rate=0.05, batch_size=4, steps=8, log_every=4, eval_every=8
    )
    logged: list[tuple[int, dict[str, float]]] = []

    def after_step(done: int) -> None:
        if done == stop_at:
            signal.raise_signal(signal.SIGTERM)

    fit(
        model,
        settings,
        _linear_task(),
        checkpoint_path=path,
        resume=resume,
        log_metrics=lambda metrics, step: logged.append((step, metrics)),
        after_step=after_step,
        progress=False,
    )
    return model, logged


def test_sigterm_in_the_loop_checkpoints_that_step_and_the_resume_is_exact(
    tmp_path: Path,
) -> None:
    """Stopped at step 3 of a 4-step logging interval: the checkpoint keeps the three steps'
    losses, so the resumed run logs the same interval mean as the uninterrupted one."""
    handler = signal.getsignal(signal.SIGTERM)
    whole, whole_logged = _fit_linear(tmp_path / "whole.pt")
    with pytest.raises(Interrupted) as stopped:
        _fit_linear(tmp_path / "stopped.pt", stop_at=3)
    assert stopped.value.exit_status == 143
    assert load_checkpoint(tmp_path / "stopped.pt")["step"] == 3
    resumed, resumed_logged = _fit_linear(tmp_path / "stopped.pt", resume=True)
    assert torch.equal(resumed.weight, whole.weight) and torch.equal(resumed.bias, whole.bias)
    strip = [(step, {k: v for k, v in m.items() if k not in TIMINGS}) for step, m in whole_logged]
    assert [
        (step, {k: v for k, v in m.items() if k not in TIMINGS}) for step, m in resumed_logged
    ] == strip
    assert signal.getsignal(signal.SIGTERM) == handler  # the loop restored it


def test_a_second_signal_stops_at_once() -> None:
    with StopAtStepEnd() as stop:
        signal.raise_signal(signal.SIGTERM)  # noted: the step finishes first
        assert stop.requested(distributed=False, device=torch.device("cpu"))
        with pytest.raises(Interrupted):
            signal.raise_signal(signal.SIGINT)


def test_outside_the_loop_signals_raise_interrupted_with_the_shell_status() -> None:
    with interrupt_on_signals():
        for number, status in ((signal.SIGINT, 130), (signal.SIGTERM, 143)):
            with pytest.raises(Interrupted) as stopped:
                signal.raise_signal(number)
            assert stopped.value.exit_status == status
    assert signal.getsignal(signal.SIGINT) == signal.default_int_handler
