"""Choose k: fit k-means for every candidate k and keep the best mean silhouette.

Every candidate k is fitted by :func:`autoseg.kmeans.fit_optimum` (k-means++ restarts refined
by centroid swaps until no swap helps), because the silhouette of a local optimum can pick the
wrong k: on an A-type set with 50 round clusters, best-of-10 k-means++ ended 8% above the
optimum and the silhouette then preferred 49 clusters; at the optimum, 50 wins. Every estimator
is built by the run's :class:`~autoseg.backend.Backend` (scikit-learn on the CPU, cuML on a GPU).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from autoseg.kmeans import KMeansFit, fit_optimum
from autoseg.lloyd import LLOYD_MAX_ITER, LLOYD_TOL, refit_in_blocks
from autoseg.parallel import map_on_cores
from autoseg.silhouette import rank_silhouettes

if TYPE_CHECKING:
    from autoseg.backend import Backend, KMeansModel

log = logging.getLogger(__name__)


@dataclass
class KCandidate:
    """Scores of one candidate k."""

    k: int
    silhouette: float | None
    silhouette_stderr: float
    inertia: float
    calinski_harabasz: float | None
    davies_bouldin: float | None
    sizes: list[int]
    fit_seconds: float
    rejected: str | None = None  # why this k could not be chosen
    stability: float | None = None  # mean pairwise ARI over subsample refits
    restart_inertia: float | None = None  # best k-means++ restart, before the swaps
    swaps: int = 0  # centroid swaps that lowered the inertia

    def as_dict(self) -> dict[str, object]:
        """JSON-able scores."""
        return dict(self.__dict__)


@dataclass
class SearchResult:
    """The scores of every k tried and the chosen one.

    ``fits`` holds, for every k that could be scored, its centroids and the labels of the
    searched rows (the rows of ``x`` given to :func:`search_k`, in that order); this is what
    :mod:`autoseg.alternatives` compares, without another pass over the data.
    """

    candidates: list[KCandidate]
    chosen_k: int
    reason: str
    centroids: np.ndarray
    labels: np.ndarray
    silhouette_exact: bool
    silhouette_points: int
    per_cluster_silhouette: list[float] = field(default_factory=list)
    fits: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict, repr=False)
    per_cluster_by_k: dict[int, list[float]] = field(default_factory=dict, repr=False)

    def choose(self, k: int, reason: str) -> None:
        """Switch the chosen k (e.g. to the most stable one), keeping its fitted state."""
        self.chosen_k = k
        self.reason = reason
        self.centroids, self.labels = self.fits[k]
        self.per_cluster_silhouette = self.per_cluster_by_k.get(k, [])

    def choosable(self) -> dict[int, float]:
        """Silhouette of every k that may be chosen (not rejected)."""
        return {c.k: c.silhouette for c in self.candidates
                if c.silhouette is not None and c.rejected is None}

    def candidate(self, k: int) -> KCandidate | None:
        """The scores of ``k``, or ``None`` when it was not tried."""
        return next((c for c in self.candidates if c.k == k), None)


def default_backend(backend: Backend | None) -> Backend:
    """``backend``, or the CPU backend when none is given (library calls and tests)."""
    if backend is not None:
        return backend
    from autoseg.backend import select_backend

    return select_backend("cpu")


def fit_kmeans(
    x: Any, k: int, restarts: int, seed: int, backend: Backend | None = None
) -> KMeansModel:
    """k-means++ with ``restarts`` starts; the lowest-inertia run is kept (no swaps).

    Built by :meth:`Backend.kmeans` (scikit-learn on the CPU, cuML on a GPU; see its parameter
    map); ``cluster_centers_`` and ``inertia_`` mean the same on both. ``x`` must be an array
    of the backend's ``xp``.
    """
    return default_backend(backend).kmeans(k, n_init=restarts, seed=seed).fit(x)


def nearest_centroid(x: np.ndarray, centroids: np.ndarray, chunk_rows: int = 262_144) -> np.ndarray:
    """Index of the nearest centroid of every row, computed in chunks (no n x k x d memory)."""
    return nearest_centroid_with_distance(x, centroids, chunk_rows)[0]


def nearest_centroid_with_distance(
    x: Any, centroids: np.ndarray, chunk_rows: int = 262_144, xp: Any = np
) -> tuple[np.ndarray, np.ndarray]:
    """Nearest centroid of every row and the (Euclidean) distance to it, in chunks.

    ``x`` may live on the device (``xp`` = CuPy); the results are host arrays.
    """
    labels = np.empty(x.shape[0], dtype=np.int32)
    nearest = np.empty(x.shape[0], dtype=np.float32)
    c = xp.asarray(centroids, dtype=xp.float32)
    c_norms = (c * c).sum(axis=1)
    for start in range(0, x.shape[0], chunk_rows):
        block = x[start : start + chunk_rows]
        # |x - c|^2 = |x|^2 - 2 x.c + |c|^2; |x|^2 is the same for every c of a row.
        distances = c_norms[None, :] - 2.0 * (block @ c.T)
        best = distances.argmin(axis=1)
        squared = distances[xp.arange(block.shape[0]), best] + (block * block).sum(axis=1)
        labels[start : start + chunk_rows] = _host(best)
        nearest[start : start + chunk_rows] = _host(xp.sqrt(xp.maximum(squared, 0.0)))
    return labels, nearest


def assign_rows(x: np.ndarray, centroids: np.ndarray,
                backend: Backend | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Nearest centroid and distance of the host rows ``x``, on the backend's device.

    Returns host arrays (int32 labels, float32 distances).
    """
    if backend is not None and backend.is_gpu:
        return nearest_centroid_with_distance(backend.to_device(x, np.float32), centroids,
                                              xp=backend.xp)
    return nearest_centroid_with_distance(x, centroids)


