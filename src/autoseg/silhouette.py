"""Mean silhouette coefficient for many candidate clusterings in one pass.

The silhouette of point ``i`` needs, for every cluster ``c``, the sum of distances from ``i`` to
the points of ``c``. The pairwise distances do not depend on the clustering, so one blocked pass
over them scores every candidate k at once: for a block of distances ``D`` (points x rows) and
the one-hot matrix ``H`` of every candidate labelling side by side (rows x sum(k)), ``D @ H``
holds all the per-cluster sums. Distances come from the GEMM form
``|x|^2 + |y|^2 - 2 x.y`` on centred data. Memory is bounded by the block sizes, never O(n^2).

While ``n <= exact_max_rows`` every point is scored (exact, matches
``sklearn.metrics.silhouette_score``). Beyond that, the silhouettes of a random sample of points
are computed exactly against all rows and combined per cluster (post-stratified by cluster, so a
small cluster is not lost to sampling noise: clusters with few sampled points get extra points),
giving an unbiased estimate of the mean with its standard error.

The code is written against the array namespace ``xp`` (NumPy here, CuPy on a GPU).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

BLOCK_ELEMENTS = 8_000_000  # distance block size (32 MB of float32)
MIN_POINTS_PER_CLUSTER = 30


@dataclass(frozen=True)
class SilhouetteScore:
    """Mean silhouette of one labelling, with its standard error (0 when exact)."""

    score: float
    stderr: float
    n_points: int
    exact: bool
    per_cluster: tuple[float, ...]


def silhouette_scores(
    x: Any,
    labelings: dict[int, Any],
    *,
    exact_max_rows: int = 50_000,
    sample_size: int = 20_000,
    seed: int = 0,
    population_rows: int | None = None,
    xp: Any = np,
) -> dict[int, SilhouetteScore]:
    """Mean silhouette coefficient of every labelling of the same rows.

    Parameters
    ----------
    x
        (n, d) array of the points.
    labelings
        Maps a key (usually k) to an (n,) integer label array with values ``0..k-1``.
    exact_max_rows
        Score every point while ``n`` is at most this; otherwise sample.
    sample_size
        Number of points scored (each against all ``n`` rows) when sampling.
    seed
        Seed of the point sample.
    population_rows
        When ``x`` is itself a uniform sample of a larger table of this many rows, the
        standard error also accounts for that sampling (scores are then estimates of the whole
        table's silhouette even when every row of ``x`` is scored).
    xp
        Array namespace (``numpy`` or ``cupy``).

    Returns
    -------
    dict
        ``SilhouetteScore`` per key of ``labelings``.
    """
    x = xp.asarray(x, dtype=xp.float32)
    n = int(x.shape[0])
    keys = list(labelings)
    labels = {key: xp.asarray(labelings[key]).astype(xp.int64) for key in keys}
    n_clusters = {key: int(labels[key].max()) + 1 for key in keys}
    offsets: dict[int, int] = {}
    total = 0
    for key in keys:
        offsets[key] = total
        total += n_clusters[key]

    exact = n <= exact_max_rows
    host_labels = {key: _to_host(labels[key]) for key in keys}
    if exact:
        points = np.arange(n)
        members = {key: np.ones(n, dtype=bool) for key in keys}
    else:
        points, members = _sample_points(host_labels, n, sample_size, seed)

    sums = _cluster_distance_sums(x, labels, n_clusters, offsets, total, points, xp)

    results: dict[int, SilhouetteScore] = {}
    for key in keys:
        k = n_clusters[key]
        block = sums[:, offsets[key] : offsets[key] + k]
        own = host_labels[key][points]
        sizes = np.bincount(host_labels[key], minlength=k).astype(np.float64)
        s = _point_silhouettes(block, own, sizes)
        mask = members[key]
        results[key] = _combine(s[mask], own[mask], sizes, n, exact, population_rows)
    return results


def _to_host(array: Any) -> np.ndarray:
    return array.get() if hasattr(array, "get") else np.asarray(array)


def _sample_points(
    labels: dict[int, np.ndarray], n: int, sample_size: int, seed: int
) -> tuple[np.ndarray, dict[int, np.ndarray]]:
    """A uniform sample plus, per labelling, extra points for thinly sampled clusters.

    Returns the sorted union of points and, per key, a mask over it of the points that belong
    to that key's sample (the uniform sample and that key's own extras), so each key's sample is
    a simple random sample within each of its clusters.
    """
    rng = np.random.default_rng(seed)
    base = rng.choice(n, size=min(sample_size, n), replace=False)
    in_base = np.zeros(n, dtype=bool)
    in_base[base] = True
    extras: dict[int, np.ndarray] = {}
    for key, lab in labels.items():
        added: list[np.ndarray] = []
        for c in range(int(lab.max()) + 1):
            cluster_rows = np.flatnonzero(lab == c)
            have = int(in_base[cluster_rows].sum())
            want = min(MIN_POINTS_PER_CLUSTER, cluster_rows.size)
            if have < want:
                candidates = cluster_rows[~in_base[cluster_rows]]
                added.append(rng.choice(candidates, size=want - have, replace=False))
        extras[key] = np.concatenate(added) if added else np.empty(0, dtype=np.int64)
    points = np.unique(np.concatenate([base, *extras.values()]))
    members: dict[int, np.ndarray] = {}
    for key in labels:
        chosen = in_base.copy()
        chosen[extras[key]] = True
        members[key] = chosen[points]
    return points, members


def _cluster_distance_sums(
    x: Any,
    labels: dict[int, Any],
    n_clusters: dict[int, int],
    offsets: dict[int, int],
    total: int,
    points: np.ndarray,
    xp: Any,
) -> np.ndarray:
    """(len(points), total) sums of distances from each point to each cluster of each key."""
    n = int(x.shape[0])
    centred = x - x.mean(axis=0, dtype=xp.float64).astype(xp.float32)
    sq_norms = xp.sum(centred * centred, axis=1)
    point_idx = xp.asarray(points)
    p = centred[point_idx]
    p_norms = sq_norms[point_idx]
    m = int(p.shape[0])
    col_chunk = _column_chunk(n, m)
    sums = xp.zeros((m, total), dtype=xp.float64)
    for start in range(0, n, col_chunk):
        stop = min(n, start + col_chunk)
        one_hot = xp.zeros((stop - start, total), dtype=xp.float32)
        rows = xp.arange(stop - start)
        for key in labels:
            one_hot[rows, offsets[key] + labels[key][start:stop]] = 1.0
        _add_distance_sums(sums, p, p_norms, centred[start:stop], sq_norms[start:stop],
                           one_hot, xp)
    return _to_host(sums)


def _column_chunk(n: int, m: int) -> int:
    """Rows per distance block so a (points x rows) block stays near BLOCK_ELEMENTS."""
    return max(1024, min(n, BLOCK_ELEMENTS // max(1, min(m, 1024))))


def _add_distance_sums(sums: Any, p: Any, p_norms: Any, chunk: Any, chunk_norms: Any,
                       one_hot: Any, xp: Any) -> None:
    """``sums += dist(p, chunk) @ one_hot``, the distances in blocks of points (GEMM form)."""
    m = int(p.shape[0])
    row_block = max(1, BLOCK_ELEMENTS // max(1, int(chunk.shape[0])))
    for r0 in range(0, m, row_block):
        r1 = min(m, r0 + row_block)
        d = p[r0:r1] @ chunk.T
        d *= -2.0
        d += p_norms[r0:r1, None]
        d += chunk_norms[None, :]
        xp.maximum(d, 0.0, out=d)
        xp.sqrt(d, out=d)
        sums[r0:r1] += d @ one_hot


def distance_sums(
    points: Any, rows: Any, row_labels: Any, k: int, centre: Any, xp: Any = np
) -> np.ndarray:
    """Sums of distances from every point to the rows of each cluster, for a block of rows.

    The building block of a silhouette over rows that are not all in one place (a Dask
    dataset): sum the results of every block of the table, then score the points with
    :func:`silhouette_from_sums`. The same distance code as :func:`silhouette_scores`.

    Parameters
    ----------
    points
        (m, d) points being scored.
    rows
        (r, d) a block of the table's rows (the points themselves may be among them).
    row_labels
        (r,) cluster ids ``0..k-1`` of ``rows``.
    k
        Number of clusters.
    centre
        (d,) a vector subtracted from points and rows before the GEMM form of the distances
        (for float32 accuracy); use the same one for every block, e.g. the points' mean.
    xp
        Array namespace (``numpy`` or ``cupy``).

    Returns
    -------
    numpy.ndarray
        (m, k) float64 sums (host memory).
    """
    c = xp.asarray(centre, dtype=xp.float32)
    p = xp.asarray(points, dtype=xp.float32) - c
    x = xp.asarray(rows, dtype=xp.float32) - c
    labels = xp.asarray(row_labels).astype(xp.int64)
    p_norms = xp.sum(p * p, axis=1)
    x_norms = xp.sum(x * x, axis=1)
    n, m = int(x.shape[0]), int(p.shape[0])
    sums = xp.zeros((m, k), dtype=xp.float64)
    col_chunk = _column_chunk(max(n, 1), m)
    for start in range(0, n, col_chunk):
        stop = min(n, start + col_chunk)
        one_hot = xp.zeros((stop - start, k), dtype=xp.float32)
        one_hot[xp.arange(stop - start), labels[start:stop]] = 1.0
        _add_distance_sums(sums, p, p_norms, x[start:stop], x_norms[start:stop], one_hot, xp)
    return _to_host(sums)


def silhouette_from_sums(
    sums: np.ndarray, own: np.ndarray, sizes: np.ndarray, n_rows: int
) -> SilhouetteScore:
    """Mean silhouette estimated from a uniform sample of points and their distance sums.

    Parameters
    ----------
    sums
        (m, k) sums of distances from each sampled point to every row of each cluster (the
        point itself included, at distance 0), e.g. summed :func:`distance_sums` blocks.
    own
        (m,) cluster id of each point.
    sizes
        (k,) exact cluster sizes of the whole table.
    n_rows
        Rows of the whole table.

    Returns
    -------
    SilhouetteScore
        The post-stratified estimate and its standard error (``exact`` is False; a cluster
        without a sampled point has a NaN per-cluster mean and adds nothing to the estimate).
    """
    sizes = np.asarray(sizes, dtype=np.float64)
    s = _point_silhouettes(np.asarray(sums, dtype=np.float64), np.asarray(own), sizes)
    return _combine(s, np.asarray(own), sizes, n_rows, exact=False)


def _point_silhouettes(sums: np.ndarray, own: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Silhouette of each point from its per-cluster distance sums (sklearn's conventions)."""
    rows = np.arange(sums.shape[0])
    own_size = sizes[own]
    with np.errstate(divide="ignore", invalid="ignore"):
        a = sums[rows, own] / np.maximum(own_size - 1, 1)
        means = sums / np.where(sizes > 0, sizes, np.nan)[None, :]
        means[rows, own] = np.inf
        means[:, sizes == 0] = np.inf
        b = means.min(axis=1)
        s = (b - a) / np.maximum(a, b)
    s[own_size <= 1] = 0.0  # sklearn: a point alone in its cluster scores 0
    return np.nan_to_num(s, nan=0.0)


