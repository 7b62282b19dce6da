"""Small helpers shared by the table renderers: one Markdown row, a number or a mean over seeds
as a cell, the notes of published.yaml.

Example:
    >>> markdown_row(["resnet32", "7.14"])
    '| resnet32 | 7.14 |'
    >>> number(float("nan")), number(-0.5, 2, signed=True), mean_std(3.0, spread([2.0, 4.0]))
    ('—', '-0.50', '3.000 ± 1.414')
    >>> published_notes({"cifar": {"models": {"m": {"note": "text  on\\n two lines"}}}}, "cifar")
    ['', 'Notes:', '', '- m: text on two lines']
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

__all__ = [
    "MISSING",
    "NOT_RUN",
    "generated_line",
    "markdown_row",
    "mean_std",
    "number",
    "published_notes",
    "spread",
]

NOT_RUN = "not run"  # the cell of a table that no finished run fills
MISSING = "—"  # the cell of a value that does not exist (no run, no published figure)


def generated_line(record: str, config_path: str, published_source: str) -> str:
    """The sentence under a table's title: what it is rendered from, and the papers' source.

    >>> generated_line("runs/cifar.csv", "configs/cifar.yaml", "Gomez et al. 2017")[:41]
    'Rendered by `python -m benchmarks tables`'
    """
    return (
        f"Rendered by `python -m benchmarks tables` from the results record `{record}`: runs of "
        f"the committed `{config_path}`, each row's origin listed under *Where the rows come "
        f"from*. Published numbers: {' '.join(published_source.split())}"
    )


def markdown_row(cells: Sequence[str]) -> str:
    """Cells joined into one row of a Markdown table."""
    return "| " + " | ".join(cells) + " |"


def published_notes(published: dict, table: str) -> list[str]:
    """The ``note`` of each model of ``table`` in published.yaml, as a Markdown list (or [])."""
    models = published.get(table, {}).get("models", {})
    notes = [
        f"- {model}: {' '.join(str(entry['note']).split())}"
        for model, entry in models.items()
        if entry.get("note")
    ]
    return ["", "Notes:", "", *notes] if notes else []


def is_missing(value: object) -> bool:
    """None, pandas' NA or a NaN float."""
    return value is None or str(value) == "<NA>" or (isinstance(value, float) and math.isnan(value))


def number(value: object, digits: int = 3, signed: bool = False, suffix: str = "") -> str:
    """``value`` with ``digits`` decimals (a sign when ``signed``), or :data:`MISSING`."""
    if is_missing(value):
        return MISSING
    return f"{value:{'+' if signed else ''}.{digits}f}{suffix}"


def spread(values: Sequence[float]) -> float:
    """The sample standard deviation over seeds (NaN for fewer than two)."""
    return statistics.stdev(values) if len(values) > 1 else math.nan


def mean_std(mean: float, std: float, digits: int = 3) -> str:
    """``mean ± std`` over seeds (the mean alone for one seed), or :data:`MISSING`."""
    if math.isnan(mean):
        return MISSING
    if math.isnan(std):
        return number(mean, digits)
    return f"{mean:.{digits}f} ± {std:.{digits}f}"
