"""Memory and speed of one training step: reversible models against their ordinary baselines.

For every case (ResNet, the same ResNet with ``torch.utils.checkpoint``, RevNet) one SGD step
(forward, backward, update) on a random batch is measured in one process:

* ``held``: bytes kept alive between the end of the forward pass and the start of backward,
  i.e. the activations held for backward. On CUDA, ``torch.cuda.memory_allocated`` before and
  after the forward; on CPU, the allocator events recorded by ``torch.profiler`` with
  ``profile_memory=True`` (every allocation and free, summed up to the start of backward).
* ``saved``: the cross-check, bytes of the distinct storages autograd saves for backward,
  counted with ``torch.autograd.graph.saved_tensors_hooks``. ``torch.utils.checkpoint`` keeps
  its unit inputs outside those hooks, so the figure is not reported for checkpointed models.
* ``peak``: the peak of live bytes during the whole step above what was live before it
  (activations, gradients, workspace); on CUDA ``torch.cuda.max_memory_allocated``.
* ``state``: parameters plus optimizer state (SGD momentum buffers).
* ``step time``: the fastest of ``repeats`` steps after the warm-up and probe steps (CUDA
  synchronised), and of their forward passes, timed in rounds across all cases. On a shared
  machine the minimum is the estimate least disturbed by other work; ratios are taken against
  the plain ResNet of the same depth in the same run.

The RevNets are measured twice: with the memory-saving backward and with plain autograd
(same modules), which separates what the architecture costs from what recomputation saves.

A case says its loss and its inputs: the classifiers take standard normal images and random
labels with cross-entropy (the default); the flows (:mod:`benchmarks.measure.flow_memory`)
take images in [0, 1] and their negative log-likelihood.

Example:
    >>> rows = measure_cases(paper_cases()[:1], batch_size=4, resolution=8, repeats=1)
    >>> rows[0]["case"], rows[0]["held_bytes"] > 0
    ('ResNet-32', True)
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.core.profiling import count_parameters, saved_activation_bytes
from flows.models.resnet import BasicBranch, PreActResNet
from flows.models.revnet import RevNet
from flows.registry import create

__all__ = [
    "MemoryCase",
    "StepMeter",
    "built_model",
    "classification_loss",
    "density_loss",
    "glow_cases",
    "measure_cases",
    "paper_cases",
    "sweep_cases",
]

RESNET, CHECKPOINT = "ResNet", "ResNet + checkpoint"
REVNET_PLAIN, REVNET = "RevNet, plain autograd", "RevNet"
FAMILIES = (RESNET, CHECKPOINT, REVNET_PLAIN, REVNET)
GLOW_PLAIN, GLOW, GLOW_NORMFLOWS = "Glow, plain autograd", "Glow", "normflows Glow"
FLOW_FAMILIES = (GLOW_PLAIN, GLOW, GLOW_NORMFLOWS)

Loss = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


def classification_loss(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor
) -> torch.Tensor:
    """Cross-entropy of a classifier's logits."""
    return F.cross_entropy(model(images), labels)


