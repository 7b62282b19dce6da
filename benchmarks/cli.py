"""Command line: ``python -m benchmarks {run,tables,memory,probe,list}``.

Examples:
    python -m benchmarks run configs/cifar.yaml --profile quick
    python -m benchmarks run configs/cifar.yaml --profile paper --dataset cifar10 \\
        --data-dir ~/data --device cuda --models resnet110
    python -m benchmarks run configs/cifar.yaml --profile paper --dataset cifar10 \\
        --data-dir ~/data --resume          # continue a killed run
    torchrun --nproc_per_node=8 -m benchmarks run configs/cifar.yaml --profile paper \\
        --dataset cifar10 --data-dir ~/data  # DistributedDataParallel on 8 GPUs
    python -m benchmarks tables             # rewrite results/*.md and results/*.csv
    python -m benchmarks memory --batch-size 128 --sweep 3 9 18 36
    python -m benchmarks memory --flows --no-paper --sweep   # the Glow section alone
    python -m benchmarks probe configs/imagenet.yaml   # params, memory/image, inversion
    python -m benchmarks list
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from benchmarks import preflight
from benchmarks.config import PRECISIONS, PROFILES, load_config
from benchmarks.errors import BenchmarkError, RegressionFound
from benchmarks.tasks import TASKS
from flows.registry import UnknownModelError, get_info, list_models

__all__ = ["main"]


class UsageError(BenchmarkError):
    """The command line does not parse (unknown flag, bad value): one line, status 2."""


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors as one ``error:`` line (no usage block) like every other."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message} (see `{self.prog} --help`)")


def _all_datasets() -> list[str]:
    """Every dataset some config's runner can load; each config's task narrows it."""
    return sorted({name for task in TASKS.values() for name in task.dataset_names})


def _shared_options() -> tuple[argparse.ArgumentParser, ...]:
    """The options several commands share, declared once: ``--device``, ``--tracking-uri``
    and ``--out`` (parent parsers of the commands that take them)."""
    device = argparse.ArgumentParser(add_help=False)
    device.add_argument(
        "--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)"
    )
    tracking = argparse.ArgumentParser(add_help=False)
    tracking.add_argument("--tracking-uri", help=_TRACKING_HELP)
    out = argparse.ArgumentParser(add_help=False)
    out.add_argument("--out", type=Path, default=Path("results"), help=_OUT_HELP)
    return device, tracking, out


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="python -m benchmarks",
        description="Benchmark suite for invertible and reversible networks and flows.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    device, tracking, out = _shared_options()

    run = commands.add_parser(
        "run", help="train and evaluate the models of a config", parents=[device, tracking]
    )
    run.add_argument(
        "config", nargs="+", help="YAML experiment(s), e.g. configs/cifar.yaml configs/density.yaml"
    )
    run.add_argument(
        "--profile",
        choices=PROFILES,
        default="quick",
        help="paper = documented settings (GPU, real data); quick = minutes on a "
        "CPU; smoke = seconds, pipeline check (default: quick)",
    )
    run.add_argument(
        "--models",
        nargs="+",
        metavar="NAME",
        help="train only these models of the config (default: all)",
    )
    run.add_argument(
        "--dataset",
        choices=_all_datasets(),
        help="override the profile's datasets with this one (one the config's task reads: "
        "mnist for VAEs, imagenet and digits64 for classifiers, ...)",
    )
    run.add_argument(
        "--data-dir", type=Path, help="folder holding the real datasets (e.g. cifar-10-batches-py/)"
    )
    run.add_argument(
        "--download",
        action="store_true",
        help="download a missing dataset into --data-dir (needs network)",
    )
    run.add_argument(
        "--seed",
        type=int,
        nargs="+",
        help="seed(s) for init, order and augmentation; one run per seed (default: the "
        "profile's 'seeds', else 0)",
    )
    run.add_argument(
        "--resume",
        action="store_true",
        help="continue from the run's last checkpoint (and its MLflow run)",
    )
    run.add_argument(
        "--runs-dir",
        type=Path,
        default=Path("runs"),
        help="where checkpoints are written; checked writable before training (default: runs/)",
    )
    run.add_argument(
        "--workers",
        type=int,
        help="processes decoding images for datasets read from files, e.g. ImageNet; 0 "
        "decodes in the training process (default: min(8, CPUs))",
    )
    run.add_argument(
        "--precision",
        choices=PRECISIONS,
        help="auto = fp32 (the default, the fastest measured on an H200); fp32 = IEEE float32 "
        "(TF32 off); tf32 = TF32 on GPUs outside the exactly inverted parts; bf16 = autocast. "
        "Evaluation is always float32",
    )
    run.add_argument(
        "--channels-last", action="store_true", help="NHWC memory format (faster convs on GPUs)"
    )
    run.add_argument(
        "--compile",
        metavar="BACKEND",
        nargs="?",
        const="inductor",
        help="torch.compile the training step with BACKEND, one of "
        "torch._dynamo.list_backends() or eager/aot_eager (default backend: inductor)",
    )
    run.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="train the rows in N worker processes, CPUs/N threads each (default: 1, the "
        "configs one after the other in this process)",
    )
    run.add_argument("--no-progress", action="store_true", help="hide the progress bar")

    bench = commands.add_parser(
        "bench",
        help="the main job (make bench): memory benchmark, then every row of the bench "
        "configs and the architecture probes in worker processes, then the tables",
        parents=[device, tracking, out],
    )
    bench.add_argument(
        "--configs",
        nargs="+",
        default=["configs/cifar.yaml", "configs/density.yaml"],
        metavar="CONFIG",
        help="configs whose rows are trained (default: configs/cifar.yaml configs/density.yaml)",
    )
    bench.add_argument(
        "--probe-configs",
        nargs="*",
        default=["configs/imagenet.yaml"],
        metavar="CONFIG",
        help="configs whose architectures are probed (default: configs/imagenet.yaml)",
    )
    bench.add_argument("--profile", choices=PROFILES, default="quick", help="(default: quick)")
    bench.add_argument(
        "--jobs",
        type=int,
        default=2,
        help="worker processes for the rows and probes, CPUs/N threads each (default: 2)",
    )
    bench.add_argument("--runs-dir", type=Path, default=Path("runs"), help="(default: runs/)")
    bench.add_argument(
        "--resume", action="store_true", help="continue or reuse the rows' checkpoints"
    )
    bench.add_argument(
        "--memory-batch-size", type=int, default=32, help="memory benchmark batch (default 32)"
    )
    bench.add_argument(
        "--memory-sweep",
        type=int,
        nargs="*",
        default=[3, 9],
        metavar="N",
        help="memory benchmark depth sweep (default: 3 9)",
    )
    bench.add_argument(
        "--memory-repeats", type=int, default=3, help="memory benchmark timed steps (default 3)"
    )
    bench.add_argument(
        "--configs-dir", type=Path, default=Path("configs"), help="folder of the YAML configs"
    )

    tables = commands.add_parser(
        "tables", help="compile results/ tables from MLflow", parents=[tracking, out]
    )
    tables.add_argument(
        "--configs-dir", type=Path, default=Path("configs"), help="folder of the YAML configs"
    )

    memory = commands.add_parser(
        "memory",
        help="memory and speed of one training step, reversible vs baselines",
        parents=[device, tracking, out],
    )
    memory.add_argument("--batch-size", type=int, default=128)
    memory.add_argument("--resolution", type=int, default=32, help="image side (default 32)")
    memory.add_argument(
        "--sweep",
        type=int,
        nargs="*",
        default=[3, 9, 18, 36],
        metavar="N",
        help="depth sweep: RevNets with N basic units per stage (depth 12N+2) "
        "against ResNets of equal depth; empty for none",
    )
    memory.add_argument(
        "--no-paper",
        action="store_true",
        help="skip the paper's ResNet-32/110/164 and RevNet-38/110/164",
    )
    memory.add_argument("--repeats", type=int, default=5, help="timed steps per case")
    memory.add_argument("--replace", action="store_true", help=_REPLACE_HELP)
    memory.add_argument(
        "--flows",
        action="store_true",
        help="also the Glow section (L=3, width 512, 32x32; memory saving on and off), "
        "written to memory_flows.md/.csv; with --no-paper --sweep (empty), that alone",
    )
    memory.add_argument(
        "--flows-steps",
        type=int,
        nargs="+",
        default=[8, 32],
        metavar="K",
        help="Glow steps per level, two or more (default: 8 32)",
    )
    memory.add_argument(
        "--flows-batch-size", type=int, default=4, help="Glow section batch (default 4)"
    )
    memory.add_argument(
        "--no-peer", action="store_true", help="Glow section without normflows' Glow"
    )

    probe = commands.add_parser(
        "probe",
        help="parameters, memory per image and inversion error of a config's models at the "
        "published input size, and the inversion figure",
        parents=[device, tracking, out],
    )
    probe.add_argument("config", help="YAML experiment with a probe section: configs/imagenet.yaml")
    probe.add_argument("--models", nargs="+", metavar="NAME", help="only these models")
    probe.add_argument(
        "--checkpoint",
        action="append",
        metavar="MODEL=PATH",
        help="draw MODEL's inversion figure with the trained weights at PATH (a runner "
        "checkpoint such as runs/imagenet/irevnet_b-imagenet-paper-seed0/last.pt); repeatable",
    )
    probe.add_argument("--no-figure", action="store_true", help="skip the inversion figure")

    speed = commands.add_parser(
        "flow-speed",
        help="training images/s of Glow and RealNVP, beside normflows' Glow (optional extra)",
        parents=[device, out],
    )
    speed.add_argument("--levels", type=int, default=3, help="Glow levels L (default 3)")
    speed.add_argument("--steps", type=int, default=8, help="Glow steps per level K (default 8)")
    speed.add_argument("--width", type=int, default=128, help="coupling width (default 128)")
    speed.add_argument("--batch-size", type=int, default=16)
    speed.add_argument("--repeats", type=int, default=5, help="timed steps per model")
    speed.add_argument("--no-peer", action="store_true", help="skip normflows")
    speed.add_argument("--replace", action="store_true", help=_REPLACE_HELP)

    gpu = commands.add_parser(
        "gpu-report",
        help="on a CUDA machine: exactness, recomputation overhead, Glow vs normflows and the "
        "paper rows' throughput and GPU-hours, written to results/gpu.md and gpu.csv",
        parents=[device, out],
    )
    gpu.add_argument(
        "--tiny",
        action="store_true",
        help="tiny sizes, also on a CPU: checks the command in seconds, measures nothing",
    )
    gpu.add_argument(
        "--revision", help="the revision to name in the report (default: git's, if any)"
    )
    gpu.add_argument("--replace", action="store_true", help=_REPLACE_HELP)

    latent = commands.add_parser(
        "latent-figures",
        help="Glow's qualitative figures for a trained density model: latent interpolation, "
        "attribute manipulation and temperature, written to results/ and logged to its run",
        parents=[tracking, out],
    )
    latent.add_argument("config", help="a density config: configs/density.yaml")
    latent.add_argument(
        "--model",
        default="glow_cifar10",
        help="an image flow of the config (default: glow_cifar10, the paper's figures)",
    )
    latent.add_argument("--profile", choices=PROFILES, default="quick", help="(default: quick)")
    latent.add_argument(
        "--dataset",
        choices=sorted(TASKS["density"].dataset_names),
        help="default: the profile's first dataset; celeba reads torchvision's CelebA "
        "from --data-dir",
    )
    latent.add_argument(
        "--checkpoint",
        type=Path,
        metavar="PATH",
        help="a runner checkpoint (default: that of the latest finished run of the committed "
        "config's row, found in MLflow)",
    )
    latent.add_argument(
        "--data-dir", type=Path, help="folder holding the real datasets (e.g. cifar-10-batches-py/)"
    )

    posterior = commands.add_parser(
        "posterior-figure",
        help="the lecture's toy figure: Gaussian vs IAF posteriors of a 2-D latent VAE",
        parents=[out],
    )
    posterior.add_argument("--seed", type=int, default=0)
    posterior.add_argument("--steps", type=int, default=3000, help="Adam steps per model")

    regress = commands.add_parser(
        "regress",
        help="the regression gate: measure the smoke profile of every model and compare "
        "with results/baseline.json",
    )
    regress.add_argument("--baseline", type=Path, default=Path("results/baseline.json"))
    regress.add_argument(
        "--update-baseline",
        action="store_true",
        help="accept the measured figures: rewrite the baseline and show what changed",
    )
    regress.add_argument("--configs-dir", type=Path, default=Path("configs"))
    regress.add_argument(
        "--models", nargs="+", metavar="NAME", help="only these models (no time ratios)"
    )

    listing = commands.add_parser("list", help="list registered models and configs")
    listing.add_argument(
        "pattern",
        nargs="?",
        default="*",
        help="a word matches every name containing it (glow: the Glows); a shell pattern "
        "with * ? [ ] matches whole names (e.g. 'resnet*')",
    )
    listing.add_argument(
        "--configs-dir", type=Path, default=Path("configs"), help="folder of the YAML configs"
    )
    return parser


_TRACKING_HELP = "MLflow tracking URI (default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db)"
_OUT_HELP = "folder of the result files (default: results/)"
_REPLACE_HELP = (
    "overwrite a result in --out measured with other settings (without it, such a result is "
    "kept and the command stops before measuring)"
)


def _run(args: argparse.Namespace) -> None:
    from benchmarks.request import RunRequest
    from benchmarks.workers import run_configs

    requests = [
        RunRequest(
            config_path=config,
            profile=args.profile,
            models=args.models,
            dataset=args.dataset,
            device=args.device,
            data_dir=args.data_dir,
            download=args.download,
            seeds=args.seed,
            resume=args.resume,
            runs_dir=args.runs_dir,
            tracking_uri=args.tracking_uri,
            progress=not args.no_progress,
            workers=args.workers,
            overrides=_runtime_overrides(args),
        )
        for config in args.config
    ]
    run_configs(requests, jobs=args.jobs)


def _runtime_overrides(args: argparse.Namespace) -> dict[str, object]:
    """Training keys set on the command line (how a step runs, not what it computes)."""
    overrides: dict[str, object] = {}
    if args.precision is not None:
        overrides["precision"] = args.precision
    if args.channels_last:
        overrides["channels_last"] = True
    if args.compile is not None:
        overrides["compile"] = args.compile
    return overrides


def _bench(args: argparse.Namespace) -> None:
    from benchmarks.bench import BenchRequest, run_bench
    from benchmarks.measure.memory_report import MemoryRequest

    run_bench(
        BenchRequest(
            configs=tuple(args.configs),
            probe_configs=tuple(args.probe_configs),
            profile=args.profile,
            jobs=args.jobs,
            runs_dir=args.runs_dir,
            resume=args.resume,
            device=args.device,
            tracking_uri=args.tracking_uri,
            out=args.out,
            configs_dir=args.configs_dir,
            memory=MemoryRequest(
                batch_size=args.memory_batch_size,
                sweep=tuple(args.memory_sweep),
                repeats=args.memory_repeats,
            ),
        )
    )


def _tables(args: argparse.Namespace) -> None:
    from benchmarks.tables import compile_tables

    preflight.check_configs_dir(args.configs_dir)
    preflight.check_writable_folder(args.out, "--out")
    preflight.check_tracking(args.tracking_uri)
    for path in compile_tables(args.configs_dir, args.out, args.tracking_uri, log=print):
        print(f"wrote {path}")


def _memory(args: argparse.Namespace) -> None:
    from benchmarks.measure.flow_memory import (
        FlowMemoryRequest,
        check_flow_memory,
        run_flow_memory,
    )
    from benchmarks.measure.memory_report import MemoryRequest, check_memory, run_memory

    where = {"device": args.device, "out": args.out, "replace": args.replace}
    request = MemoryRequest(
        batch_size=args.batch_size,
        resolution=args.resolution,
        sweep=tuple(args.sweep),
        paper=not args.no_paper,
        repeats=args.repeats,
        tracking_uri=args.tracking_uri,
        **where,
    )
    flows = FlowMemoryRequest(
        steps=tuple(args.flows_steps),
        batch_size=args.flows_batch_size,
        repeats=args.repeats,
        peer=not args.no_peer,
        tracking_uri=args.tracking_uri,
        **where,
    )
    classifiers = not args.flows or bool(request.cases())  # --flows alone: the Glow section
    if classifiers:
        check_memory(request)
    if args.flows:
        check_flow_memory(flows)
    paths = run_memory(request) if classifiers else []
    if args.flows:
        paths += run_flow_memory(flows)
    for path in paths:
        print(f"wrote {path}")


def _probe(args: argparse.Namespace) -> None:
    from benchmarks.measure.architecture_probe import (
        ProbeRequest,
        describe_probe,
        parse_checkpoints,
        run_probes,
    )

    request = ProbeRequest(
        config_path=args.config,
        models=args.models,
        device=args.device,
        tracking_uri=args.tracking_uri,
        out_dir=args.out,
        checkpoints=parse_checkpoints(args.checkpoint),
        figure=not args.no_figure,
    )
    rows, figure = run_probes(request)
    for row in rows:
        print(describe_probe(row))
    if figure is not None:
        print(f"wrote {figure}")


def _flow_speed(args: argparse.Namespace) -> None:
    import importlib.util

    import pandas as pd

    from benchmarks.core.device import resolve_device
    from benchmarks.core.files import write_text_atomic
    from benchmarks.measure.flow_speed import (
        FlowSpeedSettings,
        measure_flow_speed,
        model_names,
        render_flow_speed,
    )
    from benchmarks.reporting.tracking import device_name

    peer = not args.no_peer
    if peer and importlib.util.find_spec("normflows") is None:
        raise BenchmarkError(
            "normflows is not installed: run `.venv/bin/pip install -e '.[peer]'` (or "
            "`make flow-speed`), or pass --no-peer"
        )
    if min(args.levels, args.steps, args.width, args.batch_size, args.repeats) <= 0:
        raise BenchmarkError("--levels, --steps, --width, --batch-size, --repeats: positive")
    preflight.check_device(args.device)
    device = resolve_device(args.device)
    settings = FlowSpeedSettings(
        levels=args.levels,
        steps=args.steps,
        width=args.width,
        batch_size=args.batch_size,
        repeats=args.repeats,
    )
    markdown, csv = args.out / "flow_speed.md", args.out / "flow_speed.csv"
    preflight.check_writable_folder(args.out, "--out")
    preflight.check_replacement(
        csv,
        {
            key: getattr(settings, key)
            for key in ("levels", "steps", "width", "batch_size", "repeats")
        },
        set(model_names(peer)),
        lambda row: str(row.get("model")),
        args.replace,
    )
    rows = measure_flow_speed(settings, peer=peer, device=device)
    write_text_atomic(markdown, render_flow_speed(rows, device_name(device)))
    write_text_atomic(csv, pd.DataFrame(rows).to_csv(index=False))
    for row in rows:
        print(f"{row['model']}: {row['train_images_per_s']:.1f} img/s")
    print(f"wrote {markdown}\nwrote {csv}")


def _gpu_report(args: argparse.Namespace) -> None:
    import pandas as pd

    from benchmarks.core.device import resolve_device
    from benchmarks.core.files import write_text_atomic
    from benchmarks.measure.gpu_report import (
        GpuReportSettings,
        cost_rows,
        measure_gpu_report,
        render_gpu_report,
    )
    from benchmarks.reporting.tracking import device_name, git_revision

    preflight.check_device(args.device)
    device = resolve_device(args.device)
    if device.type != "cuda" and not args.tiny:
        raise BenchmarkError(
            f"gpu-report measures a GPU, and --device {args.device} is the CPU here: run it on "
            "a CUDA machine (or pass --tiny to check the command on any machine)"
        )
    name = device_name(device)
    markdown, csv = args.out / "gpu.md", args.out / "gpu.csv"
    preflight.check_writable_folder(args.out, "--out")
    settings = GpuReportSettings.tiny() if args.tiny else GpuReportSettings()
    preflight.check_replacement(
        csv,
        {"device_name": name, "profile": settings.throughput_profile},
        set(),
        lambda row: str(row.get("model")),
        args.replace,
    )
    report = measure_gpu_report(settings, device, name)
    revision = args.revision or git_revision()
    write_text_atomic(markdown, render_gpu_report(report, revision))
    write_text_atomic(csv, pd.DataFrame(cost_rows(report, revision)).to_csv(index=False))
    print(f"wrote {markdown}\nwrote {csv}")


def _latent_figures(args: argparse.Namespace) -> None:
    from benchmarks.tasks.density.latent_command import LatentRequest, run_latent_figures

    preflight.check_writable_folder(args.out, "--out")
    preflight.check_tracking(args.tracking_uri)
    request = LatentRequest(
        config_path=args.config,
        model=args.model,
        profile=args.profile,
        dataset=args.dataset,
        checkpoint=args.checkpoint,
        data_dir=args.data_dir,
        out=args.out,
        tracking_uri=args.tracking_uri,
    )
    for path in run_latent_figures(request):
        print(f"wrote {path}")


def _posterior_figure(args: argparse.Namespace) -> None:
    from benchmarks.tasks.vae.posterior_figure import write_posterior_figure

    if args.steps <= 0:
        raise BenchmarkError("--steps must be positive")
    preflight.check_seeds([args.seed])
    preflight.check_writable_folder(args.out, "--out")
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "vae_posteriors.png"
    elbos = write_posterior_figure(path, seed=args.seed, steps=args.steps)
    summary = ", ".join(f"{name} {value:.3f} nats" for name, value in elbos.items())
    print(f"wrote {path} (mean ELBO over the four points: {summary})")


def _regress(args: argparse.Namespace) -> None:
    import torch

    from benchmarks.measure.gate import (
        ACCEPT_COMMAND,
        compare,
        load_baseline,
        render_changes,
        update_baseline,
    )
    from benchmarks.measure.gate_probes import measure_all
    from benchmarks.reporting.tracking import environment_tags

    preflight.check_configs_dir(args.configs_dir)
    started = time.perf_counter()
    measured = measure_all(
        args.configs_dir, args.models, progress=lambda message: print(message, flush=True)
    )
    elapsed = time.perf_counter() - started
    if args.update_baseline:
        if args.models:
            raise BenchmarkError("--update-baseline measures every model: drop --models")
        environment = environment_tags(torch.device("cpu"))
        environment.pop("git_revision", None)
        changes = update_baseline(args.baseline, measured, environment)
        print(render_changes(changes) if changes else "no figure changed")
        print(f"wrote {args.baseline} ({len(measured)} figures, measured in {elapsed:.0f} s)")
        return
    baseline = load_baseline(args.baseline)
    if args.models:
        baseline = {
            k: v for k, v in baseline.items() if any(k.endswith("/" + m) for m in args.models)
        }
    changes = compare(baseline, measured)
    if not changes:
        print(
            f"regression gate: {len(measured)} figures within tolerance of {args.baseline} "
            f"({elapsed:.0f} s)"
        )
        return
    raise RegressionFound(
        f"regression gate: {len(changes)} of {len(baseline | measured)} figures moved beyond "
        f"their tolerance in {args.baseline}:\n\n{render_changes(changes)}\n\nIf the change "
        f"is intended, accept it with\n    {ACCEPT_COMMAND}\nand commit the new baseline."
    )


def _list(args: argparse.Namespace) -> None:
    configs = preflight.check_configs_dir(args.configs_dir)
    names = list_models(preflight.model_pattern(args.pattern))
    if not names:
        raise UnknownModelError(
            f"no registered model matches {args.pattern!r}; `python -m benchmarks list` shows "
            "them all"
        )
    width = max(len(name) for name in names)
    print(f"{'model':<{width}}  {'task':<15} {'table':<9} {'row':<17} published params")
    for name in names:
        info = get_info(name)
        params = f"{info.published_params / 1e6:.2f}M" if info.published_params else "—"
        print(f"{name:<{width}}  {info.task:<15} {info.table:<9} {info.row:<17} {params}")
    print("\nconfigs:")
    for path in configs:
        config = load_config(path)
        print(f"  {path}: {config.title} — models {', '.join(config.models)}")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status (2 for a user error, with a one-line message; 130
    after SIGINT and 143 after SIGTERM, with a line naming ``--resume``)."""
    try:
        args = _parser().parse_args(argv)
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    handler = {
        "run": _run,
        "bench": _bench,
        "tables": _tables,
        "memory": _memory,
        "probe": _probe,
        "flow-speed": _flow_speed,
        "gpu-report": _gpu_report,
        "latent-figures": _latent_figures,
        "posterior-figure": _posterior_figure,
        "regress": _regress,
        "list": _list,
    }[args.command]
    try:
        handler(args)
    except RegressionFound as found:
        print(found, file=sys.stderr)
        return 1
    except (BenchmarkError, UnknownModelError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as stop:  # Ctrl-C, or SIGTERM as benchmarks.core.lifecycle.Interrupted
        by = f" by {stop}" if str(stop).startswith("SIG") else ""
        print(
            f"interrupted{by}: rerun the same command with --resume to continue from the last "
            "checkpoint",
            file=sys.stderr,
        )
        return getattr(stop, "exit_status", 130)
    return 0
