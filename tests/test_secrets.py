"""Registered secrets are masked in messages and in log records of scrubbed loggers."""

from __future__ import annotations

import logging

import pytest

from autoseg.secrets import one_line, register_secret, scrub, scrubbed_logger

SECRET = "1/SENTINEL-secrets-test-0b6e2d"


def test_scrub_masks_registered_secrets_and_td1_values() -> None:
    register_secret(SECRET)
    register_secret("")  # ignored: an empty string must not mask everything
    assert scrub(f"key={SECRET}; Authorization: td1 other-key") == (
        "key=***; Authorization: td1 ***")
    assert scrub("nothing to hide") == "nothing to hide"


def test_one_line_scrubs_joins_and_cuts() -> None:
    register_secret(SECRET)
    assert one_line(f"upstream\n  said {SECRET}\n", 80) == "upstream said ***"
    assert one_line("x" * 50, 10) == "xxxxxxx..."


def test_scrubbed_logger_rewrites_records_before_any_handler(
    caplog: pytest.LogCaptureFixture,
) -> None:
    register_secret(SECRET)
    log = scrubbed_logger("autoseg.test_secrets")
    assert scrubbed_logger("autoseg.test_secrets") is log and len(log.filters) == 1
    caplog.set_level(logging.DEBUG)
    log.warning("sending %s with %s", "GET /x", f"TD1 {SECRET}")
    assert [r.getMessage() for r in caplog.records] == ["sending GET /x with TD1 ***"]


def test_register_secret_scrubs_the_td_client_libraries_loggers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    register_secret(SECRET)
    caplog.set_level(logging.DEBUG)
    logging.getLogger("tdclient.api").debug("headers: %s", {"Authorization": f"TD1 {SECRET}"})
    assert SECRET not in caplog.text and "TD1 ***" in caplog.text
