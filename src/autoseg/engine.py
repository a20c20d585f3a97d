"""What a row engine supplies to the run skeleton (``autoseg.pipeline.run``).

The order of a run (pre-flight, checks, fit or reuse, describe, summary, staged writes, commit,
audience, report) is written once, in the skeleton. An engine supplies only what differs
between one machine and a Dask cluster: how rows are read, gathered by position, prepared,
assigned and counted, how the chosen k is refitted on every row, and how the labelled rows are
staged and written. Two implementations: :class:`autoseg.local.LocalEngine` (pandas/NumPy or
CuPy on one machine) and :class:`autoseg.dask.engine.DaskEngine`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    import pyarrow as pa

    from autoseg.features import FeatureSpec
    from autoseg.io import RowChunks, TableStore
    from autoseg.model import SegmentationModel
    from autoseg.reduce import Projection
    from autoseg.silhouette import SilhouetteScore


@dataclass(frozen=True)
class InputInfo:
    """The input as the checks see it, without its rows.

    Attributes
    ----------
    description
        What was read (a table name, a file or a dataset path), for the summary.
    columns
        Column names in input order.
    n_rows
        Exact number of rows.
    meta
        A zero-row frame with the input's columns and pandas dtypes.
    """

    description: str
    columns: list[str]
    n_rows: int
    meta: pd.DataFrame


class StagedRows(Protocol):
    """The labelled rows of a run, staged: nothing is visible until :meth:`commit`."""

    def table_rows(self) -> pa.Table | RowChunks | None:
        """The rows plus ``cluster_id`` for ``--output-table`` (``None``: no table)."""
        ...

    def swap_in(self) -> None:
        """Put a staged file output (a dataset) in place; undone by :meth:`roll_back`."""
        ...

    def commit(self) -> str | None:
        """Finish: the tables were written. Returns the file output's location, if any."""
        ...

    def roll_back(self) -> None:
        """Leave every file output as it was before the run."""
        ...


class Engine(Protocol):
    """How one kind of run reads, samples, prepares, assigns, counts and writes rows."""

    name: str  # "local" or "dask", recorded in the summary
    all_rows_silhouette: bool  # whether count() can score points against every row

    def preflight(self) -> None:
        """Engine-specific checks of its outputs, before anything is read."""
        ...

    def read(self, store: TableStore | None) -> InputInfo:
        """Open the input (reading it, or only its schema and row count); ``store`` is the
        run's ``--store`` when the run reads from it."""
        ...

    def is_key(self, column: str) -> bool:
        """Whether ``column`` holds a different value on every row (exactly)."""
        ...

    def take(self, rows: np.ndarray | None) -> pd.DataFrame:
        """The input rows at sorted positions ``rows`` (``None``: every row), in that order,
        with a fresh ``RangeIndex``."""
        ...

    def missing_counts(self) -> dict[str, int]:
        """Exact missing values per column of the whole input."""
        ...

    def prepare_all(self, spec: FeatureSpec, projection: Projection | None) -> tuple[
            Any, dict[str, int]]:
        """The prepared matrix of every row (an engine handle) and imputed values per column."""
        ...

    def prepared_rows(self, prepared: Any, rows: np.ndarray | None, spec: FeatureSpec,
                      projection: Projection | None) -> np.ndarray:
        """The host matrix of the rows at ``rows`` (``None``: every row), from ``prepared``
        (:meth:`prepare_all`) or prepared afresh from those rows."""
        ...

    def fit_all_rows(self, prepared: Any, centroids: np.ndarray) -> tuple[
            np.ndarray, dict[str, Any]]:
        """Lloyd iterations on every row from ``centroids``; the centroids and facts."""
        ...

    def count(self, prepared: Any, centroids: np.ndarray, points: np.ndarray | None) -> tuple[
            list[int], SilhouetteScore | None]:
        """Exact cluster sizes of every row and, for ``points``, their silhouette against
        every row (``None`` without points)."""
        ...

    def release(self, prepared: Any) -> None:
        """Free the prepared matrix (also after a failure)."""
        ...

    def fingerprint(self) -> dict[str, Any]:
        """A fingerprint of the input, saved with a fitted model."""
        ...

    def facts(self) -> dict[str, Any]:
        """Engine facts for the summary: ``partitions`` and ``workers`` (``None`` locally)."""
        ...

    def stage_rows(self, model: SegmentationModel, write_table: bool) -> StagedRows:
        """Stage the labelled rows: a dataset beside its destination (Dask), and the rows
        for the table write when ``write_table``."""
        ...

    def close(self) -> None:
        """Release the engine's resources (a Dask client and its local cluster)."""
        ...

