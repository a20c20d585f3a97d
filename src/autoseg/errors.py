"""Error types and the documented exit codes.

Every error a user can cause is an :class:`AutosegError` subclass whose message is one line
naming the option or column and the fix. The CLI prints the message and exits with the class's
``exit_code``; it never shows a traceback for these.

Exit codes
----------
0  success
1  internal error (a bug: please report it with the log)
2  usage error: a bad option, parameter value or params file
3  input data error: missing/empty table, unusable columns, data that does not fit the model
4  external service error: storage, Treasure Data, CDP API
130 interrupted (SIGINT/SIGTERM); nothing was written
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_USAGE = 2
EXIT_INPUT = 3
EXIT_SERVICE = 4
EXIT_INTERRUPTED = 130


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


class Interrupted(AutosegError):
    """The run was interrupted by a signal before anything was written."""

    exit_code = EXIT_INTERRUPTED
