"""k-means that reaches the optimum: swaps fix what best-of-n k-means++ leaves wrong."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.cluster import KMeans

from autoseg.backend import select_backend
from autoseg.kmeans import fit_optimum


def _grid(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """25 round clusters on a jittered 5 x 5 grid (an A-type set in small)."""
    rng = np.random.default_rng(seed)
    centres = np.stack(np.meshgrid(np.arange(5), np.arange(5)), -1).reshape(-1, 2) * 6.0
    centres += rng.uniform(-1, 1, centres.shape)
    truth = np.repeat(np.arange(25), 60)
    x = centres[truth] + rng.normal(0, 1, (truth.size, 2))
    return x.astype(np.float32), truth


def _optimum(x: np.ndarray, truth: np.ndarray) -> float:
    start = np.stack([x[truth == c].mean(axis=0) for c in np.unique(truth)])
    return float(KMeans(start.shape[0], init=start, n_init=1).fit(x).inertia_)


def test_swaps_reach_the_optimum_where_a_restart_does_not() -> None:
    x, truth = _grid(1)
    optimum = _optimum(x, truth)
    backend = select_backend("cpu")
    fits = [fit_optimum(x, 25, restarts=1, seed=seed, backend=backend) for seed in range(4)]
    # single k-means++ starts land in local optima (two centroids in one cluster) ...
    assert max(f.restart_inertia for f in fits) > 1.1 * optimum
    # ... and the swaps move every one of them to the optimum
    for fit in fits:
        assert fit.inertia <= optimum * 1.005
        assert fit.inertia <= fit.restart_inertia * (1 + 1e-6)
    assert sum(f.swaps for f in fits) >= 1


def test_the_refined_fit_is_reproducible() -> None:
    x, _ = _grid(2)
    backend = select_backend("cpu")
    first = fit_optimum(x, 25, restarts=1, seed=3, backend=backend)
    second = fit_optimum(x, 25, restarts=1, seed=3, backend=backend)
    np.testing.assert_array_equal(first.centroids, second.centroids)
    assert (first.swaps, first.trials) == (second.swaps, second.trials)


def test_no_patience_keeps_the_best_restart() -> None:
    x, _ = _grid(0)
    backend = select_backend("cpu")
    fit = fit_optimum(x, 25, restarts=2, seed=0, backend=backend, patience=0)
    plain = backend.kmeans(25, n_init=2, seed=0).fit(x)
    assert fit.trials == 0 and fit.swaps == 0
    assert fit.inertia == pytest.approx(float(plain.inertia_))
    np.testing.assert_allclose(fit.centroids, plain.cluster_centers_, rtol=1e-6)


def test_duplicate_rows_and_tiny_inputs_do_not_break_the_swaps() -> None:
    backend = select_backend("cpu")
    x = np.repeat(np.array([[0.0, 0.0], [1.0, 1.0], [5.0, 5.0]], dtype=np.float32), 20, axis=0)
    fit = fit_optimum(x, 3, restarts=1, seed=0, backend=backend)
    assert fit.inertia == pytest.approx(0.0, abs=1e-6)
    assert np.isfinite(fit.centroids).all()
    few = fit_optimum(x[:3], 3, restarts=1, seed=0, backend=backend)
    assert few.trials == 0
