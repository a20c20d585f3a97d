"""Print the requirements of the GPU image from ``pyproject.toml``, before the source is copied.

Used by ``Dockerfile``: installing the dependencies (about 7 GB of wheels) in a layer that
depends on ``pyproject.toml`` alone lets a rebuild after a source change reuse that layer; the
autoseg wheel is then installed with ``--no-deps`` on top and ``pip check`` verifies the set.

    python gpu_requirements.py PYPROJECT CUDA_MAJOR [EXTRA,EXTRA...]

The lines are ``[project] dependencies``, the GPU extra for ``CUDA_MAJOR`` (``gpu`` for 12,
``gpu-cu13`` for 13) and the comma-separated extras asked for; an extra that names autoseg
itself (``autoseg[gpu,dask]``) is expanded in place. Standard library only (``tomllib``:
Python 3.11+): it runs before anything is installed.
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

GPU_EXTRA = {"12": "gpu", "13": "gpu-cu13"}
_SELF = re.compile(r"^\s*autoseg\s*\[([^\]]*)\]\s*$", re.IGNORECASE)


def gpu_extra(cuda_major: str) -> str:
    """The extra with the RAPIDS wheels for a CUDA major version (``"12"`` or ``"13"``)."""
    try:
        return GPU_EXTRA[cuda_major]
    except KeyError:
        raise SystemExit(f"gpu_requirements: CUDA_MAJOR={cuda_major!r} must be one of "
                         f"{', '.join(GPU_EXTRA)}") from None


def gpu_requirements(pyproject: Path, cuda_major: str, extras: str = "") -> list[str]:
    """The requirement lines of the GPU image.

    Parameters
    ----------
    pyproject
        Path of ``pyproject.toml``.
    cuda_major
        ``"12"`` or ``"13"``: picks the ``gpu`` or ``gpu-cu13`` extra.
    extras
        Further comma-separated extras, e.g. ``"dask"``.

    Returns
    -------
    list[str]
        pip requirement lines, without duplicates, in declaration order.
    """
    project = tomllib.loads(pyproject.read_text())["project"]
    optional = project.get("optional-dependencies", {})
    lines: list[str] = list(project["dependencies"])
    wanted = [gpu_extra(cuda_major)] + [e.strip() for e in extras.split(",") if e.strip()]
    seen: set[str] = set()
    while wanted:
        extra = wanted.pop(0)
        if extra in seen:
            continue
        seen.add(extra)
        if extra not in optional:
            raise SystemExit(f"gpu_requirements: autoseg has no extra {extra!r}")
        for line in optional[extra]:
            match = _SELF.match(line)
            if match:
                wanted.extend(e.strip() for e in match.group(1).split(",") if e.strip())
            elif line not in lines:
                lines.append(line)
    return lines


if __name__ == "__main__":
    if len(sys.argv) not in (3, 4):
        raise SystemExit("usage: gpu_requirements.py PYPROJECT CUDA_MAJOR [EXTRA,EXTRA...]")
    found = gpu_requirements(Path(sys.argv[1]), sys.argv[2], *sys.argv[3:4])
    sys.stdout.write("".join(line + "\n" for line in found))
