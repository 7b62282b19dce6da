"""Training across processes: ``torchrun`` and ``DistributedDataParallel``.

Under ``torchrun --nproc_per_node=N`` (or ``--nnodes``), every process reads ``RANK``,
``WORLD_SIZE`` and ``LOCAL_RANK`` from its environment (:func:`init_distributed`), trains the
same model on its :class:`Shard` of each global batch, and DistributedDataParallel averages the
gradients. The suite keeps DDP training *equal* to single-process training with the same
global batch, not merely close to it:

* Every batch is a function of ``(seed, step)`` (:class:`~benchmarks.core.seeds.BatchSampler`): each
  process forms the same global batch and keeps its contiguous rows, so no sampler state needs
  saving and a run resumes under a different world size on the same trajectory.
* Random draws that belong to examples (dequantization noise, a VAE's posterior noise) are
  drawn for the global batch and sliced (:meth:`Shard.rows`).
* BatchNorm layers become :class:`DistributedBatchNorm2d` (statistics over the global batch,
  through an autograd-aware all-reduce; unlike ``nn.SyncBatchNorm`` it also runs on the CPU
  with the gloo backend).
* Data-dependent initialisation (actnorm, Flow++'s convolutions) runs on the global first
  batch in every process before DDP wraps the model (:func:`initialise_on_global_batch`).

Example:
    >>> shard = Shard(rank=1, world_size=2)
    >>> shard.rows(torch.arange(8)).tolist()
    [4, 5, 6, 7]
    >>> Shard().rows(torch.arange(3)).tolist()  # one process: the whole batch
    [0, 1, 2]
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from benchmarks.errors import BenchmarkError, ConfigError

__all__ = [
    "DistributedBatchNorm2d",
    "Shard",
    "check_same_start",
    "convert_batch_norm",
    "init_distributed",
    "initialise_on_global_batch",
    "needs_data_init",
]


@dataclass(frozen=True)
class Shard:
    """This process's part of each global batch: rows ``[rank * b, (rank + 1) * b)`` with
    ``b = global batch / world_size``."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0 logs to MLflow, writes checkpoints and prints."""
        return self.rank == 0

    def local_size(self, global_size: int) -> int:
        if global_size % self.world_size:
            raise ConfigError(
                f"batch_size {global_size} is not divisible by the {self.world_size} processes "
                "of this run; choose a batch_size that is a multiple of the world size"
            )
        return global_size // self.world_size

    def rows(self, tensor: torch.Tensor, dim: int = 0) -> torch.Tensor:
        """This shard's contiguous rows of ``tensor`` along ``dim``."""
        if not self.distributed:
            return tensor
        size = self.local_size(tensor.shape[dim])
        return tensor.narrow(dim, self.rank * size, size)

    def draw(
        self,
        sampler: Callable[..., torch.Tensor],
        local_shape: tuple[int, ...],
        generator: torch.Generator | None,
        dim: int = 0,
    ) -> torch.Tensor:
        """``sampler(global shape, generator=...)`` sliced to this shard: the noise of an
        example does not depend on how many processes share the batch."""
        shape = list(local_shape)
        shape[dim] *= self.world_size
        return self.rows(sampler(tuple(shape), generator=generator), dim)


def init_distributed(device: torch.device) -> tuple[Shard, torch.device]:
    """Join the process group that ``torchrun`` describes in the environment.

    Without ``WORLD_SIZE`` (or with 1) nothing happens. Otherwise the backend is NCCL on CUDA
    (each process takes ``cuda:LOCAL_RANK``) and gloo on the CPU.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Shard(), device
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Shard(rank, world_size, local_rank), device


def check_same_start(shard: Shard, start_step: int, checkpoint_path: object) -> None:
    """Every process must resume from the same step (they all read rank 0's checkpoint)."""
    if not shard.distributed:
        return
    steps: list[int | None] = [None] * shard.world_size
    dist.all_gather_object(steps, start_step)
    if len(set(steps)) > 1:
        raise BenchmarkError(
            f"the processes would start at different steps {steps}: they do not all see the "
            f"checkpoint {checkpoint_path}. Put --runs-dir on a file system every node shares."
        )


class _AllReduceSum(torch.autograd.Function):
    """``sum over processes of x``; its gradient is the sum over processes of the gradients
    (every process's loss depends on every process's ``x``)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        total = x.clone()
        dist.all_reduce(total)
        return total

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        total = grad.contiguous().clone()
        dist.all_reduce(total)
        return total


class DistributedBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm whose training statistics are those of the global batch across processes.

    Per-channel sums and sums of squares are all-reduced by a function whose backward
    all-reduces the gradients, so both the normalisation and its gradient equal single-process
    BatchNorm on the concatenated batch (Ioffe and Szegedy 2015; the same as
    ``nn.SyncBatchNorm``, which needs a GPU). Outside a process group, in eval mode, or in one
    process it is ``nn.BatchNorm2d``. Running statistics are updated with the unbiased global
    variance, as BatchNorm does.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized()):
            return super().forward(x)
        if dist.get_world_size() == 1:
            return super().forward(x)
        channels = x.shape[1]
        count = torch.full((1,), x.numel() / channels, dtype=x32_dtype(x), device=x.device)
        x32 = x.to(x32_dtype(x))
        local = torch.cat([x32.sum((0, 2, 3)), (x32 * x32).sum((0, 2, 3)), count])
        total = _AllReduceSum.apply(local)
        n = total[-1]
        mean = total[:channels] / n
        var = (total[channels : 2 * channels] / n - mean * mean).clamp(min=0)
        if self.track_running_stats and self.running_mean is not None:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                momentum = self.momentum if self.momentum is not None else 0.0
                self.running_mean.lerp_(mean.detach().to(self.running_mean), momentum)
                unbiased = var.detach() * n / (n - 1).clamp(min=1)
                self.running_var.lerp_(unbiased.to(self.running_var), momentum)
        shape = (1, channels, 1, 1)
        y = (x32 - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y.to(x.dtype)


def x32_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype batch statistics are computed in: float32, or float64 for float64 inputs."""
    return torch.promote_types(x.dtype, torch.float32)


def convert_batch_norm(model: nn.Module) -> nn.Module:
    """Turn every ``nn.BatchNorm2d`` of ``model`` into a :class:`DistributedBatchNorm2d`, in
    place (the same module objects: parameters, buffers, optimizer state, state dict keys and
    checkpoints are unchanged)."""
    for module in model.modules():
        if type(module) is nn.BatchNorm2d:
            module.__class__ = DistributedBatchNorm2d
    return model


def needs_data_init(model: nn.Module) -> bool:
    """True while a layer with data-dependent initialisation has not seen data yet."""
    return any(
        name.rsplit(".", 1)[-1] == "initialized" and not bool(buffer)
        for name, buffer in model.named_buffers()
    )


def initialise_on_global_batch(
    model: nn.Module, loss: Callable[[], Any], device: torch.device
) -> None:
    """Run ``loss()`` (the first step's loss on the *global* batch) without gradients and
    with the random state restored afterwards, so that data-dependent initialisation sees
    what a single process would see at its first step."""
    from flows.reversible import frozen_batch_norm_stats

    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), torch.no_grad(), frozen_batch_norm_stats(model):
        loss()
    if needs_data_init(model):
        raise RuntimeError("data-dependent initialisation did not run on the first batch")