def _combine(
    s: np.ndarray, own: np.ndarray, sizes: np.ndarray, n: int, exact: bool,
    population_rows: int | None = None,
) -> SilhouetteScore:
    """Post-stratified mean over clusters and its standard error.

    Exact scores of a table that is itself a sample of ``population_rows`` rows get the
    standard error of that sample (cluster sizes scale with the sampling fraction).
    """
    outer_fraction = n / population_rows if population_rows and population_rows > n else None
    k = sizes.size
    per_cluster = []
    estimate = 0.0
    variance = 0.0
    for c in range(k):
        sc = s[own == c]
        if sc.size == 0:
            per_cluster.append(float("nan"))
            continue
        weight = sizes[c] / n
        per_cluster.append(float(sc.mean()))
        estimate += weight * sc.mean()
        if not exact and sc.size > 1:
            fpc = 1.0 - sc.size / sizes[c]
            variance += weight**2 * sc.var(ddof=1) / sc.size * fpc
        elif exact and outer_fraction is not None and sc.size > 1:
            variance += weight**2 * sc.var(ddof=1) / sc.size * (1.0 - outer_fraction)
    if exact:
        estimate = float(s.mean())
    return SilhouetteScore(
        score=float(estimate),
        stderr=float(np.sqrt(max(variance, 0.0))),
        n_points=int(s.size),
        exact=exact,
        per_cluster=tuple(per_cluster),
    )
