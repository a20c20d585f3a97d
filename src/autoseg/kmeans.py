"""k-means that reaches the optimum: k-means++ restarts refined by targeted centroid swaps.

Best-of-n k-means++ (scikit-learn's greedy seeding, ``2 + log k`` candidates per step) leaves
Lloyd in a local optimum as soon as k is large: two centroids share one real cluster while
another pair of real clusters shares one centroid, and no Lloyd step can move a centroid that
far. Measured on A-type sets (20-50 round clusters), best-of-10 ends up to 11% above the
optimum for some seeds, and the silhouette of that worse solution can pick the wrong k. More
restarts do not fix it (each start has the same small chance of getting every cluster right).

The swap refinement (random swap, Fränti 2018, with the candidate drawn as in k-means++ and the
removed centroid chosen by its exact cost, after Lattanzi and Sohler 2019) fixes exactly that
kind of mistake. Each trial

1. draws a data point with probability proportional to its squared distance to the nearest
   centroid (where a centroid is missing, the points are far from every centroid);
2. computes, for every centroid, the exact inertia if it were replaced by that point (one pass:
   each point then goes to the new centroid, to its nearest one, or to its second nearest when
   its own centroid is the one removed), and removes the cheapest;
3. when the inertia right after the swap is within ``DIRECT_COST_MARGIN`` of the current one,
   runs ``LOCAL_LLOYD_STEPS`` Lloyd iterations and keeps the swap only if the inertia fell.

Trials stop after ``patience`` consecutive failures or ``max_trials`` in all; a final Lloyd run
to convergence (the backend's k-means, started from the swapped centroids) gives the result.
Every trial costs a few ``n x k`` distance passes on the search sample (at most
``search_sample_size`` rows), so the cost does not grow with the table.

The numerics are written against the array namespace ``xp`` of the backend (NumPy, or CuPy on a
GPU); the random draws come from a host generator, so a seed gives the same trials on both.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from autoseg.backend import Backend

# Lloyd iterations after a swap before it is judged: two let the swapped centroid and its
# neighbours settle (Fränti 2018 uses two), more cost time without changing which swaps win.
LOCAL_LLOYD_STEPS = 2
# A swap whose inertia right after the swap (before Lloyd) exceeds the current inertia by more
# than this fraction is rejected without running Lloyd: such a trial costs one pass over the
# rows instead of three k-times dearer ones. Measured on A-type sets: margins 0, 0.5% and 1% all
# reach the optimum at the true k; 0.5% keeps somewhat better fits at k-1 and k+1 than 0, and
# costs about half the Lloyd trials of 1%.
DIRECT_COST_MARGIN = 0.005
# Consecutive rejected swaps after which the solution counts as converged.
DEFAULT_PATIENCE = 100
# Hard cap on trials per fit, whatever k (bounded cost).
DEFAULT_MAX_TRIALS = 2000
# Candidates whose direct cost is computed together (one GEMM); see fit_optimum.
SWAP_BATCH = 16
# A swap must lower the inertia by more than this fraction to count (float32 noise).
MIN_RELATIVE_GAIN = 1e-6


@dataclass
class KMeansFit:
    """One k-means solution on host memory.

    Attributes
    ----------
    centroids
        (k, d) float32 centroids.
    inertia
        Sum of squared distances of the rows to their nearest centroid.
    restart_inertia
        Inertia of the best k-means++ restart, before the swaps.
    swaps
        Swaps kept.
    trials
        Swaps tried.
    """

    centroids: np.ndarray
    inertia: float
    restart_inertia: float
    swaps: int
    trials: int


def fit_optimum(
    x: Any,
    k: int,
    *,
    restarts: int,
    seed: int,
    backend: Backend,
    patience: int = DEFAULT_PATIENCE,
    max_trials: int = DEFAULT_MAX_TRIALS,
) -> KMeansFit:
    """k-means++ with ``restarts`` starts, then swap refinement until no swap helps.

    Parameters
    ----------
    x
        (n, d) float32 rows, an array of ``backend.xp`` (on the device for a GPU backend).
    k
        Number of clusters.
    restarts
        k-means++ starts of the first fit (the lowest inertia is refined).
    seed
        Seed of the starts and of the swap draws.
    backend
        Builds the k-means estimators and gives ``xp``.
    patience
        Consecutive rejected swaps that end the refinement; 0 skips it.
    max_trials
        Most swaps tried.

    Returns
    -------
    KMeansFit
        The refined solution.
    """
    xp = backend.xp
    start = backend.kmeans(k, n_init=restarts, seed=seed).fit(x)
    centroids = np.asarray(start.cluster_centers_, dtype=np.float32)
    restart_inertia = float(start.inertia_)
    n = int(x.shape[0])
    if k < 2 or n <= k or patience <= 0 or max_trials <= 0:
        return KMeansFit(centroids, restart_inertia, restart_inertia, 0, 0)
    rng = np.random.default_rng(seed)
    x_norms = (x * x).sum(axis=1)
    c = xp.asarray(centroids, dtype=xp.float32)
    d1, d2, nearest = _two_nearest(x, x_norms, c, xp)
    inertia = float(d1.sum())
    swaps = trials = failures = 0
    while trials < max_trials and failures < patience:
        # The direct costs of a batch of drawn candidates cost about what one did alone (one
        # GEMM); most trials fail, and a kept swap discards the rest of its batch (drawn from
        # the old distances).
        batch = min(SWAP_BATCH, max_trials - trials, patience - failures)
        candidates = _draw_d2(d1, batch, rng, xp)
        direct, removed = _direct_costs(x, x_norms, candidates, d1, d2, nearest, k, xp)
        for b in range(batch):
            trials += 1
            if direct[b] > inertia * (1.0 + DIRECT_COST_MARGIN):
                # Not even close before Lloyd: reject without the (k times dearer) Lloyd steps.
                failures += 1
                continue
            trial = c.copy()
            trial[int(removed[b])] = x[int(candidates[b])]
            for _ in range(LOCAL_LLOYD_STEPS):
                trial = _lloyd_step(x, trial, xp)
            t1, t2, t_nearest = _two_nearest(x, x_norms, trial, xp)
            trial_inertia = float(t1.sum())
            if trial_inertia < inertia * (1.0 - MIN_RELATIVE_GAIN):
                c, d1, d2, nearest, inertia = trial, t1, t2, t_nearest, trial_inertia
                swaps += 1
                failures = 0
                break
            failures += 1
    if swaps == 0:
        return KMeansFit(centroids, restart_inertia, restart_inertia, 0, trials)
    final = backend.kmeans(k, init=_host(c), n_init=1, seed=seed).fit(x)
    return KMeansFit(np.asarray(final.cluster_centers_, dtype=np.float32),
                     float(final.inertia_), restart_inertia, swaps, trials)


def _two_nearest(x: Any, x_norms: Any, c: Any, xp: Any) -> tuple[Any, Any, Any]:
    """Squared distance to the nearest and second-nearest centroid, and the nearest's index."""
    distances = (c * c).sum(axis=1)[None, :] - 2.0 * (x @ c.T) + x_norms[:, None]
    xp.maximum(distances, 0.0, out=distances)
    nearest = distances.argmin(axis=1)
    rows = xp.arange(distances.shape[0])
    d1 = distances[rows, nearest].copy()
    distances[rows, nearest] = xp.inf
    d2 = distances.min(axis=1)
    return d1.astype(xp.float64), d2.astype(xp.float64), nearest


