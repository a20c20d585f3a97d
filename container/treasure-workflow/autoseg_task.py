"""Treasure Workflow ``py>`` task: install the pinned autoseg in this container, then run it.

Hosted Treasure Workflow starts every ``py>`` task in a new container of TD's image, which has
Python 3.12, pytd and pandas but not autoseg, so ``py>: autoseg.workflow.run`` cannot be
imported there directly. This module (in the project archive, which Digdag's runner puts on
``sys.path``) is the task instead: it installs ``autoseg_requirement`` with pip and then calls
:func:`autoseg.workflow.run` with all the task's parameters.

* pip falls back to a user install (``--user``) in TD's rootless images. A user site folder
  that did not exist when Python started is not on ``sys.path``; it is put there, before the
  system site-packages (where ``site`` would have put it), so packages pip upgraded win.
* ``autoseg_requirement`` must be a direct reference, ``autoseg @ URL`` (a wheel on your
  release page or artifact store, ideally with ``#sha256=...``): the name ``autoseg`` on PyPI
  belongs to an unrelated project, so ``autoseg==0.1.0`` would install someone else's code.
* ``autoseg_xgboost: cpu`` (the default) installs ``xgboost-cpu`` in place of ``xgboost``: the
  same module without CUDA, which saves downloading and unpacking about 700 MB (NCCL and the
  CUDA build) on every run; TD's task containers have no GPU. ``full`` installs autoseg's
  requirements as they are.

Standard library only: it runs before anything is installed.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import re
import site
import subprocess
import sys
from typing import Any

_DIRECT_REFERENCE = re.compile(r"^\s*autoseg(\[[\w,\s-]*\])?\s*@\s*\S+\s*$")
_CREDENTIALS = re.compile(r"(//)[^/@\s]+@")
_EXTRA_MARKER = re.compile(r"""\bextra\s*==""")
_SWAP_CPU = {"xgboost": "xgboost-cpu"}


class InstallFailed(Exception):
    """Installing autoseg failed; ``str()`` is one line (the task's error message)."""


def run(autoseg_requirement: str, autoseg_xgboost: str = "cpu", **params: Any) -> Any:
    """Install autoseg, then run :func:`autoseg.workflow.run` with the task's parameters.

    Parameters
    ----------
    autoseg_requirement
        ``autoseg @ https://.../autoseg-0.1.0-py3-none-any.whl#sha256=...``.
    autoseg_xgboost
        ``cpu`` (install ``xgboost-cpu`` instead of ``xgboost``) or ``full``.
    **params
        Every task parameter; autoseg reads those named like its params file's keys.

    Returns
    -------
    dict
        :func:`autoseg.workflow.run`'s result (also stored as ``${autoseg.*}``).
    """
    try:
        install(autoseg_requirement, autoseg_xgboost)
    except InstallFailed:
        # The runner raises it again at top level: print its one line, not a traceback.
        sys.excepthook = _print_install_failure
        raise
    from autoseg.workflow import run as run_autoseg

    return run_autoseg(**params)


def install(requirement: str, xgboost: str = "cpu") -> None:
    """``pip install`` autoseg into the running interpreter and make it importable.

    Parameters
    ----------
    requirement
        A direct reference, ``autoseg @ URL``.
    xgboost
        ``cpu`` or ``full`` (see the module's docstring).

    Raises
    ------
    InstallFailed
        For a requirement that is not a direct reference or a failing pip.
    """
    if not _DIRECT_REFERENCE.match(str(requirement)):
        raise InstallFailed(
            f"autoseg: error: autoseg_requirement={_redact(str(requirement))!r} must be a "
            "direct reference, `autoseg @ https://.../autoseg-VERSION-py3-none-any.whl`: the "
            "name autoseg on PyPI is an unrelated project")
    if xgboost not in ("cpu", "full"):
        raise InstallFailed(f"autoseg: error: autoseg_xgboost={xgboost!r} is not one of: "
                            "cpu, full")
    if xgboost == "full":
        _pip(requirement)
        _activate_user_site()
        return
    _pip("--no-deps", requirement)
    _activate_user_site()
    _pip(*_requirements("autoseg", _SWAP_CPU))
    _activate_user_site()


def _requirements(distribution: str, swap: dict[str, str]) -> list[str]:
    """The installed distribution's own requirements (no extras), with names swapped."""
    lines = []
    for text in importlib.metadata.requires(distribution) or []:
        if _EXTRA_MARKER.search(text.partition(";")[2]):
            continue
        name = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", text)
        if name and name.group(1).lower() in swap:
            text = swap[name.group(1).lower()] + text[name.end():]
        lines.append(text)
    return lines


def _pip(*args: str) -> None:
    command = [sys.executable, "-m", "pip", "install", "--quiet", "--no-input",
               "--disable-pip-version-check", *args]
    done = subprocess.run(command, check=False)  # pip's own output goes to the task log
    if done.returncode != 0:
        shown = _redact(" ".join(args))
        raise InstallFailed(f"autoseg: error: `pip install {shown}` exited with "
                            f"{done.returncode}; pip's message is above")


def _activate_user_site() -> None:
    """Put the user site-packages on ``sys.path`` if pip installed there after start-up."""
    user_site = site.getusersitepackages()
    if site.ENABLE_USER_SITE and os.path.isdir(user_site) and user_site not in sys.path:
        system = [path for path in sys.path if path in set(site.getsitepackages())]
        sys.path.insert(sys.path.index(system[0]) if system else len(sys.path), user_site)
        site.addsitedir(user_site)  # already on the path: only reads its .pth files
    importlib.invalidate_caches()


def _print_install_failure(kind: type[BaseException], value: BaseException,
                           traceback: Any) -> None:
    if isinstance(value, InstallFailed):
        print(str(value), file=sys.stderr, flush=True)
        return
    sys.__excepthook__(kind, value, traceback)


def _redact(text: str) -> str:
    """Hide ``user:token@`` in index or wheel URLs."""
    return _CREDENTIALS.sub(r"\1***@", text)
