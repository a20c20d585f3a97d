"""Device selection: which array namespace and estimators the stages use.

Only this module decides the device. This version ships the CPU backend (NumPy, pandas,
scikit-learn, XGBoost on CPU); the GPU backend (CuPy, cuDF, cuML) arrives in a later version,
so ``auto`` means CPU and an explicit ``gpu`` is a usage error.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from types import ModuleType

import numpy as np

from autoseg.errors import UsageError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Backend:
    """The device a run uses and its array namespace."""

    name: str  # "cpu" or "gpu"
    xp: ModuleType
    reason: str


def select_backend(device: str) -> Backend:
    """Pick the backend for ``--device auto|cpu|gpu``.

    Raises
    ------
    UsageError
        For ``gpu``, which this version cannot run.
    """
    if device == "gpu":
        raise UsageError(
            "--device=gpu: this version of autoseg has no GPU backend yet; use --device cpu "
            "(or auto)"
        )
    if device == "cpu":
        return Backend("cpu", np, "requested with --device cpu")
    reason = "GPU backend not available in this version"
    log.info("device auto: using the CPU (%s)", reason)
    return Backend("cpu", np, reason)
