"""The all-rows Lloyd refit: scikit-learn's fixed point and stopping rule, in blocks."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.cluster import KMeans
from sklearn.datasets import make_blobs

from autoseg.lloyd import (
    LLOYD_TOL,
    assign_in_blocks,
    block_moments,
    block_totals,
    lloyd_iterations,
    refit_in_blocks,
    tolerance_from_moments,
)
from autoseg.search import nearest_centroid


def _blobs(rows: int = 6000, k: int = 5, seed: int = 4) -> np.ndarray:
    x, _ = make_blobs(rows, 6, centers=k, cluster_std=2.5, random_state=seed)
    return x.astype(np.float32)


def _inertia64(x: np.ndarray, centroids: np.ndarray) -> float:
    gaps = x.astype(np.float64)[:, None, :] - centroids.astype(np.float64)[None]
    return float((gaps ** 2).sum(axis=2).min(axis=1).sum())


def test_refit_reaches_scikit_learns_warm_started_fit() -> None:
    x = _blobs()
    start = x[:5].copy()  # a poor start, so several iterations are needed
    fitted, facts = refit_in_blocks(x, start, block_rows=1000)
    theirs = KMeans(5, init=start, n_init=1, algorithm="lloyd").fit(x)
    np.testing.assert_allclose(fitted, theirs.cluster_centers_, atol=1e-4)
    assert facts["iterations"] == theirs.n_iter_
    assert facts["final_shift"] <= facts["tolerance"]
    # the reported inertia is the last pass's: within the tolerance of the final centroids'
    assert facts["inertia"] == pytest.approx(_inertia64(x, fitted), rel=1e-4)


def test_tolerance_is_scikit_learns_mean_column_variance_times_tol() -> None:
    x = _blobs(rows=3000) * 7.0 + 100.0
    moments = block_moments(x[:1234]) + block_moments(x[1234:])
    expected = float(np.var(x.astype(np.float64), axis=0).mean() * LLOYD_TOL)
    assert tolerance_from_moments(moments, x.shape[1]) == pytest.approx(expected, rel=1e-9)


def test_block_totals_are_the_sums_counts_and_inertia_of_the_nearest_assignment() -> None:
    rng = np.random.default_rng(1)
    block = rng.normal(size=(2000, 4)).astype(np.float32)
    centroids = rng.normal(size=(3, 4)).astype(np.float32)
    total = block_totals(block, centroids)
    labels = ((block[:, None, :] - centroids[None]) ** 2).sum(axis=2).argmin(axis=1)
    sums = np.stack([block[labels == j].astype(np.float64).sum(axis=0) for j in range(3)])
    np.testing.assert_allclose(total[:12].reshape(3, 4), sums, rtol=1e-5, atol=1e-3)
    np.testing.assert_array_equal(total[12:15], np.bincount(labels, minlength=3))
    squared_norms = float(block_moments(block)[5:9].sum())
    assert total[15] + squared_norms == pytest.approx(_inertia64(block, centroids), rel=1e-5)


def test_ties_go_to_the_lower_centroid_as_with_argmin() -> None:
    block = np.zeros((4, 2), dtype=np.float32)
    centroids = np.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    counts = block_totals(block, centroids)[6:9]
    np.testing.assert_array_equal(counts, [4, 0, 0])


def test_a_cluster_left_without_rows_keeps_its_centroid() -> None:
    x = _blobs(rows=2000, k=2)
    far = np.array([1e4] * x.shape[1], dtype=np.float32)
    start = np.vstack([x[:2], far])
    fitted, _ = refit_in_blocks(x, start)
    np.testing.assert_array_equal(fitted[2], far)
    assert np.isfinite(fitted).all()


def test_the_result_does_not_depend_on_the_block_size_or_cores(monkeypatch) -> None:
    x = _blobs(rows=20_000, k=4, seed=9)
    start = x[::5000].copy()
    small, small_facts = refit_in_blocks(x, start, block_rows=777)
    large, large_facts = refit_in_blocks(x, start, block_rows=50_000)
    np.testing.assert_allclose(small, large, atol=1e-5)
    assert small_facts["iterations"] == large_facts["iterations"]
    monkeypatch.setattr("autoseg.parallel.cpu_cores", lambda: 1)
    one_core, _ = refit_in_blocks(x, start, block_rows=777)
    np.testing.assert_array_equal(one_core, small)


def test_max_iter_stops_the_iterations() -> None:
    x = _blobs()
    fitted, facts = refit_in_blocks(x, x[:5].copy(), max_iter=1)
    assert facts["iterations"] == 1
    assert facts["final_shift"] > facts["tolerance"]
    one_step, _ = lloyd_iterations(lambda c: block_totals(x, c), x[:5].copy(),
                                   block_moments(x), max_iter=1, tol=0.0)
    np.testing.assert_allclose(fitted, one_step, atol=1e-5)


def test_assign_in_blocks_gives_every_row_its_nearest_centroid() -> None:
    rng = np.random.default_rng(5)
    x = rng.normal(size=(10_001, 7)).astype(np.float32)
    centroids = rng.normal(size=(6, 7)).astype(np.float32)
    labels = assign_in_blocks(x, centroids, block_rows=1000)
    assert labels.dtype == np.int32
    np.testing.assert_array_equal(labels, nearest_centroid(x, centroids))
