"""Secrets (the Treasure Data API key) kept out of every message and log record.

:func:`register_secret` is called by whatever receives a key (the TD store, the CDP client);
from then on :func:`scrub` masks it, and so does a filter on the loggers of the TD client
libraries (tdclient logs request headers, ``Authorization: TD1 <key>`` included, at DEBUG) and
on every autoseg logger made with :func:`scrubbed_logger`. A filter on the logger that creates a
record applies before any handler, pytest's ``caplog`` and root handlers included.
"""

from __future__ import annotations

import logging
import re
import threading

_SECRETS: set[str] = set()
_SECRETS_LOCK = threading.Lock()
_TD1_RE = re.compile(r"(TD1\s+)[^\s'\"]+", re.IGNORECASE)
# Loggers of the libraries that talk to Treasure Data on our behalf.
_LIBRARY_LOGGERS = (
    "tdclient", "tdclient.api", "tdclient.job_api", "tdclient.util", "tdclient.bulk_import_model",
    "pytd", "pytd.client", "pytd.writer", "pytd.table", "pytd.query_engine",
    "urllib3", "urllib3.connectionpool", "urllib3.connection", "urllib3.response",
    "urllib3.poolmanager", "urllib3.util.retry",
)


def scrub(text: str) -> str:
    """Return ``text`` with every registered secret and ``TD1 <key>`` value masked.

    Parameters
    ----------
    text
        Any text that may hold a key (an upstream error message, a log line).

    Returns
    -------
    str
        The text with keys replaced by ``***``.
    """
    with _SECRETS_LOCK:
        known = sorted(_SECRETS, key=len, reverse=True)
    for secret in known:
        text = text.replace(secret, "***")
    return _TD1_RE.sub(r"\1***", text)


def one_line(text: str, limit: int) -> str:
    """``text`` scrubbed, on one line, cut to ``limit`` characters (for error messages).

    Parameters
    ----------
    text
        Upstream text (an error body, an exception's message).
    limit
        Most characters kept; a longer text ends in ``...``.

    Returns
    -------
    str
    """
    text = " ".join(scrub(str(text)).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


class _ScrubFilter(logging.Filter):
    """Rewrites log records that would show a registered secret."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken record is not ours to fix; keep it as it is
            return True
        cleaned = scrub(message)
        if cleaned != message:
            record.msg, record.args = cleaned, ()
        return True


_FILTER = _ScrubFilter()


def scrubbed_logger(name: str) -> logging.Logger:
    """The logger ``name`` with every record scrubbed of registered secrets.

    Parameters
    ----------
    name
        Logger name (a module's ``__name__``).

    Returns
    -------
    logging.Logger
    """
    target = logging.getLogger(name)
    if _FILTER not in target.filters:
        target.addFilter(_FILTER)
    return target


def register_secret(secret: str) -> None:
    """Mask ``secret`` in every later message and in log records of the TD client libraries.

    Parameters
    ----------
    secret
        An API key (empty strings are ignored).
    """
    if not secret:
        return
    with _SECRETS_LOCK:
        _SECRETS.add(secret)
    for name in _LIBRARY_LOGGERS:
        scrubbed_logger(name)
