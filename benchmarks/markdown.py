"""Small helpers shared by the table renderers: one Markdown row, the notes of published.yaml.

Example:
    >>> markdown_row(["resnet32", "7.14"])
    '| resnet32 | 7.14 |'
    >>> published_notes({"cifar": {"models": {"m": {"note": "text  on\\n two lines"}}}}, "cifar")
    ['', 'Notes:', '', '- m: text on two lines']
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["NOT_RUN", "markdown_row", "published_notes"]

NOT_RUN = "not run"  # the cell of a table that no finished run fills


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