def _lloyd_step(x: Any, c: Any, xp: Any) -> Any:
    """One Lloyd iteration; a centroid left without rows stays where it was."""
    k = c.shape[0]
    distances = (c * c).sum(axis=1)[None, :] - 2.0 * (x @ c.T)
    labels = distances.argmin(axis=1)
    counts = xp.bincount(labels, minlength=k).astype(xp.float32)
    # Per-column bincounts: cheaper than a one-hot GEMM for the narrow matrices k-means sees.
    sums = xp.stack([xp.bincount(labels, weights=x[:, j], minlength=k)
                     for j in range(x.shape[1])], axis=1).astype(xp.float32)
    filled = counts > 0
    updated = c.copy()
    updated[filled] = sums[filled] / counts[filled][:, None]
    return updated


def _direct_costs(x: Any, x_norms: Any, candidates: np.ndarray, d1: Any, d2: Any,
                  nearest: Any, k: int, xp: Any) -> tuple[np.ndarray, np.ndarray]:
    """Inertia right after each candidate point replaces its cheapest centroid, and that
    centroid, for a batch of candidates (host arrays).

    Each point then goes to the candidate, to its nearest centroid, or, when its own centroid
    is the one removed, to the second nearest.
    """
    index = xp.asarray(candidates)
    points = x[index]
    d_new = x_norms[:, None] - 2.0 * (x @ points.T) + x_norms[index][None, :]
    d_new = xp.maximum(d_new, 0.0).astype(xp.float64)
    keep = xp.minimum(d_new, d1[:, None])
    # Removing centroid j costs its own points min(new, second nearest) instead: per-cluster
    # sums of that change for every candidate at once, as a (k, batch) product.
    change = xp.minimum(d_new, d2[:, None]) - keep
    one_hot = xp.zeros((int(x.shape[0]), k), dtype=xp.float64)
    one_hot[xp.arange(int(x.shape[0])), nearest] = 1.0
    extra = one_hot.T @ change
    removed = extra.argmin(axis=0)
    direct = keep.sum(axis=0) + extra[removed, xp.arange(len(candidates))]
    return _host(direct), _host(removed)


def _draw_d2(d1: Any, count: int, rng: np.random.Generator, xp: Any) -> np.ndarray:
    """``count`` row indices drawn with probability proportional to ``d1`` (k-means++
    weighting), with replacement."""
    cumulative = xp.cumsum(d1)
    total = float(cumulative[-1])
    n = int(d1.shape[0])
    if not total > 0:
        return rng.integers(n, size=count)
    values = xp.asarray(rng.random(count) * total, dtype=cumulative.dtype)
    index = _host(xp.searchsorted(cumulative, values, side="right"))
    return np.minimum(index, n - 1)


def _host(array: Any) -> np.ndarray:
    return array.get() if hasattr(array, "get") else np.asarray(array)
