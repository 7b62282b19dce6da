"""Atomic file writes: a crash mid-write never leaves a truncated checkpoint or table.

Each writer writes a temporary file in the destination's folder, flushes it to disk and
renames it over the destination (``os.replace`` is atomic on POSIX and Windows).

Example:
    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "table.md"
    >>> write_text_atomic(path, "| a |")
    >>> path.read_text()
    '| a |'
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import torch

__all__ = ["load_checkpoint", "save_checkpoint", "write_bytes_atomic", "write_text_atomic"]


def _write_atomic(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as stream:
            write(stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    _write_atomic(Path(path), lambda stream: stream.write(text.encode()))


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (figures)."""
    _write_atomic(Path(path), lambda stream: stream.write(data))


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """``torch.save`` ``state`` to ``path`` atomically."""
    _write_atomic(Path(path), lambda stream: torch.save(state, stream))


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` onto the CPU."""
    return torch.load(Path(path), map_location="cpu", weights_only=False)
