"""Keep cluster ids meaningful across refits: match new clusters to old ones.

k-means numbers its clusters arbitrarily, so a nightly refit can call yesterday's "loyal app
users" cluster 3 instead of 1, and every segment built on ``cluster_id = 1`` silently changes
meaning. :func:`match_clusters` pairs each new centroid with an old one by the optimal
assignment (Hungarian algorithm, :func:`scipy.optimize.linear_sum_assignment`) on Euclidean
centroid distances in the *same* prepared space (same feature spec and projection; refit clusters
on a newly fitted scaling are not comparable). Matched new clusters take the old id;
unmatched new clusters get fresh ids after the largest old id (an id is never reused for a
different meaning), and old ids left without a partner are reported as vanished.

Two centroids are only "the same cluster" when they are close. By default
(``max_relative_distance=DEFAULT_MAX_RELATIVE_DISTANCE`` = 0.5) a pair is refused when the new
centroid is farther from the old one than half the distance from that old centroid to its nearest
other old centroid. Below that bound the new centroid lies nearer its partner than any other old
centroid (triangle inequality), so the rows it takes would have been assigned to that old cluster
too: the id keeps its meaning. The bound is relative because prepared-space distances grow with
the number of columns, so no absolute default fits every table; ``max_distance`` adds an absolute
bound when the caller knows the scale.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

# A new centroid keeps an old id only within this share of the distance from the old centroid
# to its nearest other old centroid (0.5 keeps it in the old cluster's Voronoi cell).
DEFAULT_MAX_RELATIVE_DISTANCE = 0.5


@dataclass
class Matching:
    """How the clusters of a refit map onto the previous ones.

    Attributes
    ----------
    mapping
        ``{new cluster index: old id}`` for every matched new cluster.
    new_ids
        Final id of every new cluster index (``new_ids[j]``): the old id when matched, else a
        fresh id after the largest old id.
    unmatched_new
        New cluster indices without an old partner (they got fresh ids).
    vanished_old
        Old ids without a new partner.
    distances
        Distance from every new centroid to its matched old centroid (NaN when unmatched).
    distance_matrix
        (k_new, k_old) centroid distances.
    """

    mapping: dict[int, int]
    new_ids: np.ndarray
    unmatched_new: list[int]
    vanished_old: list[int]
    distances: np.ndarray
    distance_matrix: np.ndarray = field(repr=False)

    def as_dict(self) -> dict[str, Any]:
        """JSON-able summary (distances with NaN as None)."""
        return {
            "mapping": {str(k): int(v) for k, v in self.mapping.items()},
            "new_ids": [int(v) for v in self.new_ids],
            "unmatched_new": list(self.unmatched_new),
            "vanished_old": list(self.vanished_old),
            "distances": [None if np.isnan(d) else float(d) for d in self.distances],
        }


def match_clusters(
    old_centroids: np.ndarray,
    new_centroids: np.ndarray,
    *,
    old_ids: np.ndarray | list[int] | None = None,
    max_distance: float | None = None,
    max_relative_distance: float | None = DEFAULT_MAX_RELATIVE_DISTANCE,
) -> Matching:
    """Match the clusters of a refit to the previous clusters by optimal assignment.

    Parameters
    ----------
    old_centroids
        (k_old, d) centroids of the previous model, in the prepared space.
    new_centroids
        (k_new, d) centroids of the refit, in the same space.
    old_ids
        Id of every old centroid (default ``0 .. k_old-1``); ids need not be contiguous, e.g.
        after earlier refits retired some.
    max_distance
        Absolute bound: pairs farther apart are not the same cluster. None: no absolute bound.
    max_relative_distance
        Relative bound, see the module docstring. None: no relative bound.

    Returns
    -------
    Matching
        The mapping, the relabel array and what appeared or vanished.

    Raises
    ------
    ValueError
        When the centroid matrices are not 2-d, differ in width, or the ids do not fit.
    """
    old = np.asarray(old_centroids, dtype=np.float64)
    new = np.asarray(new_centroids, dtype=np.float64)
    if old.ndim != 2 or new.ndim != 2:
        raise ValueError(
            f"centroids must be 2-d matrices, got shapes {old.shape} and {new.shape}"
        )
    if old.shape[1] != new.shape[1]:
        raise ValueError(
            f"old centroids have {old.shape[1]} columns and new ones {new.shape[1]}: both must "
            "be in the same prepared space"
        )
    ids = np.arange(old.shape[0]) if old_ids is None else np.asarray(old_ids, dtype=np.int64)
    if ids.shape != (old.shape[0],) or len(np.unique(ids)) != len(ids) or (ids < 0).any():
        raise ValueError(
            f"old_ids must be {old.shape[0]} distinct non-negative ids, got {ids.tolist()}"
        )
    for name, bound in (("max_distance", max_distance),
                        ("max_relative_distance", max_relative_distance)):
        if bound is not None and not bound > 0:
            raise ValueError(f"{name}={bound} must be > 0 (or None for no bound)")

    distance = np.sqrt(((new[:, None, :] - old[None, :, :]) ** 2).sum(axis=2))
    allowed = np.ones_like(distance, dtype=bool)
    if max_distance is not None:
        allowed &= distance <= max_distance
    if max_relative_distance is not None and old.shape[0] > 1:
        between_old = np.sqrt(((old[:, None, :] - old[None, :, :]) ** 2).sum(axis=2))
        np.fill_diagonal(between_old, np.inf)
        allowed &= distance < max_relative_distance * between_old.min(axis=1)[None, :]

    # Disallowed pairs cost more than all allowed pairs together, so the assignment first
    # matches as many allowed pairs as possible, then minimises their total distance; the
    # disallowed pairs it still uses are dropped afterwards.
    penalty = distance[allowed].sum() + 1.0 if allowed.any() else 1.0
    cost = np.where(allowed, distance, penalty)
    from scipy.optimize import linear_sum_assignment  # heavy: imported where used

    rows, cols = linear_sum_assignment(cost) if distance.size else ([], [])
    mapping = {int(r): int(ids[c]) for r, c in zip(rows, cols, strict=True) if allowed[r, c]}

    next_id = int(ids.max()) + 1 if len(ids) else 0
    new_ids = np.empty(new.shape[0], dtype=np.int64)
    distances = np.full(new.shape[0], np.nan)
    unmatched = []
    old_index = {int(v): i for i, v in enumerate(ids)}
    for j in range(new.shape[0]):
        if j in mapping:
            new_ids[j] = mapping[j]
            distances[j] = distance[j, old_index[mapping[j]]]
        else:
            new_ids[j] = next_id
            next_id += 1
            unmatched.append(j)
    matched_old = set(mapping.values())
    vanished = [int(v) for v in ids if int(v) not in matched_old]
    return Matching(
        mapping=mapping, new_ids=new_ids, unmatched_new=unmatched, vanished_old=vanished,
        distances=distances, distance_matrix=distance,
    )


def relabel(labels: np.ndarray, matching: Matching) -> np.ndarray:
    """New cluster indices translated to their matched (or fresh) ids.

    Parameters
    ----------
    labels
        Cluster index of every row under the refit, in ``0 .. k_new-1``.
    matching
        The result of :func:`match_clusters`.

    Returns
    -------
    numpy.ndarray
        ``matching.new_ids[labels]``.

    Raises
    ------
    ValueError
        When a label is not a new cluster index.
    """
    labels = np.asarray(labels)
    k_new = len(matching.new_ids)
    if labels.size and (labels.min() < 0 or labels.max() >= k_new):
        raise ValueError(
            f"labels must lie in 0..{k_new - 1} (the refit's clusters), got "
            f"{labels.min()}..{labels.max()}"
        )
    return matching.new_ids[labels.astype(np.int64)]


__all__ = ["DEFAULT_MAX_RELATIVE_DISTANCE", "Matching", "match_clusters", "relabel"]
