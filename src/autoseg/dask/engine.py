"""The Dask row engine: a partitioned Parquet dataset read, prepared and labelled on workers.

What runs where:

* **workers, per partition**: reading, the fitted feature preparation and PCA projection, the
  per-partition Lloyd statistics, the exact cluster sizes and the silhouette's distance sums
  (reductions over partitions), the final assignment and the Parquet write;
* **client, on the run's row sets** (``autoseg.sampling``, gathered by global position): the
  feature and PCA fits, the k search, the describe stage — the same code and the same rows as
  on one machine, so a Dask run picks the same k and describes the clusters the same way.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import dask
import numpy as np
import pandas as pd
import pyarrow as pa
from distributed import Client

from autoseg.checks import CLUSTER_COLUMN
from autoseg.dask.cluster import client_from_options, workers
from autoseg.dask.dataset import Dataset, open_dataset, prepared_array
from autoseg.dask.fit import fit_all_rows, sizes_and_silhouette
from autoseg.dask.output import (
    StagedDataset,
    check_output_path,
    default_output_path,
    partition_chunks,
    stage_dataset,
)
from autoseg.engine import InputInfo
from autoseg.errors import UsageError
from autoseg.io import RowChunks
from autoseg.model import prepare_matrix

if TYPE_CHECKING:
    from autoseg.backend import Backend
    from autoseg.config import RunConfig
    from autoseg.features import FeatureSpec
    from autoseg.io import TableStore
    from autoseg.model import SegmentationModel
    from autoseg.reduce import Projection
    from autoseg.silhouette import SilhouetteScore

log = logging.getLogger(__name__)


@dataclass
class _DaskRows:
    """The labelled rows of a Dask run: a staged dataset and/or a stream for the table store."""

    engine: DaskEngine
    model: SegmentationModel
    schema: pa.Schema
    staged: StagedDataset | None
    write_table: bool

    def table_rows(self) -> RowChunks | None:
        """Rows streamed from the staged dataset, or straight from the partitions."""
        if not self.write_table:
            return None
        chunks = (self.staged.chunks() if self.staged is not None
                  else partition_chunks(self.engine.data, self.model, self.schema,
                                        self.engine.client))
        return RowChunks(schema=self.schema, chunks=chunks)

    def swap_in(self) -> None:
        # The dataset goes first: its swap can be undone, a committed table cannot.
        if self.staged is not None:
            self.staged.swap_in()

    def commit(self) -> str | None:
        if self.staged is None:
            return None
        self.staged.commit()
        return self.engine.output_path

    def roll_back(self) -> None:
        if self.staged is not None:
            self.staged.roll_back()


class DaskEngine:
    """Rows of a partitioned Parquet dataset on a Dask cluster.

    Parameters
    ----------
    config
        The run configuration.
    client
        A connected ``distributed.Client``; every Dask computation of the run goes through it.
    input_path
        Partitioned Parquet dataset: a local folder or an fsspec URL (``s3://bucket/path/``).
    output_path
        Where the labelled rows go as a dataset, or ``None`` when they go only to
        ``--output-table``. Staged beside its destination and swapped in before the table
        writes, the previous dataset kept aside until they succeed.
    backend
        The device backend (the cuML multi-GPU refit is used on a GPU backend).
    owns_client
        Close the client (and its local cluster) in :meth:`close`.
    """

    name = "dask"
    # After a fit on a sample, the final clustering is also scored against every row.
    all_rows_silhouette = True

    def __init__(self, config: RunConfig, client: Client, *, input_path: str,
                 output_path: str | None, backend: Backend, owns_client: bool = False) -> None:
        self.config = config
        self.client = client
        self.input_path = input_path
        self.output_path = output_path
        self.backend = backend
        self._data: Dataset | None = None
        self._whole: pd.DataFrame | None = None
        self._stack = contextlib.ExitStack()
        if owns_client:
            self._stack.callback(_close_client, client)
        self._stack.enter_context(dask.config.set(scheduler=client))

    def preflight(self) -> None:
        """The dataset output must not destroy data, and there must be an output at all."""
        config = self.config
        if self.output_path is None and not config.output_table:
            raise UsageError("a Dask run needs somewhere to write the labelled rows: give "
                             "--dask-output or --output-table")
        if self.output_path is not None:
            if config.output_mode == "append":
                raise UsageError(
                    "--output-mode=append adds rows to --output-table only: the --dask-output "
                    "dataset would be replaced, losing its rows; use --output-mode overwrite, "
                    "or write only to --output-table"
                )
            check_output_path(self.input_path, self.output_path)

    def read(self, store: TableStore | None) -> InputInfo:
        """List the dataset, check its files' schemas, count rows and missing values."""
        self._data = open_dataset(self.input_path)
        return InputInfo(description=self.input_path, columns=list(self._data.schema.names),
                         n_rows=self._data.n_rows, meta=self._data.frame._meta)

    @property
    def data(self) -> Dataset:
        """The opened dataset (after :meth:`read`)."""
        assert self._data is not None, "read() first"
        return self._data

    def is_key(self, column: str) -> bool:
        """Exact: distinct values (a tree reduction) plus at most one missing value."""
        missing = self.data.missing[column]
        if missing > 1:
            return False
        distinct = int(self.data.frame[column].nunique().compute())
        return distinct + missing == self.data.n_rows

    def take(self, rows: np.ndarray | None) -> pd.DataFrame:
        """Gather rows by global position; every row is gathered at most once (small tables)."""
        if rows is None:
            if self._whole is None:
                self._whole = self.data.take(np.arange(self.data.n_rows)).reset_index(drop=True)
            return self._whole
        if self._whole is not None:
            return self._whole.iloc[rows].reset_index(drop=True)
        return self.data.take(rows).reset_index(drop=True)

    def missing_counts(self) -> dict[str, int]:
        """Exact, counted while the dataset was opened."""
        return dict(self.data.missing)

    def prepare_all(self, spec: FeatureSpec, projection: Projection | None) -> tuple[
            Any, dict[str, int]]:
        """The prepared matrix as a persisted Dask array (the refit and the count read it).

        Imputed values are the exact missing counts of the columns used (infinite values,
        which one machine also imputes, are not counted: that would take another pass).
        """
        x = prepared_array(self.data, spec, projection).persist()
        used = [f.column for f in spec.numeric] + [c.column for c in spec.categorical]
        imputed = {c: int(self.data.missing[c]) for c in used if self.data.missing.get(c, 0)}
        return x, imputed

    def prepared_rows(self, prepared: Any, rows: np.ndarray | None, spec: FeatureSpec,
                      projection: Projection | None) -> np.ndarray:
        """The rows gathered to the client and prepared there (the matrix stays on the
        workers)."""
        return prepare_matrix(self.take(rows), spec, projection)[0]

    def fit_all_rows(self, prepared: Any, centroids: np.ndarray) -> tuple[
            np.ndarray, dict[str, Any]]:
        """Distributed Lloyd iterations (or cuML's multi-GPU KMeans), warm-started."""
        return fit_all_rows(prepared, centroids, self.config.seed, self.backend, self.client)

    def count(self, prepared: Any, centroids: np.ndarray,
              points: np.ndarray | None) -> tuple[list[int], SilhouetteScore | None]:
        """Exact sizes and the points' silhouette against every row, in one pass."""
        return sizes_and_silhouette(prepared, centroids, points)

    def release(self, prepared: Any) -> None:
        """Free the persisted matrix on the workers."""
        if prepared is not None:
            self.client.cancel(prepared)

    def fingerprint(self) -> dict[str, Any]:
        """Rows and the dataset's location."""
        return {"rows": self.data.n_rows, "input_path": self.input_path}

    def facts(self) -> dict[str, Any]:
        """Partitions of the input and the cluster's workers."""
        return {"partitions": int(self.data.frame.npartitions), "workers": workers(self.client)}

    def stage_rows(self, model: SegmentationModel, write_table: bool) -> _DaskRows:
        """Label every partition into a hidden staging dataset (when a dataset is written)."""
        schema = self.data.schema.append(pa.field(CLUSTER_COLUMN, pa.int32()))
        staged = (stage_dataset(self.data, model, self.output_path, schema)
                  if self.output_path is not None else None)
        return _DaskRows(self, model, schema, staged, write_table)

    def close(self) -> None:
        """Leave the scheduler setting and close an owned client and its local cluster."""
        self._whole = None
        self._stack.close()


def _close_client(client: Client) -> None:
    cluster = getattr(client, "cluster", None)  # None when connected to a remote scheduler
    client.close()
    if cluster is not None:
        cluster.close()


def engine_from_config(config: RunConfig, backend: Backend) -> DaskEngine:
    """The engine of ``--dask local`` / ``--dask-scheduler``: a client for the run, and the
    dataset output (``--dask-output``, by default ``<input>-clustered`` when no table is
    written)."""
    client = client_from_options(config.dask_scheduler, config.dask == "local",
                                 config.dask_workers)
    assert client is not None  # config.on_dask
    output = config.dask_output or (None if config.output_table
                                    else default_output_path(config.input_table))
    return DaskEngine(config, client, input_path=config.input_table, output_path=output,
                      backend=backend, owns_client=True)

