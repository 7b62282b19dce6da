"""Small helpers shared by the table renderers: one Markdown row, the notes of published.yaml.

Example:
    >>> markdown_row(["resnet32", "7.14"])
    '| resnet32 | 7.14 |'
    >>> published_notes({"cifar": {"models": {"m": {"note": "text  on\\n two lines"}}}}, "cifar")
    ['', 'Notes:', '', '- m: text on two lines']
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["NOT_RUN", "generated_line", "markdown_row", "published_notes"]

NOT_RUN = "not run"  # the cell of a table that no finished run fills


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
