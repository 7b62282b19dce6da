"""The memory benchmark's Glow section: memory-saving backward against plain autograd.

``python -m benchmarks memory --flows`` (``make memory-flows``) measures one SGD step of Glow
(Kingma and Dhariwal, "Glow: Generative Flow with Invertible 1x1 Convolutions", NeurIPS 2018)
at its CIFAR-10 size (L = 3 levels, coupling width 512, affine coupling, 3x32x32 images) at
K = 8 and K = 32 steps per level, each with the memory-saving backward
(:mod:`flows.layers.memory_saving`, Gomez et al. 2017, Algorithm 1, carried to flow layers)
and with plain autograd (same weights), and, when it is installed, normflows' Glow at the same
sizes as a reference. Every case is measured in one process by
:func:`~benchmarks.measure.step_memory.measure_cases` (the machinery of the ResNet/RevNet
section: allocator events for *held* and *peak*, steps timed in rounds), on images in [0, 1]
with the negative log-likelihood as the loss; a case's time ratio is against plain autograd
at the same K. The report, ``memory_flows.md`` and ``.csv``, checks the claims of issue 17:
memory-saving activations flat in K (under +20% from the smallest to the largest K), plain
autograd's growing roughly with K, and the memory-saving step at most 1.5x plain autograd's.

It is written to its own files, beside ``memory.md``: a K = 32, width-512 Glow step takes
seconds on a CPU, so ``make bench`` (which rewrites ``memory.md``) leaves the section out.

Example:
    >>> request = FlowMemoryRequest(steps=(1, 2), levels=2, width=8, image_size=8,
    ...                             batch_size=2, repeats=1, peer=False)
    >>> rows = measure_flow_memory(request, "cpu")
    >>> [row["case"] for row in rows][:2]
    ['Glow K=1, plain autograd', 'Glow K=1']
    >>> "Glow K=1 -> K=2" in render_flow_memory(rows, {"device_name": "CPU", "repeats": 1})
    True
"""

from __future__ import annotations

import datetime
import importlib.util
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from benchmarks.core.device import check_device, resolve_device
from benchmarks.core.files import write_text_atomic
from benchmarks.errors import BenchmarkError
from benchmarks.measure.memory_report import (
    Claim,
    claims_table,
    log_memory_run,
    measured_cells,
    memory_frame,
)
from benchmarks.measure.step_memory import (
    GLOW,
    GLOW_NORMFLOWS,
    GLOW_PLAIN,
    MemoryCase,
    glow_cases,
    measure_cases,
)
from benchmarks.preflight import check_replacement, check_tracking, check_writable_folder
from benchmarks.reporting.tracking import environment_tags, resolve_tracking_uri

__all__ = [
    "FlowMemoryRequest",
    "check_flow_claims",
    "check_flow_memory",
    "measure_flow_memory",
    "render_flow_memory",
    "run_flow_memory",
]


@dataclass(frozen=True)
class FlowMemoryRequest:
    """What the Glow section measures and where it writes (``memory_flows.md``/``.csv``)."""

    steps: tuple[int, ...] = (8, 32)
    batch_size: int = 4
    levels: int = 3
    width: int = 512
    image_size: int = 32
    repeats: int = 3
    peer: bool = True
    device: str = "auto"
    out: Path = Path("results")
    replace: bool = False
    tracking_uri: str | None = None

    def cases(self) -> list[MemoryCase]:
        return glow_cases(self.steps, self.levels, self.width, self.image_size, self.peer)


