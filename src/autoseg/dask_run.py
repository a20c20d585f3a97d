"""The same segmentation job on a Dask cluster, for tables larger than one machine.

``run_on_dask(config, client, input_path=..., output_path=...)`` reads a partitioned Parquet
dataset (a local folder or an fsspec URL such as ``s3://bucket/customers/``) and writes the rows
plus ``cluster_id`` as a partitioned Parquet dataset. What runs where:

* **workers, per partition**: reading, the fitted feature preparation (``FeatureSpec.transform``)
  and PCA projection, the per-partition Lloyd statistics (nearest centroid, per-cluster sums
  and counts), the final nearest-centroid assignment and the Parquet write;
* **client, on bounded samples**: fitting the ``FeatureSpec`` and the PCA, the whole k search
  (``autoseg.search.search_k``: restarts and silhouettes), the sum of the Lloyd statistics and the
  centroid update (k x d numbers), and the explanation (``autoseg.explain``).

Sampling decisions are the single-machine ones (``autoseg.pipeline``): rows are chosen by their
*global position* in the dataset with the same generator calls and seeds, so the same rows in the
same order give the same sample, hence the same k. The one deliberate difference: on tables of
more than ``features.FIT_SAMPLE_ROWS`` rows the column decisions that the single-machine path
makes on the full column (type, "unique integer row id") see the fit sample only.

Dask is an optional dependency (``autoseg[dask]``); this module imports it at import time, so
import it only when a Dask run was asked for.
"""

from __future__ import annotations

import functools
import logging
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
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

from autoseg import __version__
from autoseg.config import RunConfig
from autoseg.errors import InputDataError, UsageError
from autoseg.features import FIT_SAMPLE_ROWS as FEATURE_FIT_ROWS
from autoseg.features import FeatureSpec, fit_features
from autoseg.model import SegmentationModel
from autoseg.pipeline import (
    CLUSTER_COLUMN,
    REPORT_FILE,
    SUMMARY_FILE,
    _check_output_dir,
    _explain_stage,
    _explanation_summary,
    _k_values,
    _projection_sample,
    _rule_summary,
    _write_json_atomically,
)
from autoseg.profile import profile_table
from autoseg.reduce import FIT_SAMPLE_ROWS as PCA_FIT_ROWS
from autoseg.reduce import Projection, fit_projection
from autoseg.report import write_report
from autoseg.rules import cluster_rules
from autoseg.search import nearest_centroid, search_k
from autoseg.segments import profile_clusters

log = logging.getLogger(__name__)

# The explanation trains on at most 50,000 rows (explain.DEFAULT_MAX_TRAIN_ROWS); gathering
# more to the client would only cost memory.
EXPLAIN_ROWS = 50_000
# scikit-learn KMeans defaults, so the distributed refit stops where refit_on_all_rows stops.
LLOYD_MAX_ITER = 300
LLOYD_TOL = 1e-4


@dataclass
class _Dataset:
    """The input as Dask sees it, plus the partition lengths that map global rows to partitions."""

    frame: dd.DataFrame
    offsets: np.ndarray  # (npartitions + 1,) first global row of each partition, then n_rows
    schema: pa.Schema  # the input's Arrow schema: the output keeps every column's exact type

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


class _Timer:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        log.info("dask stage %s started", name)
        try:
            yield
        finally:
            self.seconds[name] = round(time.perf_counter() - started, 4)
            log.info("dask stage %s took %.2fs", name, self.seconds[name])


def run_on_dask(
    config: RunConfig, client: Client, *, input_path: str, output_path: str
) -> dict[str, Any]:
    """Segment a partitioned Parquet dataset on a Dask cluster.

    Parameters
    ----------
    config
        The validated run configuration; ``input_table``/``output_table`` are not used (the
        dataset paths are given explicitly), every clustering setting is.
    client
        A connected ``distributed.Client``; every Dask computation of the run goes through it.
    input_path
        Partitioned Parquet dataset: a local folder or an fsspec URL (``s3://bucket/path/``).
    output_path
        Where the rows plus ``cluster_id`` go, as a partitioned Parquet dataset. It is written to
        a temporary sibling first and renamed into place, so a failure leaves no half-written
        dataset (and an existing dataset at ``output_path`` unchanged).

    Returns
    -------
    dict
        The run summary (also written to ``config.output_dir / "summary.json"``): chosen k,
        scores of every k, cluster sizes, timings and the workers used.

    Raises
    ------
    InputDataError
        Empty input, an existing ``cluster_id`` column, too few rows for the k range.
    UsageError
        ``output_dir`` not writable, or ``force_refit=false`` (reusing a saved model is not
        supported on Dask yet).
    """
    if not config.force_refit:
        raise UsageError("--force-refit=false is not supported with Dask yet: drop it or run "
                         "without --dask")
    _check_output_dir(config.output_dir)
    timer = _Timer()
    with dask.config.set(scheduler=client):
        return _run(config, client, input_path, output_path, timer)


