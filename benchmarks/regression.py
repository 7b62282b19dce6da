"""The regression gate: compare measured figures with the committed baseline, per tolerance.

``results/baseline.json`` holds, for every metric the gate measures
(:mod:`benchmarks.regress_probes`), its accepted value and its tolerance:

* ``exact``: parameter counts; any change is a regression.
* ``relative``: ``|now - baseline| <= rel * |baseline|`` (bytes held for backward: 1%;
  metrics of the short smoke trainings: 0.02%. The smoke runs repeat bit for bit on one kind
  of CPU, and halving the learning rate moves them by 0.1% (Glow) to 0.7% (RealNVP); on
  another kind of CPU, accept its figures once with ``--update-baseline``).
* ``absolute``: ``|now - baseline| <= abs`` (test error in percent: one image of 64 is 1.6).
* ``ceiling``: ``now <= limit`` (inversion and log-determinant errors in float64: below the
  limit they are rounding, above it the map is no longer inverted).
* ``ratio``: ``baseline / factor <= now <= baseline * factor`` (time ratios measured in one
  run: generous, CPU timings are noisy).

A metric missing from the measurement, or measured but absent from the baseline, is a failure
too: the baseline must say what is measured. ``--update-baseline`` rewrites the file (with the
tolerances of :func:`default_tolerance`, or the ones already in the file) and shows the diff.

Example:
    >>> baseline = {"params/resnet32": Entry(464154, {"kind": "exact"})}
    >>> [change.metric for change in compare(baseline, {"params/resnet32": 464155})]
    ['params/resnet32']
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.checkpoint import write_text_atomic
from benchmarks.errors import BenchmarkError

__all__ = [
    "Change",
    "Entry",
    "compare",
    "default_tolerance",
    "describe_tolerance",
    "load_baseline",
    "render_changes",
    "update_baseline",
    "within",
]

ACCEPT_COMMAND = "python -m benchmarks regress --update-baseline   (or: make regress-update)"


@dataclass(frozen=True)
class Entry:
    """One baseline metric: its accepted value and its tolerance."""

    value: float
    tolerance: dict[str, Any] = field(default_factory=lambda: {"kind": "exact"})


@dataclass(frozen=True)
class Change:
    """A metric outside its tolerance (or missing on one side)."""

    metric: str
    baseline: float | None
    now: float | None
    tolerance: dict[str, Any] | None

    @property
    def moved(self) -> str:
        if self.baseline is None:
            return "not in the baseline"
        if self.now is None:
            return "no longer measured"
        delta = self.now - self.baseline
        if abs(self.baseline) > 1e-6:  # no percentages of rounding errors
            return f"{delta:+.4g} ({100 * delta / abs(self.baseline):+.3g}%)"
        return f"{delta:+.4g}"


def default_tolerance(metric: str, value: float) -> dict[str, Any]:
    """The tolerance a new metric gets, from its kind (the part before the first ``/``);
    float64 reconstruction errors may grow to ``max(1e-8, 1000 x`` their value)."""
    kind = metric.split("/", 1)[0]
    if kind == "params":
        return {"kind": "exact"}
    if kind in ("inversion_error", "logdet_error"):
        return {"kind": "ceiling", "limit": float(f"{max(1e-8, 1e3 * value):.1g}")}
    if kind == "time_ratio":
        return {"kind": "ratio", "factor": 2.0}
    if kind == "test_error":
        return {"kind": "absolute", "abs": 3.2}
    if kind == "held_bytes":
        return {"kind": "relative", "rel": 0.01}
    return {"kind": "relative", "rel": 2e-4}


def within(value: float, entry: Entry) -> bool:
    """Whether ``value`` is accepted by ``entry``'s tolerance."""
    tolerance, base = entry.tolerance, entry.value
    kind = tolerance["kind"]
    if math.isnan(value) or math.isnan(base):
        return math.isnan(value) and math.isnan(base)
    if kind == "exact":
        return value == base
    if kind == "relative":
        return abs(value - base) <= tolerance["rel"] * abs(base)
    if kind == "absolute":
        return abs(value - base) <= tolerance["abs"]
    if kind == "ceiling":
        return value <= tolerance["limit"]
    if kind == "ratio":
        return base / tolerance["factor"] <= value <= base * tolerance["factor"]
    raise BenchmarkError(f"baseline tolerance kind {kind!r} is unknown")


