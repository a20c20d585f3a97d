"""Lloyd iterations on every row, block by block: the refit after the k search.

The k search runs on a sample; the chosen k is then refitted on every row, warm-started from
the sample's centroids, with scikit-learn's stopping rule (squared centroid shift at most
``LLOYD_TOL`` x the mean column variance, at most ``LLOYD_MAX_ITER`` iterations). One
iteration is one pass over the prepared matrix in blocks: each block gives its per-cluster
sums, counts and inertia (:func:`block_totals`), the blocks' totals are added, and the k x d
update is made from them. A local run adds the blocks of a host matrix on the machine's cores
(:func:`refit_in_blocks`); a Dask run adds its partitions' totals with a tree sum
(``autoseg.dask.fit``), through the same :func:`lloyd_iterations`. The rows are then labelled
by :func:`assign_in_blocks`, the same nearest-centroid kernel on the cores.

Why not ``sklearn.cluster.KMeans(init=centroids, n_init=1)`` on the host matrix, as before:
its Lloyd passes are fast, but around them it copies the matrix (``copy_x``), computes the
tolerance through ``np.var`` (another full-size temporary) and centres and un-centres the
copy, so at 10,000,000 x 19 rows about 4 of its 4.5 s (two iterations) and a 0.8 GB
transient went to that, and the share grew with the table as the copies met memory pressure
(benchmarks/RESULTS.md, speed, fourth pass). Its float32 accumulators also lose precision on
tens of millions of rows (its reported inertia there was 0.13% off a float64 recomputation;
ours, summed in float64 per block, matches it). On a GPU with cuML the refit stays cuML's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from autoseg.parallel import map_on_cores

# scikit-learn KMeans defaults: the refit stops where KMeans(init=centroids) would stop.
LLOYD_TOL = 1e-4
LLOYD_MAX_ITER = 300
# Rows per block of a local pass: a 16,384 x 20 float32 block (1.3 MB) and its k distance
# rows stay in cache; measured at 10,000,000 rows, 16,384 passed faster than 65,536 or 262,144.
BLOCK_ROWS = 16_384


def block_moments(block: np.ndarray) -> np.ndarray:
    """Row count, column sums and column sums of squares of a block (float64), from which
    :func:`tolerance_from_moments` gives the stopping tolerance (and whose sums of squares add
    up to the rows' squared norms, which the inertia needs)."""
    b = np.asarray(block, dtype=np.float32)
    return np.concatenate([[b.shape[0]], b.sum(axis=0, dtype=np.float64),
                           np.einsum("ij,ij->j", b, b, dtype=np.float64)])


def tolerance_from_moments(moments: np.ndarray, d: int, tol: float = LLOYD_TOL) -> float:
    """scikit-learn's absolute tolerance, ``tol`` x the mean column variance, from the summed
    :func:`block_moments` of every block."""
    n = float(moments[0])
    mean = moments[1:1 + d] / n
    variance = np.maximum(moments[1 + d:1 + 2 * d] / n - mean * mean, 0.0)
    return float(variance.mean() * tol)


def block_totals(block: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """One block's Lloyd statistics for ``centroids``: per-cluster sums and counts, and the
    block's inertia less its rows' squared norms.

    Packed into one float64 vector (k*d sums, k counts, then the sum over the rows of
    ``min_j |c_j|^2 - 2 x.c_j``) so adding the blocks is a single array addition; the squared
    norms are the same in every pass and are added once (:func:`lloyd_iterations`). The
    distances are computed as a (k, rows) matrix and the nearest centroid found by k
    element-wise passes over its rows (NumPy's ``argmin`` along a short axis is as slow and
    leaves the minimum to find again); ties go to the lower centroid index, as with
    ``argmin``. The sums are one (k, rows) one-hot product with the block.
    """
    b = np.asarray(block, dtype=np.float32)
    k = centroids.shape[0]
    labels, nearest = _nearest(b, centroids)
    one_hot = (labels == np.arange(k)[:, None]).astype(np.float32)
    sums = (one_hot @ b).astype(np.float64)
    counts = np.bincount(labels, minlength=k).astype(np.float64)
    return np.concatenate([sums.ravel(), counts, [nearest.sum(dtype=np.float64)]])


def _nearest(b: np.ndarray, centroids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nearest centroid of every row of a float32 block, and ``|c|^2 - 2 x.c`` to it."""
    c = np.asarray(centroids, dtype=np.float32)
    # |x - c|^2 = |c|^2 - 2 x.c + |x|^2; |x|^2 is the same for every centroid of a row.
    distances = c @ b.T
    distances *= -2.0
    distances += (c * c).sum(axis=1)[:, None]
    nearest = distances[0].copy()
    labels = np.zeros(b.shape[0], dtype=np.intp)
    for j in range(1, c.shape[0]):
        labels[distances[j] < nearest] = j
        np.minimum(nearest, distances[j], out=nearest)
    return labels, nearest


def assign_in_blocks(x: np.ndarray, centroids: np.ndarray,
                     block_rows: int = BLOCK_ROWS) -> np.ndarray:
    """Nearest centroid (int32) of every row of a host matrix, its blocks side by side on the
    cores (the all-rows assignment after the refit: labels only, no distances).

    Parameters
    ----------
    x
        (n, d) float32 rows.
    centroids
        (k, d) centroids.
    block_rows
        Rows per block.

    Returns
    -------
    numpy.ndarray
        (n,) int32 labels; ties go to the lower centroid index.
    """
    x = np.asarray(x, dtype=np.float32)
    labels = np.empty(x.shape[0], dtype=np.int32)

    def one_block(start: int) -> None:
        labels[start:start + block_rows] = _nearest(x[start:start + block_rows], centroids)[0]

    map_on_cores(one_block, range(0, x.shape[0], block_rows))
    return labels


def lloyd_iterations(
    totals_of: Callable[[np.ndarray], np.ndarray], centroids: np.ndarray, moments: np.ndarray,
    max_iter: int = LLOYD_MAX_ITER, tol: float = LLOYD_TOL,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Lloyd updates from ``centroids`` until the squared centroid shift is at most ``tol``.

    Parameters
    ----------
    totals_of
        The sum over every block of :func:`block_totals` for the given (k, d) centroids: one
        pass over the rows.
    centroids
        (k, d) starting centroids (from the k search on a sample).
    moments
        The sum over every block of :func:`block_moments`.
    max_iter
        Most passes.
    tol
        Relative tolerance: the iterations stop once the summed squared shift of the
        centroids is at most ``tol`` x the mean column variance (:func:`tolerance_from_moments`).

    Returns
    -------
    tuple
        The (k, d) float32 centroids and facts for the summary: ``iterations``, ``inertia``
        (of the last pass's assignment, i.e. to the centroids one update before the returned
        ones, which moved by at most the tolerance; no extra pass is spent on it),
        ``final_shift`` and ``tolerance``. A cluster left without rows keeps its centroid
        (scikit-learn would move it to a far point; warm-started from a sample whose clusters
        all hold rows, this does not happen in practice).
    """
    current = np.asarray(centroids, dtype=np.float32)
    k, d = current.shape
    absolute_tol = tolerance_from_moments(moments, d, tol)
    squared_norms = float(moments[1 + d:1 + 2 * d].sum())
    inertia = float("nan")
    iterations = 0
    shift = float("inf")
    while iterations < max_iter:
        iterations += 1
        total = totals_of(current)
        sums, counts = total[: k * d].reshape(k, d), total[k * d: k * d + k]
        inertia = max(float(total[-1]) + squared_norms, 0.0)
        updated = current.astype(np.float64)
        filled = counts > 0
        updated[filled] = sums[filled] / counts[filled, None]
        shift = float(((updated - current) ** 2).sum())
        current = updated.astype(np.float32)
        if shift <= absolute_tol:
            break
    return current, {"iterations": iterations, "inertia": inertia, "final_shift": shift,
                     "tolerance": absolute_tol}


def refit_in_blocks(
    x: np.ndarray, centroids: np.ndarray, block_rows: int = BLOCK_ROWS,
    max_iter: int = LLOYD_MAX_ITER,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Warm-started Lloyd on every row of a host matrix, its blocks side by side on the cores.

    Parameters
    ----------
    x
        (n, d) float32 prepared rows.
    centroids
        (k, d) starting centroids.
    block_rows
        Rows per block.
    max_iter
        Most passes.

    Returns
    -------
    tuple
        The (k, d) float32 centroids and the facts of :func:`lloyd_iterations`. The blocks'
        totals are added in row order, so the result does not depend on the number of cores.
    """
    x = np.asarray(x, dtype=np.float32)
    spans = [(start, min(start + block_rows, x.shape[0]))
             for start in range(0, x.shape[0], block_rows)]

    def summed(function: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
        parts = map_on_cores(lambda span: function(x[span[0]:span[1]]), spans)
        return np.sum(parts, axis=0)

    return lloyd_iterations(lambda c: summed(lambda block: block_totals(block, c)),
                            centroids, summed(block_moments), max_iter)