def _run(config: RunConfig, client: Client, input_path: str, output_path: str,
         timer: _Timer) -> dict[str, Any]:
    with timer.stage("read"):
        data = _open_dataset(input_path)
    n_rows = data.n_rows
    _check_input(data, config)
    seed = config.seed
    # The whole table, gathered once, when it is no larger than a fit sample: then every fit
    # below sees exactly the rows the single-machine path sees.
    small = n_rows <= FEATURE_FIT_ROWS
    whole = data.take(np.arange(n_rows)) if small else None

    with timer.stage("features"):
        if whole is not None:
            fit_frame = whole
        else:
            # pandas' frame.sample(n, random_state=seed) inside fit_features draws these rows.
            picked = np.random.RandomState(seed).choice(n_rows, FEATURE_FIT_ROWS, replace=False)
            fit_frame = data.take(np.sort(picked))
        spec = fit_features(fit_frame, config.ignore_columns, seed)

    with timer.stage("reduce"):
        projection = _fit_projection(data, spec, whole, config)

    k_values = _k_values(config, n_rows)
    sampled = n_rows > max(config.silhouette_exact_max_rows, config.search_sample_size)
    with timer.stage("search"):
        if sampled:
            rows = np.sort(np.random.default_rng(seed).choice(
                n_rows, size=config.search_sample_size, replace=False))
            search_x = _prepare(data.take(rows), spec, projection)
        else:
            search_x = _prepare(whole if whole is not None else data.take(np.arange(n_rows)),
                                spec, projection)
        min_rows = config.min_cluster_rows(n_rows)
        search = search_k(
            search_x, k_values, restarts=config.kmeans_restarts, seed=seed,
            exact_max_rows=config.silhouette_exact_max_rows,
            sample_size=config.silhouette_sample_size,
            population_rows=n_rows if sampled else None,
            min_cluster_size=int(np.ceil(min_rows * len(search_x) / n_rows)),
        )
    centroids = search.centroids
    refit: dict[str, Any] = {"done": False}
    if sampled:
        with timer.stage("fit_all_rows"):
            centroids, refit = fit_all_rows(data, spec, projection, centroids, config)
        log.info("k=%d refitted on all %d rows on Dask (%s, %d iterations)", search.chosen_k,
                 n_rows, refit["engine"], refit["iterations"])

    with timer.stage("assign_write"):
        sizes = _assign_and_write(data, spec, projection, centroids, output_path)

    with timer.stage("explain"):
        explain_rows = (np.arange(n_rows) if n_rows <= EXPLAIN_ROWS else np.sort(
            np.random.default_rng(seed).choice(n_rows, size=EXPLAIN_ROWS, replace=False)))
        sample = whole.iloc[explain_rows] if whole is not None else data.take(explain_rows)
        prepared = _prepare(sample, spec, projection)
        labels = nearest_centroid(prepared, centroids)
        readable = spec.readable(sample)
        explanation, note = _explain_stage(readable, labels, search.chosen_k, config)
        # Profiles, rules and the report read the same bounded sample; sizes stay exact.
        kinds = {f.column: f.kind for f in spec.numeric}
        profiles = profile_clusters(
            readable, labels, search.chosen_k,
            explanation.shap_by_cluster if explanation is not None else None,
            config.hide_table_contents, kinds,
        )
        for cluster in profiles:
            cluster["size"] = int(sizes[cluster["cluster_id"]])
            cluster["share"] = float(sizes[cluster["cluster_id"]] / n_rows)
        for rule in cluster_rules(readable, labels, search.chosen_k, seed=seed, kinds=kinds):
            profiles[rule.cluster_id]["rule"] = _rule_summary(rule, config.hide_table_contents)
        eda = profile_table(sample, config.hide_table_contents, seed)
        eda["rows"] = n_rows
        eda["sampled_rows"] = len(sample)
        projection_2d = _projection_sample(prepared, labels, seed)

    summary = {
        "autoseg_version": __version__,
        "engine": "dask",
        "parameters": config.public_dict(),
        "input_path": input_path,
        "rows_read": n_rows,
        "partitions": data.frame.npartitions,
        "workers": _workers(client),
        "columns_used": spec.used_columns,
        "columns_dropped": [{"column": d.column, "reason": d.reason} for d in spec.dropped],
        "prepared_columns": len(spec.matrix_columns),
        "pca_components": (int(projection.components.shape[0])
                           if projection is not None else None),
        "chosen_k": search.chosen_k,
        "chosen_reason": search.reason,
        "k_search": [c.as_dict() for c in search.candidates],
        "silhouette": {
            "exact": search.silhouette_exact,
            "search_rows": len(search.labels),
            "points_scored": search.silhouette_points,
            "per_cluster": search.per_cluster_silhouette,
        },
        "fit_all_rows": refit,
        "cluster_sizes": sizes,
        "cluster_shares": [round(s / n_rows, 6) for s in sizes],
        "explanation": _explanation_summary(explanation, note),
        "explanation_rows": len(sample),
        "profile": eda,
        "clusters": profiles,
        "timings_seconds": timer.seconds,
        "outputs": {"dataset": output_path,
                    "summary": str(config.output_dir / SUMMARY_FILE),
                    "report": str(config.output_dir / REPORT_FILE)},
    }
    if config.model_name:
        # the same saved state as a single-machine fit, so a later run (on one machine or on
        # Dask) can refit with stable ids against it
        model = SegmentationModel(spec=spec, centroids=centroids, projection=projection,
                                  k=search.chosen_k, fingerprint={"rows": n_rows,
                                                                  "input_path": input_path})
        surrogate = (explanation.booster.save_raw(raw_format="json")
                     if explanation is not None else None)
        summary["outputs"]["model"] = str(
            model.save(config.model_dir / config.model_name, surrogate))
    _write_json_atomically(config.output_dir / SUMMARY_FILE, summary)
    write_report(config.output_dir / REPORT_FILE, summary, projection_2d,
                 config.hide_table_contents)
    return summary