def describe_tolerance(tolerance: dict[str, Any] | None) -> str:
    if tolerance is None:
        return "—"
    kind = tolerance["kind"]
    return {
        "exact": lambda: "exact",
        "relative": lambda: f"±{100 * tolerance['rel']:g}%",
        "absolute": lambda: f"±{tolerance['abs']:g}",
        "ceiling": lambda: f"≤ {tolerance['limit']:g}",
        "ratio": lambda: f"×/÷ {tolerance['factor']:g}",
    }[kind]()


def compare(baseline: dict[str, Entry], measured: dict[str, float]) -> list[Change]:
    """Every metric outside its tolerance, missing, or new (sorted by name)."""
    changes = []
    for metric in sorted(baseline.keys() | measured.keys()):
        entry, now = baseline.get(metric), measured.get(metric)
        if entry is None or now is None:
            changes.append(Change(metric, entry and entry.value, now, entry and entry.tolerance))
        elif not within(now, entry):
            changes.append(Change(metric, entry.value, now, entry.tolerance))
    return changes


def _number(value: float | None) -> str:
    if value is None:
        return "—"
    if float(value).is_integer() and abs(value) >= 1:
        return f"{int(value):,}"
    return f"{value:.6g}"


def render_changes(changes: list[Change]) -> str:
    """A plain-text table: metric, baseline, now, change, tolerance."""
    rows = [("metric", "baseline", "now", "change", "tolerance")]
    rows += [
        (c.metric, _number(c.baseline), _number(c.now), c.moved, describe_tolerance(c.tolerance))
        for c in changes
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        for row in rows
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(line.rstrip() for line in lines)


def load_baseline(path: str | Path) -> dict[str, Entry]:
    """Read ``results/baseline.json``; a missing or malformed file is a clear error."""
    path = Path(path)
    if not path.is_file():
        raise BenchmarkError(f"no regression baseline at {path}; create it with `{ACCEPT_COMMAND}`")
    try:
        document = json.loads(path.read_text())
        return {
            metric: Entry(float(body["value"]), dict(body["tolerance"]))
            for metric, body in document["metrics"].items()
        }
    except (ValueError, KeyError, TypeError) as error:
        raise BenchmarkError(
            f"{path} is not a regression baseline ({error}); restore it from git or "
            f"recreate it with `{ACCEPT_COMMAND}`"
        ) from None


def update_baseline(
    path: str | Path, measured: dict[str, float], environment: dict[str, str]
) -> list[Change]:
    """Write ``measured`` as the new baseline (atomically), keeping the tolerances already in
    the file; return what changed against the old file (for the diff shown to the user)."""
    path = Path(path)
    old = load_baseline(path) if path.is_file() else {}
    changes = [
        Change(metric, old[metric].value if metric in old else None, measured.get(metric), None)
        for metric in sorted(old.keys() | measured.keys())
        if metric not in old or metric not in measured or old[metric].value != measured[metric]
    ]
    document = {
        "format": 1,
        "written_by": "python -m benchmarks regress --update-baseline",
        "environment": environment,
        "metrics": {
            metric: {
                "value": value,
                "tolerance": (
                    old[metric].tolerance if metric in old else default_tolerance(metric, value)
                ),
            }
            for metric, value in sorted(measured.items())
        },
    }
    write_text_atomic(path, json.dumps(document, indent=1) + "\n")
    return changes
