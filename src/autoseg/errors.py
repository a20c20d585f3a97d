"""Error types, the documented exit codes, and the one place that maps an exception to them.

Every error a user can cause is an :class:`AutosegError` subclass whose message is one line
naming the option, column or path and the fix. The CLI (and any other entry point) turns an
exception into an exit code and a one-line message with :func:`classify`; it never shows a
traceback for these. Only a real bug is an "internal error".

Exit codes
----------
0  success
1  internal error (a bug: please report it with the log)
2  usage error: a bad option, parameter value or params file; also an output or model
   directory that the pre-flight finds cannot be created or written, and a saved model that
   cannot be read
3  input data error: missing/empty table, unusable columns, data that does not fit the model
4  external service error: the table store (DuckDB file, Treasure Data), CDP API, network
5  local file system error: a file or directory could not be written or read during the run
   (full disk, quota, permissions, read-only file system, I/O error); the message names the
   path and the fix
6  out of memory: an allocation failed (Python's ``MemoryError``, CuPy's out-of-memory error)
130 interrupted (SIGINT/SIGTERM); the message says whether anything was written
"""

from __future__ import annotations

import errno as errno_codes
import os
import socket

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_USAGE = 2
EXIT_INPUT = 3
EXIT_SERVICE = 4
EXIT_FILESYSTEM = 5
EXIT_MEMORY = 6
EXIT_INTERRUPTED = 130

INTERNAL_MESSAGE = "internal error (a bug); please report it with the log above"
MEMORY_MESSAGE = (
    "out of memory: the run needs more memory than this machine or container allows: raise "
    "the memory limit, or run on a Dask cluster (--dask local or --dask-scheduler)"
)
GPU_MEMORY_MESSAGE = (
    "out of GPU memory: the run needs more memory than the GPU has: run with --device cpu, on "
    "a GPU with more memory, or on a Dask cluster (--dask local or --dask-scheduler)"
)


class AutosegError(Exception):
    """Base class of errors caused by the user's input or environment."""

    exit_code: int = EXIT_INTERNAL


class UsageError(AutosegError):
    """A parameter, option or params file is wrong."""

    exit_code = EXIT_USAGE


class InputDataError(AutosegError):
    """The input table cannot be segmented as given."""

    exit_code = EXIT_INPUT


class ServiceError(AutosegError):
    """A storage backend or remote service failed."""

    exit_code = EXIT_SERVICE


class FileSystemError(AutosegError):
    """A local file or directory could not be written or read (exit 5)."""

    exit_code = EXIT_FILESYSTEM


class Interrupted(AutosegError):
    """The run was interrupted by a signal (the message says whether anything was written)."""

    exit_code = EXIT_INTERRUPTED


def _directory_of(path: str) -> str:
    parent = os.path.dirname(os.path.abspath(path))
    return parent or path


def os_error_fix(path: str, code: int | None) -> str:
    """What an operator does about the operating-system error ``code`` on ``path``.

    Parameters
    ----------
    path
        The file or directory the error is about.
    code
        ``OSError.errno`` (``None`` when unknown).

    Returns
    -------
    str
        A short imperative sentence, e.g. ``"free space on the file system of '/out'"``.
    """
    where = _directory_of(path)
    fixes = {
        errno_codes.ENOSPC: f"free space on the file system of {where!r} and run again",
        errno_codes.EDQUOT: f"free space in your disk quota on {where!r} (or raise the quota)",
        errno_codes.EFBIG: ("the file grew past the file-size limit (ulimit -f) or the file "
                            "system's maximum: raise the limit or write to another directory"),
        errno_codes.EACCES: f"make {where!r} writable for this user or choose another directory",
        errno_codes.EPERM: f"make {where!r} writable for this user or choose another directory",
        errno_codes.EROFS: f"{where!r} is on a read-only file system: choose a writable directory",
        errno_codes.EIO: "the disk reported an I/O error: check the device and run again",
        errno_codes.ENOENT: (
            f"{where!r} does not take new files or folders: choose another directory"
            if os.path.isdir(where) else
            f"{where!r} does not exist (removed during the run?): create it"),
        errno_codes.ENOTDIR: f"a part of {path!r} is a file, not a directory: fix the path",
        errno_codes.EISDIR: f"{path!r} is a directory: remove it or choose another path",
        errno_codes.ENAMETOOLONG: f"{path!r} is too long a name: choose a shorter path",
        errno_codes.EMFILE: "too many open files: raise the limit (ulimit -n)",
        errno_codes.ENFILE: "too many open files on the system: try again later",
        errno_codes.ENOMEM: "out of memory: give the run more memory",
    }
    return fixes.get(code or -1, f"check {where!r} and run again")


