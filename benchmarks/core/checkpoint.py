"""Checkpoints that detect corruption and keep the previous one.

A checkpoint is written atomically (:mod:`benchmarks.core.files`: a crash mid-write never
leaves a truncated checkpoint).

A checkpoint is stored as a magic header, the SHA-256 digest and length of the payload, then
the payload (the bytes of ``torch.save(state)``). Saving keeps the checkpoint it replaces as
:func:`previous_checkpoint_path` (``last.pt`` -> ``last.previous.pt``), but only once that file
verifies (length and digest; a legacy file must unpickle): a truncated or corrupt ``last.pt`` is
renamed to ``last.corrupt-<time>.pt`` for inspection (with a :class:`CheckpointWarning`) and the
existing previous checkpoint stays, so only verified checkpoints are ever kept. Loading verifies
the digest and, if the checkpoint is missing, truncated or corrupt, warns and returns the
previous one. Files written by plain ``torch.save`` (older versions of the suite) still load,
unverified.

Example:
    >>> import tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> save_checkpoint(folder / "last.pt", {"step": 1})
    >>> save_checkpoint(folder / "last.pt", {"step": 2})
    >>> load_checkpoint(folder / "last.pt")["step"], sorted(p.name for p in folder.glob("*.pt"))
    (2, ['last.previous.pt', 'last.pt'])
"""

from __future__ import annotations

import hashlib
import io
import os
import struct
import time
import warnings
from pathlib import Path
from typing import IO, Any

import torch

from benchmarks.core.files import write_atomic
from benchmarks.errors import CheckpointError

__all__ = [
    "CheckpointWarning",
    "checkpoint_problem",
    "has_checkpoint",
    "load_checkpoint",
    "previous_checkpoint_path",
    "save_checkpoint",
]

_MAGIC_PREFIX = b"FLOWBENCH-CKPT"
_FORMAT_VERSION = 1
_MAGIC = _MAGIC_PREFIX + bytes([_FORMAT_VERSION])
# magic, SHA-256 digest of the payload, payload length in bytes (little-endian unsigned 64 bit)
_HEADER = struct.Struct(f"<{len(_MAGIC)}s32sQ")


class CheckpointWarning(UserWarning):
    """A checkpoint could not be used: the previous one was loaded (or kept) instead."""


class _UnusableCheckpoint(Exception):
    """A checkpoint file cannot be used; the message is the reason (e.g. ``"missing"``)."""


def previous_checkpoint_path(path: str | Path) -> Path:
    """Where :func:`save_checkpoint` keeps the checkpoint it replaced.

    >>> previous_checkpoint_path("runs/x/last.pt").as_posix()
    'runs/x/last.previous.pt'
    """
    path = Path(path)
    return path.with_name(f"{path.stem}.previous{path.suffix}")


def has_checkpoint(path: str | Path) -> bool:
    """Whether there is a checkpoint to resume from: ``path`` or its previous file exists."""
    return Path(path).exists() or previous_checkpoint_path(path).exists()


class _HashingWriter:
    """A write-only stream that forwards to ``stream`` and hashes and counts what it writes."""

    def __init__(self, stream: IO[bytes]) -> None:
        self._stream = stream
        self._sha256 = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes | memoryview) -> int:
        self._sha256.update(data)
        self.size += memoryview(data).nbytes
        return self._stream.write(data)

    def flush(self) -> None:
        self._stream.flush()

    def digest(self) -> bytes:
        return self._sha256.digest()


