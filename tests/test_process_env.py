"""Process settings made before NumPy loads: defaults that the user's own values override."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from autoseg.process_env import DEFAULTS

PROBE = ("import json, os, sys; import {module}; import numpy; "
         "print(json.dumps({{n: os.environ.get(n) for n in {names!r}}}))")


def _settings(module: str, env: dict[str, str]) -> dict[str, str | None]:
    clean = {k: v for k, v in os.environ.items() if k not in DEFAULTS}
    code = PROBE.format(module=module, names=sorted(DEFAULTS))
    out = subprocess.run([sys.executable, "-c", code], env={**clean, **env}, check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out)


@pytest.mark.parametrize("module", ["autoseg.cli", "autoseg.workflow"])
def test_the_entry_points_set_the_defaults_before_numpy(module: str) -> None:
    assert _settings(module, {}) == {"NUMPY_MADVISE_HUGEPAGE": "0",
                                     "OMP_WAIT_POLICY": "PASSIVE"}


def test_the_users_own_settings_win() -> None:
    assert _settings("autoseg.cli", {"OMP_WAIT_POLICY": "ACTIVE",
                                     "NUMPY_MADVISE_HUGEPAGE": "1"}) == {
        "NUMPY_MADVISE_HUGEPAGE": "1", "OMP_WAIT_POLICY": "ACTIVE"}


def test_nothing_imports_numpy_before_the_settings() -> None:
    # what the CLI imports before process_env (typer) loads no NumPy: the settings still apply
    code = ("import sys; import typer, autoseg.process_env; "
            "assert 'numpy' not in sys.modules, sorted(m for m in sys.modules if 'numpy' in m)")
    subprocess.run([sys.executable, "-c", code], check=True)
