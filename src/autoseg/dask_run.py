"""The same segmentation job on a Dask cluster, for tables larger than one machine.

``run_on_dask(config, client, input_path=..., output_path=...)`` reads a partitioned Parquet
dataset (a local folder or an fsspec URL such as ``s3://bucket/customers/``) and writes the rows
plus ``cluster_id`` as a partitioned Parquet dataset and/or, with ``--output-table``, into the
same table stores as the single-machine run (DuckDB, Treasure Data), streamed one partition at a
time. What runs where:

* **workers, per partition**: reading, the fitted feature preparation (``FeatureSpec.transform``)
  and PCA projection, the per-partition Lloyd statistics (nearest centroid, per-cluster sums
  and counts), the exact cluster sizes and the silhouette's distance sums (a reduction over
  partitions), the final nearest-centroid assignment and the Parquet write;
* **client, on bounded samples**: fitting the ``FeatureSpec`` and the PCA, the whole k search
  (``autoseg.search.search_k``: restarts, silhouettes, stability), the sum of the Lloyd
  statistics and the centroid update (k x d numbers), and the describe stage shared with the
  single-machine run (``autoseg.pipeline.describe_clusters``: explanation, profiles, rules,
  drift), then the table writes and the CDP audience through the shared helpers.

Sampling decisions are the single-machine ones (``autoseg.pipeline``): rows are chosen by their
*global position* in the dataset with the same generator calls and seeds, so the same rows in the
same order give the same sample, hence the same k. The one deliberate difference: on tables of
more than ``features.FIT_SAMPLE_ROWS`` rows the column decisions that the single-machine path
makes on the full column (type, "unique integer row id") see the fit sample only.

Dask is an optional dependency (``autoseg[dask]``); this module imports it at import time, so
import it only when a Dask run was asked for.
"""

from __future__ import annotations

import contextlib
import logging
import os
import posixpath
import re
import uuid
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dask
import dask.dataframe as dd
import fsspec
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pads
from distributed import Client
from fsspec.implementations.local import LocalFileSystem

from autoseg import __version__
from autoseg.audience import CDPClient, cdp_client_from_environment
from autoseg.backend import Backend, select_backend
from autoseg.config import RunConfig
from autoseg.errors import InputDataError, ServiceError, UsageError
from autoseg.features import FIT_SAMPLE_ROWS as FEATURE_FIT_ROWS
from autoseg.features import FeatureSpec, fit_features
from autoseg.io import RowChunks, TableStore, open_store
from autoseg.model import SegmentationModel
from autoseg.names import TableName, parse_table_name
from autoseg.pipeline import (
    CLUSTER_COLUMN,
    DESCRIBE_ROWS,
    REPORT_FILE,
    SUMMARY_FILE,
    _check_output_dir,
    _check_output_table,
    _explanation_summary,
    _projection_sample,
    _sample_rows,
    _stability_stage,
    _stable_ids,
    _Timer,
    _write_json_atomically,
    describe_clusters,
    search_candidates,
    search_is_sampled,
    search_summary,
    stage_model,
    sync_audiences,
    table_writes,
)
from autoseg.profile import profile_table
from autoseg.reduce import FIT_SAMPLE_ROWS as PCA_FIT_ROWS
from autoseg.reduce import Projection, fit_projection
from autoseg.report import write_report
from autoseg.search import (
    SearchResult,
    nearest_centroid,
    nearest_centroid_with_distance,
)
from autoseg.silhouette import SilhouetteScore, distance_sums, silhouette_from_sums

log = logging.getLogger(__name__)

# scikit-learn KMeans defaults, so the distributed refit stops where refit_on_all_rows stops.
LLOYD_MAX_ITER = 300
LLOYD_TOL = 1e-4
# Points of the describe sample whose silhouette is computed against *every* row of the table
# (the distance sums are a Dask reduction) after the all-rows fit. Each point costs one pass of
# d-dimensional distances over the table, so the point-row pairs are capped: 2,000 points (a
# standard error of about 0.005) up to 2M rows, fewer beyond, never under 500 (about 0.01).
# Measured with 2 workers on 2 cores: 2,000 points against 10M rows took 28 s, half the run.
ALL_ROWS_SILHOUETTE_POINTS = 2_000
ALL_ROWS_SILHOUETTE_MIN_POINTS = 500
ALL_ROWS_SILHOUETTE_PAIRS = 4_000_000_000
# Parquet footers read at once when the input's files are checked (round trips on S3).
FOOTER_READERS = 16
# Partitions computed ahead per worker while a table store consumes them one at a time.
STREAM_AHEAD_PER_WORKER = 2


@dataclass
class _Dataset:
    """The input as Dask sees it, plus the partition lengths that map global rows to partitions."""

    frame: dd.DataFrame
    offsets: np.ndarray  # (npartitions + 1,) first global row of each partition, then n_rows
    schema: pa.Schema  # the input's Arrow schema: the output keeps every column's exact type
    missing: dict[str, int]  # exact missing values per column (NaN included, as pandas counts)

    @property
    def n_rows(self) -> int:
        return int(self.offsets[-1])

    def take(self, rows: np.ndarray) -> pd.DataFrame:
        """Gather the rows at sorted global positions ``rows`` to the client, in that order.

        Only the chosen rows travel: each partition is read on a worker and cut there.
        """
        parts = []
        for i, part in enumerate(self.frame.to_delayed()):
            lo, hi = np.searchsorted(rows, [self.offsets[i], self.offsets[i + 1]])
            if hi > lo:
                parts.append(dask.delayed(_take_rows)(part, rows[lo:hi] - self.offsets[i]))
        taken = list(dask.compute(*parts))
        if not taken:
            return self.frame._meta.copy()
        return pd.concat(taken, ignore_index=True)


