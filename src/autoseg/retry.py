"""Retry timing shared by the HTTP clients (Treasure Data store, CDP API)."""

from __future__ import annotations

import contextlib


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
