"""Cluster matching across refits: ids keep their meaning, new and vanished clusters show."""

from __future__ import annotations

import json

import numpy as np
import pytest

from autoseg.matching import match_clusters, relabel
from autoseg.search import nearest_centroid


def _centroids(k: int = 4, d: int = 6, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 5, size=(k, d))


def test_permuted_centroids_get_their_old_ids_back() -> None:
    old = _centroids()
    rng = np.random.default_rng(1)
    order = np.array([2, 0, 3, 1])
    new = old[order] + rng.normal(0, 0.05, old.shape)
    matching = match_clusters(old, new)
    assert matching.mapping == {j: int(order[j]) for j in range(4)}
    assert matching.new_ids.tolist() == order.tolist()
    assert matching.unmatched_new == [] and matching.vanished_old == []
    assert np.all(matching.distances < 0.5)
    # Rows keep the meaning of their id: relabelled new labels equal the old labels.
    points = rng.normal(0, 5, size=(500, 6))
    old_labels = nearest_centroid(points.astype(np.float32), old.astype(np.float32))
    new_labels = nearest_centroid(points.astype(np.float32), new.astype(np.float32))
    assert (relabel(new_labels, matching) == old_labels).mean() > 0.98


def test_a_new_cluster_gets_a_fresh_id_after_the_old_maximum() -> None:
    old = _centroids(3)
    far = np.full((1, 6), 100.0)
    new = np.vstack([far, old[[1, 0, 2]]])
    matching = match_clusters(old, new)
    assert matching.mapping == {1: 1, 2: 0, 3: 2}
    assert matching.unmatched_new == [0]
    assert matching.new_ids.tolist() == [3, 1, 0, 2]
    assert np.isnan(matching.distances[0])
    assert relabel(np.array([0, 1, 2, 3]), matching).tolist() == [3, 1, 0, 2]


def test_a_vanished_cluster_is_reported() -> None:
    old = _centroids(4)
    new = old[[3, 1]] + 0.01
    matching = match_clusters(old, new, old_ids=[10, 11, 12, 13])
    assert matching.new_ids.tolist() == [13, 11]
    assert matching.vanished_old == [10, 12]
    assert matching.unmatched_new == []


def test_fresh_ids_follow_non_contiguous_old_ids() -> None:
    old = _centroids(2)
    new = np.vstack([old[0], old[1] + 200.0])
    matching = match_clusters(old, new, old_ids=[0, 7])
    assert matching.new_ids.tolist() == [0, 8]
    assert matching.vanished_old == [7]


def test_relative_threshold_refuses_a_centroid_that_moved_too_far() -> None:
    old = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    # The first moved 6 units towards the second: more than half their distance (5).
    new = np.array([[6.0, 0.0], [10.0, 0.5], [0.0, 10.0]])
    matching = match_clusters(old, new)
    assert matching.mapping == {1: 1, 2: 2}
    assert matching.unmatched_new == [0] and matching.vanished_old == [0]
    assert matching.new_ids.tolist() == [3, 1, 2]
    # Without the bound, the optimal assignment pairs it with its old self.
    assert match_clusters(old, new, max_relative_distance=None).new_ids.tolist() == [0, 1, 2]


def test_absolute_threshold() -> None:
    old = np.array([[0.0, 0.0], [10.0, 0.0]])
    new = np.array([[0.4, 0.0], [10.0, 2.0]])
    matching = match_clusters(old, new, max_distance=1.0)
    assert matching.mapping == {0: 0}
    assert matching.new_ids.tolist() == [0, 2]


def test_thresholds_do_not_spoil_the_assignment() -> None:
    # The unconstrained optimum pairs new 0 with old 1 (2.24 apart, beyond the bound) and new 1
    # with old 0; the bound-aware assignment keeps two allowed pairs instead of one.
    old = np.array([[5.0, 4.0], [4.0, 2.0], [5.0, 0.0]])
    new = np.array([[3.0, 4.0], [5.0, 3.0]])
    matching = match_clusters(old, new, max_distance=2.0, max_relative_distance=None)
    assert matching.mapping == {0: 0, 1: 1}
    assert matching.vanished_old == [2]


def test_matching_is_json_able_and_checks_inputs() -> None:
    old = _centroids(3)
    matching = match_clusters(old, np.vstack([old[:2], [[99.0] * 6]]))
    summary = matching.as_dict()
    assert summary["distances"][2] is None
    json.dumps(summary, allow_nan=False)
    with pytest.raises(ValueError, match="same prepared space"):
        match_clusters(old, old[:, :3])
    with pytest.raises(ValueError, match="old_ids must be 3 distinct"):
        match_clusters(old, old, old_ids=[0, 0, 1])
    with pytest.raises(ValueError, match="max_distance=0"):
        match_clusters(old, old, max_distance=0)
    with pytest.raises(ValueError, match=r"labels must lie in 0\.\.2"):
        relabel(np.array([0, 3]), matching)
