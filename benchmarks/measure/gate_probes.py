"""What the regression gate measures: figures that repeat on any x86-64 CPU within the
tolerances of ``results/baseline.json``, which :mod:`benchmarks.measure.gate_spread` derives from
their measured spread across kernels and thread counts.

For every registered model:

* ``params/<model>``: the parameter count of the default builder (built on the ``meta``
  device: no memory, no time).

For every row of every config's ``smoke`` profile (first seed, embedded digits), trained with
the suite's own training functions and no MLflow (``<config>/<model>`` in the names):

* ``held_bytes/...``: bytes autograd saves for backward in one training step of a classifier
  at the smoke batch (a RevNet that stores its activations again shows here);
* ``test_bpd/...`` and ``test_bpd_iw/...`` (flows), ``test_elbo/...`` and
  ``test_log_px/...`` (VAEs) after the smoke steps: well-conditioned, they spread by at most
  1.2e-4 across kernels;
* for the classifiers, ``first_loss/...``: the training loss of the first step (the suite's
  initial weights, augmented batch and forward pass; no update yet), which spreads by at most
  2.4e-6; ``second_loss/...``: that of the second step (after one SGD update; only where the
  smoke profile has more than two steps); ``train_loss/...`` and ``test_error/...`` after
  the last smoke step. Deep BatchNorm nets at batches of 4 to 16 amplify a difference in the
  last bit of a kernel's result chaotically: the second loss already moves by up to 0.8%, the
  last one by up to 9.4% and the test error (64 or 16 images) by up to 11 points between
  kernels or thread counts, so that these get the wide bands their spread justifies, and the
  first loss (with the parameter counts and held bytes) is what pins a classifier down;
* ``inversion_error/...`` and ``logdet_error/...``: for the flows, the trained model in
  float64, ``max |decode(encode(y)) - y|`` and ``max |log-det - log|det J||`` with the Jacobian
  by brute force on two test images; for the reversible classifiers, the reconstruction of
  every reversible part's input from its output (``inverse(forward(x))``) in float64.

Measured together in one run (ratios, so that the machine's speed cancels):

* ``time_ratio/revnet38_over_resnet32``: training step time, batch 16 at 32x32;
* ``time_ratio/invconv_lu_over_plain``: Glow's 1x1 convolution, LU-parametrised over plain,
  forward and backward.

Example:
    >>> sorted(parameter_counts(["resnet32"]).items())
    [('params/resnet32', 464154.0)]
"""

from __future__ import annotations

import math
import statistics
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn

from benchmarks.config import ResolvedConfig, load_config
from benchmarks.tasks import task_of
from flows.registry import create, list_models

__all__ = [
    "SmokeRow",
    "inversion_metrics",
    "measure_all",
    "parameter_counts",
    "smoke_metrics",
    "smoke_rows",
    "time_ratios",
]

Metrics = dict[str, float]


def parameter_counts(models: Iterable[str] | None = None) -> Metrics:
    """``params/<model>`` of every (or each given) registered model."""
    counts = {}
    for name in models if models is not None else list_models():
        with torch.device("meta"):
            model = create(name)
        counts[f"params/{name}"] = float(sum(p.numel() for p in model.parameters()))
    return counts


@dataclass(frozen=True)
class SmokeRow:
    """One model of one config's smoke profile."""

    config: str
    model: str
    resolved: ResolvedConfig

    @property
    def key(self) -> str:
        return f"{self.config}/{self.model}"


def smoke_rows(configs_dir: str | Path = "configs") -> list[SmokeRow]:
    """Every (config, model) of the configs' smoke profiles."""
    rows = []
    for path in sorted(Path(configs_dir).glob("*.yaml")):
        resolved = load_config(path).resolve("smoke")
        rows += [SmokeRow(resolved.config.name, model, resolved) for model in resolved.models]
    return rows