def _open_dataset(input_path: str) -> _Dataset:
    # Strings stay pandas' default string dtype and dates stay datetime.date objects, as
    # pyarrow's to_pandas gives them on the single-machine path: the FeatureSpec then makes the
    # same decisions. (Dask would otherwise turn them into pyarrow-backed dtypes.)
    with dask.config.set({"dataframe.convert-string": False}):
        try:
            frame = dd.read_parquet(input_path)
        except (FileNotFoundError, OSError, ValueError) as exc:
            raise InputDataError(
                f"input dataset {input_path!r} cannot be read as Parquet ({exc}): give a folder "
                "or URL of Parquet files"
            ) from exc
    lengths = np.asarray(frame.map_partitions(len).compute(), dtype=np.int64)
    fs, path = fsspec.core.url_to_fs(input_path)
    schema = pads.dataset(path, filesystem=fs, format="parquet").schema.remove_metadata()
    return _Dataset(frame=frame, offsets=np.concatenate([[0], np.cumsum(lengths)]),
                    schema=schema)


def _check_input(data: _Dataset, config: RunConfig) -> None:
    if data.n_rows == 0:
        raise InputDataError("the input dataset is empty: it has no rows to cluster")
    if CLUSTER_COLUMN in data.frame.columns:
        raise InputDataError(
            f"the input dataset already has a {CLUSTER_COLUMN!r} column: drop or rename it "
            "first (it would be overwritten)"
        )
    needed = config.num_clusters or config.max_clusters
    if data.n_rows < needed + 1:
        option = "num_clusters" if config.num_clusters else "max_clusters"
        raise InputDataError(
            f"n_rows={data.n_rows} must be >= {option}+1={needed + 1}: lower "
            f"--{option.replace('_', '-')} or give more rows"
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
    data: _Dataset, spec: FeatureSpec, projection: Projection | None, centroids: np.ndarray,
    config: RunConfig,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Lloyd iterations on every row of the dataset, warm-started from the sample's centroids.

    The distributed counterpart of :func:`autoseg.search.refit_on_all_rows` (scikit-learn's
    ``KMeans(init=centroids, n_init=1, algorithm="lloyd")``): the same stopping rule (squared
    centroid shift <= ``1e-4`` x the mean column variance, at most 300 iterations). Each
    iteration is one pass over the persisted prepared matrix: per block, nearest centroid and
    per-cluster sums and counts; a tree sum; the k x d update on the client. An empty cluster
    keeps its previous centroid (scikit-learn would move it to a far point; with warm starts
    from a sample whose clusters are all non-empty this does not happen in practice).

    With ``config.device == "gpu"`` and RAPIDS' ``cuml.dask`` importable, cuML's multi-GPU
    KMeans does the fit instead (untested here: no GPU cluster in CI).

    Returns
    -------
    tuple
        The centroids (float32, k x d) and facts for the summary (engine, iterations, inertia).
    """
    x = prepared_array(data, spec, projection)
    if config.device == "gpu" and _cuml_dask_available():
        return _fit_all_rows_cuml(x, centroids, config.seed)
    x = x.persist()  # prepared once, reused by every iteration (lives in worker memory)
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
    del x  # release the persisted matrix on the workers
    return current, {"done": True, "engine": "dask-lloyd", "iterations": iterations,
                     "inertia": inertia, "final_shift": shift, "tolerance": tol}


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


def _assign_and_write(data: _Dataset, spec: FeatureSpec, projection: Projection | None,
                      centroids: np.ndarray, output_path: str) -> list[int]:
    """Label every partition and write the dataset atomically; return the cluster sizes."""
    k = centroids.shape[0]
    meta = data.frame._meta.assign(**{CLUSTER_COLUMN: np.empty(0, dtype=np.int32)})
    labelled = data.frame.map_partitions(_label_partition, spec, projection, centroids,
                                         meta=meta)
    fs, path = fsspec.core.url_to_fs(output_path)
    path = path.rstrip("/")
    if fs.exists(path) and not fs.isdir(path):
        raise UsageError(f"output {output_path!r} exists and is not a dataset folder: choose "
                         "another output path")
    parent, name = path.rsplit("/", 1) if "/" in path else ("", path)
    token = uuid.uuid4().hex[:12]
    staging = f"{parent}/.{name}.tmp-{token}" if parent else f".{name}.tmp-{token}"
    staging_url = _with_protocol(output_path, fs, staging)
    try:
        # One graph: the labels feed both the write and the size count, computed once.
        # The input's Arrow schema, not one inferred from pandas: DATE stays DATE, DECIMAL
        # stays DECIMAL, as on the single-machine path.
        schema = data.schema.append(pa.field(CLUSTER_COLUMN, pa.int32()))
        write = labelled.to_parquet(staging_url, write_index=False, compute=False,
                                    schema=schema)
        # A reduction of per-partition bincounts (value_counts would plan a shuffle). The
        # reduction stacks the chunks' k-vectors as rows; the aggregate sums the rows.
        counts = labelled[CLUSTER_COLUMN].reduction(
            chunk=functools.partial(_bincount, k=k), aggregate=_sum_rows,
            meta=pd.Series(dtype="int64"))
        _, sizes = dask.compute(write, counts)
        _rename_into_place(fs, staging, path, token)
    except BaseException:
        if fs.exists(staging):
            fs.rm(staging, recursive=True)
        raise
    return [int(sizes[i]) for i in range(k)]


def _bincount(labels: pd.Series, k: int) -> pd.Series:
    return pd.Series(np.bincount(labels.to_numpy(dtype=np.int64), minlength=k))


def _sum_rows(stacked: pd.DataFrame) -> pd.Series:
    return stacked.sum(axis=0)


def _with_protocol(original: str, fs: fsspec.AbstractFileSystem, path: str) -> str:
    """``path`` as a URL of the same filesystem as ``original`` (``s3://...`` stays remote)."""
    if "://" not in original:
        return path
    protocol = original.split("://", 1)[0]
    return f"{protocol}://{path}"


def _rename_into_place(fs: fsspec.AbstractFileSystem, staging: str, path: str,
                       token: str) -> None:
    """Swap the finished dataset in. On a local disk each rename is atomic; on object stores
    (S3, GCS) a "rename" is copy + delete, so readers may briefly see a partial folder there."""
    backup = None
    if fs.exists(path):
        backup = f"{path}.old-{token}"
        fs.mv(path, backup, recursive=True)
    try:
        fs.mv(staging, path, recursive=True)
    except BaseException:
        if backup is not None:
            fs.mv(backup, path, recursive=True)
        raise
    if backup is not None:
        fs.rm(backup, recursive=True)


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
