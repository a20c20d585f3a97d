"""Stability of the clustering for each candidate k, and a choice of k that prefers it.

A silhouette peak can be a coin toss: when k does not match real structure, k-means splits the
data differently from one sample (or seed) to the next, and segments that change meaning on every
refit are useless to a marketer. Stability measures this directly (the idea of Ben-Hur et al.,
2002, and Lange et al., 2004): fit k-means on ``runs`` random subsamples with different seeds,
assign the *same* evaluation rows to the nearest centroid of each fit, and compare the labellings
pairwise with the adjusted Rand index (ARI; 1 = the same partition up to renaming, ~0 = chance).

Runtime is bounded: every fit sees at most ``sample_fraction * max_rows`` rows and the evaluation
uses at most ``max_rows`` rows, whatever the table's size.

:func:`choose_stable_k` keeps the silhouette as the first criterion (it is the product's rule
for choosing k) and uses stability to decide between the k whose silhouettes are practically
equal (within ``tolerance``).
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations
from typing import TYPE_CHECKING

import numpy as np

from autoseg.kmeans import fit_optimum
from autoseg.parallel import map_on_cores
from autoseg.search import default_backend, nearest_centroid_with_distance

if TYPE_CHECKING:
    from autoseg.backend import Backend

DEFAULT_RUNS = 5
DEFAULT_SAMPLE_FRACTION = 0.8
DEFAULT_MAX_ROWS = 20_000
DEFAULT_RESTARTS = 3
# Silhouettes closer than this to the best count as equally good (absolute silhouette units):
# with sampled silhouettes, differences of a few hundredths are within noise.
DEFAULT_SILHOUETTE_TOLERANCE = 0.02
# Mean ARIs closer than this count as equally stable, and the smaller k wins: with 5 runs the
# mean ARI of a stable k moves by about this much from one set of seeds to the next.
STABILITY_TIE_TOLERANCE = 0.01


@dataclass(frozen=True)
class StabilityScore:
    """Agreement between k-means fits on different subsamples, for one k.

    ``mean_ari`` and ``std_ari`` summarise the adjusted Rand index over all pairs of ``runs``
    fits; ``eval_rows`` is the number of rows every fit labelled.
    """

    mean_ari: float
    std_ari: float
    runs: int
    eval_rows: int = 0

    def as_dict(self) -> dict[str, float | int]:
        """JSON-able representation."""
        return {"mean_ari": self.mean_ari, "std_ari": self.std_ari, "runs": self.runs,
                "eval_rows": self.eval_rows}


def stability_by_k(
    x: np.ndarray,
    k_values: list[int],
    *,
    runs: int = DEFAULT_RUNS,
    sample_fraction: float = DEFAULT_SAMPLE_FRACTION,
    max_rows: int = DEFAULT_MAX_ROWS,
    restarts: int = DEFAULT_RESTARTS,
    seed: int = 0,
    backend: Backend | None = None,
) -> dict[int, StabilityScore]:
    """Subsampling stability (mean pairwise ARI) of k-means for every candidate k.

    Parameters
    ----------
    x
        (n, d) prepared matrix (the one k-means clusters).
    k_values
        Candidate numbers of clusters, each >= 2.
    runs
        Fits per k (>= 2); all ``runs * (runs - 1) / 2`` pairs are compared.
    sample_fraction
        Share of ``min(n, max_rows)`` rows each fit sees, in (0, 1].
    max_rows
        Most rows in the common evaluation sample (and the base of the fit size).
    restarts
        k-means++ starts per fit, each fit then refined by centroid swaps as in the search
        (:func:`autoseg.kmeans.fit_optimum`).
    seed
        Seed of the samples; run ``r`` uses k-means seed ``seed + r``.
    backend
        Builds the k-means estimators (the CPU when ``None``); on a GPU the fits and
        assignments run on one device copy of the evaluation rows and subsamples.

    Returns
    -------
    dict
        ``{k: StabilityScore}`` in the order of ``k_values``.

    Raises
    ------
    ValueError
        When a parameter is out of range or the data is too small for a k.
    """
    x = np.ascontiguousarray(x, dtype=np.float32)
    n = x.shape[0] if x.ndim == 2 else 0
    _check_stability_inputs(x, k_values, runs, sample_fraction, max_rows, restarts)
    rng = np.random.default_rng(seed)
    eval_size = min(n, max_rows)
    evaluation = x[np.sort(rng.choice(n, eval_size, replace=False))] if n > max_rows else x
    fit_size = max(int(round(sample_fraction * eval_size)), max(k_values) + 1)
    fit_size = min(fit_size, n)
    # The same subsamples serve every k, so differences between k are not sampling noise.
    subsamples = [np.sort(rng.choice(n, fit_size, replace=False)) for _ in range(runs)]
    backend = default_backend(backend)
    evaluation_device = backend.to_device(evaluation, np.float32)
    fit_rows = [backend.to_device(x[rows], np.float32) for rows in subsamples]
    def score_k(k: int) -> StabilityScore:
        labellings = []
        for run, rows_device in enumerate(fit_rows):
            # The search's own optimiser: stability then measures how much the optimum itself
            # moves between samples, not how often a restart lands in a local optimum.
            centroids = fit_optimum(rows_device, k, restarts=restarts, seed=seed + run,
                                    backend=backend).centroids
            labels, _ = nearest_centroid_with_distance(evaluation_device, centroids,
                                                       xp=backend.xp)
            labellings.append(labels)
        from sklearn.metrics import adjusted_rand_score  # heavy: imported where used

        aris = np.array([adjusted_rand_score(a, b) for a, b in combinations(labellings, 2)])
        return StabilityScore(mean_ari=float(aris.mean()), std_ari=float(aris.std()),
                              runs=runs, eval_rows=int(eval_size))

    # Every k is independent: side by side on the CPU's cores, in turn on a GPU.
    results = map_on_cores(score_k, k_values, in_turn=backend.is_gpu)
    scores: dict[int, StabilityScore] = dict(zip(k_values, results, strict=True))
    return scores


def choose_stable_k(
    silhouettes: dict[int, float],
    stability: dict[int, StabilityScore],
    tolerance: float = DEFAULT_SILHOUETTE_TOLERANCE,
    *,
    stability_tolerance: float = STABILITY_TIE_TOLERANCE,
    tie_break: str = "smaller_k",
) -> tuple[int, str]:
    """The most stable k among those whose silhouette is within ``tolerance`` of the best.

    Parameters
    ----------
    silhouettes
        Mean silhouette per k (k with a missing or NaN silhouette are ignored).
    stability
        Stability per k from :func:`stability_by_k`.
    tolerance
        Silhouettes at least ``best - tolerance`` are eligible (absolute silhouette units).
    stability_tolerance
        Eligible k whose mean ARI is within this of the most stable one tie.
    tie_break
        ``"smaller_k"``: the smallest tied k wins. ``"silhouette"``: the tied k with the
        highest silhouette wins (then the smaller k). When several k are all practically
        perfectly stable (e.g. 0.999 and 0.998), ``smaller_k`` merges real segments; the
        silhouette then still separates them.

    Returns
    -------
    tuple of (int, str)
        The chosen k and a one-line reason.

    Raises
    ------
    ValueError
        When a tolerance is negative, ``tie_break`` is unknown, or no k has both a silhouette
        and a stability score.
    """
    if tolerance < 0:
        raise ValueError(f"tolerance={tolerance} must be >= 0")
    if stability_tolerance < 0:
        raise ValueError(f"stability_tolerance={stability_tolerance} must be >= 0")
    if tie_break not in ("smaller_k", "silhouette"):
        raise ValueError(f"tie_break={tie_break!r} must be 'smaller_k' or 'silhouette'")
    common = sorted(
        k for k, s in silhouettes.items()
        if k in stability and s is not None and np.isfinite(s)
    )
    if not common:
        raise ValueError(
            f"no k has both a silhouette ({sorted(silhouettes)}) and a stability score "
            f"({sorted(stability)})"
        )
    best_silhouette = max(silhouettes[k] for k in common)
    eligible = [k for k in common if silhouettes[k] >= best_silhouette - tolerance]
    most_stable = max(stability[k].mean_ari for k in eligible)
    tied = [k for k in eligible if stability[k].mean_ari >= most_stable - stability_tolerance]
    if tie_break == "silhouette":
        chosen = min(tied, key=lambda k: (-silhouettes[k], k))
    else:
        chosen = min(tied)
    score = stability[chosen]
    if len(eligible) == 1:
        reason = (
            f"highest silhouette {best_silhouette:.4f}, no other k within {tolerance:g} "
            f"(mean ARI {score.mean_ari:.3f} over {score.runs} subsample fits)"
        )
    else:
        reason = (
            f"most stable k (mean ARI {score.mean_ari:.3f} +- {score.std_ari:.3f} over "
            f"{score.runs} subsample fits, silhouette {silhouettes[chosen]:.4f}) among k="
            f"{eligible} whose silhouette is within {tolerance:g} of the best "
            f"{best_silhouette:.4f}"
        )
        if len(tied) > 1:
            rule = "higher silhouette" if tie_break == "silhouette" else "smaller k"
            reason += f"; k={tied} equally stable (within {stability_tolerance:g}), {rule} wins"
    return chosen, reason


def _check_stability_inputs(
    x: np.ndarray,
    k_values: list[int],
    runs: int,
    sample_fraction: float,
    max_rows: int,
    restarts: int,
) -> None:
    if x.ndim != 2:
        raise ValueError(f"x must be a 2-d matrix, got shape {x.shape}")
    if not k_values:
        raise ValueError("k_values is empty: give at least one k")
    if min(k_values) < 2:
        raise ValueError(f"k={min(k_values)} must be >= 2 (one cluster is always stable)")
    if runs < 2:
        raise ValueError(f"runs={runs} must be >= 2 (stability compares pairs of fits)")
    if not 0 < sample_fraction <= 1:
        raise ValueError(f"sample_fraction={sample_fraction} must be in (0, 1]")
    if restarts < 1:
        raise ValueError(f"restarts={restarts} must be >= 1")
    if max_rows < max(k_values) + 1:
        raise ValueError(f"max_rows={max_rows} must be >= max(k_values)+1={max(k_values) + 1}")
    if x.shape[0] < max(k_values) + 1:
        raise ValueError(
            f"n_rows={x.shape[0]} must be >= max(k_values)+1={max(k_values) + 1}"
        )


__all__ = ["StabilityScore", "choose_stable_k", "stability_by_k"]
