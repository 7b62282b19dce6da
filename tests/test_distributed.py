"""DistributedDataParallel training equals single-process training with the same global batch.

Two processes on the CPU (gloo backend), each with half of every batch of 16, train a ResNet
(BatchNorm statistics over the global batch), a RevNet whose backward recomputes activations
(its gradients reach DDP's reduction through the autograd Function's outputs), a Glow
(actnorm's data-dependent initialisation and the dequantization noise of the global batch), a
Flow++ (its variational dequantizer's noise, data-dependent convolutions) and a VAE (posterior
noise, sliced along the batch dimension of ``(k, N, latents)``). A run interrupted under two
processes resumes in one and ends on the same weights. SIGTERM delivered to one process stops
both at the next logging step, with rank 0's checkpoint at that step.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

import flows
from benchmarks.config import TrainSettings
from benchmarks.core.checkpoint import load_checkpoint
from benchmarks.core.distributed import DistributedBatchNorm2d, Shard, init_distributed
from benchmarks.errors import BenchmarkError
from benchmarks.tasks.classification.data import load_dataset
from benchmarks.tasks.classification.training import train_classifier
from benchmarks.tasks.density.data import load_density_dataset
from benchmarks.tasks.density.training import train_density
from benchmarks.tasks.vae.data import load_binary_dataset
from benchmarks.tasks.vae.training import train_vae

STEPS, INTERRUPT_AT = 4, 2
CLASSIFIER = TrainSettings(
    optimizer="sgd",
    learning_rate=0.05,
    momentum=0.9,
    weight_decay=2e-4,
    batch_size=16,
    steps=STEPS,
    eval_every=STEPS,
    checkpoint_every=INTERRUPT_AT,
    log_every=1,
)
FLOW = TrainSettings(  # SGD: Adamax's first steps are sign-like, so float noise in a tiny
    optimizer="sgd",  # gradient would flip a whole learning-rate-sized update
    learning_rate=1e-3,
    momentum=0.9,
    batch_size=16,
    steps=STEPS,
    warmup_steps=2,
    grad_clip=50.0,
    eval_every=STEPS,
    checkpoint_every=INTERRUPT_AT,
    log_every=1,
)


FLOW_ARGS = {
    "glow_cifar10": dict(levels=2, steps=2, width=16),
    # variational dequantization, data-dependent init of every convolution, attention
    "flowpp_cifar10": dict(
        filters=8, blocks=1, components=2, heads=2, dequant_filters=8, dequant_blocks=1, dropout=0.0
    ),
}


class Interrupted(Exception):
    pass


def _train(name: str, folder: Path, shard: Shard, stop_at: int | None = None, resume=False):
    """Train ``name`` for ``STEPS`` steps (or raise after ``stop_at``); return its weights."""
    torch.manual_seed(0)

    def stop(done: int) -> None:
        if done == stop_at:
            raise Interrupted

    common = dict(
        checkpoint_path=folder / f"{name}.pt",
        progress=False,
        shard=shard,
        resume=resume,
        after_step=stop,
    )
    if name in FLOW_ARGS:
        model = flows.create(name, in_channels=1, image_size=8, **FLOW_ARGS[name])
        data = load_density_dataset("digits").subset(64, 32)
        train_density(model, data, FLOW, **common)
    elif name == "vae_mnist":
        model = flows.create(name, in_channels=1, image_size=8)
        train_vae(model, load_binary_dataset("digits").subset(64, 32), FLOW, **common)
    else:  # in float64, where reconstructing activations loses nothing measurable
        model = flows.create(name, in_channels=1, **CLASSIFIER_ARGS.get(name, {})).double()
        data = load_dataset("digits").subset(64, 32)
        data = replace(
            data, train_images=data.train_images.double(), test_images=data.test_images.double()
        )
        train_classifier(model, data, CLASSIFIER, **common)
    return {key: value.clone() for key, value in model.state_dict().items()}


# the i-RevNet without dropout: each process draws its own masks, so DDP could not equal one
# process; its memory-saving backward (one autograd Function per network) is what is checked
CLASSIFIER_ARGS = {"irevnet_cifar": dict(dropout=0.0)}
MODELS = ("resnet32", "revnet38", "irevnet_cifar", "glow_cifar10", "flowpp_cifar10", "vae_mnist")


def _worker(rank: int, world_size: int, port: int, folder: str) -> None:
    os.environ.update(
        RANK=str(rank),
        WORLD_SIZE=str(world_size),
        LOCAL_RANK=str(rank),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    torch.set_num_threads(1)
    shard, _ = init_distributed(torch.device("cpu"))
    out = Path(folder)
    for name in MODELS:  # each rank is given its own folder: only rank 0 may write to it
        weights = _train(name, out / f"ddp-rank{rank}", shard)
        if rank == 0:
            torch.save(weights, out / f"{name}-ddp.pt")
    with contextlib.suppress(Interrupted):
        _train("revnet38", out / f"interrupted-rank{rank}", shard, stop_at=INTERRUPT_AT)
    _stop_on_sigterm_to_rank_one(out / f"sigterm-rank{rank}", shard)
    # a resume where rank 1 cannot see rank 0's checkpoint (no shared --runs-dir)
    folder_seen = out / ("interrupted-rank0" if rank == 0 else "not-shared")
    try:
        _train("revnet38", folder_seen, shard, resume=True)
    except BenchmarkError as error:
        (out / f"not-shared-rank{rank}.txt").write_text(str(error))
    torch.distributed.destroy_process_group()


def _stop_on_sigterm_to_rank_one(folder: Path, shard: Shard) -> None:
    """Rank 1 alone gets SIGTERM after step 1; logging every 2 steps, both processes must stop
    together after step 2 (one stopping alone would leave the other waiting in a collective).
    Each writes which interruption ended it to ``<folder>.txt``."""

    def signal_rank_one(done: int) -> None:
        if shard.rank == 1 and done == 1:
            signal.raise_signal(signal.SIGTERM)

    torch.manual_seed(0)
    model = flows.create("vae_mnist", in_channels=1, image_size=8)
    settings = replace(FLOW, log_every=2, checkpoint_every=STEPS)
    try:
        train_vae(
            model,
            load_binary_dataset("digits").subset(64, 32),
            settings,
            checkpoint_path=folder / "last.pt",
            progress=False,
            shard=shard,
            after_step=signal_rank_one,
        )
    except KeyboardInterrupt as stop:
        folder.with_suffix(".txt").write_text(f"{type(stop).__name__} {stop}")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def ddp_runs(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("ddp")
    mp.spawn(_worker, args=(2, _free_port(), str(folder)), nprocs=2, join=True)
    return folder


def _relative_difference(a: dict, b: dict) -> float:
    keys = [k for k, v in a.items() if v.is_floating_point()]
    flat_a = torch.cat([a[k].flatten().double() for k in keys])
    flat_b = torch.cat([b[k].flatten().double() for k in keys])
    return ((flat_a - flat_b).norm() / flat_b.norm()).item()


@pytest.mark.parametrize("name", MODELS)
def test_two_processes_train_the_weights_of_one_with_the_same_global_batch(
    ddp_runs: Path, name: str, tmp_path: Path
) -> None:
    single = _train(name, tmp_path, Shard())
    distributed = torch.load(ddp_runs / f"{name}-ddp.pt")
    difference = _relative_difference(distributed, single)
    print(f"{name}: relative weight difference DDP(2) vs 1 process = {difference:.2e}")
    float32 = name in FLOW_ARGS or name == "vae_mnist"
    # the i-RevNet's 54 blocks are reconstructed from each process's half batch: their float64
    # rounding reaches 4e-11 after 4 steps (8e-13 with memory_saving=False)
    tolerance = 1e-6 if float32 else 1e-10 if name == "irevnet_cifar" else 1e-12
    assert difference < tolerance
    # ... and the training moved the weights far more than that
    torch.manual_seed(0)
    assert _relative_difference(single, _initial_state(name)) > 1e-3


def _initial_state(name: str) -> dict:
    torch.manual_seed(0)
    if name in FLOW_ARGS:
        model = flows.create(name, in_channels=1, image_size=8, **FLOW_ARGS[name])
    elif name == "vae_mnist":
        model = flows.create(name, in_channels=1, image_size=8)
    else:
        model = flows.create(name, in_channels=1, **CLASSIFIER_ARGS.get(name, {})).double()
    return model.state_dict()


def test_a_run_interrupted_under_two_processes_resumes_in_one(
    ddp_runs: Path, tmp_path: Path
) -> None:
    interrupted = ddp_runs / "interrupted-rank0"
    assert torch.load(ddp_runs / "revnet38-ddp.pt")  # the DDP run finished
    resumed = _train("revnet38", interrupted, Shard(), resume=True)
    uninterrupted = _train("revnet38", tmp_path, Shard())
    assert _relative_difference(resumed, uninterrupted) < 1e-12


def test_only_rank_zero_writes_checkpoints(ddp_runs: Path) -> None:
    written = {path.name for path in (ddp_runs / "ddp-rank0").iterdir()}
    assert {f"{name}.pt" for name in MODELS} <= written
    assert not (ddp_runs / "ddp-rank1").exists()


def test_processes_that_would_resume_from_different_steps_stop_with_a_clear_error(
    ddp_runs: Path,
) -> None:
    for rank in (0, 1):
        message = (ddp_runs / f"not-shared-rank{rank}.txt").read_text()
        assert f"different steps [{INTERRUPT_AT}, 0]" in message and "--runs-dir" in message


def test_sigterm_to_one_process_stops_both_at_the_next_logging_step(ddp_runs: Path) -> None:
    for rank in (0, 1):
        assert (ddp_runs / f"sigterm-rank{rank}.txt").read_text() == "Interrupted SIGTERM"
    assert load_checkpoint(ddp_runs / "sigterm-rank0" / "last.pt")["step"] == 2
    assert not (ddp_runs / "sigterm-rank1").exists()  # only rank 0 writes checkpoints


def test_distributed_batch_norm_is_plain_batch_norm_in_one_process() -> None:
    torch.manual_seed(0)
    plain = torch.nn.BatchNorm2d(3)
    converted = torch.nn.BatchNorm2d(3)
    converted.__class__ = DistributedBatchNorm2d
    x = torch.randn(4, 3, 5, 5)
    torch.testing.assert_close(converted(x), plain(x))
    torch.testing.assert_close(converted.running_var, plain.running_var)


def test_a_batch_that_does_not_split_evenly_is_a_clear_error() -> None:
    with pytest.raises(Exception, match="not divisible by the 3 processes"):
        Shard(rank=0, world_size=3).local_size(16)


def test_the_cli_runs_under_torchrun_with_one_mlflow_run(tmp_path: Path) -> None:
    """``torchrun --nproc_per_node=2 -m benchmarks run``: one MLflow run, one checkpoint."""
    import mlflow

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        f"--master_port={_free_port()}",
        "-m",
        "benchmarks",
        "run",
        "configs/cifar.yaml",
        "--profile",
        "smoke",
        "--models",
        "resnet32",
        "--runs-dir",
        str(tmp_path / "runs"),
        "--tracking-uri",
        uri,
        "--no-progress",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("resnet32 on digits [smoke") == 1  # rank 0 prints
    runs = mlflow.MlflowClient(uri).search_runs(
        [mlflow.MlflowClient(uri).get_experiment_by_name("cifar").experiment_id]
    )
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    assert (tmp_path / "runs/cifar/resnet32-digits-smoke-seed0/last.pt").is_file()