def density_loss(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Negative log-likelihood per image (nats) of a flow with ``log_prob``; labels unused."""
    del labels
    return -model.log_prob(images).mean()


@dataclass(frozen=True)
class MemoryCase:
    """One model to measure.

    Attributes:
        name: row label, e.g. ``"RevNet-110"``.
        family: one of :data:`FAMILIES`.
        depth: number of weight layers (the number in the model's name).
        group: cases compared with each other (``"paper"`` or ``"sweep"``).
        baseline: name of the plain ResNet case whose step time this case is divided by.
        build: returns the model for 3-channel input (and 10 classes for a classifier).
        loss: ``loss(model, images, labels)``, the training loss of one step.
        inputs: ``"normal"`` (standard normal images) or ``"unit"`` (uniform in [0, 1], the
            range of a flow's data).
    """

    name: str
    family: str
    depth: int
    group: str
    baseline: str
    build: Callable[[], nn.Module]
    loss: Loss = classification_loss
    inputs: str = "normal"

    def __post_init__(self) -> None:
        if self.inputs not in ("normal", "unit"):
            raise ValueError(f"inputs {self.inputs!r}: 'normal' or 'unit'")


def paper_cases() -> list[MemoryCase]:
    """The CIFAR models of the RevNet paper's Table 1, paired by row."""
    pairs = [(32, 38), (110, 110), (164, 164)]
    cases = []
    for resnet_depth, revnet_depth in pairs:
        resnet, revnet = f"resnet{resnet_depth}", f"revnet{revnet_depth}"
        base = f"ResNet-{resnet_depth}"
        cases += [
            MemoryCase(base, RESNET, resnet_depth, "paper", base, lambda r=resnet: create(r)),
            MemoryCase(
                f"{base} + checkpoint",
                CHECKPOINT,
                resnet_depth,
                "paper",
                base,
                lambda r=resnet: create(r, checkpoint_units=True),
            ),
            MemoryCase(
                f"RevNet-{revnet_depth}, plain autograd",
                REVNET_PLAIN,
                revnet_depth,
                "paper",
                base,
                lambda r=revnet: create(r, memory_saving=False),
            ),
            MemoryCase(
                f"RevNet-{revnet_depth}",
                REVNET,
                revnet_depth,
                "paper",
                base,
                lambda r=revnet: create(r),
            ),
        ]
    return cases


def sweep_cases(units_per_stage: Sequence[int]) -> list[MemoryCase]:
    """A depth sweep beyond the paper, at equal depth for the three families.

    RevNets with ``n`` basic units per stage (widths 32-64-128 as RevNet-110) have depth
    ``12n + 2``; the ResNets of equal depth have ``2n`` basic units per stage (16-32-64).
    """
    cases = []
    for n in units_per_stage:
        depth = 12 * n + 2
        base = f"ResNet-{depth}"
        cases += [
            MemoryCase(
                base,
                RESNET,
                depth,
                "sweep",
                base,
                lambda n=n: PreActResNet(BasicBranch, (2 * n,) * 3, (16, 32, 64)),
            ),
            MemoryCase(
                f"{base} + checkpoint",
                CHECKPOINT,
                depth,
                "sweep",
                base,
                lambda n=n: PreActResNet(
                    BasicBranch, (2 * n,) * 3, (16, 32, 64), checkpoint_units=True
                ),
            ),
            MemoryCase(
                f"RevNet-{depth}",
                REVNET,
                depth,
                "sweep",
                base,
                lambda n=n: RevNet(BasicBranch, (n,) * 3, (32, 64, 128)),
            ),
        ]
    return cases


def _normflows_loss(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """normflows' training loss, its negative log-likelihood per image."""
    del labels
    return model.forward_kld(images)


def glow_cases(
    steps: Sequence[int],
    levels: int = 3,
    width: int = 512,
    image_size: int = 32,
    peer: bool = False,
) -> list[MemoryCase]:
    """Glow (Kingma and Dhariwal, 2018) at L = ``levels`` levels of K steps for each K of
    ``steps``, affine coupling of ``width`` channels, on 3 x ``image_size``^2 images: with
    plain autograd, with the memory-saving backward (same weights) and, with ``peer``,
    normflows' Glow at the same sizes (:func:`benchmarks.measure.flow_speed.normflows_glow`).
    Each case's step time is divided by plain autograd's at the same K; its depth is K.
    """

    def ours(k: int, memory_saving: bool) -> nn.Module:
        return create(
            "glow_cifar10",
            in_channels=3,
            image_size=image_size,
            levels=levels,
            steps=k,
            width=width,
            memory_saving=memory_saving,
        )

    def theirs(k: int) -> nn.Module:
        from benchmarks.measure.flow_speed import FlowSpeedSettings, normflows_glow

        return normflows_glow(
            FlowSpeedSettings(levels=levels, steps=k, width=width, image_size=image_size)
        )

    cases = []
    for k in steps:
        plain = f"Glow K={k}, plain autograd"
        flow = {"group": "flows", "baseline": plain, "loss": density_loss, "inputs": "unit"}
        cases += [
            MemoryCase(plain, GLOW_PLAIN, k, build=lambda k=k: ours(k, False), **flow),
            MemoryCase(f"Glow K={k}", GLOW, k, build=lambda k=k: ours(k, True), **flow),
        ]
        if peer:
            flow["loss"] = _normflows_loss
            name = f"normflows Glow K={k}"
            cases.append(MemoryCase(name, GLOW_NORMFLOWS, k, build=lambda k=k: theirs(k), **flow))
    return cases


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _cpu_allocations(step: Callable[[], None]) -> tuple[list[tuple[int, int]], int]:
    """Run ``step`` under the profiler; return (time, bytes) allocator events and the time at
    which the region annotated ``"backward"`` started."""
    activities = [torch.profiler.ProfilerActivity.CPU]
    with torch.profiler.profile(activities=activities, profile_memory=True) as profiler:
        step()
    events = profiler.profiler.kineto_results.events()
    allocations = sorted(
        (e.start_ns(), e.nbytes())
        for e in events
        if e.name() == "[memory]" and e.device_type() == torch.autograd.DeviceType.CPU
    )
    backward_start = min(e.start_ns() for e in events if e.name() == "backward")
    return allocations, backward_start


def built_model(case: MemoryCase, seed: int = 0) -> tuple[nn.Module, torch.Tensor]:
    """The case's model initialised from ``seed``, and torch's random state just after (from
    which :class:`StepMeter` draws its batch): the same pair every time."""
    torch.manual_seed(seed)
    model = case.build()
    return model, torch.get_rng_state()


class StepMeter:
    """One case's model, SGD optimizer and random batch, ready to be measured.

    Example:
        >>> meter = StepMeter(paper_cases()[0], batch_size=2, resolution=8)
        >>> meter.memory()["held_bytes"] > 0
        True
    """

    def __init__(
        self,
        case: MemoryCase,
        batch_size: int,
        resolution: int,
        device: torch.device | str = "cpu",
        seed: int = 0,
        built: tuple[nn.Module, torch.Tensor] | None = None,
    ) -> None:
        self.case = case
        self.device = torch.device(device)
        model, random_state = built if built is not None else built_model(case, seed)
        torch.set_rng_state(random_state)
        self.model = model.to(self.device).train()
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=0.01, momentum=0.9)
        draw = torch.rand if case.inputs == "unit" else torch.randn
        self.images = draw(batch_size, 3, resolution, resolution, device=self.device)
        self.labels = torch.randint(0, 10, (batch_size,), device=self.device)

    def loss(self) -> torch.Tensor:
        return self.case.loss(self.model, self.images, self.labels)

    def step(self) -> None:
        """One annotated training step (the profiler finds the backward region by its name)."""
        self.optimizer.zero_grad(set_to_none=True)
        with torch.profiler.record_function("forward"):
            loss = self.loss()
        with torch.profiler.record_function("backward"):
            loss.backward()
        self.optimizer.step()

    def memory(self) -> dict[str, float]:
        """Saved, state, held and peak bytes (see the module docstring)."""
        model, optimizer, device = self.model, self.optimizer, self.device
        # Warm-up step, counting the bytes autograd saves; it creates the momentum buffers.
        loss, saved = saved_activation_bytes(self.loss, {id(p) for p in model.parameters()})
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        del loss
        state_tensors = [*model.parameters(), *model.buffers()] + [
            v for s in optimizer.state.values() for v in s.values() if torch.is_tensor(v)
        ]
        if device.type == "cuda":
            _synchronize(device)
            before = torch.cuda.memory_allocated(device)
            torch.cuda.reset_peak_memory_stats(device)
            loss = self.loss()
            _synchronize(device)
            held = torch.cuda.memory_allocated(device) - before
            loss.backward()
            optimizer.step()
            _synchronize(device)
            peak = torch.cuda.max_memory_allocated(device) - before
            optimizer.zero_grad(set_to_none=True)
            del loss
        else:
            allocations, backward_start = _cpu_allocations(self.step)
            live, peak, held = 0, 0, 0
            for start, nbytes in allocations:
                live += nbytes
                peak = max(peak, live)
                if start < backward_start:
                    held = live
        return {
            "params": count_parameters(model),
            "state_bytes": sum(t.numel() * t.element_size() for t in state_tensors),
            "held_bytes": held,
            "saved_bytes": float("nan") if self.case.family == CHECKPOINT else saved,
            "peak_bytes": peak,
        }

    def timed_step(self) -> tuple[float, float]:
        """Wall time of the forward pass and of the whole step, in seconds."""
        self.optimizer.zero_grad(set_to_none=True)
        _synchronize(self.device)
        started = time.perf_counter()
        loss = self.loss()
        _synchronize(self.device)
        forward_done = time.perf_counter()
        loss.backward()
        self.optimizer.step()
        _synchronize(self.device)
        return forward_done - started, time.perf_counter() - started


def measure_cases(
    cases: Sequence[MemoryCase],
    batch_size: int,
    resolution: int,
    device: torch.device | str = "cpu",
    repeats: int = 3,
    progress: Callable[[str], None] | None = None,
) -> list[dict[str, float | str | int]]:
    """Measure every case in one process and add its step-time ratio to its baseline.

    Memory is measured case by case. Times are taken in ``repeats`` rounds that step every
    case once, so a slow spell of the machine falls on all cases alike and the ratios, taken
    between the fastest steps of the same run, stay comparable.
    """
    device = torch.device(device)
    meters, rows = [], []
    measured: dict[tuple[str, str], tuple[StepMeter, dict[str, float]]] = {}
    for case in cases:
        built = built_model(case)
        same = (case.family, repr(built[0]))  # the sweep repeats some paper models exactly
        if same not in measured:
            if progress is not None:
                progress(f"memory of {case.name}")
            meter = StepMeter(case, batch_size, resolution, device, built=built)
            measured[same] = meter, meter.memory()
        meter, memory = measured[same]
        rows.append(
            {
                "case": case.name,
                "family": case.family,
                "depth": case.depth,
                "group": case.group,
                "baseline": case.baseline,
                **memory,
                "batch_size": batch_size,
                "resolution": resolution,
                "device": device.type,
            }
        )
        meters.append(meter)
    distinct = list(dict.fromkeys(meters))  # a repeated model is timed once
    forward_times: dict[StepMeter, list[float]] = {meter: [] for meter in distinct}
    step_times: dict[StepMeter, list[float]] = {meter: [] for meter in distinct}
    for round_index in range(repeats):
        if progress is not None:
            progress(f"timing round {round_index + 1}/{repeats}")
        for meter in distinct:
            forward_time, step_time = meter.timed_step()
            forward_times[meter].append(forward_time)
            step_times[meter].append(step_time)
    for row, meter in zip(rows, meters, strict=True):
        row["forward_time_s"] = min(forward_times[meter])
        row["step_time_s"] = min(step_times[meter])
    times = {(row["group"], row["case"]): row["step_time_s"] for row in rows}
    for row in rows:
        baseline = times.get((row["group"], row["baseline"]), float("nan"))
        row["time_ratio"] = row["step_time_s"] / baseline
    return rows