def check_flow_memory(request: FlowMemoryRequest) -> None:
    """Every input of the Glow section, before anything is measured."""
    if min(request.batch_size, request.repeats, request.levels, request.width) <= 0:
        raise BenchmarkError("--flows-batch-size and --repeats must be positive")
    if len(request.steps) < 2 or min(request.steps) <= 0:
        raise BenchmarkError("--flows-steps: give at least two positive K, e.g. 8 32")
    if request.image_size % 2**request.levels:
        raise BenchmarkError(f"image size {request.image_size}: not divisible by 2^L")
    if request.peer and importlib.util.find_spec("normflows") is None:
        raise BenchmarkError(
            "normflows is not installed: run `.venv/bin/pip install -e '.[peer]'` (or "
            "`make memory-flows`), or pass --no-peer"
        )
    check_device(request.device)
    resolve_device(request.device)
    check_writable_folder(request.out, "--out")
    check_replacement(
        request.out / "memory_flows.csv",
        {
            "batch_size": request.batch_size,
            "resolution": request.image_size,
            "repeats": request.repeats,
        },
        {case.name for case in request.cases()},
        lambda row: str(row.get("case")),
        request.replace,
    )
    check_tracking(request.tracking_uri)


def measure_flow_memory(
    request: FlowMemoryRequest,
    device: torch.device | str,
    progress: Callable[[str], None] | None = None,
) -> list[dict[str, float | str | int]]:
    """Every case of the request measured in one process, plus its levels and width."""
    rows = measure_cases(
        request.cases(), request.batch_size, request.image_size, device, request.repeats, progress
    )
    return [{**row, "levels": request.levels, "width": request.width} for row in rows]


def _growth(frame: pd.DataFrame, family: str) -> tuple[int, int, float] | None:
    """Smallest and largest K of ``family`` and the ratio of their held bytes."""
    part = frame[frame.family == family].sort_values("depth")
    if len(part) < 2:
        return None
    first, last = part.iloc[0], part.iloc[-1]
    return int(first.depth), int(last.depth), last.held_bytes / first.held_bytes


def check_flow_claims(frame: pd.DataFrame) -> list[Claim]:
    """Issue 17's claims on the measured Glow rows (any two or more K)."""
    claims = []
    growth_claims = [
        (GLOW, "memory-saving backward: activations held grow by less than 20%", None),
        (GLOW_PLAIN, "plain autograd: activations held grow roughly with K", 0.3),
    ]
    for family, statement, tolerance in growth_claims:
        growth = _growth(frame, family)
        if growth is None:
            continue
        low, high, factor = growth
        if tolerance is None:  # flat in K
            measured, passed = f"{100 * (factor - 1):+.1f}%", factor < 1.2
        else:  # proportional to K
            statement += f" (x{high / low:.2f}; within {100 * tolerance:.0f}%)"
            measured, passed = f"x{factor:.2f}", abs(factor / (high / low) - 1) < tolerance
        claims.append(Claim(f"Glow K={low} -> K={high}, {statement}", measured, passed))
    for row in frame[frame.family == GLOW].sort_values("depth", ascending=False).itertuples():
        claims.append(
            Claim(
                f"{row.case} step time at most 1.5x plain autograd at the same K",
                f"{row.time_ratio:.2f}x",
                row.time_ratio <= 1.5,
            )
        )
    for row in frame[frame.family == GLOW].itertuples():
        plain_row = frame[(frame.family == GLOW_PLAIN) & (frame.depth == row.depth)]
        if plain_row.empty:
            continue
        plain = plain_row.iloc[0]
        # Recomputation adds one forward pass of the chain to plain autograd's step.
        ideal = (plain.step_time_s + plain.forward_time_s) / plain.step_time_s
        claims += [
            Claim(
                f"{row.case}: activations held with the memory-saving backward / with plain "
                "autograd",
                f"{row.held_bytes / plain.held_bytes:.3f}",
                None,
            ),
            Claim(
                f"{row.case} recompute overhead vs plain autograd (ideal: one extra forward, "
                "from the measured forward/backward split)",
                f"{row.time_ratio:.2f}x measured, {ideal:.2f}x ideal",
                None,
            ),
        ]
    for row in frame[frame.family == GLOW_NORMFLOWS].itertuples():
        plain_row = frame[(frame.family == GLOW_PLAIN) & (frame.depth == row.depth)]
        if plain_row.empty:
            continue
        claims.append(
            Claim(
                f"{row.case} (plain autograd) vs this suite's with plain autograd: held, step time",
                f"{row.held_bytes / plain_row.iloc[0].held_bytes:.2f}x, {row.time_ratio:.2f}x",
                None,
            )
        )
    return claims


