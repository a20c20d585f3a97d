"""The single-machine row engine: the whole input in memory, numerics on the backend's device.

The input is read once as an Arrow table (from the store or a Parquet/CSV file); pandas is the
frame the stages read, and the Arrow table is what gets written back with ``cluster_id``
appended, so every input column keeps its exact type and values in the output.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa

from autoseg.checks import CLUSTER_COLUMN, check_column_names, check_csv_header
from autoseg.engine import InputInfo
from autoseg.io.files import read_file
from autoseg.lloyd import assign_in_blocks
from autoseg.model import data_fingerprint, prepare_matrix
from autoseg.names import parse_table_name
from autoseg.search import assign_rows, refit_on_all_rows

if TYPE_CHECKING:
    from autoseg.backend import Backend
    from autoseg.config import RunConfig
    from autoseg.features import FeatureSpec
    from autoseg.io import TableStore
    from autoseg.model import SegmentationModel
    from autoseg.reduce import Projection
    from autoseg.silhouette import SilhouetteScore


@dataclass
class _LocalRows:
    """Labelled rows of one machine: an Arrow table, nothing to stage on disk."""

    table: pa.Table | None

    def table_rows(self) -> pa.Table | None:
        return self.table

    def swap_in(self) -> None:
        return None

    def commit(self) -> str | None:
        return None

    def roll_back(self) -> None:
        return None


class LocalEngine:
    """Rows of a table or file, held in memory on this machine.

    Parameters
    ----------
    config
        The run configuration (input, seed).
    backend
        The device backend the numerics run on.
    """

    name = "local"
    # Scoring points against every row would cost a pass of GEMMs the single machine does not
    # need: its k search already saw every row, or a sample whose standard error is reported.
    all_rows_silhouette = False

    def __init__(self, config: RunConfig, backend: Backend) -> None:
        self.config = config
        self.backend = backend
        self._source: pa.Table | None = None
        self._frame: pd.DataFrame | None = None
        self._labels: np.ndarray | None = None

    def preflight(self) -> None:
        """Nothing beyond the shared checks: the outputs are tables and files."""

    def read(self, store: TableStore | None) -> InputInfo:
        """Read the whole input into memory: a Parquet/CSV file, or a table of ``store``."""
        config = self.config
        if config.input_is_file:
            check_csv_header(config.input_table)
            source = read_file(config.input_table)
        else:
            assert store is not None  # the run opens the store when it reads from it
            source = store.read_table(parse_table_name(config.input_table,
                                                            "--input-table"))
        check_column_names(source.column_names)
        self._source = source
        self._frame = source.to_pandas()
        return InputInfo(description=config.input_table, columns=list(source.column_names),
                         n_rows=len(self._frame), meta=self._frame.iloc[:0])

    @property
    def frame(self) -> pd.DataFrame:
        """The input as pandas (after :meth:`read`)."""
        assert self._frame is not None, "read() first"
        return self._frame

    def is_key(self, column: str) -> bool:
        """Whether ``column`` is unique over every row."""
        return bool(self.frame[column].is_unique)

    def take(self, rows: np.ndarray | None) -> pd.DataFrame:
        """The rows at ``rows`` (``None``: the whole frame, not copied)."""
        if rows is None:
            return self.frame
        return self.frame.iloc[rows].reset_index(drop=True)

    def missing_counts(self) -> dict[str, int]:
        """Exact missing values per column."""
        return {str(c): int(n) for c, n in self.frame.isna().sum().items()}

    def prepare_all(self, spec: FeatureSpec, projection: Projection | None) -> tuple[
            Any, dict[str, int]]:
        """The float32 matrix of every row (projected when PCA was fitted).

        With cuDF (a GPU backend with RAPIDS) the input becomes a cuDF frame and the matrix is
        built from it on the device, so the all-rows matrix never passes through host memory;
        the refit and the assignment of every row then use it there.
        """
        if self.backend.frames_on_device:
            assert self._source is not None, "read() first"
            device_frame = self.backend.frame_from_arrow(self._source)
            return prepare_matrix(device_frame, spec, projection, xp=self.backend.xp)
        return prepare_matrix(self.frame, spec, projection)

    def prepared_rows(self, prepared: Any, rows: np.ndarray | None, spec: FeatureSpec,
                      projection: Projection | None) -> np.ndarray:
        """Rows of the matrix already prepared, as a host array: no second pass over the
        table (from a device matrix, only these bounded rows are copied to the host)."""
        if rows is None:
            return self.backend.to_host(prepared)
        return self.backend.to_host(prepared[self.backend.xp.asarray(rows)])

    def fit_all_rows(self, prepared: np.ndarray, centroids: np.ndarray) -> tuple[
            np.ndarray, dict[str, Any]]:
        """One warm-started Lloyd run on every row (in blocks on the cores, or cuML on a GPU)."""
        centroids, facts = refit_on_all_rows(prepared, centroids, self.config.seed,
                                             self.backend)
        return centroids, {"done": True, **facts}

    def count(self, prepared: np.ndarray, centroids: np.ndarray,
              points: np.ndarray | None) -> tuple[list[int], SilhouetteScore | None]:
        """Assign every row (kept for the output table) and count the clusters."""
        if self.backend.is_gpu:
            labels, _ = assign_rows(prepared, centroids, self.backend)
        else:
            labels = assign_in_blocks(prepared, centroids)
        self._labels = labels
        sizes = np.bincount(labels, minlength=centroids.shape[0])
        return [int(s) for s in sizes], None

    @property
    def labels(self) -> np.ndarray | None:
        """Cluster id of every row (after :meth:`count`)."""
        return self._labels

    def release(self, prepared: Any) -> None:
        """Nothing to release: the matrix is freed with the last reference."""

    def fingerprint(self) -> dict[str, Any]:
        """Schema, rows and a hash of the first rows."""
        return data_fingerprint(self.frame)

    def facts(self) -> dict[str, Any]:
        """One machine has no partitions or workers."""
        return {"partitions": None, "workers": None}

    def stage_rows(self, model: SegmentationModel, write_table: bool) -> _LocalRows:
        """The input's Arrow table plus ``cluster_id`` (int32), when a table is written."""
        if not write_table:
            return _LocalRows(None)
        assert self._source is not None and self._labels is not None
        labels = pa.array(self._labels, type=pa.int32())
        return _LocalRows(self._source.append_column(CLUSTER_COLUMN, labels))

    def close(self) -> None:
        """Drop the rows held in memory."""
        self._source = self._frame = self._labels = None
