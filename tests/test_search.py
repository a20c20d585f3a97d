"""The k search: finds true structure on benchmarks, records scores, tie-breaks to smaller k."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import make_blobs
from sklearn.metrics import adjusted_rand_score

from autoseg import search as search_module
from autoseg.errors import InputDataError
from autoseg.features import fit_features
from autoseg.search import nearest_centroid, search_k
from autoseg.silhouette import rank_silhouettes

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def _search(x: np.ndarray, ks: list[int], **kwargs: object) -> search_module.SearchResult:
    options = {"restarts": 10, "seed": 0, "exact_max_rows": 50_000, "sample_size": 20_000}
    options.update(kwargs)
    return search_k(x.astype(np.float32), ks, **options)  # type: ignore[arg-type]


@pytest.mark.skipif(not (DATA / "franti" / "s1.txt").exists(), reason="shared data missing")
def test_s1_benchmark_finds_the_15_clusters() -> None:
    points = np.loadtxt(DATA / "franti" / "s1.txt")
    truth = np.loadtxt(DATA / "franti" / "s1-labels.txt")
    frame = pd.DataFrame(points, columns=["x", "y"])
    matrix, _ = fit_features(frame).transform(frame)
    result = _search(matrix, list(range(2, 21)))
    assert result.chosen_k == 15
    assert adjusted_rand_score(truth, result.labels) >= 0.95


def test_scores_recorded_for_every_k() -> None:
    x, _ = make_blobs(900, 4, centers=3, random_state=0)
    result = _search(x, [2, 3, 4, 5])
    assert result.chosen_k == 3
    assert [c.k for c in result.candidates] == [2, 3, 4, 5]
    for cand in result.candidates:
        assert cand.silhouette is not None
        assert cand.inertia > 0
        assert cand.calinski_harabasz is not None and cand.calinski_harabasz > 0
        assert cand.davies_bouldin is not None and cand.davies_bouldin > 0
        assert sum(cand.sizes) == 900 and len(cand.sizes) == cand.k
    assert "highest mean silhouette" in result.reason


def test_labels_are_nearest_centroids() -> None:
    x, _ = make_blobs(500, 3, centers=4, random_state=2)
    result = _search(x, [4])
    assert (nearest_centroid(x.astype(np.float32), result.centroids) == result.labels).all()
    assert "fixed" in result.reason


def test_ties_go_to_the_smaller_k() -> None:
    # the same partition under two keys scores the same: the smaller key wins
    x, labels = make_blobs(3000, 2, centers=3, random_state=0)
    ranking = rank_silhouettes(x.astype(np.float32), {5: labels, 3: labels.copy()})
    assert ranking.best == 3
    assert ranking.scores[3].score == ranking.scores[5].score


def test_too_few_distinct_rows_rejects_k() -> None:
    x = np.repeat(np.array([[0.0, 0.0], [5.0, 5.0], [9.0, 0.0]]), 20, axis=0)
    result = _search(x, [2, 3, 4])
    rejected = {c.k: c.rejected for c in result.candidates}
    assert rejected[4] is not None and "non-empty clusters" in rejected[4]
    assert result.chosen_k == 3


def test_no_usable_k_is_an_input_error() -> None:
    x = np.repeat(np.array([[0.0, 0.0], [5.0, 5.0]]), 10, axis=0)
    with pytest.raises(InputDataError, match="no candidate k could be used"):
        _search(x, [3])


def _grid(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """25 round clusters on a jittered 5 x 5 grid, where single k-means++ starts get stuck."""
    rng = np.random.default_rng(seed)
    centres = np.stack(np.meshgrid(np.arange(5), np.arange(5)), -1).reshape(-1, 2) * 6.0
    centres += rng.uniform(-1, 1, centres.shape)
    truth = np.repeat(np.arange(25), 60)
    return (centres[truth] + rng.normal(0, 1, (truth.size, 2))).astype(np.float32), truth


def test_the_search_reaches_the_optimum_and_finds_the_true_k() -> None:
    from sklearn.cluster import KMeans

    x, truth = _grid(1)
    start = np.stack([x[truth == c].mean(axis=0) for c in range(25)])
    optimum = KMeans(25, init=start, n_init=1).fit(x)
    result = _search(x, [23, 24, 25, 26, 27], restarts=1)
    at_true_k = result.candidate(25)
    assert at_true_k is not None and at_true_k.restart_inertia is not None
    assert at_true_k.inertia <= optimum.inertia_ * 1.005
    assert at_true_k.inertia <= at_true_k.restart_inertia
    assert result.chosen_k == 25
    assert adjusted_rand_score(truth, result.labels) >= \
        adjusted_rand_score(truth, optimum.labels_) - 0.01
    assert result.candidate(30) is None


def test_refit_on_all_rows_moves_sample_centroids_to_the_table_optimum() -> None:
    x, _ = make_blobs(4000, 3, centers=4, random_state=3)
    x = x.astype(np.float32)
    sample = _search(x[::10], [4])
    centroids, facts = search_module.refit_on_all_rows(x, sample.centroids, seed=0)
    labels = nearest_centroid(x, centroids)
    expected = sum(float(((x[labels == c] - centroids[c]) ** 2).sum()) for c in range(4))
    assert facts["engine"] == "lloyd"
    assert facts["inertia"] == pytest.approx(expected, rel=1e-3)