def _write_verified(stream: IO[bytes], state: dict[str, Any]) -> None:
    """Stream ``torch.save(state)`` after a header that is filled in once the payload is known."""
    start = stream.tell()
    stream.write(bytes(_HEADER.size))
    payload = _HashingWriter(stream)
    torch.save(state, payload)
    stream.seek(start)
    stream.write(_HEADER.pack(_MAGIC, payload.digest(), payload.size))
    stream.seek(0, os.SEEK_END)


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Save ``state`` to ``path`` atomically with a SHA-256 digest; keep the replaced checkpoint
    if it verifies.

    The replaced checkpoint moves to :func:`previous_checkpoint_path` only after the new file
    is completely written and synced, and only if it verifies (see :func:`checkpoint_problem`).
    An unusable one moves to a ``<stem>.corrupt-<time><suffix>`` file instead (with a
    :class:`CheckpointWarning`), leaving the previous checkpoint as it is.
    """
    path = Path(path)
    write_atomic(path, lambda stream: _write_verified(stream, state), _place_for_replaced(path))


def _place_for_replaced(path: Path) -> Path | None:
    """Where the checkpoint at ``path`` goes when a new one replaces it (``None``: nowhere)."""
    if not path.exists():
        return None
    problem = checkpoint_problem(path)
    if problem is None:
        return previous_checkpoint_path(path)
    quarantine = _quarantine_path(path)
    warnings.warn(
        f"checkpoint {path} is unusable ({problem}); it is moved to {quarantine} and the "
        f"previous checkpoint {previous_checkpoint_path(path)} is kept",
        CheckpointWarning,
        stacklevel=3,
    )
    return quarantine


def _quarantine_path(path: Path) -> Path:
    """A free ``<stem>.corrupt-<local time><suffix>`` name beside ``path``."""
    stamp = time.strftime("%Y%m%dT%H%M%S")
    candidate = path.with_name(f"{path.stem}.corrupt-{stamp}{path.suffix}")
    counter = 1
    while candidate.exists():
        candidate = path.with_name(f"{path.stem}.corrupt-{stamp}-{counter}{path.suffix}")
        counter += 1
    return candidate


def checkpoint_problem(path: str | Path) -> str | None:
    """Why the checkpoint file at ``path`` cannot be loaded (e.g. ``"missing"``,
    ``"truncated: ..."``, ``"SHA-256 mismatch: ..."``), or ``None`` if it verifies.

    A file of the verified format is checked by its length and digest, read in chunks, without
    unpickling it; a legacy file (plain ``torch.save``) has no digest and must unpickle.
    """
    try:
        _read_checkpoint(Path(path), unpickle=False)
    except _UnusableCheckpoint as problem:
        return str(problem)
    return None


def _first_line(error: BaseException, limit: int = 160) -> str:
    """``"Kind: first line of the message"``, cut to ``limit`` characters."""
    text = str(error).strip()
    line = f"{type(error).__name__}: {text.splitlines()[0]}" if text else type(error).__name__
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _torch_load(source: Path | IO[bytes]) -> dict[str, Any]:
    try:
        return torch.load(source, map_location="cpu", weights_only=False)
    except Exception as error:  # any failure to unpickle makes the file unusable
        raise _UnusableCheckpoint(f"torch.load failed: {_first_line(error)}") from error


_CHUNK = 1 << 20


def _check_header(head: bytes, file_size: int) -> bytes:
    """The payload digest recorded in a header ``head`` whose length matches the file size."""
    version = head[len(_MAGIC_PREFIX)]
    if version != _FORMAT_VERSION:
        raise _UnusableCheckpoint(
            f"checkpoint format version {version}, this version of the suite reads "
            f"version {_FORMAT_VERSION}"
        )
    _, digest, length = _HEADER.unpack(head)
    expected = _HEADER.size + length
    if file_size < expected:
        raise _UnusableCheckpoint(f"truncated: {file_size:,} of {expected:,} bytes")
    if file_size > expected:
        raise _UnusableCheckpoint(f"{file_size:,} bytes where the header records {expected:,}")
    return digest


def _read_payload(stream: IO[bytes], head: bytes, file_size: int, keep: bool) -> bytes:
    """The payload after a header ``head``, checked against its length and digest (hashed in
    chunks; with ``keep=False`` it is only checked and ``b""`` is returned)."""
    digest = _check_header(head, file_size)
    sha256, kept = hashlib.sha256(), []
    for chunk in iter(lambda: stream.read(_CHUNK), b""):
        sha256.update(chunk)
        if keep:
            kept.append(chunk)
    if sha256.digest() != digest:
        raise _UnusableCheckpoint("SHA-256 mismatch: the content is corrupt")
    return b"".join(kept)


def _read_checkpoint(path: Path, unpickle: bool = True) -> dict[str, Any]:
    """Load the checkpoint at ``path``, or raise :class:`_UnusableCheckpoint` with the reason.

    With ``unpickle=False`` a verified file is only checked (and ``{}`` returned).
    """
    try:
        with path.open("rb") as stream:
            file_size = os.fstat(stream.fileno()).st_size
            head = stream.read(_HEADER.size)
            if not head.startswith(_MAGIC_PREFIX):
                if head and not _MAGIC_PREFIX.startswith(head):
                    return _torch_load(path)  # written by plain torch.save: unverified
                raise _UnusableCheckpoint(
                    f"truncated: {file_size:,} of at least {_HEADER.size:,} bytes"
                )
            if len(head) < _HEADER.size:
                raise _UnusableCheckpoint(
                    f"truncated: {file_size:,} of at least {_HEADER.size:,} bytes"
                )
            payload = _read_payload(stream, head, file_size, keep=unpickle)
    except FileNotFoundError:
        raise _UnusableCheckpoint("missing") from None
    except OSError as error:
        raise _UnusableCheckpoint(f"unreadable: {_first_line(error)}") from error
    return _torch_load(io.BytesIO(payload)) if unpickle else {}


def _fallback_warning(path: Path, reason: str, previous: Path, state: dict[str, Any]) -> str:
    step = state.get("step") if isinstance(state, dict) else None
    from_step = f" from step {step}" if step is not None else ""
    return (
        f"checkpoint {path} is unusable ({reason}); using the previous checkpoint "
        f"{previous}{from_step} instead"
    )


def _no_checkpoint_message(path: Path, reason: str, previous: Path, previous_reason: str) -> str:
    if reason == previous_reason == "missing":
        return f"no checkpoint at {path} nor at {previous}; run without --resume to start over"
    return (
        f"cannot load checkpoint {path} ({reason}) nor the previous checkpoint {previous} "
        f"({previous_reason}). To start over, move or delete the run folder {path.parent} "
        "and run without --resume."
    )


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` onto the CPU.

    If ``path`` is missing, truncated, corrupt or cannot be unpickled, warn with a
    :class:`CheckpointWarning` and return the previous checkpoint instead.

    Raises:
        CheckpointError: neither ``path`` nor its previous checkpoint can be loaded.
    """
    path = Path(path)
    try:
        return _read_checkpoint(path)
    except _UnusableCheckpoint as problem:
        reason = str(problem)
    previous = previous_checkpoint_path(path)
    try:
        state = _read_checkpoint(previous)
    except _UnusableCheckpoint as problem:
        message = _no_checkpoint_message(path, reason, previous, str(problem))
        raise CheckpointError(message) from None
    warnings.warn(_fallback_warning(path, reason, previous, state), CheckpointWarning, stacklevel=2)
    return state
