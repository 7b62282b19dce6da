"""The life of a training run outside its numbers: its run folder and how it ends on a signal.

- :func:`check_fresh_start`: a run without ``--resume`` refuses a run folder that holds a
  checkpoint (of an earlier, maybe longer run) instead of overwriting it.
- :class:`RunFolderLock`: one process at a time per run folder (``fcntl.flock`` on
  ``run.lock`` in it, held for the run's duration; the kernel releases it when the process
  dies, so a crashed run never blocks the next one). :func:`claim_run_folders` takes the locks
  of every run of a command and checks them all before the first one trains.
- :func:`interrupt_on_signals`: SIGTERM (like SIGINT) raises :class:`Interrupted`, a
  ``KeyboardInterrupt``, so the MLflow run ends KILLED and the CLI exits ``128 + signal``.
- :class:`StopAtStepEnd`: what the training loop installs instead: a signal is only noted, and
  the loop writes a checkpoint at the end of the current step, then raises
  :class:`Interrupted`; a second signal raises at once.

Example:
    >>> import signal, tempfile
    >>> from pathlib import Path
    >>> folder = Path(tempfile.mkdtemp()) / "resnet32-digits-smoke-seed0"
    >>> with RunFolderLock(folder):
    ...     try:
    ...         RunFolderLock(folder).acquire()
    ...     except RunFolderError as error:
    ...         print("refused:", "is in use by another run" in str(error))
    refused: True
    >>> folder.exists()  # the lock created the folder and removed it again
    False
    >>> with interrupt_on_signals():
    ...     try:
    ...         signal.raise_signal(signal.SIGTERM)
    ...     except Interrupted as stop:
    ...         print(stop, stop.exit_status)
    SIGTERM 143
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import FrameType, TracebackType

import torch
import torch.distributed as dist

from benchmarks.core.checkpoint import has_checkpoint
from benchmarks.errors import BenchmarkError

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; runs are not locked there
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "LOCK_NAME",
    "Interrupted",
    "RunFolderError",
    "RunFolderLock",
    "StopAtStepEnd",
    "check_fresh_start",
    "claim_run_folders",
    "interrupt_on_signals",
]

LOCK_NAME = "run.lock"
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class RunFolderError(BenchmarkError):
    """A run folder holds an earlier run's checkpoint, or another process is using it."""


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM ended the run (after its checkpoint when it was training).

    A ``KeyboardInterrupt``, so everything that handles Ctrl-C handles it (the MLflow run ends
    KILLED); :attr:`exit_status` is the shell's ``128 + signal`` (130 for SIGINT, 143 for
    SIGTERM).
    """

    def __init__(self, signal_number: int) -> None:
        super().__init__(signal.Signals(signal_number).name)
        self.signal_number = signal_number

    @property
    def exit_status(self) -> int:
        return 128 + self.signal_number


def check_fresh_start(checkpoint_path: Path, resume: bool) -> None:
    """Refuse to start a run over a checkpoint of an earlier run unless it resumes.

    Raises:
        RunFolderError: not ``resume`` and ``checkpoint_path`` (or its previous file) exists.
    """
    if resume or not has_checkpoint(checkpoint_path):
        return
    folder = checkpoint_path.parent
    raise RunFolderError(
        f"the run folder {folder} holds a checkpoint of an earlier run: pass --resume to "
        "continue it, or move or delete the folder (or choose another --runs-dir) to start over"
    )


class RunFolderLock:
    """An exclusive, non-blocking lock on a run folder, as a context manager.

    The lock is ``fcntl.flock`` on ``<folder>/run.lock`` (which holds the owner's process id).
    It is released when the block ends and, should the process die, by the kernel. On release
    the lock file is deleted, and the folder too if the lock created it and it is still empty
    (a refused command leaves nothing behind). Where ``fcntl`` is missing (Windows) it does
    nothing.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self._handle: int | None = None
        self._created: list[Path] = []  # folders the lock created, deepest first

    def acquire(self) -> None:
        """Take the lock.

        Raises:
            RunFolderError: another process holds it; the message names the folder.
        """
        if fcntl is None:
            return
        while self._handle is None:
            handle = self._open()
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                owner = os.read(handle, 32).decode(errors="replace").strip()
                os.close(handle)
                self._remove_created_folders()
                raise RunFolderError(self._busy_message(owner)) from None
            if self._still_linked(handle):  # else a releasing owner deleted it: lock anew
                self._handle = handle
            else:
                os.close(handle)
        os.ftruncate(self._handle, 0)
        os.write(self._handle, f"{os.getpid()}\n".encode())

    def release(self) -> None:
        """Delete the lock file (and the folder if this lock created it empty), then unlock."""
        if self._handle is None:
            return
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        os.close(self._handle)
        self._handle = None
        self._remove_created_folders()

    def _open(self) -> int:
        """Open (create) the lock file, creating the missing folders above it."""
        while True:
            missing = [self.folder, *self.folder.parents]
            missing = missing[: next(i for i, f in enumerate(missing) if f.exists())]
            self.folder.mkdir(parents=True, exist_ok=True)
            self._created = self._created or missing
            try:
                return os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            except FileNotFoundError:  # a releasing owner removed the folder meanwhile
                continue

    def _still_linked(self, handle: int) -> bool:
        """Whether ``handle`` is the file now at :attr:`path` (not one unlinked meanwhile)."""
        try:
            current = os.stat(self.path)
        except FileNotFoundError:
            return False
        opened = os.fstat(handle)
        return (opened.st_dev, opened.st_ino) == (current.st_dev, current.st_ino)

    def _remove_created_folders(self) -> None:
        """Remove the folders the lock created, deepest first, while they are empty."""
        for folder in self._created:
            try:
                folder.rmdir()
            except OSError:  # not empty: the run (or another) wrote to it; keep it
                break
        self._created = []

    def _busy_message(self, owner: str) -> str:
        by = f" (process {owner})" if owner.isdigit() else ""
        return (
            f"the run folder {self.folder} is in use by another run{by}: wait for it to end, "
            "or choose another --runs-dir"
        )

    def __enter__(self) -> RunFolderLock:
        self.acquire()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()


@contextlib.contextmanager
def claim_run_folders(
    checkpoint_paths: Iterable[Path], resume: bool, lock: bool = True
) -> Iterator[None]:
    """Lock the run folder of every checkpoint (when ``lock``), then check that each may
    start (:func:`check_fresh_start`); hold the locks until the block ends.

    Every folder is checked before the block runs, so a command whose last run would be
    refused fails before its first run trains. On a refusal the locks taken are released.
    """
    paths = list(dict.fromkeys(Path(path) for path in checkpoint_paths))
    with contextlib.ExitStack() as locks:
        if lock:
            for path in paths:
                locks.enter_context(RunFolderLock(path.parent))
        for path in paths:
            check_fresh_start(path, resume)
        yield


def _can_handle_signals() -> bool:
    return threading.current_thread() is threading.main_thread()


def _install(handler: signal.Handlers | object) -> dict[int, object]:
    """Install ``handler`` for SIGINT and SIGTERM (not where SIGINT is ignored, e.g. under
    ``nohup``); return the handlers it replaced."""
    replaced = {}
    for number in _STOP_SIGNALS:
        current = signal.getsignal(number)
        if number == signal.SIGINT and current == signal.SIG_IGN:
            continue
        replaced[number] = signal.signal(number, handler)  # type: ignore[arg-type]
    return replaced


def _restore(replaced: dict[int, object]) -> None:
    for number, handler in replaced.items():
        signal.signal(number, handler)  # type: ignore[arg-type]


def _raise_interrupted(number: int, frame: FrameType | None) -> None:
    raise Interrupted(number)


@contextlib.contextmanager
def interrupt_on_signals() -> Iterator[None]:
    """For the block's duration, SIGINT and SIGTERM raise :class:`Interrupted` (in the main
    thread; elsewhere signals cannot be handled and the block runs unchanged)."""
    if not _can_handle_signals():
        yield
        return
    replaced = _install(_raise_interrupted)
    try:
        yield
    finally:
        _restore(replaced)


class StopAtStepEnd:
    """Defer SIGINT and SIGTERM to the end of a training step (a context manager).

    Inside the block the first signal is only noted; the training loop asks
    :meth:`requested` after every step, writes its checkpoint and raises :meth:`interruption`.
    A second signal raises :class:`Interrupted` at once (e.g. during a long evaluation).
    Outside the main thread it never reports a stop.
    """

    def __init__(self) -> None:
        self.signal_number: int | None = None
        self._replaced: dict[int, object] = {}

    def _note(self, number: int, frame: FrameType | None) -> None:
        if self.signal_number is not None:
            raise Interrupted(number)
        self.signal_number = number

    def requested(self, distributed: bool, device: torch.device) -> bool:
        """Whether to stop now; under ``torchrun`` whether any process got a signal (a
        collective call: every process must ask at the same step)."""
        noted = self.signal_number is not None
        if not distributed:
            return noted
        flag = torch.tensor([float(noted)], device=device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        if flag.item() and self.signal_number is None:
            self.signal_number = signal.SIGTERM  # another process was told to stop
        return bool(flag.item())

    def interruption(self) -> Interrupted:
        """The exception that ends the run for the noted signal."""
        return Interrupted(self.signal_number or signal.SIGINT)

    def __enter__(self) -> StopAtStepEnd:
        if _can_handle_signals():
            self._replaced = _install(self._note)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        _restore(self._replaced)
        self._replaced = {}
