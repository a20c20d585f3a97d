"""All-rows reductions of a Dask run: the Lloyd refit, exact sizes and the all-rows silhouette."""

from __future__ import annotations

import logging
from typing import Any

import dask
import numpy as np

from autoseg.backend import Backend, DaskGPURefitUnavailable, dask_kmeans_refit
from autoseg.lloyd import (
    LLOYD_MAX_ITER,
    block_moments,
    block_totals,
    lloyd_iterations,
    tolerance_from_moments,
)
from autoseg.search import nearest_centroid
from autoseg.silhouette import SilhouetteScore, distance_sums, silhouette_from_sums

log = logging.getLogger(__name__)


def _tree_sum(parts: list[Any]) -> Any:
    """Pairwise sum of delayed arrays: log-depth, so no task receives every partial at once."""
    while len(parts) > 1:
        parts = [dask.delayed(np.add)(parts[i], parts[i + 1]) if i + 1 < len(parts)
                 else parts[i] for i in range(0, len(parts), 2)]
    return parts[0]


def fit_all_rows(
    x: Any, centroids: np.ndarray, seed: int, backend: Backend | None = None,
    client: Any = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Lloyd iterations on every row of the dataset, warm-started from the sample's centroids.

    The distributed counterpart of :func:`autoseg.search.refit_on_all_rows` (scikit-learn's
    ``KMeans(init=centroids, n_init=1, algorithm="lloyd")``): the same stopping rule (squared
    centroid shift <= ``1e-4`` x the mean column variance, at most 300 iterations). Each
    iteration is one pass over the prepared matrix: per block, nearest centroid and
    per-cluster sums and counts (:func:`autoseg.lloyd.block_totals`); a tree sum; the k x d
    update on the client (:func:`autoseg.lloyd.lloyd_iterations`, which the local refit
    shares).

    On a GPU backend with cuML, when every worker has a GPU, cuML's multi-GPU KMeans does the
    fit instead (``backend.dask_kmeans_refit``, with the same tolerance); if it cannot run or
    fails, one log line says why and the Lloyd iterations above do the fit.

    Parameters
    ----------
    x
        The prepared matrix of every row (:func:`prepared_array`), best persisted: every
        iteration reads it.
    centroids
        (k, d) starting centroids, from the k search on a sample.
    seed
        The run's seed (cuML's refit).
    backend
        The run's device backend (``None``: the CPU).
    client
        The run's ``distributed.Client`` (for the multi-GPU refit).

    Returns
    -------
    tuple
        The centroids (float32, k x d) and facts for the summary (engine, iterations, inertia).
    """
    blocks = x.to_delayed().ravel().tolist()
    moments = dask.compute(_tree_sum([dask.delayed(block_moments)(b) for b in blocks]))[0]
    tol = tolerance_from_moments(moments, x.shape[1])
    if backend is not None and backend.uses_cuml and client is not None:
        try:
            return dask_kmeans_refit(x, centroids, tol=tol, seed=seed, client=client,
                                     max_iter=LLOYD_MAX_ITER)
        except DaskGPURefitUnavailable as exc:
            log.info("dask: cuml.dask refit not used (%s); refitting with Dask Lloyd", exc)

    def totals_of(current: np.ndarray) -> np.ndarray:
        return dask.compute(_tree_sum([dask.delayed(block_totals)(b, current)
                                       for b in blocks]))[0]

    fitted, facts = lloyd_iterations(totals_of, centroids, moments)
    return fitted, {"done": True, "engine": "dask-lloyd", **facts}


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
