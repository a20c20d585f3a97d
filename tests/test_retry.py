"""The one retry loop of the HTTP clients: back-off timing, what is retried, what is logged."""

from __future__ import annotations

import logging

import pytest

from autoseg.retry import RetryPolicy, Transient, backoff_delay, error_name


@pytest.mark.parametrize(
    ("attempt", "retry_after", "expected"),
    [(0, None, 1.0), (2, None, 4.0), (10, None, 30.0), (0, "7", 7.0), (0, "soon", 1.0),
     (0, "120", 30.0)],
)
def test_backoff_is_exponential_honours_retry_after_and_is_capped(
    attempt: int, retry_after: str | None, expected: float
) -> None:
    assert backoff_delay(attempt, 1.0, 30.0, retry_after) == expected


def _log() -> logging.Logger:
    return logging.getLogger("autoseg.test_retry")


def test_transient_replies_are_retried_then_the_last_one_is_returned(
    caplog: pytest.LogCaptureFixture,
) -> None:
    replies = iter([503, 429, 503, 503])
    released = []

    def attempt(retries: int) -> tuple[int, int]:
        return next(replies), retries

    def transient(reply: tuple[int, int]) -> Transient | None:
        return Transient(f"answered HTTP {reply[0]}", "0") if reply[0] >= 429 else None

    caplog.set_level(logging.WARNING)
    result = RetryPolicy(2, 0.0, 0.0).call(attempt, what="GET /x", log=_log(),
                                          transient=transient, discard=released.append)
    assert result == (503, 2)  # two retries, then the third reply stands
    assert released == [(503, 0), (429, 1)]
    assert [r.getMessage() for r in caplog.records] == [
        "GET /x answered HTTP 503; retry 1 of 2 in 0.0 s",
        "GET /x answered HTTP 429; retry 2 of 2 in 0.0 s",
    ]


def test_a_success_after_a_transient_error_is_returned() -> None:
    def attempt(retries: int) -> str:
        if retries < 1:
            raise ConnectionResetError("reset")
        return "ok"

    assert RetryPolicy(3, 0.0, 0.0).call(attempt, what="GET /x", log=_log(),
                                         errors=(OSError,)) == "ok"


def test_a_call_that_is_not_retryable_runs_once() -> None:
    tries = []

    def attempt(retries: int) -> int:
        tries.append(retries)
        raise TimeoutError("no reply")

    with pytest.raises(TimeoutError, match="no reply"):
        RetryPolicy(4, 0.0, 0.0).call(attempt, what="POST /x", log=_log(), retryable=False,
                                      errors=(OSError,))
    assert tries == [0]
    assert RetryPolicy(4, 0.0, 0.0).call(lambda r: 500, what="POST /x", log=_log(),
                                         retryable=False,
                                         transient=lambda s: Transient("HTTP 500")) == 500


def test_the_last_transient_error_propagates_unchanged_and_others_at_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Wrapped(OSError):
        def __init__(self) -> None:
            super().__init__("wrapped")
            self.reason = ConnectionRefusedError()

    errors: list[BaseException] = []

    def refused(retries: int) -> None:
        errors.append(Wrapped())
        raise errors[-1]

    caplog.set_level(logging.WARNING)
    with pytest.raises(Wrapped) as info:
        RetryPolicy(1, 0.0, 0.0).call(refused, what="GET /x", log=_log(), errors=(OSError,))
    assert info.value is errors[-1] and len(errors) == 2
    assert caplog.records[0].getMessage() == (
        "GET /x failed (ConnectionRefusedError); retry 1 of 1 in 0.0 s")
    assert caplog.records[0].name == "autoseg.test_retry"

    def broken(retries: int) -> None:
        errors.append(ValueError("a bug"))
        raise errors[-1]

    with pytest.raises(ValueError, match="a bug"):
        RetryPolicy(3, 0.0, 0.0).call(broken, what="GET /x", log=_log(), errors=(OSError,))
    assert len(errors) == 3


def test_policy_delay_is_backoff_delay() -> None:
    policy = RetryPolicy(4, 1.0, 30.0)
    assert [policy.delay(n) for n in range(6)] == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0]
    assert policy.delay(0, "7") == 7.0


def test_error_name_names_the_wrapped_cause() -> None:
    class Wrapper(Exception):
        reason: object = None

    wrapped = Wrapper()
    assert error_name(wrapped) == "Wrapper"
    wrapped.reason = TimeoutError()
    assert error_name(wrapped) == "TimeoutError"
    wrapped.reason = "a text reason"
    assert error_name(wrapped) == "Wrapper"
