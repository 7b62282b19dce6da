"""The memory benchmark end to end: check the request, measure every case
(:func:`~benchmarks.measure.step_memory.measure_cases`), then write the table, the paper's
claims checked on the measured rows and the plot (``python -m benchmarks memory``).

Example:
    >>> from benchmarks.measure.step_memory import measure_cases, paper_cases
    >>> rows = measure_cases(paper_cases()[:4], batch_size=2, resolution=8, repeats=1)
    >>> "ResNet-32" in render_markdown(rows, {"batch_size": 2, "resolution": 8})
    True
"""

from __future__ import annotations

import datetime
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from benchmarks.core.device import check_device, resolve_device
from benchmarks.core.files import write_text_atomic
from benchmarks.errors import BenchmarkError
from benchmarks.measure.step_memory import (
    CHECKPOINT,
    FAMILIES,
    RESNET,
    REVNET,
    REVNET_PLAIN,
    MemoryCase,
    measure_cases,
    paper_cases,
    sweep_cases,
)
from benchmarks.preflight import check_replacement, check_tracking, check_writable_folder
from benchmarks.reporting.plots import plt
from benchmarks.reporting.tracking import (
    TrackedRun,
    environment_tags,
    resolve_tracking_uri,
)

__all__ = [
    "Claim",
    "MemoryRequest",
    "check_claims",
    "check_memory",
    "claims_table",
    "log_memory_run",
    "measured_cells",
    "memory_frame",
    "plot_memory",
    "render_markdown",
    "run_memory",
    "write_memory_report",
]

MIB = 2**20
# Activation memory published by a peer PyTorch library (MB, GPU, batch size not stated).
PEER_ACTIVATIONS_MB = {
    "ResNet-32": 238.6,
    "RevNet-38": 85.6,
    "ResNet-164": 2452.8,
    "RevNet-164": 432.7,
}


@dataclass(frozen=True)
class Claim:
    """A statement of the paper (or the issue) and what this run measured for it."""

    statement: str
    measured: str
    passed: bool | None  # None: a reference comparison, not a pass/fail target


def memory_frame(rows: Sequence[dict]) -> pd.DataFrame:
    """The measured rows with memory in MiB, in the order measured."""
    frame = pd.DataFrame(list(rows))
    for column in ("state_bytes", "held_bytes", "saved_bytes", "peak_bytes"):
        frame[column.replace("_bytes", "_mib")] = frame[column] / MIB
    return frame


def _row(frame: pd.DataFrame, case: str) -> pd.Series | None:
    found = frame[(frame["case"] == case) & (frame["group"] == "paper")]
    return None if found.empty else found.iloc[0]


def check_claims(frame: pd.DataFrame) -> list[Claim]:
    """The memory and speed claims, evaluated on the rows that were measured."""
    claims = []
    rev38, rev110 = _row(frame, "RevNet-38"), _row(frame, "RevNet-110")
    res32, res110 = _row(frame, "ResNet-32"), _row(frame, "ResNet-110")
    res164, rev164 = _row(frame, "ResNet-164"), _row(frame, "RevNet-164")
    if rev38 is not None and rev110 is not None:
        growth = rev110.held_bytes / rev38.held_bytes - 1
        claims.append(
            Claim(
                "RevNet-38 -> RevNet-110: activation memory grows by less than 5%",
                f"{100 * growth:+.1f}%",
                growth < 0.05,
            )
        )
    if res32 is not None and res110 is not None:
        growth, depth = res110.held_bytes / res32.held_bytes, 110 / 32
        claims.append(
            Claim(
                "ResNet-32 -> ResNet-110: activation memory grows roughly with depth "
                f"(x{depth:.2f}; within 30%)",
                f"x{growth:.2f}",
                abs(growth / depth - 1) < 0.3,
            )
        )
    if res164 is not None and rev164 is not None:
        ratio = rev164.held_bytes / res164.held_bytes
        claims.append(
            Claim(
                "RevNet-164 needs at most 1/5 of ResNet-164's activation memory",
                f"{ratio:.3f} (1/{1 / ratio:.1f})",
                ratio <= 0.2,
            )
        )
    for row in frame[(frame.family == REVNET) & (frame.group == "paper")].itertuples():
        claims.append(
            Claim(
                f"{row.case} step time at most 1.5x {row.baseline}",
                f"{row.time_ratio:.2f}x",
                row.time_ratio <= 1.5,
            )
        )
    for row in frame[(frame.family == REVNET) & (frame.group == "paper")].itertuples():
        plain = _row(frame, f"{row.case}, plain autograd")
        if plain is None:
            continue
        backward = plain.step_time_s - plain.forward_time_s
        ideal = (2 * plain.forward_time_s + backward) / plain.step_time_s
        claims.append(
            Claim(
                f"{row.case} with plain autograd vs {row.baseline}: what the architecture "
                "costs before any recomputation",
                f"{plain.time_ratio:.2f}x",
                None,
            )
        )
        claims.append(
            Claim(
                f"{row.case} recompute overhead vs plain autograd (ideal: one extra forward, "
                "from the measured forward/backward split)",
                f"{row.step_time_s / plain.step_time_s:.2f}x measured, {ideal:.2f}x ideal",
                None,
            )
        )
    for rev, res in (("RevNet-38", "ResNet-32"), ("RevNet-164", "ResNet-164")):
        ours_rev, ours_res = _row(frame, rev), _row(frame, res)
        if ours_rev is None or ours_res is None:
            continue
        peer = PEER_ACTIVATIONS_MB[rev] / PEER_ACTIVATIONS_MB[res]
        claims.append(
            Claim(
                f"{rev}/{res} activation ratio vs a peer library's published GPU figures "
                f"({PEER_ACTIVATIONS_MB[rev]} MB / {PEER_ACTIVATIONS_MB[res]} MB)",
                f"{ours_rev.held_bytes / ours_res.held_bytes:.3f} here, {peer:.3f} peer",
                None,
            )
        )
    return claims


