"""A run killed with SIGKILL at a random step resumes to the metrics of an uninterrupted run,
also when its last checkpoint was truncated by the crash (the previous one is used); a CLI run
stopped by SIGTERM writes a checkpoint at that step, ends KILLED and exits 143."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from benchmarks.core.checkpoint import CheckpointWarning, load_checkpoint, previous_checkpoint_path

STEPS = 12

TRAIN = f"""
import os, signal, sys, torch, flows
from benchmarks.config import TrainSettings
kill_at, model_name, path = int(sys.argv[1]), sys.argv[2], sys.argv[3]
resume = len(sys.argv) > 4

def after_step(done):
    if done == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)  # no cleanup, no atexit: a hard crash

torch.manual_seed(0)
common = dict(checkpoint_path=path, progress=False, resume=resume, after_step=after_step)
if model_name == "glow":
    from benchmarks.tasks.density.data import load_density_dataset
    from benchmarks.tasks.density.training import train_density
    settings = TrainSettings(optimizer="adamax", learning_rate=1e-3, batch_size=16, steps={STEPS},
        warmup_steps=4, eval_every={STEPS}, checkpoint_every=3, log_every=1, eval_samples=4)
    model = flows.create("glow_cifar10", in_channels=1, image_size=8, levels=2, steps=2, width=16)
    outcome = train_density(model, load_density_dataset("digits").subset(64, 32), settings,
                            **common)
else:
    from benchmarks.tasks.classification.training import train_classifier
    from benchmarks.tasks.classification.data import load_dataset
    settings = TrainSettings(optimizer="sgd", learning_rate=0.05, momentum=0.9, batch_size=16,
        steps={STEPS}, eval_every={STEPS}, checkpoint_every=3, log_every=1)
    model = flows.create("revnet38", in_channels=1)
    outcome = train_classifier(model, load_dataset("digits").subset(64, 32), settings, **common)
print({{k: v for k, v in outcome.final.items() if k.startswith(("test", "train_bpd"))}})
"""


def _start(model: str, path: Path, kill_at: int = -1, resume: bool = False) -> subprocess.Popen:
    """The training process, started; one torch thread, so that an uninterrupted reference
    can run beside the killed and resumed ones on a 2-core machine."""
    command = [sys.executable, "-c", TRAIN, str(kill_at), model, str(path)]
    return subprocess.Popen(
        command + (["resume"] if resume else []),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"},
    )


def _finish(process: subprocess.Popen) -> subprocess.CompletedProcess:
    stdout, stderr = process.communicate(timeout=300)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def _train(model: str, path: Path, kill_at: int = -1, resume: bool = False):
    return _finish(_start(model, path, kill_at, resume))


@pytest.mark.parametrize("model", ["glow", "revnet38"])
def test_a_run_killed_at_a_random_step_resumes_to_the_same_final_metrics(
    model: str, tmp_path: Path
) -> None:
    kill_at = random.Random(model).randrange(4, STEPS)  # after at least one checkpoint
    with _start(model, tmp_path / "whole.pt") as whole:
        killed = _train(model, tmp_path / "killed.pt", kill_at)
        assert killed.returncode == -signal.SIGKILL
        assert load_checkpoint(tmp_path / "killed.pt")["step"] == kill_at // 3 * 3
        resumed = _train(model, tmp_path / "killed.pt", resume=True)
        uninterrupted = _finish(whole)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert resumed.stdout == uninterrupted.stdout  # the same final metrics, to the last digit
    assert "test" in uninterrupted.stdout


def test_a_truncated_last_checkpoint_resumes_from_the_previous_one(tmp_path: Path) -> None:
    path = tmp_path / "killed.pt"
    with _start("glow", tmp_path / "whole.pt") as whole:
        assert _train("glow", path, kill_at=8).returncode == -signal.SIGKILL
        assert load_checkpoint(previous_checkpoint_path(path))["step"] == 3
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])  # the crash tore the newest file
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert load_checkpoint(path)["step"] == 3
        assert any(issubclass(w.category, CheckpointWarning) for w in caught)
        resumed = _train("glow", path, resume=True)
        assert resumed.returncode == 0, resumed.stderr[-2000:]
        assert "truncated" in resumed.stderr  # the user is told, with the reason
        assert resumed.stdout == _finish(whole).stdout


SIGTERM_AT_STEP_2 = """
import os, signal, sys
import benchmarks.tasks.vae.training as vae_training
from benchmarks.cli import main

real_fit = vae_training.fit

def fit_then_sigterm(*args, **kwargs):
    def after_step(done):
        if done == 2:
            os.kill(os.getpid(), signal.SIGTERM)  # as `kill PID` or a batch scheduler would
    return real_fit(*args, **kwargs, after_step=after_step)

vae_training.fit = fit_then_sigterm
sys.exit(main(sys.argv[1:]))
"""


def test_sigterm_ends_a_cli_run_killed_with_status_143_after_a_checkpoint(tmp_path: Path) -> None:
    """A real process: SIGTERM after step 2 of 3 (no regular checkpoint there) writes one at
    step 2, marks the MLflow run KILLED, prints one line naming --resume and exits 143."""
    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    arguments = ["run", "configs/vae.yaml", "--profile", "smoke", "--models", "vae_mnist"]
    arguments += ["--seed", "0", "--device", "cpu", "--no-progress", "--tracking-uri", uri]
    arguments += ["--runs-dir", str(tmp_path / "runs")]
    done = subprocess.run(
        [sys.executable, "-c", SIGTERM_AT_STEP_2, *arguments],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert done.returncode == 128 + signal.SIGTERM, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    (line,) = [line for line in done.stderr.splitlines() if line.startswith("interrupted")]
    assert "SIGTERM" in line and "--resume" in line
    checkpoint = tmp_path / "runs" / "vae" / "vae_mnist-digits-smoke-seed0" / "last.pt"
    state = load_checkpoint(checkpoint)
    assert state["step"] == 2
    run = mlflow.MlflowClient(uri).get_run(state["extra"]["mlflow_run_id"])
    assert run.info.status == "KILLED"
    assert sorted(p.name for p in checkpoint.parent.iterdir()) == ["last.pt"]  # lock released
