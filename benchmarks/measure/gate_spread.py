"""How far the regression gate's figures spread across CPU kernels and thread counts.

The same code gives slightly different floating-point figures on another CPU: oneDNN, MKL and
ATen pick kernels by instruction set (AVX-512, AVX2, SSE4.1), and the thread count changes how
sums are split. This module measures the gate's figures (:func:`benchmarks.measure.gate_probes.
measure_all`) in fresh processes under environments that force those choices, shows per
metric how far they spread, and derives the tolerances of ``results/baseline.json`` from that
spread (:func:`benchmarks.measure.gate.tolerance_from_spread`)::

    python -m benchmarks.measure.gate_spread                       # every environment below
    python -m benchmarks.measure.gate_spread --env default 1-thread --save spread/
    python -m benchmarks.measure.gate_spread --load spread/*.json other-machine.json
    python -m benchmarks.measure.gate_spread --load spread/*.json --write-tolerances

The committed baseline's values always count as one more measurement (they come from the
machine that accepted them). ``--save`` keeps each environment's figures as JSON, and
``--load`` adds figures measured before or elsewhere (``--measure-to FILE`` on another
machine, or an older ``baseline.json``). ``--write-tolerances`` rewrites the tolerances of the
baseline from the spread (the values stay) and prints what changed. On a CPU without AVX-512,
``avx2`` equals ``default``.

Example:
    >>> sorted(ENVIRONMENTS["sse41-1-thread"].items())[:2]
    [('ATEN_CPU_CAPABILITY', 'default'), ('MKL_ENABLE_INSTRUCTIONS', 'SSE4_2')]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from benchmarks.core.files import write_text_atomic
from benchmarks.errors import BenchmarkError
from benchmarks.measure.gate import (
    Entry,
    describe_tolerance,
    load_baseline,
    tolerance_from_spread,
    within,
    write_tolerances,
)

__all__ = [
    "ENVIRONMENTS",
    "SpreadRow",
    "load_measurement",
    "main",
    "measure_under",
    "render_spread",
    "spread_rows",
]

Metrics = dict[str, float]
_AVX2 = {"ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}
_SSE41 = {
    "ATEN_CPU_CAPABILITY": "default",
    "ONEDNN_MAX_CPU_ISA": "SSE41",
    "MKL_ENABLE_INSTRUCTIONS": "SSE4_2",
}
_ONE_THREAD = {"OMP_NUM_THREADS": "1"}
ENVIRONMENTS: dict[str, dict[str, str]] = {
    "default": {},
    "1-thread": _ONE_THREAD,
    "avx2": _AVX2,
    "avx2-1-thread": _AVX2 | _ONE_THREAD,
    "sse41": _SSE41,
    "sse41-1-thread": _SSE41 | _ONE_THREAD,
}
"""Named variables that force the kernels of a CPU without AVX-512 (``avx2``) or without
AVX2 (``sse41``: ATen's unvectorised kernels, oneDNN SSE4.1, MKL SSE4.2), with the machine's
threads or one."""


def measure_under(
    overrides: Mapping[str, str],
    models: Sequence[str] | None = None,
    configs_dir: str | Path = "configs",
    save_to: Path | None = None,
) -> Metrics:
    """The gate's figures measured in a fresh Python process whose environment has
    ``overrides`` (kernel variables are read once, when torch loads), kept in ``save_to``
    if given; time ratios only without ``models``."""
    with tempfile.TemporaryDirectory() as folder:
        out = save_to or Path(folder) / "figures.json"
        command = [sys.executable, "-m", "benchmarks.measure.gate_spread", "--measure-to", str(out)]
        command += ["--configs-dir", str(configs_dir)]
        command += ["--models", *models] if models else []
        done = subprocess.run(
            command, env=os.environ | dict(overrides), capture_output=True, text=True
        )
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise BenchmarkError(f"measuring under {dict(overrides)} failed: {last}")
        return load_measurement(out)


def _write_measurement(path: Path, metrics: Metrics) -> None:
    """``metrics`` as a JSON document that :func:`load_measurement` reads, with where this
    process measured them (threads, ATen's instruction set, the kernel variables set)."""
    import torch

    variables = set(_AVX2) | set(_SSE41) | set(_ONE_THREAD)
    environment = {
        "threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "variables": {name: os.environ[name] for name in sorted(variables & set(os.environ))},
    }
    document = {"environment": environment, "metrics": dict(sorted(metrics.items()))}
    write_text_atomic(path, json.dumps(document, indent=1) + "\n")


def load_measurement(path: str | Path) -> Metrics:
    """Figures from a file of :func:`measure_under` (``--measure-to``/``--save``) or from a
    ``baseline.json`` (its values)."""
    path = Path(path)
    try:
        metrics = json.loads(path.read_text())["metrics"]
        return {
            name: float(value["value"] if isinstance(value, dict) else value)
            for name, value in metrics.items()
        }
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise BenchmarkError(
            f"{path} holds no measured figures ({error}); give a file written by "
            "`python -m benchmarks.measure.gate_spread --save DIR` or a baseline.json"
        ) from None


@dataclass(frozen=True)
class SpreadRow:
    """One metric: its value in every measurement, its tolerance and the derived one."""

    metric: str
    values: dict[str, float]
    entry: Entry | None

    @property
    def derived(self) -> dict:
        return tolerance_from_spread(self.metric, list(self.values.values()))

    @property
    def spread(self) -> str:
        """The spread in the unit of the metric's tolerance."""
        values = list(self.values.values())
        low, high = min(values), max(values)
        kind = self.derived["kind"]
        if kind == "relative":
            scale = max(abs(low), abs(high))
            return f"{(high - low) / scale if scale else 0.0:.2g}"
        if kind == "absolute":
            return f"{high - low:.3g}"
        if kind == "ratio":
            return f"x{high / low:.3g}" if low > 0 else "—"
        if kind == "ceiling":
            return f"max {high:.2g}"
        return "0" if low == high else f"{low:g}..{high:g}"

    @property
    def passes(self) -> bool:
        """Whether the gate accepts every measured value with the current tolerance."""
        return self.entry is not None and all(
            within(value, self.entry) for value in self.values.values()
        )


def spread_rows(
    measurements: Mapping[str, Metrics], baseline: Mapping[str, Entry]
) -> list[SpreadRow]:
    """Every metric of ``measurements`` with its value in each that has it, and the
    baseline's value as one more measurement (named ``baseline``)."""
    rows = []
    for metric in sorted(set().union(*measurements.values())):
        values = {name: found[metric] for name, found in measurements.items() if metric in found}
        entry = baseline.get(metric)
        if entry is not None:
            values = {"baseline": entry.value} | values
        rows.append(SpreadRow(metric, values, entry))
    return rows


def render_spread(rows: Iterable[SpreadRow]) -> str:
    """A table per metric (spread, tolerance now, derived tolerance, whether the gate passes
    every measurement), then the largest spread of each kind of metric."""
    rows = list(rows)
    lines = [f"{'metric':58} {'spread':>11}  {'tolerance':>11}  {'from spread':>11}  passes"]
    for row in rows:
        now = describe_tolerance(row.entry.tolerance if row.entry else None)
        derived = describe_tolerance(row.derived)
        passes = "yes" if row.passes else "NO"
        lines.append(f"{row.metric:58} {row.spread:>11}  {now:>11}  {derived:>11}  {passes}")
    lines += ["", "largest spread per kind:"]
    widest: dict[str, SpreadRow] = {}
    for row in rows:
        kind = row.metric.split("/", 1)[0]
        if kind not in widest or _as_number(row.spread) > _as_number(widest[kind].spread):
            widest[kind] = row
    for kind, row in sorted(widest.items()):
        lines.append(f"  {kind:16} {row.spread:>11}  ({row.metric})")
    return "\n".join(lines)


def _as_number(spread: str) -> float:
    try:
        return float(spread.removeprefix("x").removeprefix("max "))
    except ValueError:
        return float("inf")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.measure.gate_spread",
        description="measure the spread of the regression gate's figures across CPU kernels "
        "and thread counts, and derive the baseline's tolerances from it",
    )
    parser.add_argument(
        "--env",
        nargs="+",
        choices=sorted(ENVIRONMENTS),
        help="environments to measure under (default: all; none with --load alone)",
    )
    parser.add_argument("--models", nargs="+", metavar="NAME", help="only these models")
    parser.add_argument("--load", nargs="+", type=Path, default=[], metavar="FILE")
    parser.add_argument("--save", type=Path, metavar="DIR", help="keep each measurement")
    parser.add_argument("--baseline", type=Path, default=Path("results/baseline.json"))
    parser.add_argument("--configs-dir", type=Path, default=Path("configs"))
    parser.add_argument(
        "--write-tolerances",
        action="store_true",
        help="rewrite the baseline's tolerances from the spread (values unchanged)",
    )
    parser.add_argument("--measure-to", type=Path, metavar="FILE", help=argparse.SUPPRESS)
    return parser


def _measurements(args: argparse.Namespace) -> dict[str, Metrics]:
    """The loaded files, then a measurement under each chosen environment."""
    measurements = {path.stem: load_measurement(path) for path in args.load}
    names = args.env if args.env is not None else ([] if args.load else sorted(ENVIRONMENTS))
    for name in names:
        started = time.perf_counter()
        print(f"measuring under {name} {ENVIRONMENTS[name]}", flush=True)
        save_to = args.save / f"{name}.json" if args.save else None
        measurements[name] = measure_under(
            ENVIRONMENTS[name], args.models, args.configs_dir, save_to
        )
        print(f"  {time.perf_counter() - started:.0f} s", flush=True)
    return measurements


def _spread(args: argparse.Namespace) -> None:
    if args.write_tolerances and args.models:
        raise BenchmarkError("--write-tolerances needs every model measured: drop --models")
    baseline = load_baseline(args.baseline)
    if args.save:
        args.save.mkdir(parents=True, exist_ok=True)
    rows = spread_rows(_measurements(args), baseline)
    print(render_spread(rows))
    if args.write_tolerances:
        changed = write_tolerances(args.baseline, {row.metric: row.derived for row in rows})
        for metric, old, new in changed:
            print(f"{metric}: {describe_tolerance(old)} -> {describe_tolerance(new)}")
        print(f"wrote {args.baseline} ({len(changed)} tolerances changed)")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; a user error is one line ``error: ...`` and exit status 2."""
    args = _parser().parse_args(argv)
    try:
        if args.measure_to:
            from benchmarks.measure.gate_probes import measure_all

            metrics = measure_all(args.configs_dir, args.models)
            _write_measurement(args.measure_to, metrics)
        else:
            _spread(args)
    except BenchmarkError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