def _mib(value: float) -> str:
    return "—" if isinstance(value, float) and math.isnan(value) else f"{value:.1f}"


def measured_cells(row: Any) -> str:
    """A table row's measured cells (a row of :func:`memory_frame`): held, saved, peak and
    state MiB, step seconds, time ratio."""
    return (
        f"{_mib(row.held_mib)} | {_mib(row.saved_mib)} | {_mib(row.peak_mib)} | "
        f"{_mib(row.state_mib)} | {row.step_time_s:.3f} | {row.time_ratio:.2f}"
    )


def claims_table(claims: Sequence[Claim]) -> list[str]:
    """The lines of the claims section: heading, then one table row per claim."""
    lines = [
        "## Claims checked on these measurements",
        "",
        "| claim | measured | |",
        "|---|---|---|",
    ]
    for claim in claims:
        mark = {True: "pass", False: "**fail**", None: "reference"}[claim.passed]
        lines.append(f"| {claim.statement} | {claim.measured} | {mark} |")
    return lines


def render_markdown(rows: Sequence[dict], settings: dict) -> str:
    """Markdown report: method, claims, the table of every case."""
    frame = memory_frame(rows)
    device = frame["device"].iloc[0] if len(frame) else "—"
    device_name = settings.get("device_name", device)
    lines = [
        "# Memory and speed of one training step",
        "",
        f"Generated by `python -m benchmarks memory` on {datetime.date.today().isoformat()}: "
        f"batch {settings['batch_size']}, {settings['resolution']}x{settings['resolution']} "
        f"random images, 10 classes, SGD with momentum, on {device_name}; "
        f"fastest of {settings.get('repeats', '?')} steps timed in rounds across all cases, "
        "after a warm-up step. All rows come from one process.",
        "",
        "- **held**: bytes kept alive from the end of the forward pass to the start of "
        "backward (activations held for backward), from allocator events "
        "(`torch.profiler`, `profile_memory=True`) on CPU or `torch.cuda.memory_allocated` on "
        "CUDA. **saved**: cross-check, bytes of the distinct storages autograd saves "
        "(`saved_tensors_hooks`); not defined for `torch.utils.checkpoint`, which keeps its "
        "unit inputs outside the hooks.",
        "- **peak**: peak live bytes during the whole step above what was live before it "
        "(activations, gradients, recomputation, workspace). **state**: parameters + "
        "optimizer state.",
        "- **time ×**: step time divided by the plain ResNet of the same depth (paper rows: "
        "the ResNet of the same table row), both from this run.",
        "",
        *claims_table(check_claims(frame)),
    ]
    titles = {
        "paper": "The paper's models (time × against the ResNet of the same table row)",
        "sweep": "Depth sweep (equal depth; time × against the plain ResNet)",
    }
    for group, title in titles.items():
        part = frame[frame.group == group]
        if part.empty:
            continue
        lines += [
            "",
            f"## {title}",
            "",
            "| case | family | depth | params | held MiB | saved MiB | peak MiB | state MiB | "
            "step s | time × |",
            "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|",
        ]
        for row in part.itertuples():
            lines.append(
                f"| {row.case} | {row.family} | {row.depth} | {row.params / 1e6:.3f}M | "
                f"{measured_cells(row)} |"
            )
    return "\n".join(lines) + "\n"


def plot_memory(rows: Sequence[dict]) -> plt.Figure:
    """Activation memory and step time against depth, one line per family."""
    frame = memory_frame(rows)
    figure, (memory_axis, time_axis) = plt.subplots(1, 2, figsize=(10, 4))
    styles = {RESNET: "o-", CHECKPOINT: "s--", REVNET_PLAIN: "^:", REVNET: "D-"}
    colors = {RESNET: "C0", CHECKPOINT: "C2", REVNET_PLAIN: "C4", REVNET: "C3"}
    for family in FAMILIES:
        label = family
        for group, alpha in (("sweep", 1.0), ("paper", 0.5)):
            part = frame[(frame.family == family) & (frame.group == group)].sort_values("depth")
            if part.empty:
                continue
            style = styles[family] if group == "sweep" else styles[family][0]  # paper: markers
            for axis, column in ((memory_axis, "held_mib"), (time_axis, "step_time_s")):
                axis.plot(
                    part.depth, part[column], style, color=colors[family], alpha=alpha, label=label
                )
            label = None  # one legend entry per family
    memory_axis.set(xlabel="depth (weight layers)", ylabel="activations held for backward (MiB)")
    time_axis.set(xlabel="depth (weight layers)", ylabel="training step time (s)")
    memory_axis.legend()
    first = frame.iloc[0] if len(frame) else None
    if first is not None:
        figure.suptitle(
            f"batch {first.batch_size}, {first.resolution}x{first.resolution}, "
            f"{first.device} (faint: the paper's models)"
        )
    figure.tight_layout()
    plt.close(figure)
    return figure


