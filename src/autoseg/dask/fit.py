"""All-rows reductions of a Dask run: the Lloyd refit, exact sizes and the all-rows silhouette."""

from __future__ import annotations

from typing import Any

import dask
import numpy as np

from autoseg.search import nearest_centroid
from autoseg.silhouette import SilhouetteScore, distance_sums, silhouette_from_sums

# scikit-learn KMeans defaults, so the distributed refit stops where refit_on_all_rows stops.
LLOYD_MAX_ITER = 300


LLOYD_TOL = 1e-4




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
    x: Any, centroids: np.ndarray, seed: int, gpu: bool = False,
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
    seed
        The run's seed (cuML's refit).
    gpu
        Whether the run's backend is the GPU.

    Returns
    -------
    tuple
        The centroids (float32, k x d) and facts for the summary (engine, iterations, inertia).
    """
    if gpu and _cuml_dask_available():
        return _fit_all_rows_cuml(x, centroids, seed)
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
