"""The regression gate: compare measured figures with the committed baseline, per tolerance.

``results/baseline.json`` holds, for every metric the gate measures
(:mod:`benchmarks.measure.gate_probes`), its accepted value and its tolerance:

* ``exact``: parameter counts; any change is a regression.
* ``relative``: ``|now - baseline| <= rel * |baseline|`` (held bytes, losses, bits/dim, ELBOs).
* ``absolute``: ``|now - baseline| <= abs`` (test error in percent: one image of 64 is 1.6).
* ``ceiling``: ``now <= limit`` (inversion and log-determinant errors in float64: below the
  limit they are rounding, above it the map is no longer inverted).
* ``ratio``: ``baseline / factor <= now <= baseline * factor`` (time ratios measured in one
  run).

The tolerances come from the measured spread of each figure (:func:`tolerance_from_spread`:
four times the range of its values, never narrower than the floor of its kind, rounded up to
one digit), measured with :mod:`benchmarks.measure.gate_spread` (``make regress-spread``) on an AMD
EPYC with AVX2 and no AVX-512, in fresh processes: the default (AVX2, 2 threads: the baseline's
values), 1 thread, and ATen unvectorised with oneDNN SSE4.1 and MKL SSE4.2 (1 and 2 threads);
the figures of the previous baseline, measured on an AMD EPYC with AVX-512 (2 threads), counted
too where their definition had not changed. The largest spreads (range over the largest value):

* ``first_loss`` (classifiers' first step, before any update): 2.4e-6 -> floor 5e-5;
* ``test_bpd``, ``test_bpd_iw`` (flows): 1.2e-4 for RealNVP (-> 5e-4), 4.4e-6 for the others;
  ``test_elbo``, ``test_log_px`` (VAEs): 1.7e-7 -> floor 5e-5;
* ``second_loss`` (after one SGD update): 2e-7 (ResNet-32, RevNet-38) to 7.8e-3 (ResNet-110)
  -> 5e-5 to 4%;
* ``train_loss`` after the last smoke step: 8.5e-4 (ResNet-32) to 9.4% (RevNet-164) -> 0.4% to
  40%; ``test_error``: 0 to 10.9 points (i-RevNet on 64 images) -> 3.2 to 50 points. Deep
  BatchNorm nets at batches of 4 to 16 amplify a last-bit difference in a kernel's result
  chaotically; these bands only catch a run that diverges or stops;
* ``held_bytes``, ``params``: 0 -> 1% and exact;
* ``inversion_error`` up to 3.1e-9 (i-RevNet-a), ``logdet_error`` up to 2.8e-14 -> ceilings of
  1000x the largest, at least 1e-8;
* ``time_ratio``: a factor 1.65 (RevNet-38 over ResNet-32, on 2 shared cores) -> 2.8.

Half the learning rate moves the flows' bits/dim by 0.11% (Glow) to 0.7% (RealNVP), the VAEs'
bounds by 0.2% to 4%, the classifiers' second loss by 0.4% to 13% and the ImageNet nets' loss
after their second step by 50%: beyond each band (narrowly for ResNet-110 and RevNet-110,
4.1% against 4% and 0.42% against 0.3%).

A metric missing from the measurement, or measured but absent from the baseline, is a failure
too: the baseline must say what is measured. ``--update-baseline`` rewrites the values (keeping
the tolerances already in the file; a new metric gets :func:`default_tolerance`, the floor of
its kind) and shows the diff; ``python -m benchmarks.measure.gate_spread --write-tolerances``
rewrites the tolerances from a new measurement of the spread.

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

from benchmarks.core.files import write_text_atomic
from benchmarks.errors import BenchmarkError

__all__ = [
    "Change",
    "Entry",
    "compare",
    "default_tolerance",
    "describe_tolerance",
    "load_baseline",
    "render_changes",
    "tolerance_from_spread",
    "update_baseline",
    "within",
    "write_tolerances",
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


SPREAD_MARGIN = 4.0
"""How many times the measured spread a relative or absolute band spans."""
RELATIVE_FLOOR = 5e-5
"""The narrowest relative band (float32 smoke figures of well-conditioned models spread by up
to 4.4e-6 across kernels; the smallest planted regression, half Glow's learning rate, moves
its bits/dim by 1.1e-3)."""
FLOORS: dict[str, dict[str, Any]] = {
    "held_bytes": {"kind": "relative", "rel": 0.01},
    "test_error": {"kind": "absolute", "abs": 3.2},  # two test images of 64
    "time_ratio": {"kind": "ratio", "factor": 2.0},
}
"""The narrowest band of a kind of metric (the part of its name before the first ``/``);
the kinds not listed get :data:`RELATIVE_FLOOR`."""


def _round_up(value: float) -> float:
    """``value`` rounded up to one significant digit (``0.000123 -> 0.0002``)."""
    if value <= 0:
        return 0.0
    exponent = math.floor(math.log10(value))
    digit = math.ceil(round(value / 10.0**exponent, 9))
    return float(f"{digit}e{exponent}")


def tolerance_from_spread(metric: str, values: list[float]) -> dict[str, Any]:
    """The tolerance of ``metric`` measured as ``values`` (one per environment: kernels,
    thread counts, machines): :data:`SPREAD_MARGIN` times their range, never narrower than
    the kind's floor, rounded up to one significant digit.

    Parameter counts are exact; float64 inversion and log-det errors get a ceiling of 1000x
    their largest value (at least 1e-8); time ratios a factor of at least 2 and of the square
    of their largest ratio ``max / min``.

    Example:
        >>> tolerance_from_spread("test_bpd/density/realnvp_cifar10", [4.23017, 4.23068])
        {'kind': 'relative', 'rel': 0.0005}
    """
    kind = metric.split("/", 1)[0]
    low, high = min(values), max(values)
    if kind == "params":
        return {"kind": "exact"}
    if kind in ("inversion_error", "logdet_error"):
        return {"kind": "ceiling", "limit": _round_up(max(1e-8, 1e3 * high))}
    floor = FLOORS.get(kind, {"kind": "relative", "rel": RELATIVE_FLOOR})
    if floor["kind"] == "ratio":
        factor = max(floor["factor"], (high / low) ** 2)
        return {"kind": "ratio", "factor": math.ceil(10 * factor) / 10}
    if floor["kind"] == "absolute":
        band = _round_up(SPREAD_MARGIN * (high - low))
        return {"kind": "absolute", "abs": max(floor["abs"], band)}
    scale = max(abs(low), abs(high))
    spread = (high - low) / scale if scale else 0.0
    return {"kind": "relative", "rel": max(floor["rel"], _round_up(SPREAD_MARGIN * spread))}


def default_tolerance(metric: str, value: float) -> dict[str, Any]:
    """The tolerance a new metric gets from one measurement: the floor of its kind
    (:func:`tolerance_from_spread` of ``[value]``)."""
    return tolerance_from_spread(metric, [value])


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


def write_tolerances(
    path: str | Path, tolerances: dict[str, dict[str, Any]]
) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """Replace the tolerances of the baseline's metrics named in ``tolerances`` (atomically;
    values and other metrics unchanged); return ``(metric, old, new)`` of each one changed."""
    path = Path(path)
    load_baseline(path)  # a clear error if it is not a baseline
    document = json.loads(path.read_text())
    changed = []
    for metric, body in document["metrics"].items():
        new = tolerances.get(metric)
        if new is not None and new != body["tolerance"]:
            changed.append((metric, body["tolerance"], new))
            body["tolerance"] = new
    write_text_atomic(path, json.dumps(document, indent=1) + "\n")
    return changed