def run_on_dask(
    config: RunConfig, client: Client, *, input_path: str, output_path: str | None,
    environ: Mapping[str, str] | None = None, on_stage: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Segment a partitioned Parquet dataset on a Dask cluster.

    Parameters
    ----------
    config
        The validated run configuration; ``input_table`` is not used (the dataset path is
        given explicitly), every other setting is, including ``--output-table``, the exports,
        the audience, ``--model-name`` with ``--no-force-refit`` and ``--prefer-stable``.
    client
        A connected ``distributed.Client``; every Dask computation of the run goes through it.
    input_path
        Partitioned Parquet dataset: a local folder or an fsspec URL (``s3://bucket/path/``).
    output_path
        Where the rows plus ``cluster_id`` go, as a partitioned Parquet dataset, or ``None``
        when they go only to ``--output-table``. It is written to a temporary sibling first,
        moved into place (the previous dataset kept aside) and the previous dataset deleted
        only after the table writes succeeded, so a failure leaves no half-written dataset and
        an existing dataset at ``output_path`` as it was. It must not overlap the input, and an
        existing folder there must hold only a Parquet dataset (it is replaced).
    environ
        Environment holding ``TD_API_KEY`` / ``TD_API_SERVER`` for ``--store td`` and the
        audience (the CLI passes ``os.environ``; the library never reads it itself).
    on_stage
        Called with a stage's name when it starts.

    Returns
    -------
    dict
        The run summary (also written to ``config.output_dir / "summary.json"``): chosen k,
        scores of every k, the all-rows silhouette, cluster sizes, timings, workers, outputs.

    Raises
    ------
    InputDataError
        Empty input, an existing ``cluster_id`` column, too few rows for the k range, a
        missing or non-unique ``--rowid-column``, columns the saved model needs.
    UsageError
        ``output_dir`` not writable, nothing to write, an ``output_path`` that overlaps the
        input or holds other files, ``--output-mode append`` with a dataset output,
        ``--device gpu`` without a GPU, a missing saved model.
    ServiceError
        The table store or the CDP API failed; nothing was written.
    """
    _check_output_dir(config.output_dir)
    output_name = (parse_table_name(config.output_table, "--output-table")
                   if config.output_table else None)
    if output_path is None and output_name is None:
        raise UsageError("a Dask run needs somewhere to write the labelled rows: give "
                         "--dask-output or --output-table")
    if output_path is not None:
        if config.output_mode == "append":
            raise UsageError(
                "--output-mode=append adds rows to --output-table only: the --dask-output "
                "dataset would be replaced, losing its rows; use --output-mode overwrite, or "
                "write only to --output-table"
            )
        _check_output_path(input_path, output_path)
    backend = select_backend(config.device)
    saved_model = None
    if not config.force_refit:
        assert config.model_name is not None  # checked in config
        saved_model = SegmentationModel.load(config.model_dir / config.model_name,
                                             config.model_name)
    uses_store = output_name is not None or any(
        (config.export_feature_importance, config.export_shap_values,
         config.export_segment_rules))
    store = open_store(config.store, environ, config.td_engine) if uses_store else None
    try:
        # Credentials and the CDP endpoint are checked before any work starts.
        cdp = (cdp_client_from_environment(environ or {}, config.cdp_endpoint)
               if config.audience_enabled else None)
        run = _DaskRun(config, client, input_path, output_path, output_name, store, cdp,
                       saved_model, backend, _Timer(on_stage))
        with dask.config.set(scheduler=client):
            return run.execute()
    finally:
        if store is not None:
            store.close()


@dataclass
class _DaskRun:
    """One Dask run's inputs; :meth:`execute` runs the stages in the single-machine order."""

    config: RunConfig
    client: Client
    input_path: str
    output_path: str | None
    output_name: TableName | None
    store: TableStore | None
    cdp: CDPClient | None
    saved_model: SegmentationModel | None
    backend: Backend
    timer: _Timer

    def execute(self) -> dict[str, Any]:
        config, timer = self.config, self.timer
        with timer.stage("read"):
            data = _open_dataset(self.input_path)
        _check_input(data, config, self.saved_model)
        if self.output_name is not None:
            assert self.store is not None
            self.store.check_columns(self.output_name, [*data.schema.names, CLUSTER_COLUMN])
            _check_output_table(self.store, self.output_name, data.frame._meta,
                                config.output_mode)
        n_rows = data.n_rows
        # The whole table, gathered once, when it is no larger than a fit sample: then every
        # fit below sees exactly the rows the single-machine path sees.
        whole = data.take(np.arange(n_rows)) if n_rows <= FEATURE_FIT_ROWS else None

        search = None
        id_matching = None
        refit: dict[str, Any] = {"done": False}
        if self.saved_model is None:
            model, search, refit, id_matching, x = self._fit(data, whole)
        else:
            model = self.saved_model
            x = prepared_array(data, model.spec, model.projection)
            log.info("reusing saved model %r (k=%d); no fitting", config.model_name, model.k)

        try:
            with timer.stage("describe_sample"):
                # The rows the single-machine run describes: the same uniform sample.
                rows = _sample_rows(n_rows, DESCRIBE_ROWS, config.seed)
                if rows is None:
                    sample = whole if whole is not None else data.take(np.arange(n_rows))
                else:
                    sample = whole.iloc[rows] if whole is not None else data.take(rows)
                sample = sample.reset_index(drop=True)
                _check_rowid_sample(sample, config)
                prepared = _prepare(sample, model.spec, model.projection)
                labels, distances = nearest_centroid_with_distance(prepared, model.centroids)

            with timer.stage("assign"):
                # Exact sizes; after a fit on a sample, also the chosen clustering's
                # silhouette against every row (the search scored the sample only).
                points = None
                if search is not None and refit["done"]:
                    chosen = _sample_rows(len(prepared), all_rows_silhouette_points(n_rows),
                                          config.seed)
                    points = prepared if chosen is None else prepared[chosen]
                sizes, all_rows_silhouette = sizes_and_silhouette(x, model.centroids, points)
        finally:
            # Release the persisted matrix on the workers, also when a stage failed (a
            # long-lived client would otherwise keep it while the error is handled).
            self.client.cancel(x)
            del x

        with timer.stage("explain"):
            described = describe_clusters(sample, labels, distances, np.asarray(sizes), model,
                                          config, reused=self.saved_model is not None,
                                          xgboost_device=self.backend.xgboost_device)
            eda = profile_table(sample, config.hide_table_contents, config.seed)
            # Distributions come from the sample; missing counts are exact, as on one machine.
            for column in eda["column_profiles"]:
                column["missing"] = data.missing[column["name"]]
            eda["rows"] = n_rows
            eda["sampled_rows"] = len(sample)
            projection_2d = _projection_sample(prepared, labels, config.seed)

        summary = self._summary(data, model, search, refit, sizes, all_rows_silhouette,
                                described, eda, id_matching)
        outputs = self._write(data, model, described)
        if self.cdp is not None and self.output_name is not None:
            summary.update(sync_audiences(self.cdp, config, self.output_name, described,
                                          timer))
        summary["outputs"].update(outputs)
        summary["timings_seconds"] = timer.seconds
        _write_json_atomically(config.output_dir / SUMMARY_FILE, summary)
        with timer.stage("report"):
            write_report(config.output_dir / REPORT_FILE, summary, projection_2d,
                         config.hide_table_contents)
        return summary

    def _fit(self, data: _Dataset, whole: pd.DataFrame | None) -> tuple[
            SegmentationModel, SearchResult, dict[str, Any], dict[str, Any] | None, Any]:
        """Features, PCA and the k search on client samples, then the all-rows refit."""
        config, timer, seed, n_rows = self.config, self.timer, self.config.seed, data.n_rows
        with timer.stage("features"):
            if whole is not None:
                fit_frame = whole
            else:
                # pandas' frame.sample(n, random_state=seed) inside fit_features draws these.
                picked = np.random.RandomState(seed).choice(n_rows, FEATURE_FIT_ROWS,
                                                            replace=False)
                fit_frame = data.take(np.sort(picked))
            spec = fit_features(fit_frame, config.ignore_columns, seed)

        with timer.stage("reduce"):
            projection = _fit_projection(data, spec, whole, config)

        sampled = search_is_sampled(config, n_rows)
        with timer.stage("search"):
            rows = _sample_rows(n_rows, config.search_sample_size, seed) if sampled else None
            if rows is not None:
                search_frame = data.take(rows)
            else:
                search_frame = whole if whole is not None else data.take(np.arange(n_rows))
            search_x = _prepare(search_frame, spec, projection)
            search = search_candidates(search_x, n_rows, config, self.backend)
        _stability_stage(search, search_x, config, timer)
        centroids = search.centroids
        refit: dict[str, Any] = {"done": False}
        x = prepared_array(data, spec, projection)
        if sampled:
            x = x.persist()  # prepared once; the refit and the size pass both read it
            try:
                with timer.stage("fit_all_rows"):
                    centroids, refit = fit_all_rows(x, centroids, config,
                                                    gpu=self.backend.is_gpu)
            except BaseException:
                self.client.cancel(x)  # the caller never sees it: release it here
                raise
            log.info("k=%d refitted on all %d rows on Dask (%s, %s iterations)",
                     search.chosen_k, n_rows, refit["engine"], refit["iterations"])
        centroids, id_matching = _stable_ids(config, spec, projection, centroids)
        model = SegmentationModel(spec=spec, centroids=centroids, projection=projection,
                                  k=search.chosen_k,
                                  fingerprint={"rows": n_rows, "input_path": self.input_path})
        return model, search, refit, id_matching, x

    def _write(self, data: _Dataset, model: SegmentationModel,
               described: Any) -> dict[str, Any]:
        """Dataset (staged), tables (streamed), then the dataset swap and the model.

        The dataset is written to a hidden sibling first; the labelled table is streamed from
        it (or, without a dataset, straight from the partitions) inside the store's
        all-or-nothing write; only then is the dataset renamed into place.
        """
        config = self.config
        outputs: dict[str, Any] = {"dataset": self.output_path,
                                   "output_table": (str(self.output_name)
                                                    if self.output_name else None),
                                   "store": self.store.description if self.store else None,
                                   "model": None}
        schema = data.schema.append(pa.field(CLUSTER_COLUMN, pa.int32()))
        with self.timer.stage("write"):
            staged = (_stage_dataset(data, model, self.output_path, schema)
                      if self.output_path is not None else None)
            staged_model = None
            try:
                if config.model_name and self.saved_model is None:
                    staged_model = stage_model(model, config, described.explanation)
                # The dataset first: its swap can be undone, a committed table cannot.
                if staged is not None:
                    staged.swap_in()
                labelled = None
                if self.output_name is not None:
                    chunks = (staged.chunks() if staged is not None
                              else _partition_chunks(data, model, schema, self.client))
                    labelled = RowChunks(schema=schema, chunks=chunks)
                writes = table_writes(config, self.output_name, labelled, described)
                if writes:
                    assert self.store is not None
                    self.store.write_tables(writes)
            except BaseException:
                if staged_model is not None:
                    staged_model.discard()
                if staged is not None:
                    staged.roll_back()
                raise
            if staged is not None:
                staged.commit()
            if staged_model is not None:
                outputs["model"] = str(staged_model.commit())
        return outputs

    def _summary(self, data: _Dataset, model: SegmentationModel, search: SearchResult | None,
                 refit: dict[str, Any], sizes: list[int],
                 all_rows_silhouette: SilhouetteScore | None, described: Any,
                 eda: dict[str, Any], id_matching: dict[str, Any] | None) -> dict[str, Any]:
        config, n_rows, spec = self.config, data.n_rows, model.spec
        summary: dict[str, Any] = {
            "autoseg_version": __version__,
            "engine": "dask",
            "parameters": config.public_dict(),
            "input_path": self.input_path,
            "rows_read": n_rows,
            "partitions": data.frame.npartitions,
            "workers": _workers(self.client),
            "columns_used": spec.used_columns,
            "columns_dropped": [{"column": d.column, "reason": d.reason} for d in spec.dropped],
            "prepared_columns": len(spec.matrix_columns),
            "pca_components": (int(model.projection.components.shape[0])
                               if model.projection is not None else None),
            "refit": search is not None,
            "chosen_k": model.k,
            "device": self.backend.describe(),
        }
        if search is not None:
            summary.update(search_summary(search))
        else:
            summary["chosen_reason"] = f"reused saved model {config.model_name!r}"
        if all_rows_silhouette is not None:
            summary["silhouette"]["all_rows"] = {
                "score": all_rows_silhouette.score,
                "stderr": all_rows_silhouette.stderr,
                "points_scored": all_rows_silhouette.n_points,
                "rows": n_rows,
                "per_cluster": list(all_rows_silhouette.per_cluster),
            }
        summary.update({
            "fit_all_rows": refit,
            "cluster_sizes": sizes,
            "cluster_shares": [round(s / n_rows, 6) for s in sizes],
            "explanation": _explanation_summary(described.explanation,
                                                described.explanation_note),
            "explanation_rows": int(eda["sampled_rows"]),
            "profile": eda,
            "clusters": described.profiles,
            "outputs": {"summary": str(config.output_dir / SUMMARY_FILE),
                        "report": str(config.output_dir / REPORT_FILE)},
        })
        if id_matching is not None:
            summary["cluster_ids"] = id_matching
        if described.drift is not None:
            summary["drift"] = described.drift
        return summary


# What an earlier output may hold: Dask's part files (``part.0.parquet``, ours zero-padded)
# directly in the folder, and the metadata files Dask or Spark write beside them. Anything else
# (another dataset, a subfolder, a user's file) is not ours to delete.
_OUTPUT_PART = re.compile(r"part\.\d+\.parquet")
_DATASET_EXTRAS = ("_metadata", "_common_metadata", "_SUCCESS")


def _is_output_file(folder: str, path: str) -> bool:
    relative = path[len(folder):].lstrip("/")
    return "/" not in relative and (bool(_OUTPUT_PART.fullmatch(relative))
                                    or relative in _DATASET_EXTRAS)


def _check_output_path(input_path: str, output_path: str) -> None:
    """Refuse an output that would destroy data: the output replaces the folder at its path.

    The path must not be the input, contain it or lie inside it, and an existing folder there
    must hold nothing but a Parquet dataset (an earlier output).
    """
    out_fs, out = fsspec.core.url_to_fs(output_path)
    in_fs, source = fsspec.core.url_to_fs(input_path)
    out, source = _comparable(out_fs, out), _comparable(in_fs, source)
    same_store = out_fs.protocol == in_fs.protocol
    if same_store and (out == source or source.startswith(out + "/")
                       or out.startswith(source + "/")):
        raise UsageError(
            f"--dask-output={output_path!r} overlaps the input dataset {input_path!r}: it "
            "would be replaced; choose a path outside the input"
        )
    if not posixpath.dirname(out):
        raise UsageError(f"--dask-output={output_path!r} is the root of its store (a bucket): "
                         "give a folder inside it")
    if not out_fs.exists(out):
        return
    if not out_fs.isdir(out):
        raise UsageError(f"--dask-output={output_path!r} exists and is not a dataset folder: "
                         "choose another output path")
    # Keys ending in "/" are the empty "folder" markers of S3 consoles and Hadoop.
    others = [f for f in out_fs.find(out) if not f.endswith("/")
              and f.rstrip("/") != out and not _is_output_file(out, f)]
    if others:
        shown = others[0][len(out):].lstrip("/")
        raise UsageError(
            f"--dask-output={output_path!r} holds {shown!r}, which is not part of an earlier "
            "autoseg output, and the folder would be replaced: choose an empty folder or an "
            "earlier output"
        )


def _comparable(fs: fsspec.AbstractFileSystem, path: str) -> str:
    """A path normalised for comparison: absolute and without links on a local disk."""
    path = path.rstrip("/")
    if isinstance(fs, LocalFileSystem):
        return os.path.realpath(path)
    return path


# File names Dask's Parquet reader takes from a folder; it skips others (and hidden ones).
_PARQUET_SUFFIXES = (".parquet", ".parq", ".pq")


def _open_dataset(input_path: str) -> _Dataset:
    try:
        fs, path = fsspec.core.url_to_fs(input_path)
        files, base = _parquet_files(fs, path)
    except (OSError, ValueError) as exc:
        raise InputDataError(f"input dataset {input_path!r} cannot be listed ({_reason(exc)}): "
                             "give a folder or URL of Parquet files") from None
    if not files:
        found = fs.exists(path.rstrip("/")) if not any(ch in path for ch in "*?[") else True
        problem = "holds no Parquet files" if found else "does not exist"
        raise InputDataError(f"input dataset {input_path!r} {problem}: give a folder or URL "
                             "of Parquet files")
    # Strings stay pandas' default string dtype and dates stay datetime.date objects, as
    # pyarrow's to_pandas gives them on the single-machine path: the FeatureSpec then makes the
    # same decisions. (Dask would otherwise turn them into pyarrow-backed dtypes.) A stored
    # named index comes back as a column (index=False), as the single-machine reader gives it.
    with dask.config.set({"dataframe.convert-string": False}):
        try:
            frame = dd.read_parquet(input_path, index=False)
        except (FileNotFoundError, OSError, ValueError, KeyError) as exc:
            raise InputDataError(
                f"input dataset {input_path!r} cannot be read as Parquet ({_reason(exc)}): "
                "give a folder or URL of Parquet files"
            ) from None
    columns = [c for c in frame.columns if c != "__null_dask_index__"]
    frame = frame[columns]
    schema = _input_schema(fs, files, base, columns)
    # One pass over the data gives both the partition lengths and the exact missing counts.
    meta = pd.DataFrame({i: pd.Series(dtype="int64") for i in range(len(columns) + 1)})
    counts = frame.map_partitions(_partition_counts, meta=meta).compute()
    lengths = counts[0].to_numpy(dtype=np.int64)
    missing = {c: int(counts[i + 1].sum()) for i, c in enumerate(columns)}
    return _Dataset(frame=frame, offsets=np.concatenate([[0], np.cumsum(lengths)]),
                    schema=schema, missing=missing)


def _partition_counts(frame: pd.DataFrame) -> pd.DataFrame:
    """One row: the partition's length, then each column's missing values, by position."""
    return pd.DataFrame([[len(frame), *frame.isna().sum().tolist()]],
                        columns=range(frame.shape[1] + 1), dtype="int64")


def _reason(exc: BaseException) -> str:
    """An error in one line; Dask wraps the reader's error in a two-line message."""
    cause = exc.__cause__ or exc
    return " ".join(f"{type(cause).__name__}: {cause}".split())


def _parquet_files(fs: fsspec.AbstractFileSystem, path: str) -> tuple[list[str], str | None]:
    """The Parquet files Dask reads for ``path`` (a file, a folder or a glob), sorted, and the
    folder hive partition names are relative to (``None`` for a file or a glob)."""
    if any(ch in path for ch in "*?["):
        return sorted(fs.glob(path)), None
    path = path.rstrip("/")
    if not fs.isdir(path):
        return ([path] if fs.exists(path) else []), None
    files = []
    for found in fs.find(path):
        relative = found[len(path):].lstrip("/").split("/")
        if any(part.startswith((".", "_")) for part in relative):
            continue  # hidden files and folders, _metadata, _SUCCESS: Dask skips them too
        if found.endswith(_PARQUET_SUFFIXES):
            files.append(found)
    return sorted(files), path


def _input_schema(fs: fsspec.AbstractFileSystem, files: list[str], base: str | None,
                  columns: list[str]) -> pa.Schema:
    """The Arrow schema of the columns Dask reads, checked file by file (footers only).

    Every file must have the same columns, with types Arrow can unify (``string`` and
    ``large_string``, ``timestamp[us]`` and ``[ns]``, a column all null in some files), so a
    mismatch is refused here, before any work, rather than failing (or printing a cell)
    part-way through the write. Hive partition columns (``region=north/``) stay in, as Dask
    reads them.
    """
    partitioning = pads.HivePartitioning.discover() if base is not None else None
    try:
        dataset = pads.dataset(files, filesystem=fs, format="parquet",
                               partitioning=partitioning, partition_base_dir=base)
        fragments = list(dataset.get_fragments())
        # One footer read per file: on object stores each is a round trip, so in parallel.
        with ThreadPoolExecutor(max_workers=FOOTER_READERS) as pool:
            schemas = list(pool.map(lambda f: f.physical_schema, fragments))
    except (OSError, ValueError) as exc:  # pa.ArrowInvalid is a ValueError
        raise InputDataError(f"an input file cannot be read as Parquet ({_reason(exc)}): "
                             "remove or rewrite it") from None
    first: tuple[set[str], str] | None = None
    for fragment, physical in zip(fragments, schemas, strict=True):
        where = fragment.path.rsplit("/", 1)[-1]
        names = {n for n in physical.names if n in columns}
        if first is None:
            first = (names, where)
        elif names != first[0]:
            missing = sorted(first[0] - names)
            extra = sorted(names - first[0])
            problem = (f"lacks column {missing[0]!r}" if missing
                       else f"has column {extra[0]!r} that {first[1]!r} lacks")
            raise InputDataError(
                f"input file {where!r} {problem}: every file of the dataset must have the "
                "same columns (rewrite the dataset with one schema)"
            )
    try:
        unified = pa.unify_schemas([s.remove_metadata() for s in schemas],
                                   promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        raise _type_conflict(fragments, schemas, columns) from None
    full = dataset.schema
    fields = [unified.field(c) if c in unified.names else full.field(c) for c in columns]
    return pa.schema(fields)


def _type_conflict(fragments: list[Any], schemas: list[pa.Schema],
                   columns: list[str]) -> InputDataError:
    """The first column whose types two files cannot share, as a one-line error."""
    seen: dict[str, tuple[pa.Field, str]] = {}
    for fragment, physical in zip(fragments, schemas, strict=True):
        where = fragment.path.rsplit("/", 1)[-1]
        for name in (n for n in physical.names if n in columns):
            field = physical.field(name)
            if name not in seen:
                seen[name] = (field, where)
                continue
            try:
                pa.unify_schemas([pa.schema([seen[name][0]]), pa.schema([field])],
                                 promote_options="permissive")
            except (pa.ArrowInvalid, pa.ArrowTypeError):
                return InputDataError(
                    f"column {name!r} is {field.type} in input file {where!r} but "
                    f"{seen[name][0].type} in {seen[name][1]!r}: every file of the dataset "
                    "must give a column one type (rewrite the dataset with one schema)"
                )
    return InputDataError("the input files' column types cannot be unified: rewrite the "
                          "dataset with one schema")


def _check_input(data: _Dataset, config: RunConfig,
                 saved_model: SegmentationModel | None) -> None:
    """The single-machine input checks, from the schema and the row count (no data pass)."""
    columns = list(data.schema.names)
    if data.n_rows == 0:
        raise InputDataError("the input dataset is empty: it has no rows to cluster")
    if CLUSTER_COLUMN in columns:
        raise InputDataError(
            f"the input dataset already has a {CLUSTER_COLUMN!r} column: drop or rename it "
            "first (it would be overwritten)"
        )
    unknown = [c for c in config.ignore_columns if c not in columns and c != "time"]
    if unknown:
        log.warning("--ignore-columns: %s not in the input; ignored", ", ".join(map(repr, unknown)))
    if config.rowid_column and config.rowid_column not in columns:
        raise InputDataError(
            f"--rowid-column={config.rowid_column!r} is not a column of the input: use one "
            "of its columns"
        )
    if saved_model is not None:
        saved_model.spec.check_columns(data.frame._meta)
        return
    needed = config.num_clusters or config.max_clusters
    if data.n_rows < needed + 1:
        option = "num_clusters" if config.num_clusters else "max_clusters"
        raise InputDataError(
            f"n_rows={data.n_rows} must be >= {option}+1={needed + 1}: lower "
            f"--{option.replace('_', '-')} or give more rows"
        )


def _check_rowid_sample(sample: pd.DataFrame, config: RunConfig) -> None:
    """``--rowid-column`` must be a key. Checked on the describe sample (up to 200,000 rows):
    an exact check over hundreds of millions of rows would need a shuffle; a non-key column
    (a country, a segment) repeats within any sample of that size."""
    if config.rowid_column and not sample[config.rowid_column].is_unique:
        raise InputDataError(
            f"--rowid-column={config.rowid_column!r} is not unique: give the table's "
            "primary key"
        )


def _take_rows(frame: pd.DataFrame, local_rows: np.ndarray) -> pd.DataFrame:
    return frame.iloc[local_rows]


def _prepare(frame: pd.DataFrame, spec: FeatureSpec,
             projection: Projection | None) -> np.ndarray:
    """The float32 matrix k-means sees: prepared features, projected when PCA was fitted."""
    matrix, _ = spec.transform(frame.reset_index(drop=True))
    return projection.transform(matrix) if projection is not None else matrix


def _fit_projection(data: _Dataset, spec: FeatureSpec, whole: pd.DataFrame | None,
                    config: RunConfig) -> Projection | None:
    """PCA on the rows ``reduce.fit_projection`` would use: all of them, or its seeded sample."""
    if len(spec.matrix_columns) <= config.dimension_reduction_threshold:
        return None
    n = data.n_rows
    if n <= PCA_FIT_ROWS:
        frame = whole if whole is not None else data.take(np.arange(n))
    else:
        rows = np.random.default_rng(config.seed).choice(n, size=PCA_FIT_ROWS, replace=False)
        frame = data.take(np.sort(rows))
    matrix, _ = spec.transform(frame.reset_index(drop=True))
    # Exactly PCA_FIT_ROWS rows (or fewer): fit_projection does not sample again.
    return fit_projection(matrix, config.dimension_reduction_threshold, config.seed)


def prepared_array(data: _Dataset, spec: FeatureSpec, projection: Projection | None) -> Any:
    """The prepared matrix of every row as a Dask array, one chunk per partition.

    Built from delayed partitions rather than ``map_partitions`` so the chunk sizes are known
    (the partition lengths were counted once) and block-wise reductions need no extra pass.
    """
    import dask.array as da

    width = (projection.components.shape[0] if projection is not None
             else len(spec.matrix_columns))
    lengths = np.diff(data.offsets)
    blocks = [
        da.from_delayed(dask.delayed(_prepare)(part, spec, projection),
                        shape=(int(n), width), dtype=np.float32)
        for part, n in zip(data.frame.to_delayed(), lengths, strict=True) if n > 0
    ]
    return da.concatenate(blocks, axis=0)


def _block_moments(block: np.ndarray) -> np.ndarray:
    """Row count, column sums and column sums of squares (float64), for the tolerance."""
    b = block.astype(np.float64)
    return np.concatenate([[b.shape[0]], b.sum(axis=0), (b * b).sum(axis=0)])


def _block_lloyd(block: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """One block's Lloyd statistics: per-cluster sums and counts, and its inertia.

    Packed into one float64 vector (k*d sums, k counts, inertia) so the cross-block sum is a
    single array addition.
    """
    k, d = centroids.shape
    labels = nearest_centroid(block, centroids)
    sums = np.zeros((k, d), dtype=np.float64)
    np.add.at(sums, labels, block.astype(np.float64))
    counts = np.bincount(labels, minlength=k).astype(np.float64)
    diff = block - centroids[labels]
    inertia = float((diff.astype(np.float64) ** 2).sum())
    return np.concatenate([sums.ravel(), counts, [inertia]])


def _tree_sum(parts: list[Any]) -> Any:
    """Pairwise sum of delayed arrays: log-depth, so no task receives every partial at once."""
    while len(parts) > 1:
        parts = [dask.delayed(np.add)(parts[i], parts[i + 1]) if i + 1 < len(parts)
                 else parts[i] for i in range(0, len(parts), 2)]
    return parts[0]


def fit_all_rows(
    x: Any, centroids: np.ndarray, config: RunConfig, gpu: bool = False,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Lloyd iterations on every row of the dataset, warm-started from the sample's centroids.

    The distributed counterpart of :func:`autoseg.search.refit_on_all_rows` (scikit-learn's
    ``KMeans(init=centroids, n_init=1, algorithm="lloyd")``): the same stopping rule (squared
    centroid shift <= ``1e-4`` x the mean column variance, at most 300 iterations). Each
    iteration is one pass over the prepared matrix: per block, nearest centroid and
    per-cluster sums and counts; a tree sum; the k x d update on the client. An empty cluster
    keeps its previous centroid (scikit-learn would move it to a far point; with warm starts
    from a sample whose clusters are all non-empty this does not happen in practice).

    With ``gpu`` (the run's backend is the GPU) and RAPIDS' ``cuml.dask`` importable, cuML's
    multi-GPU KMeans does the fit instead (untested here: no GPU cluster in CI).

    Parameters
    ----------
    x
        The prepared matrix of every row (:func:`prepared_array`), best persisted: every
        iteration reads it.
    centroids
        (k, d) starting centroids, from the k search on a sample.
    config
        The run configuration (the seed).
    gpu
        Whether the run's backend is the GPU.

    Returns
    -------
    tuple
        The centroids (float32, k x d) and facts for the summary (engine, iterations, inertia).
    """
    if gpu and _cuml_dask_available():
        return _fit_all_rows_cuml(x, centroids, config.seed)
    blocks = x.to_delayed().ravel().tolist()
    moments = dask.compute(_tree_sum([dask.delayed(_block_moments)(b) for b in blocks]))[0]
    n, d = int(moments[0]), x.shape[1]
    mean = moments[1:1 + d] / n
    variance = np.maximum(moments[1 + d:] / n - mean * mean, 0.0)
    tol = float(variance.mean() * LLOYD_TOL)
    current = centroids.astype(np.float32)
    k = current.shape[0]
    inertia = float("nan")
    iterations = 0
    shift = float("inf")
    while iterations < LLOYD_MAX_ITER:
        iterations += 1
        total = dask.compute(_tree_sum([dask.delayed(_block_lloyd)(b, current)
                                        for b in blocks]))[0]
        sums, counts = total[: k * d].reshape(k, d), total[k * d: k * d + k]
        inertia = float(total[-1])  # of the assignment to ``current``
        updated = current.astype(np.float64).copy()
        filled = counts > 0
        updated[filled] = sums[filled] / counts[filled, None]
        shift = float(((updated - current) ** 2).sum())
        current = updated.astype(np.float32)
        if shift <= tol:
            break
    return current, {"done": True, "engine": "dask-lloyd", "iterations": iterations,
                     "inertia": inertia, "final_shift": shift, "tolerance": tol}


def all_rows_silhouette_points(n_rows: int) -> int:
    """How many points the all-rows silhouette scores on a table of ``n_rows`` rows."""
    budget = ALL_ROWS_SILHOUETTE_PAIRS // max(n_rows, 1)
    return int(min(ALL_ROWS_SILHOUETTE_POINTS, max(ALL_ROWS_SILHOUETTE_MIN_POINTS, budget)))


def _block_sizes_and_sums(block: np.ndarray, centroids: np.ndarray, points: np.ndarray | None,
                          centre: np.ndarray | None) -> np.ndarray:
    """One block's cluster counts and, with ``points``, their distance sums to its clusters.

    Packed into one float64 vector (k counts, then m x k sums) for a single tree sum.
    """
    k = centroids.shape[0]
    labels = nearest_centroid(block, centroids)
    counts = np.bincount(labels, minlength=k).astype(np.float64)
    if points is None or centre is None:
        return counts
    return np.concatenate([counts, distance_sums(points, block, labels, k, centre).ravel()])


def sizes_and_silhouette(
    x: Any, centroids: np.ndarray, points: np.ndarray | None = None,
) -> tuple[list[int], SilhouetteScore | None]:
    """Exact cluster sizes of every row and, for ``points``, their silhouette against all rows.

    One pass over the prepared matrix: each block assigns its rows to the nearest centroid,
    counts them and (with ``points``) adds the distances from every point to its rows per
    cluster; the blocks' vectors are tree-summed, so the client only ever holds k + m x k
    numbers. The points are a uniform sample of rows; their silhouettes combine into the
    post-stratified estimate of the whole table's mean silhouette and its standard error
    (:func:`autoseg.silhouette.silhouette_from_sums`).

    Parameters
    ----------
    x
        The prepared matrix of every row (:func:`prepared_array`).
    centroids
        (k, d) final centroids.
    points
        (m, d) prepared sample rows to score, or ``None`` for the sizes alone.

    Returns
    -------
    tuple
        The k sizes and the silhouette estimate (``None`` without points).
    """
    k = centroids.shape[0]
    centre = points.mean(axis=0) if points is not None and len(points) else None
    if centre is None:
        points = None
    blocks = x.to_delayed().ravel().tolist()
    total = dask.compute(_tree_sum([dask.delayed(_block_sizes_and_sums)(b, centroids, points,
                                                                      centre)
                                    for b in blocks]))[0]
    counts = total[:k]
    sizes = [int(round(c)) for c in counts]
    if points is None:
        return sizes, None
    sums = total[k:].reshape(len(points), k)
    own = nearest_centroid(points, centroids)
    return sizes, silhouette_from_sums(sums, own, counts, int(counts.sum()))


def _cuml_dask_available() -> bool:
    try:
        import cuml.dask.cluster  # noqa: F401
    except Exception:  # ImportError, or CUDA missing at import time
        return False
    return True


def _fit_all_rows_cuml(x: Any, centroids: np.ndarray,
                       seed: int) -> tuple[np.ndarray, dict[str, Any]]:  # pragma: no cover
    """cuML's multi-GPU KMeans, warm-started from the sample's centroids (needs dask-cuda
    workers with GPUs; the blocks are moved to CuPy on the workers)."""
    import cupy
    from cuml.dask.cluster import KMeans as DaskKMeans

    gpu_x = x.map_blocks(cupy.asarray, dtype=np.float32)
    model = DaskKMeans(n_clusters=centroids.shape[0], init=cupy.asarray(centroids),
                       n_init=1, max_iter=LLOYD_MAX_ITER, tol=LLOYD_TOL, random_state=seed)
    model.fit(gpu_x)
    found = cupy.asnumpy(model.cluster_centers_).astype(np.float32)
    return found, {"done": True, "engine": "cuml.dask", "iterations": None, "inertia": None}


def _label_partition(frame: pd.DataFrame, spec: FeatureSpec, projection: Projection | None,
                     centroids: np.ndarray) -> pd.DataFrame:
    """One partition's rows, every column as read, plus ``cluster_id``."""
    labels = nearest_centroid(_prepare(frame, spec, projection), centroids) if len(frame) \
        else np.empty(0, dtype=np.int32)
    return frame.assign(**{CLUSTER_COLUMN: labels.astype(np.int32)})


@dataclass
class _StagedDataset:
    """The labelled dataset, written to a hidden sibling of its destination.

    :meth:`swap_in` moves it into place and keeps the previous dataset aside;
    :meth:`commit` then deletes that backup, and :meth:`roll_back` restores it (or, before the
    swap, deletes the staged copy). The run swaps the dataset in *before* the table writes, so
    a table write that fails can still be undone on both sides.

    On a local disk every move is one rename. On object stores a move is a copy and a delete,
    so the state is recorded as it changes rather than probed afterwards: the backup counts only
    once its copy has returned, and the keys of the new dataset are listed before they are
    copied, so a roll-back deletes exactly those.
    """

    fs: fsspec.AbstractFileSystem
    staging: str
    path: str
    token: str
    schema: pa.Schema
    in_place: bool = False
    backup: str | None = None
    placed: list[str] = field(default_factory=list)

    @property
    def _local(self) -> bool:
        return isinstance(self.fs, LocalFileSystem)

    def chunks(self) -> Iterator[pa.Table]:
        """The labelled rows, one Parquet file at a time in partition order (for the stores)."""
        folder = self.path if self.in_place else self.staging
        dataset = pads.dataset(folder, filesystem=self.fs, format="parquet",
                               schema=self.schema)
        # File names carry the zero-padded partition number: their order is the input's.
        for fragment in sorted(dataset.get_fragments(), key=lambda f: f.path):
            yield fragment.to_table(schema=self.schema)

    def swap_in(self) -> None:
        """Move the staged dataset into place; the previous one (if any) goes aside."""
        if self.fs.exists(self.path):
            backup = f"{self.path}.old-{self.token}"
            if self._local:
                self.fs.mv(self.path, backup, recursive=True)
                self.backup = backup
            else:
                _copy_tree(self.fs, self.path, backup)
                self.backup = backup  # complete: its copy returned
                self.fs.rm(self.path, recursive=True)  # if this fails, restore clears the rest
        try:
            if self._local:
                self.fs.mv(self.staging, self.path, recursive=True)
            else:
                files = self.fs.find(self.staging)
                self.placed = [self.path + f[len(self.staging):] for f in files]
                self.fs.copy(files, self.placed)
                self.fs.rm(self.staging, recursive=True)
        except BaseException:
            self._restore()
            raise
        self.in_place = True

    def commit(self) -> None:
        """Delete the previous dataset: the run succeeded (a failure here only warns)."""
        self.placed = []
        if self.backup is None:
            return
        try:
            self.fs.rm(self.backup, recursive=True)
        except Exception as exc:  # the new outputs are all in place: do not undo them
            log.warning("could not delete the previous dataset at %s (%s): delete it by hand",
                        self.backup, type(exc).__name__)
        self.backup = None

    def roll_back(self) -> None:
        """Leave the output path as it was before the run.

        Raises
        ------
        ServiceError
            When the previous dataset could not be put back; the message says where it is.
        """
        try:
            if self.fs.exists(self.staging):
                self.fs.rm(self.staging, recursive=True)
        except Exception as exc:  # only our own scratch copy: say so, keep going
            log.warning("could not delete the staging folder %s (%s): delete it by hand",
                        self.staging, type(exc).__name__)
        try:
            self._restore()
        except Exception as exc:
            where = (f"; the previous dataset is in {self.backup!r}" if self.backup
                     else "")
            raise ServiceError(
                f"the run failed and the output {self.path!r} could not be restored "
                f"({_reason(exc)}){where}: restore it by hand"
            ) from None
        self.in_place = False

    def _restore(self) -> None:
        if self.backup is not None:
            # The previous dataset is whole in the backup; whatever is at the path now is new
            # (or what a failed delete left of the old one).
            if self.fs.exists(self.path):
                self.fs.rm(self.path, recursive=True)
            if self._local:
                self.fs.mv(self.backup, self.path, recursive=True)
            else:
                _copy_tree(self.fs, self.backup, self.path)
                self.fs.rm(self.backup, recursive=True)
            self.backup = None
        elif self.in_place and self._local:
            self.fs.rm(self.path, recursive=True)  # nothing was there before the run
        elif self.placed:
            there = [key for key in self.placed if self.fs.exists(key)]
            if there:
                self.fs.rm(there)
        self.placed = []


def _copy_tree(fs: fsspec.AbstractFileSystem, source: str, target: str) -> None:
    """Copy every file under ``source`` to the same relative key under ``target``.

    Not ``fs.copy(source, target, recursive=True)``: fsspec's recursive copy also copies the
    "directory" ``source`` itself, a key that does not exist on S3, and s3fs raises
    ``FileNotFoundError`` after having copied every file. A failed copy removes what it copied
    (best effort) and raises.
    """
    files = fs.find(source)
    targets = [target + f[len(source):] for f in files]
    try:
        fs.copy(files, targets)
    except BaseException:
        with contextlib.suppress(Exception):
            fs.rm([t for t in targets if fs.exists(t)])
        raise


def _stage_dataset(data: _Dataset, model: SegmentationModel, output_path: str,
                   schema: pa.Schema) -> _StagedDataset:
    """Label every partition and write the dataset to a hidden staging folder beside
    ``output_path`` (renamed into place later by :meth:`_StagedDataset.swap_in`)."""
    meta = data.frame._meta.assign(**{CLUSTER_COLUMN: np.empty(0, dtype=np.int32)})
    labelled = data.frame.map_partitions(_label_partition, model.spec, model.projection,
                                         model.centroids, meta=meta)
    fs, path = fsspec.core.url_to_fs(output_path)
    path = path.rstrip("/")
    parent, name = posixpath.split(path)
    token = uuid.uuid4().hex[:12]
    staging = posixpath.join(parent, f".{name}.tmp-{token}")
    staged = _StagedDataset(fs, staging, path, token, schema)
    try:
        # The input's Arrow schema, not one inferred from pandas: DATE stays DATE, DECIMAL
        # stays DECIMAL, as on the single-machine path. Zero-padded part numbers keep the
        # files' order the partitions' order for any reader that sorts names.
        labelled.to_parquet(_with_protocol(output_path, fs, staging), write_index=False,
                            schema=schema, name_function=_part_name)
    except BaseException:
        staged.roll_back()
        raise
    return staged


def _part_name(index: int) -> str:
    return f"part.{index:06d}.parquet"


def _partition_chunks(data: _Dataset, model: SegmentationModel, schema: pa.Schema,
                      client: Client) -> Iterator[pa.Table]:
    """The labelled rows partition by partition, in order, computed a few partitions ahead.

    For a table store when no dataset is written: at most ``STREAM_AHEAD_PER_WORKER`` x
    workers partitions are in flight or waiting on the client at any time.
    """
    ahead = max(1, STREAM_AHEAD_PER_WORKER * max(1, _workers(client)["n_workers"]))
    parts = [dask.delayed(_label_partition)(part, model.spec, model.projection,
                                            model.centroids)
             for part in data.frame.to_delayed()]
    pending: deque[Any] = deque()
    for part in parts:
        pending.append(client.compute(part))
        if len(pending) >= ahead:
            yield _arrow_chunk(pending.popleft().result(), schema)
    while pending:
        yield _arrow_chunk(pending.popleft().result(), schema)


def _arrow_chunk(frame: pd.DataFrame, schema: pa.Schema) -> pa.Table:
    return pa.Table.from_pandas(frame, schema=schema, preserve_index=False)


def _with_protocol(original: str, fs: fsspec.AbstractFileSystem, path: str) -> str:
    """``path`` as a URL of the same filesystem as ``original`` (``s3://...`` stays remote)."""
    if "://" not in original:
        return path
    protocol = original.split("://", 1)[0]
    return f"{protocol}://{path}"


def _workers(client: Client) -> dict[str, Any]:
    info = client.scheduler_info()
    workers = info.get("workers", {})
    return {
        "scheduler": info.get("address"),
        "n_workers": len(workers),
        "threads": int(sum(w.get("nthreads", 0) for w in workers.values())),
        "memory_limit_bytes": int(sum(w.get("memory_limit", 0) or 0
                                      for w in workers.values())),
    }


def client_from_options(scheduler: str | None, local: bool,
                        n_workers: int | None = None) -> Client | None:
    """A Dask client for ``--dask-scheduler ADDRESS`` or ``--dask local``; ``None`` for neither.

    Parameters
    ----------
    scheduler
        Address of a running scheduler (``tcp://host:8786``); connects to that cluster.
    local
        Start a cluster on this machine: ``LocalCUDACluster`` (one worker per GPU) when
        ``dask_cuda`` is importable and sees GPUs, else ``LocalCluster``.
    n_workers
        Workers of the local cluster (default: Dask's choice from the CPU count).

    Returns
    -------
    distributed.Client or None
        The caller closes it (and its local cluster) with ``client.close()`` /
        ``client.cluster.close()``, or uses it as a context manager.

    Raises
    ------
    UsageError
        Both options given, or the scheduler cannot be reached.
    """
    if scheduler and local:
        raise UsageError("--dask-scheduler and --dask local exclude each other: give one")
    if scheduler:
        try:
            return Client(scheduler, timeout="30s")
        except OSError as exc:
            raise UsageError(f"--dask-scheduler={scheduler!r} cannot be reached ({exc}): check "
                             "the address and that the scheduler is running") from exc
    if not local:
        return None
    cluster = _local_cuda_cluster(n_workers)
    if cluster is None:
        from distributed import LocalCluster

        cluster = LocalCluster(n_workers=n_workers)
    return Client(cluster)


def _local_cuda_cluster(n_workers: int | None) -> Any:
    try:
        from dask_cuda import LocalCUDACluster
        from dask_cuda.utils import get_n_gpus
    except Exception:
        return None
    try:
        if get_n_gpus() < 1:
            return None
    except Exception:  # no driver
        return None
    log.info("dask: starting LocalCUDACluster (one worker per GPU)")
    return LocalCUDACluster(n_workers=n_workers) if n_workers else LocalCUDACluster()


def default_output_path(input_path: str) -> str:
    """``<input>-clustered`` beside the input dataset (used when no output path is given)."""
    return str(Path(input_path.rstrip("/"))) + "-clustered" if "://" not in input_path \
        else input_path.rstrip("/") + "-clustered"