def render_flow_memory(rows: Sequence[dict], settings: dict) -> str:
    """Markdown report of the Glow section: method, claims, the table of every case."""
    frame = memory_frame(rows)
    first = frame.iloc[0]
    side = int(first.resolution)
    lines = [
        "# Memory and speed of one training step: Glow (flows)",
        "",
        f"Generated by `python -m benchmarks memory --flows` on "
        f"{datetime.date.today().isoformat()}: Glow at L = {int(first.levels)} levels, "
        f"coupling width {int(first.width)}, affine coupling, on a batch of "
        f"{int(first.batch_size)} random 3x{side}x{side} images in [0, 1], loss the negative "
        f"log-likelihood, SGD with momentum, on {settings.get('device_name', first.device)}; "
        f"fastest of {settings.get('repeats', '?')} steps timed in rounds across all cases, "
        "after a warm-up step (which also initialises actnorm from the batch). All rows come "
        "from one process.",
        "",
        "- **held**, **peak**, **state**: as in [memory.md](memory.md) (allocator events "
        "on CPU, `torch.cuda.memory_allocated` on CUDA). **saved** (autograd's saved storages, "
        "whole) also counts storages that were live before the step, such as views of the "
        "priors' convolution weights, so it can exceed *held*.",
        "- **memory saving**: each level's chain of K steps keeps only its output and "
        "recomputes every step's input in backward (`flows/layers/memory_saving.py`); "
        "`memory_saving=False` is plain autograd with identical weights.",
        "- **time ×**: step time divided by this suite's Glow with plain autograd at the same "
        "K, from this run. normflows' Glow (plain autograd, its README's construction as in "
        "`flow-speed`) is a reference where installed.",
        "",
        *claims_table(check_flow_claims(frame)),
        "",
        "## Glow (flows) (time × against plain autograd at the same K)",
        "",
        "| case | K | params | held MiB | saved MiB | peak MiB | state MiB | step s | time × |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for row in frame.itertuples():
        lines.append(
            f"| {row.case} | {row.depth} | {row.params / 1e6:.3f}M | {measured_cells(row)} |"
        )
    return "\n".join(lines) + "\n"


def run_flow_memory(request: FlowMemoryRequest) -> list[Path]:
    """Measure the Glow section (after :func:`check_flow_memory`), write ``memory_flows.md``
    and ``.csv`` under ``request.out`` and log them to MLflow; their paths."""
    check_flow_memory(request)
    device = resolve_device(request.device)
    rows = measure_flow_memory(
        request, device, progress=lambda name: print(f"measuring {name}", flush=True)
    )
    environment = environment_tags(device)
    settings = {
        "batch_size": request.batch_size,
        "resolution": request.image_size,
        "repeats": request.repeats,
        "levels": request.levels,
        "width": request.width,
        "steps": list(request.steps),
        "device": device.type,
        "device_name": environment["device_name"],
    }
    request.out.mkdir(parents=True, exist_ok=True)
    markdown, csv = request.out / "memory_flows.md", request.out / "memory_flows.csv"
    write_text_atomic(markdown, render_flow_memory(rows, settings))
    frame = memory_frame(rows)
    frame["repeats"] = request.repeats
    write_text_atomic(csv, frame.to_csv(index=False))
    run_name = f"memory-flows-b{request.batch_size}-r{request.image_size}"
    uri = resolve_tracking_uri(request.tracking_uri)
    log_memory_run(rows, settings, [markdown, csv], run_name, uri, environment)
    return [markdown, csv]