def _errno_name(code: int | None) -> str:
    return errno_codes.errorcode.get(code or -1, "")


def os_error_message(path: str, error: OSError | int, action: str = "write") -> str:
    """The one-line message for an operating-system error on ``path``.

    Parameters
    ----------
    path
        The file or directory that failed.
    error
        The ``OSError`` (or just its errno).
    action
        What was being done: ``"write"``, ``"create"``, ``"read"``, ``"rename"``.

    Returns
    -------
    str
        E.g. ``cannot write '/out/summary.json': No space left on device (ENOSPC): free space
        on the file system of '/out' and run again``.
    """
    code = error if isinstance(error, int) else error.errno
    reason = os.strerror(code) if code else str(error).splitlines()[0] if str(error) else ""
    name = _errno_name(code)
    detail = f"{reason} ({name})" if name else reason or "operating-system error"
    return f"cannot {action} {str(path)!r}: {detail}: {os_error_fix(str(path), code)}"


class OutputError(FileSystemError):
    """Writing (or creating, renaming) a file or directory of the run failed.

    Parameters
    ----------
    path
        The file or directory that failed.
    error
        The ``OSError`` raised (or its errno).
    action
        ``"write"``, ``"create"`` or ``"rename"``, for the message.
    """

    def __init__(self, path: str | os.PathLike[str], error: OSError | int,
                 action: str = "write") -> None:
        self.path = os.fspath(path)
        self.errno = error if isinstance(error, int) else error.errno
        super().__init__(os_error_message(self.path, error, action))


# Errors of the network, not of the local disk: a remote service is unreachable.
_NETWORK_ERRNOS = {
    errno_codes.ECONNREFUSED, errno_codes.ECONNRESET, errno_codes.ECONNABORTED,
    errno_codes.ETIMEDOUT, errno_codes.EHOSTUNREACH, errno_codes.ENETUNREACH,
    errno_codes.ENETDOWN, errno_codes.EHOSTDOWN,
}


def _one_line(text: str) -> str:
    return " ".join(text.split()) if text else ""


def classify(exc: BaseException) -> tuple[int, str]:
    """The exit code and one-line message of an exception that ended a run.

    The single mapping used by the CLI and by every other entry point (a workflow task, say):
    an :class:`AutosegError` keeps its own code and message; an operating-system error is
    exit 5 naming the path and the fix (network errors are exit 4); a ``MemoryError`` is exit 6;
    Ctrl-C is exit 130; anything else is a bug (exit 1, "internal error").

    Parameters
    ----------
    exc
        The exception.

    Returns
    -------
    tuple of (int, str)
        The exit code and the message without the ``autoseg: error:`` prefix.
    """
    if isinstance(exc, AutosegError):
        return exc.exit_code, _one_line(str(exc))
    if isinstance(exc, KeyboardInterrupt):
        return EXIT_INTERRUPTED, "interrupted; nothing was written"
    if isinstance(exc, MemoryError):
        # A failed allocation is the machine's limit, not a bug (the kernel's OOM kill is
        # another matter: it ends the process with 137 before any handler runs). CuPy's
        # OutOfMemoryError is a MemoryError too: the GPU's memory, with another fix.
        if type(exc).__module__.startswith("cupy"):
            return EXIT_MEMORY, GPU_MEMORY_MESSAGE
        return EXIT_MEMORY, MEMORY_MESSAGE
    module = type(exc).__module__ or ""
    if module.startswith(("duckdb", "_duckdb")) and type(exc).__name__ in (
            "IOException", "OutOfMemoryException", "PermissionException"):
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return EXIT_SERVICE, f"the DuckDB store failed: {first}"
    if isinstance(exc, OSError):
        network = (isinstance(exc, (ConnectionError, TimeoutError, socket.gaierror))
                   or exc.errno in _NETWORK_ERRNOS
                   or module.startswith(("requests", "urllib3", "http", "aiohttp")))
        if network:
            return EXIT_SERVICE, f"network error: {_one_line(str(exc))}: check the connection"
        path = exc.filename if exc.filename is not None else None
        if path is not None:
            return EXIT_FILESYSTEM, os_error_message(os.fsdecode(path), exc, "use")
        reason = _one_line(str(exc)) or type(exc).__name__
        return EXIT_FILESYSTEM, f"operating-system error: {reason}"
    return EXIT_INTERNAL, INTERNAL_MESSAGE
