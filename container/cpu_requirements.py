"""Print the runtime requirements of the installed ``autoseg`` for the CPU image.

Used by ``Dockerfile.cpu`` after ``pip install --no-deps autoseg-*.whl``: the requirements are
read from the wheel's own metadata (so they never drift from ``pyproject.toml``), those of
extras only when the extra is asked for, and ``xgboost`` becomes ``xgboost-cpu`` with the same
version range. ``xgboost-cpu`` is the same library (the ``xgboost`` module) built without CUDA:
a 6 MB wheel instead of 130 MB plus NCCL (350 MB), neither of which a CPU-only image loads.

    python cpu_requirements.py [DISTRIBUTION [EXTRA,EXTRA...]]

Standard library only: it runs in a fresh venv, before anything else is installed.
"""

from __future__ import annotations

import re
import sys
from importlib.metadata import requires

SWAP = {"xgboost": "xgboost-cpu"}
_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)(.*)$")
_EXTRA = re.compile(r"""\s*(?:\band\s+)?\bextra\s*==\s*["']([^"']+)["']\s*(?:\band\b\s*)?""")


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def cpu_requirements(distribution: str = "autoseg", extras: str = "") -> list[str]:
    """The requirement lines of ``distribution`` and of the comma-separated ``extras``.

    Parameters
    ----------
    distribution
        An installed distribution.
    extras
        Extras whose requirements are included too, e.g. ``"dask"``; others are left out.

    Returns
    -------
    list[str]
        pip requirement lines, with the CPU-only swaps applied.
    """
    wanted = {_normalise(extra) for extra in extras.split(",") if extra.strip()}
    lines = []
    for text in requires(distribution) or []:
        spec, _, marker = text.partition(";")
        found = _EXTRA.search(marker)
        if found:
            if _normalise(found.group(1)) not in wanted:
                continue
            marker = _EXTRA.sub(" ", marker, count=1)
        marker = marker.strip()
        match = _NAME.match(spec)
        if match is None:
            raise SystemExit(f"cpu_requirements: cannot parse requirement {text!r}")
        name, rest = match.groups()
        name = SWAP.get(_normalise(name), name)
        line = name + rest.strip()
        lines.append(f"{line}; {marker}" if marker else line)
    return lines


if __name__ == "__main__":
    sys.stdout.write("".join(line + "\n" for line in cpu_requirements(*sys.argv[1:3])))
