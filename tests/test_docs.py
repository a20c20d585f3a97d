"""The README stays true: its commands are the ones CI runs, and it lists every option."""

from __future__ import annotations

from pathlib import Path

from autoseg.config import PARAMETERS

ROOT = Path(__file__).resolve().parents[1]


def test_ci_runs_the_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    test_command = next(line for line in ci.splitlines() if "pytest" in line)
    assert test_command.strip() in readme


def test_readme_has_the_demo_command_and_every_option() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "&& autoseg demo" in readme
    for param in PARAMETERS:
        assert f"`{param.flag}`" in readme, param.flag
        assert f"`{param.envvar}`" in readme, param.envvar