def _host(array: Any) -> np.ndarray:
    return array.get() if hasattr(array, "get") else np.asarray(array)


def search_k(
    x: np.ndarray,
    k_values: list[int],
    *,
    restarts: int,
    seed: int,
    exact_max_rows: int,
    sample_size: int,
    population_rows: int | None = None,
    min_cluster_size: int = 0,
    backend: Backend | None = None,
) -> SearchResult:
    """Fit every candidate k, score it, and choose the k with the highest mean silhouette.

    Parameters
    ----------
    x
        (n, d) float32 matrix to cluster.
    k_values
        Candidate numbers of clusters, ascending; a single value fixes k.
    restarts
        k-means++ starts per k; the best start is then refined by centroid swaps
        (:func:`autoseg.kmeans.fit_optimum`).
    seed
        Seed for k-means and the silhouette sample.
    exact_max_rows, sample_size, population_rows
        Silhouette settings, see :func:`autoseg.silhouette.rank_silhouettes` (the k is decided
        on sampled points where they separate the leader, exactly where they do not);
        ``population_rows`` when ``x`` is a sample of a larger table.
    min_cluster_size
        A k whose smallest cluster has fewer rows of ``x`` is scored but rejected.
    backend
        Device backend (the CPU when ``None``); it builds every k-means estimator, and on a
        GPU the fits, swaps, assignments and silhouettes run there on one device copy of ``x``
        (the small CH/DB scores use the host copy).

    Returns
    -------
    SearchResult
        Scores of every k, the chosen k, its centroids and labels.
    """
    backend = default_backend(backend)
    fits: dict[int, tuple[np.ndarray, np.ndarray, float, float]] = {}
    candidates: dict[int, KCandidate] = {}
    xp = backend.xp
    x_device = backend.to_device(x, np.float32)
    def fit_one(k: int) -> tuple[KMeansFit, np.ndarray, float, tuple[float, float] | None]:
        started = time.perf_counter()
        fit = fit_optimum(x_device, k, restarts=restarts, seed=seed, backend=backend)
        labels, _ = nearest_centroid_with_distance(x_device, fit.centroids, xp=xp)
        seconds = time.perf_counter() - started
        separation = None
        if int(np.count_nonzero(np.bincount(labels, minlength=k))) == k:
            # Beside the fit on its core (16 calls took 0.12 s one after the other at 20,000
            # rows); scikit-learn loads in a second: imported where used.
            from sklearn.metrics import calinski_harabasz_score, davies_bouldin_score

            separation = (float(calinski_harabasz_score(x, labels)),
                          float(davies_bouldin_score(x, labels)))
        return fit, labels, seconds, separation

    # The candidates are independent: on the CPU they are fitted side by side, one core each
    # (the same labels as one after the other, centroids within 4e-6, in two thirds of the time at
    # 50,000 x 30); a GPU fits them in turn on its one device.
    fitted = map_on_cores(fit_one, k_values, in_turn=backend.is_gpu)
    for k, (fit, labels, seconds, separation) in zip(k_values, fitted, strict=True):
        centroids = fit.centroids
        sizes = np.bincount(labels, minlength=k)
        candidate = KCandidate(
            k=k, silhouette=None, silhouette_stderr=0.0, inertia=fit.inertia,
            calinski_harabasz=None, davies_bouldin=None, sizes=sizes.tolist(),
            fit_seconds=seconds, restart_inertia=fit.restart_inertia, swaps=fit.swaps,
        )
        if separation is None:
            candidate.rejected = (
                f"k-means found only {int((sizes > 0).sum())} non-empty clusters "
                "(too few distinct rows)"
            )
        else:
            candidate.calinski_harabasz, candidate.davies_bouldin = separation
            fits[k] = (centroids, labels, seconds, fit.inertia)
        candidates[k] = candidate
        log.info("k=%d fitted in %.2fs (%d of %d swaps kept, inertia %.6g -> %.6g), sizes %s",
                 k, seconds, fit.swaps, fit.trials, fit.restart_inertia, fit.inertia,
                 sizes.tolist())
    if not fits:
        raise _no_valid_k(candidates)
    for k, (_, labels, _, _) in fits.items():
        smallest = int(np.bincount(labels).min())
        if smallest < min_cluster_size:
            candidates[k].rejected = (
                f"smallest cluster has {smallest} rows, under the minimum {min_cluster_size}"
            )
            log.info("k=%d rejected: %s", k, candidates[k].rejected)
    allowed = {k for k in fits if candidates[k].rejected is None}
    if not allowed:
        from autoseg.errors import InputDataError

        raise InputDataError(
            f"every k tried has a cluster smaller than --min-cluster-size ({min_cluster_size} "
            "rows of the searched data): lower --min-cluster-size or --min-clusters"
        )
    ranking = rank_silhouettes(
        x, {k: fit[1] for k, fit in fits.items()}, eligible=allowed,
        exact_max_rows=exact_max_rows, sample_size=sample_size, seed=seed,
        population_rows=population_rows, xp=xp,
    )
    scores = ranking.scores
    for k, score in scores.items():
        candidates[k].silhouette = score.score
        candidates[k].silhouette_stderr = score.stderr
        log.info(
            "k=%d silhouette %.4f (+-%.4f)%s", k, score.score, score.stderr,
            "" if score.exact else f" from {score.n_points} sampled points",
        )
    log.info("silhouette rounds (points, k compared, exact): %s", list(ranking.rounds))
    best_k = ranking.best
    if len(k_values) == 1:
        reason = f"k={best_k} fixed by num_clusters"
    else:
        runner_up = sorted(
            (s.score for k, s in scores.items() if k != best_k and k in allowed), reverse=True
        )
        reason = f"highest mean silhouette {scores[best_k].score:.4f}"
        if runner_up:
            reason += f" (next best {runner_up[0]:.4f})"
    best = scores[best_k]
    return SearchResult(
        candidates=[candidates[k] for k in k_values],
        chosen_k=best_k,
        reason=reason,
        centroids=fits[best_k][0],
        labels=fits[best_k][1],
        silhouette_exact=best.exact and population_rows is None,
        silhouette_points=best.n_points,
        per_cluster_silhouette=list(best.per_cluster),
        fits={k: (fit[0], fit[1]) for k, fit in fits.items()},
        per_cluster_by_k={k: list(sc.per_cluster) for k, sc in scores.items()},
    )


