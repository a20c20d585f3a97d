"""Every file a run writes goes through here: staged beside its target, renamed in at the end.

A run stages each of its files first (:func:`stage_file`: a temporary file in the target's
directory, written, flushed, fsynced and given mode 0644), commits its tables, and only then
renames the staged files into place (:meth:`StagedFile.commit`: ``os.replace`` plus an fsync
of the directory, so the rename survives a power cut). A failure before the commit leaves
every existing file as it was; a reader never sees half a file. Files get mode 0644 whatever
the umask: they are reports and models meant to be read by the team (a private temporary
file, 0600, is what ``mkstemp`` would leave behind).

Every ``OSError`` becomes :class:`~autoseg.errors.OutputError` naming the path and the fix.
"""

from __future__ import annotations

import contextlib
import os
import signal
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autoseg.errors import Interrupted, OutputError

FILE_MODE = 0o644
DIRECTORY_MODE = 0o755
TEMPORARY_SUFFIX = ".tmp"


def _as_bytes(data: bytes | bytearray | str) -> bytes:
    return data.encode("utf-8") if isinstance(data, str) else bytes(data)


def make_directory(path: Path) -> Path:
    """Create ``path`` and its parents (mode 0755 before the umask) if missing.

    Raises
    ------
    OutputError
        When a directory cannot be created (the message names the first one that failed).
    """
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(exc.filename or path, exc, "create") from None
    return path


def fsync_directory(path: Path) -> None:
    """Flush a directory's entries (new names, renames) to the disk."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError as exc:
        raise OutputError(path, exc, "write") from None
    try:
        os.fsync(fd)
    except OSError as exc:
        # Some file systems cannot fsync a directory (EINVAL): the rename is still done.
        if exc.errno not in (22,):
            raise OutputError(path, exc, "write") from None
    finally:
        os.close(fd)


def write_probe(directory: Path, name: str) -> None:
    """Prove ``directory`` takes files: write, fsync and remove a small file ``name`` in it.

    Raises
    ------
    OSError
        As the file system reports it (the caller names the option and the fix).
    """
    probe = Path(directory) / name
    fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, b"autoseg probe\n")
        os.fsync(fd)
    finally:
        os.close(fd)
        probe.unlink(missing_ok=True)


def write_new_file(path: Path, data: bytes | bytearray | str) -> Path:
    """Write a file that nobody reads yet (one inside a staging directory): write, fsync, 0644.

    Raises
    ------
    OutputError
        Any operating-system error, naming ``path``.
    """
    path = Path(path)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
        with os.fdopen(fd, "wb") as handle:
            handle.write(_as_bytes(data))
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(path, FILE_MODE)  # the umask may have taken bits away
    except OSError as exc:
        raise OutputError(path, exc, "write") from None
    return path


@dataclass
class StagedFile:
    """A complete file written beside ``path``, not yet in place (see :func:`stage_file`)."""

    path: Path
    temporary: Path

    def commit(self) -> Path:
        """Rename the staged file onto ``path`` (atomic) and fsync the directory.

        Raises
        ------
        OutputError
            The rename failed; ``path`` is as it was and the staged file is removed.
        """
        try:
            os.replace(self.temporary, self.path)
        except OSError as exc:
            self.discard()
            raise OutputError(self.path, exc, "rename") from None
        fsync_directory(self.path.parent)
        return self.path

    def discard(self) -> None:
        """Remove the staged file (the run failed): ``path`` stays as it was."""
        with contextlib.suppress(OSError):
            self.temporary.unlink()


def stage_file(path: Path, data: bytes | bytearray | str) -> StagedFile:
    """Write ``data`` to a temporary file beside ``path``: complete, fsynced, mode 0644.

    Parameters
    ----------
    path
        The target; its directory is created when missing.
    data
        The file's bytes (a ``str`` is written as UTF-8).

    Returns
    -------
    StagedFile
        Call :meth:`StagedFile.commit` to put it in place, or :meth:`StagedFile.discard`.

    Raises
    ------
    OutputError
        Any operating-system error (full disk, permissions, ...), naming the path and the fix;
        nothing is left behind.
    """
    path = Path(path)
    make_directory(path.parent)
    try:
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMPORARY_SUFFIX,
                                    dir=path.parent)
    except OSError as exc:
        raise OutputError(path, exc, "write") from None
    temporary = Path(name)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(_as_bytes(data))
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, FILE_MODE)  # mkstemp makes it 0600
    except OSError as exc:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise OutputError(path, exc, "write") from None
    except BaseException:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise
    return StagedFile(path, temporary)


def write_file_atomically(path: Path, data: bytes | bytearray | str) -> Path:
    """Stage ``data`` beside ``path`` and rename it in at once (:func:`stage_file` + commit).

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    OutputError
        Any operating-system error; the previous file at ``path`` is unchanged.
    """
    return stage_file(path, data).commit()


# Signals received while :func:`signals_deferred` holds them (``None``: none are held).
_held: list[int] | None = None
# Signals whose handler raised Interrupted (see :func:`note_signal`).
_noted: list[int] = []


def note_signal(signum: int) -> None:
    """Remember that a signal arrived; the CLI's SIGTERM handler calls this before it raises.

    The handler's exception can be lost: raised while a log line is written, ``logging``
    swallows it (and a library's ``except Exception`` would too). :func:`raise_if_signalled`
    sees the note, so a run waiting for a lock still stops.
    """
    _noted.append(signum)


def forget_signals() -> None:
    """Forget noted signals (the CLI calls this when a run starts)."""
    _noted.clear()


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold SIGINT and SIGTERM while the block runs (the write stage: tables and renames).

    A signal that arrives meanwhile is remembered. Code that can still give up cleanly (a
    store waiting for a lock, or about to commit its transaction) calls
    :func:`raise_if_signalled` and stops with nothing written; past the table commit nothing
    gives up, and when the block has finished the run stops with
    :class:`~autoseg.errors.Interrupted` saying the outputs were written completely. So a
    signal never leaves new tables beside an old model and summary. If the block raises, that
    error wins. Outside the main thread (where handlers cannot be set) it does nothing.

    Raises
    ------
    Interrupted
        When a signal arrived during the block and nobody gave up on it.
    """
    global _held
    if threading.current_thread() is not threading.main_thread() or _held is not None:
        yield
        return
    received: list[int] = []

    def hold(signum: int, _frame: Any) -> None:
        received.append(signum)

    previous = {sig: signal.signal(sig, hold) for sig in (signal.SIGINT, signal.SIGTERM)}
    _held = received
    try:
        yield
    finally:
        _held = None
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if received:
        raise Interrupted(
            f"stopped by signal {signal.Signals(received[0]).name} during the final commit; "
            "it was finished first, so every output of this run is written and complete"
        )


def raise_if_signalled(where: str) -> None:
    """Give up now, with nothing written, if a held signal arrived (see :func:`signals_deferred`)
    or one whose exception may have been swallowed (see :func:`note_signal`).

    Call it where a run can still stop cleanly: between stages, in a wait loop, before a
    commit.

    Parameters
    ----------
    where
        What the run was doing, for the message (e.g. ``"while waiting for the lock"``).

    Raises
    ------
    Interrupted
        A signal arrived while signals are held; the caller must leave everything as it was.
    """
    pending = (_held or []) + _noted
    if pending:
        name = signal.Signals(pending[0]).name
        if _held:
            _held.clear()
        _noted.clear()
        raise Interrupted(f"stopped by signal {name} {where}; nothing was written")
