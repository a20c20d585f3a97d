"""Bounded retries with exponential back-off: the one retry loop of the HTTP clients.

The Treasure Data store and the CDP API client both send every request through
:meth:`RetryPolicy.call`. The caller decides what may be retried at all (idempotent requests
only: a request that changes state is never re-sent blindly) and which outcomes are transient
(HTTP 429/5xx, time-outs, connection errors); this module decides how often and how long to
wait, and logs each retry on the caller's logger.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple, TypeVar

T = TypeVar("T")


def backoff_delay(
    attempt: int, base: float, maximum: float, retry_after: str | None = None
) -> float:
    """Seconds to wait before retry number ``attempt + 1``.

    Exponential backoff ``base * 2**attempt``, never shorter than a server's ``Retry-After``
    (seconds), capped at ``maximum``.
    """
    wait = base * (2**attempt)
    if retry_after:
        with contextlib.suppress(ValueError):
            wait = max(wait, float(retry_after))
    return max(0.0, min(wait, maximum))


def error_name(exc: BaseException) -> str:
    """The name of what really failed (urllib3 and urllib wrap it in ``reason``).

    Parameters
    ----------
    exc
        A transport exception, e.g. ``MaxRetryError`` or ``URLError``.

    Returns
    -------
    str
        E.g. ``ConnectionRefusedError`` or ``ReadTimeoutError``.
    """
    cause = getattr(exc, "reason", None)
    return type(cause if isinstance(cause, BaseException) else exc).__name__


class Transient(NamedTuple):
    """A reply worth retrying: what happened (for the log) and the server's ``Retry-After``."""

    outcome: str
    retry_after: str | None = None


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to retry a transient failure.

    Parameters
    ----------
    max_retries
        Retries after the first try.
    backoff_base, backoff_max
        Retry ``n`` (from 0) waits ``min(backoff_base * 2**n, backoff_max)`` seconds (longer
        when a reply asks for it with ``Retry-After``, still capped).
    """

    max_retries: int = 4
    backoff_base: float = 1.0
    backoff_max: float = 30.0

    def delay(self, attempt: int, retry_after: str | None = None) -> float:
        """Seconds to wait before retry number ``attempt + 1`` (see :func:`backoff_delay`)."""
        return backoff_delay(attempt, self.backoff_base, self.backoff_max, retry_after)

    def call(
        self,
        attempt: Callable[[int], T],
        *,
        what: str,
        log: logging.Logger,
        retryable: bool = True,
        errors: tuple[type[BaseException], ...] = (),
        transient: Callable[[T], Transient | None] | None = None,
        discard: Callable[[T], None] | None = None,
    ) -> T:
        """Run ``attempt`` until it succeeds, fails for good, or the retries are spent.

        Parameters
        ----------
        attempt
            One try; it receives the number of retries so far (0 on the first try).
        what
            The call, for the log (e.g. ``"CDP API GET /entities/parent_segments"``).
        log
            Where each retry is logged, as a warning.
        retryable
            ``False`` for a call that must never be re-sent (it changes state): it runs once.
        errors
            Exceptions that are transient (time-outs, connection errors); any other exception
            propagates at once. When the retries are spent the last one propagates unchanged.
        transient
            Says whether a returned value is a transient failure worth retrying (HTTP 429/5xx);
            when the retries are spent that value is returned.
        discard
            Releases a transient value before the retry (e.g. returns a connection to its pool).

        Returns
        -------
        T
            What the last try returned.
        """
        tries = 0
        while True:
            try:
                result = attempt(tries)
            except errors as exc:
                if not retryable or tries >= self.max_retries:
                    raise
                verdict = Transient(f"failed ({error_name(exc)})")
            else:
                verdict = transient(result) if transient is not None else None
                if verdict is None or not retryable or tries >= self.max_retries:
                    return result
                if discard is not None:
                    with contextlib.suppress(Exception):  # best effort: the retry goes on
                        discard(result)
            wait = self.delay(tries, verdict.retry_after)
            log.warning("%s %s; retry %d of %d in %.1f s", what, verdict.outcome, tries + 1,
                        self.max_retries, wait)
            time.sleep(wait)
            tries += 1
