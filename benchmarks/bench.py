"""``python -m benchmarks bench`` (what ``make bench`` runs): the main job, in one command.

1. Every input is checked first: the configs and their rows, the run folders, the probe
   configs, the memory settings, the output folder and the tracking store.
2. The memory benchmark (:mod:`benchmarks.measure.memory_report`) runs alone, with every
   thread of the machine: its step-time ratios need a quiet machine.
3. Every training row of the bench configs and the architecture probes are shared among
   ``jobs`` worker processes (:mod:`benchmarks.workers`; one thread each on a 2-core machine,
   so a row gives the numbers of a one-thread run).
4. The Glow paper's latent-space figures are drawn for the digits Glow of the density
   config (:mod:`benchmarks.tasks.density.latent_command`), from the run just trained.
5. The tables are compiled (:func:`benchmarks.tables.compile_tables`).

One interpreter drives it all; the workers are started once and train row after row.

Example:
    >>> request = BenchRequest(profile="smoke", jobs=1)  # doctest: +SKIP
    >>> run_bench(request)  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.config import load_config
from benchmarks.measure.architecture_probe import ProbeRequest
from benchmarks.measure.memory_report import MemoryRequest, check_memory, run_memory
from benchmarks.preflight import check_configs_dir, check_tracking, check_writable_folder
from benchmarks.request import RunRequest
from benchmarks.tables import compile_tables
from benchmarks.tasks.density.latent_command import LatentRequest, run_latent_figures
from benchmarks.workers import check_requests, run_configs

__all__ = ["LATENT_FIGURE_MODELS", "BenchRequest", "run_bench"]

LATENT_FIGURE_MODELS = ("glow_cifar10",)  # density rows whose latent figures bench draws


@dataclass(frozen=True)
class BenchRequest:
    """What ``bench`` trains, probes and measures, and where it writes."""

    configs: tuple[str, ...] = ("configs/cifar.yaml", "configs/density.yaml")
    probe_configs: tuple[str, ...] = ("configs/imagenet.yaml",)
    profile: str = "quick"
    jobs: int = 2
    runs_dir: Path = Path("runs")
    resume: bool = False
    device: str = "auto"
    tracking_uri: str | None = None
    out: Path = Path("results")
    configs_dir: Path = Path("configs")
    memory: MemoryRequest = field(
        default_factory=lambda: MemoryRequest(batch_size=32, sweep=(3, 9), repeats=3)
    )


def run_bench(request: BenchRequest) -> None:
    """Check everything, then measure memory, train and probe, and compile the tables."""
    runs = [
        RunRequest(
            config_path=config,
            profile=request.profile,
            device=request.device,
            resume=request.resume,
            runs_dir=request.runs_dir,
            tracking_uri=request.tracking_uri,
            progress=False,
        )
        for config in request.configs
    ]
    probes = [
        ProbeRequest(
            config_path=config,
            device=request.device,
            tracking_uri=request.tracking_uri,
            out_dir=request.out,
        )
        for config in request.probe_configs
    ]
    memory = dataclasses.replace(
        request.memory, device=request.device, out=request.out, tracking_uri=request.tracking_uri
    )
    check_configs_dir(request.configs_dir)
    check_writable_folder(request.out, "--out")
    check_tracking(request.tracking_uri)
    check_memory(memory)
    check_requests(runs, probes)
    for path in run_memory(memory):
        print(f"wrote {path}", flush=True)
    run_configs(runs, request.jobs, probes)
    for latent in latent_requests(request):
        for path in run_latent_figures(latent):
            print(f"wrote {path}", flush=True)
    for path in compile_tables(request.configs_dir, request.out, request.tracking_uri, log=print):
        print(f"wrote {path}")


def latent_requests(request: BenchRequest) -> list[LatentRequest]:
    """The latent-figure drawings of the bench: each density config's row of
    :data:`LATENT_FIGURE_MODELS`, from its run of this profile."""
    found = []
    for path in request.configs:
        config = load_config(path)
        for model in LATENT_FIGURE_MODELS:
            if config.task == "density" and model in config.models:
                found.append(
                    LatentRequest(
                        config_path=path,
                        model=model,
                        profile=request.profile,
                        out=request.out,
                        tracking_uri=request.tracking_uri,
                    )
                )
    return found
