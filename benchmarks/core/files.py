"""Atomic file writes: a crash mid-write never leaves a truncated table, figure or checkpoint.

Each writer writes a temporary file in the destination's folder, flushes it to disk and
renames it over the destination (``os.replace`` is atomic on POSIX and Windows). Files are
created with mode ``0o666 & ~umask`` (``0644`` under the usual umask ``022``), as a plain
``open`` would.

Example:
    >>> import tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> write_text_atomic(folder / "table.md", "| a |")
    >>> (folder / "table.md").read_text()
    '| a |'
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import IO

__all__ = ["write_atomic", "write_bytes_atomic", "write_text_atomic"]


def _fsync_directory(folder: Path) -> None:
    """Make renames in ``folder`` durable (POSIX only; a no-op where folders cannot be opened)."""
    if os.name != "posix":
        return
    handle = os.open(folder, os.O_RDONLY)
    try:
        with contextlib.suppress(OSError):  # some file systems cannot sync a folder
            os.fsync(handle)
    finally:
        os.close(handle)


def _create_temporary(folder: Path, name: str) -> tuple[int, Path]:
    """A new, empty, hidden file beside ``folder / name``, opened for writing.

    Created with mode ``0o666`` so that the umask applies as for any new file (``0644`` under
    umask ``022``), unlike :func:`tempfile.mkstemp`, which always creates ``0600``.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    while True:
        temporary = folder / f".{name}.{secrets.token_hex(4)}.tmp"
        try:
            return os.open(temporary, flags, 0o666), temporary
        except FileExistsError:
            continue


def write_atomic(
    path: Path, write: Callable[[IO[bytes]], None], keep_replaced: Path | None = None
) -> None:
    """Write ``path`` through a synced temporary file; first move the old file to
    ``keep_replaced`` (if given).

    The old file is renamed only once the new content is completely on disk, so an interrupted
    write leaves the old file untouched and a crash between the two renames leaves the old file
    at ``keep_replaced``.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = _create_temporary(path.parent, path.name)
    try:
        with os.fdopen(handle, "wb") as stream:
            write(stream)
            stream.flush()
            os.fsync(stream.fileno())
        if keep_replaced is not None:
            with contextlib.suppress(FileNotFoundError):  # the first save has nothing to keep
                os.replace(path, keep_replaced)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    write_atomic(Path(path), lambda stream: stream.write(text.encode()))


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (figures)."""
    write_atomic(Path(path), lambda stream: stream.write(data))