def write_memory_report(
    rows: Sequence[dict],
    settings: dict,
    out_dir: str | Path,
    tracking_uri: str,
    environment: dict[str, str],
) -> list[Path]:
    """Write ``memory.md``, ``memory.csv`` and ``memory.png`` and log them to MLflow."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    markdown, csv, png = out / "memory.md", out / "memory.csv", out / "memory.png"
    write_text_atomic(markdown, render_markdown(rows, settings))
    frame = memory_frame(rows)
    if "repeats" in settings:  # kept so that a later run can tell whether it measures alike
        frame["repeats"] = settings["repeats"]
    write_text_atomic(csv, frame.to_csv(index=False))
    figure = plot_memory(rows)
    temporary = png.with_name(f".{png.stem}.tmp.png")
    figure.savefig(temporary, dpi=120, bbox_inches="tight")
    temporary.replace(png)
    run_name = f"memory-b{settings['batch_size']}-r{settings['resolution']}"
    log_memory_run(rows, settings, [markdown, csv, png], run_name, tracking_uri, environment)
    return [markdown, csv, png]


def log_memory_run(
    rows: Sequence[dict],
    settings: dict,
    paths: Sequence[Path],
    run_name: str,
    tracking_uri: str,
    environment: dict[str, str],
) -> None:
    """Log the settings, every row's held/peak MiB, step time and time ratio, and the report's
    files as one run of the MLflow experiment ``memory``."""
    with TrackedRun(tracking_uri, "memory", run_name=run_name) as run:
        run.set_tags({**environment, "table": "memory"})
        run.log_params(settings)
        metrics = {}
        for row in rows:
            key = re.sub(r"[^a-z0-9]+", "_", str(row["case"]).lower()).strip("_")
            metrics.update(
                {
                    f"{key}.held_mib": row["held_bytes"] / MIB,
                    f"{key}.peak_mib": row["peak_bytes"] / MIB,
                    f"{key}.step_time_s": row["step_time_s"],
                    f"{key}.time_ratio": row["time_ratio"],
                }
            )
        run.log_metrics(metrics)
        for path in paths:
            run.log_artifact(path)


@dataclass(frozen=True)
class MemoryRequest:
    """What ``python -m benchmarks memory`` measures and where it writes."""

    batch_size: int = 128
    resolution: int = 32
    sweep: tuple[int, ...] = (3, 9, 18, 36)
    paper: bool = True
    repeats: int = 5
    device: str = "auto"
    out: Path = Path("results")
    replace: bool = False
    tracking_uri: str | None = None

    def cases(self) -> list[MemoryCase]:
        return (paper_cases() if self.paper else []) + sweep_cases(self.sweep)


def check_memory(request: MemoryRequest) -> None:
    """Every input of the memory benchmark, before anything is measured."""
    if request.batch_size <= 0 or request.resolution < 8 or request.repeats <= 0:
        raise BenchmarkError("--batch-size and --repeats must be positive, --resolution >= 8")
    if any(units <= 0 for units in request.sweep):
        raise BenchmarkError(f"--sweep {' '.join(map(str, request.sweep))}: N must be positive")
    check_device(request.device)
    resolve_device(request.device)
    cases = request.cases()
    if not cases:
        raise BenchmarkError("nothing to measure: drop --no-paper or give --sweep N ...")
    check_writable_folder(request.out, "--out")
    check_replacement(
        request.out / "memory.csv",
        {
            "batch_size": request.batch_size,
            "resolution": request.resolution,
            "repeats": request.repeats,
        },
        {f"{case.group}/{case.name}" for case in cases},
        lambda row: f"{row.get('group')}/{row.get('case')}",
        request.replace,
    )
    check_tracking(request.tracking_uri)


def run_memory(request: MemoryRequest) -> list[Path]:
    """Measure every case (after :func:`check_memory`) and write the report; its paths."""
    check_memory(request)
    device = resolve_device(request.device)
    rows = measure_cases(
        request.cases(),
        request.batch_size,
        request.resolution,
        device,
        request.repeats,
        progress=lambda name: print(f"measuring {name}", flush=True),
    )
    environment = environment_tags(device)
    settings = {
        "batch_size": request.batch_size,
        "resolution": request.resolution,
        "repeats": request.repeats,
        "sweep": list(request.sweep),
        "device": device.type,
        "device_name": environment["device_name"],
    }
    uri = resolve_tracking_uri(request.tracking_uri)
    return write_memory_report(rows, settings, request.out, uri, environment)