def _train_smoke(row: SmokeRow, folder: Path) -> tuple[nn.Module, object, Metrics]:
    """Build and train ``row`` as the runner would (first seed, first dataset, no MLflow);
    a task whose first losses are gated (the classifiers) logs every step, so that the losses
    of its first steps are known."""
    resolved, task = row.resolved, task_of(row.resolved.config)
    settings = resolved.training_for(row.model)
    seed, dataset = resolved.seeds[0], resolved.datasets[0]
    torch.manual_seed(seed)
    data = task.load_data(dataset, None, False, settings)
    model = create(row.model, **task.model_inputs(data), **resolved.model_kwargs(row.model))
    metrics: Metrics = {}
    measured = task.before_training(model, data, settings, torch.device("cpu"))
    if "activation_bytes" in measured:
        metrics[f"held_bytes/{row.key}"] = float(measured["activation_bytes"])
    losses: list[float] = []
    if task.gates_first_losses:
        settings = replace(settings, log_every=1)  # only what is logged changes
    outcome = task.train(
        model,
        data,
        settings,
        checkpoint_path=folder / f"{row.key}.pt",
        seed=seed,
        progress=False,
        log_metrics=lambda logged, step: losses.append(logged.get("train_loss", math.nan)),
    )
    if task.gates_first_losses:
        metrics.update(_first_losses(row.key, losses))
    for name in task.gate_metrics:
        metrics[f"{name}/{row.key}"] = float(outcome.final[name])
    return outcome.evaluation_model or model, data, metrics


def _first_losses(key: str, losses: list[float]) -> Metrics:
    """``first_loss`` and, when it is not also the last, ``second_loss`` of a classifier."""
    metrics = {f"first_loss/{key}": float(losses[0])}
    if len(losses) > 2:
        metrics[f"second_loss/{key}"] = float(losses[1])
    return metrics


def smoke_metrics(rows: Iterable[SmokeRow]) -> Metrics:
    """Train every row; its final metrics, held bytes and inversion errors."""
    metrics: Metrics = {}
    with tempfile.TemporaryDirectory() as folder:
        for row in rows:
            model, data, trained = _train_smoke(row, Path(folder))
            metrics.update(trained)
            metrics.update(inversion_metrics(row, model, data))
    return metrics


def inversion_metrics(row: SmokeRow, model: nn.Module, data: object) -> Metrics:
    """Float64 reconstruction (and, for flows, log-det) errors of a trained model."""
    errors = task_of(row.resolved.config).inversion_errors(model, data)
    return {f"{name}/{row.key}": value for name, value in errors.items()}


def _median_time(step: Callable[[], None], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        step()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def _interleaved_ratio(
    numerator: Callable[[], None], denominator: Callable[[], None], rounds: int, repeats: int
) -> float:
    """Median over ``rounds`` of (median time of ``numerator`` / of ``denominator``)."""
    for step in (numerator, denominator):  # warm-up
        step()
    ratios = [
        _median_time(numerator, repeats) / _median_time(denominator, repeats) for _ in range(rounds)
    ]
    return statistics.median(ratios)


def time_ratios() -> Metrics:
    """Step-time ratios measured in this process (see the module docstring)."""
    from benchmarks.measure.step_memory import StepMeter, paper_cases
    from flows.layers.invconv import InvConv1x1, InvConv1x1LU

    cases = {case.name: case for case in paper_cases()}
    revnet = StepMeter(cases["RevNet-38"], batch_size=16, resolution=32)
    resnet = StepMeter(cases["ResNet-32"], batch_size=16, resolution=32)
    torch.manual_seed(0)
    x = torch.randn(16, 48, 16, 16, requires_grad=True)
    lu, plain = InvConv1x1LU(48), InvConv1x1(48)

    def conv_step(layer: nn.Module) -> Callable[[], None]:
        def step() -> None:
            y, logdet = layer(x)
            (y.square().mean() + logdet.mean()).backward()

        return step

    return {
        "time_ratio/revnet38_over_resnet32": _interleaved_ratio(
            lambda: revnet.timed_step(), lambda: resnet.timed_step(), rounds=3, repeats=3
        ),
        "time_ratio/invconv_lu_over_plain": _interleaved_ratio(
            conv_step(lu), conv_step(plain), rounds=5, repeats=20
        ),
    }


def measure_all(
    configs_dir: str | Path = "configs",
    models: Iterable[str] | None = None,
    timing: bool = True,
    progress: Callable[[str], None] = lambda message: None,
) -> Metrics:
    """Everything the gate compares; ``models`` restricts it to those models (tests)."""
    wanted = set(models) if models is not None else None
    metrics = parameter_counts(sorted(wanted) if wanted is not None else None)
    rows = [row for row in smoke_rows(configs_dir) if wanted is None or row.model in wanted]
    for row in rows:
        progress(f"smoke {row.key}")
        metrics.update(smoke_metrics([row]))
    if timing and wanted is None:
        progress("time ratios")
        metrics.update(time_ratios())
    return metrics
