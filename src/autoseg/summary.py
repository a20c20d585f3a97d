"""The run summary: one typed record that both engines fill, with its JSON form.

``summary.json``, the report and the console summary all read a :class:`RunSummary`. Every
field is present in every run (``None`` where it does not apply: ``partitions`` on one
machine, ``drift`` without a reused model), so the two engines' summaries have the same fields.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from autoseg import __version__

_VERSIONED_PACKAGES = ("numpy", "pandas", "scikit-learn", "duckdb", "pyarrow", "xgboost")


@dataclass
class RunSummary:
    """What a run did and found; ``to_dict()`` is the content of ``summary.json``.

    Nested parts (the EDA profile, cluster profiles, the explanation) are JSON-able dicts and
    lists produced by their stages.
    """

    parameters: dict[str, Any]
    engine: str  # "local" (one machine) or "dask"
    input: str  # the table name, file or dataset path read
    rows_read: int
    device: dict[str, Any]
    stages_device: dict[str, str]
    columns_used: list[str]
    columns_dropped: list[dict[str, str]]
    prepared_columns: int
    values_imputed: dict[str, int]
    pca_components: int | None
    profile: dict[str, Any]
    refit: bool
    chosen_k: int
    chosen_reason: str
    cluster_sizes: list[int]
    cluster_shares: list[float]
    explanation: dict[str, Any]
    explanation_rows: int
    clusters: list[dict[str, Any]]
    started_at: str
    k_search: list[dict[str, Any]] = field(default_factory=list)
    silhouette: dict[str, Any] | None = None
    alternatives: list[dict[str, Any]] | None = None  # what another k would change
    fit_all_rows: dict[str, Any] | None = None
    cluster_ids: dict[str, Any] | None = None
    drift: dict[str, Any] | None = None
    partitions: int | None = None
    workers: dict[str, Any] | None = None
    audience: dict[str, Any] | None = None
    audience_rules: dict[str, Any] | None = None
    outputs: dict[str, Any] = field(default_factory=dict)
    timings_seconds: dict[str, float] = field(default_factory=dict)
    finished_at: str | None = None
    versions: dict[str, str] = field(default_factory=lambda: package_versions())
    autoseg_version: str = __version__

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (strict JSON: NaN and infinities become ``null``)."""
        return json_safe(dataclasses.asdict(self))

    def to_json(self) -> str:
        """``to_dict()`` as indented JSON text, as written to ``summary.json``."""
        return json.dumps(self.to_dict(), indent=2, allow_nan=False)

    def __getitem__(self, key: str) -> Any:
        """Read a field by its JSON name (``summary["chosen_k"]``), as in ``summary.json``."""
        if key not in _FIELD_NAMES:
            raise KeyError(key)
        return getattr(self, key)

    def __contains__(self, key: object) -> bool:
        """Every field is present in every summary (``None`` where it does not apply)."""
        return key in _FIELD_NAMES

    def get(self, key: str, default: Any = None) -> Any:
        """A field by its JSON name, or ``default`` when it is ``None`` or unknown."""
        value = getattr(self, key, None) if key in _FIELD_NAMES else None
        return default if value is None else value


_FIELD_NAMES = frozenset(f.name for f in dataclasses.fields(RunSummary))


def package_versions() -> dict[str, str]:
    """Versions of autoseg and the numerical packages it ran with."""
    versions = {"autoseg": __version__}
    for package in _VERSIONED_PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            # the CPU image installs XGBoost as the xgboost-cpu distribution
            try:
                versions[package] = metadata.version(f"{package}-cpu")
            except metadata.PackageNotFoundError:
                versions[package] = "not installed"
    return versions


def json_safe(value: Any) -> Any:
    """``value`` as strict-JSON-able Python: NaN and infinities (NumPy's too) become ``None``,
    NumPy scalars and arrays plain numbers and lists, paths strings."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, (float, np.floating)) and not np.isfinite(value):
        return None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.ndarray):
        return json_safe(value.tolist())
    if isinstance(value, Path):
        return str(value)
    return value
