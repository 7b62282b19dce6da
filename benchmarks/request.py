"""What a run is asked to do and what it returns: :class:`RunRequest` (``python -m benchmarks
run``'s options, one config) and :class:`RunRecord` (one trained or fitted model, as logged).

Kept apart from :mod:`benchmarks.run` so that the checks before a run (:mod:`benchmarks.preflight`)
and the worker pool read a request without importing the run.

Example:
    >>> request = RunRequest("configs/cifar.yaml", profile="smoke", models=["resnet32"])
    >>> request.resume, request.seeds, request.reference
    (False, None, True)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.core.distributed import Shard

__all__ = ["RunRecord", "RunRequest"]


@dataclass
class RunRequest:
    """What the user asked ``python -m benchmarks run`` to do."""

    config_path: str | Path
    profile: str = "quick"
    models: list[str] | None = None
    dataset: str | None = None
    device: str = "auto"
    data_dir: str | Path | None = None
    download: bool = False
    seed: int = 0  # the seed of one run; run_config sets it from ``seeds``
    seeds: list[int] | None = None  # None: the profile's seeds (config key ``seeds``, default [0])
    resume: bool = False
    runs_dir: str | Path = "runs"
    tracking_uri: str | None = None
    progress: bool = True
    workers: int | None = None
    shard: Shard = field(default_factory=Shard)  # set by run_config under torchrun
    overrides: dict[str, object] = field(default_factory=dict)  # runtime keys: precision, ...
    reference: bool = True  # log the task's reference row (the density baseline) per dataset


@dataclass
class RunRecord:
    """The outcome of one trained model, as logged to MLflow."""

    model: str
    dataset: str
    profile: str
    device: str
    seed: int
    steps: int
    run_id: str
    metrics: dict[str, float] = field(default_factory=dict)
