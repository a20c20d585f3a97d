"""Shared test set-up: isolation from the caller's environment and the test tiers.

* Every test starts without ``AUTOSEG_*`` environment variables, so a developer's shell (or a
  CI job's settings) can never change what a test sees; tests set the ones they need with
  ``monkeypatch.setenv``.
* ``@pytest.mark.slow`` tests run only with ``--run-slow``.
"""

from __future__ import annotations

import os

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--run-slow", action="store_true", default=False,
                     help="also run tests marked slow")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--run-slow"):
        return
    skip_slow = pytest.mark.skip(reason="slow: run with --run-slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip_slow)


@pytest.fixture(autouse=True)
def _no_autoseg_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Remove every ``AUTOSEG_*`` variable inherited from the caller's environment."""
    for name in list(os.environ):
        if name.startswith("AUTOSEG_"):
            monkeypatch.delenv(name)