def _no_valid_k(candidates: dict[int, KCandidate]) -> Exception:
    from autoseg.errors import InputDataError

    first = next(iter(candidates.values()))
    return InputDataError(
        f"no candidate k could be used: {first.rejected}; lower --max-clusters/--num-clusters "
        "or give a table with more distinct rows"
    )


def refit_on_all_rows(
    x: Any, centroids: np.ndarray, seed: int, backend: Backend | None = None
) -> tuple[np.ndarray, dict[str, Any]]:
    """Lloyd iterations on every row, started from centroids found on a sample.

    The k search runs on a sample (restarts are cheap there); one warm-started fit on all rows
    then moves the centroids to the whole table's optimum, with scikit-learn's stopping rule.
    On the host this is :func:`autoseg.lloyd.refit_in_blocks` (no copy of the matrix; see its
    module for why not scikit-learn's ``KMeans``), on a GPU with cuML it is cuML's KMeans.

    Returns
    -------
    tuple
        The (k, d) float32 centroids and facts for the summary (engine, iterations, inertia).
    """
    backend = default_backend(backend)
    if not backend.uses_cuml:
        fitted, facts = refit_in_blocks(backend.to_host(x), centroids)
        return fitted, {"engine": "lloyd", **facts}
    model = backend.kmeans(centroids.shape[0], init=centroids.astype(np.float32), n_init=1,
                           seed=seed, tol=LLOYD_TOL, max_iter=LLOYD_MAX_ITER)
    model.fit(backend.to_device(x, np.float32))
    return (np.asarray(model.cluster_centers_, dtype=np.float32),
            {"engine": "cuml", "iterations": model.n_iter_, "inertia": float(model.inertia_)})
