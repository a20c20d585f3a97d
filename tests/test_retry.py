"""Backoff timing shared by the HTTP clients."""

from __future__ import annotations

import pytest

from autoseg.retry import backoff_delay


@pytest.mark.parametrize(
    ("attempt", "retry_after", "expected"),
    [(0, None, 1.0), (2, None, 4.0), (10, None, 30.0), (0, "7", 7.0), (0, "soon", 1.0),
     (0, "120", 30.0)],
)
def test_backoff_is_exponential_honours_retry_after_and_is_capped(
    attempt: int, retry_after: str | None, expected: float
) -> None:
    assert backoff_delay(attempt, 1.0, 30.0, retry_after) == expected
