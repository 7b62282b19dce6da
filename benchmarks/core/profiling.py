"""Memory probes for one training step: parameters, state bytes, activations held for backward.

* ``activation_bytes``: bytes of the distinct tensors autograd saves for the backward pass of
  one forward, counted with ``torch.autograd.graph.saved_tensors_hooks`` (each storage once).
  Deterministic, and the quantity a reversible network is designed to shrink.
* ``peak_memory_bytes``: on CUDA, ``torch.cuda.max_memory_allocated`` over one full training
  step (forward, backward), measured from a reset; not measured on CPU (reported as NaN).

The probe runs on a deep copy of the model so that it does not touch the training run (BN
statistics, gradients).

Example:
    >>> import torch, flows
    >>> probe = profile_training_step(flows.create("resnet32", in_channels=1),
    ...                               torch.randn(8, 1, 8, 8), torch.zeros(8, dtype=torch.long))
    >>> probe["params"], probe["activation_bytes"] > 0
    (463866, True)
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["count_parameters", "profile_training_step", "saved_activation_bytes"]


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _state_bytes(model: nn.Module) -> int:
    tensors = [*model.parameters(), *model.buffers()]
    return sum(t.numel() * t.element_size() for t in tensors)


def saved_activation_bytes(
    loss_fn: Callable[[], torch.Tensor], parameters: set[int]
) -> tuple[torch.Tensor, int]:
    """Run ``loss_fn()`` and count the bytes autograd saves for backward (parameters excluded).

    Tensors sharing one storage are counted once; the model's own parameters are not
    activations and are skipped (their ids are in ``parameters``).
    """
    storages: dict[tuple[int, str], int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        if id(tensor) not in parameters and tensor.numel() > 0:
            storage = tensor.untyped_storage()
            storages[(storage.data_ptr(), str(tensor.device))] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        loss = loss_fn()
    return loss, sum(storages.values())


def profile_training_step(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor
) -> dict[str, float]:
    """Measure one training step of a classifier on ``images`` (a copy of ``model`` is used)."""
    probe = copy.deepcopy(model).train()
    device = images.device
    parameter_ids = {id(p) for p in probe.parameters()}
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        baseline = torch.cuda.memory_allocated(device)
    loss, activation_bytes = saved_activation_bytes(
        lambda: F.cross_entropy(probe(images), labels), parameter_ids
    )
    loss.backward()
    peak = float("nan")
    if cuda:
        torch.cuda.synchronize(device)
        peak = float(torch.cuda.max_memory_allocated(device) - baseline)
    return {
        "params": count_parameters(probe),
        "model_state_bytes": _state_bytes(probe),
        "activation_bytes": activation_bytes,
        "peak_memory_bytes": peak,
        "probe_batch_size": len(images),
    }
