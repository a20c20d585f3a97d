"""The fit stage: the k search on its rows, stability, and cluster ids kept across refits."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from autoseg.backend import Backend
from autoseg.config import RunConfig
from autoseg.features import FeatureSpec
from autoseg.matching import match_clusters
from autoseg.model import SegmentationModel
from autoseg.reduce import Projection
from autoseg.search import SearchResult, search_k
from autoseg.stability import choose_stable_k, stability_by_k
from autoseg.timing import Timer

log = logging.getLogger(__name__)

STABILITY_ROWS = 8_000  # evaluation sample of the stability refits
STABILITY_RESTARTS = 2


def search_candidates(search_x: np.ndarray, n_rows: int, config: RunConfig,
                      backend: Backend | None = None) -> SearchResult:
    """The k search on ``search_x``: the whole table's prepared rows, or a uniform sample of a
    table of ``n_rows`` rows (then the standard errors count that sampling too)."""
    # --min-cluster-size counts rows of the whole table; the search may see a sample
    min_rows = config.min_cluster_rows(n_rows)
    return search_k(
        search_x, k_values(config, n_rows),
        restarts=config.kmeans_restarts, seed=config.seed,
        exact_max_rows=config.silhouette_exact_max_rows,
        sample_size=config.silhouette_sample_size,
        population_rows=n_rows if len(search_x) < n_rows else None,
        min_cluster_size=int(np.ceil(min_rows * len(search_x) / n_rows)),
        backend=backend,
    )


def search_summary(search: SearchResult) -> dict[str, Any]:
    """The k search in the summary: every candidate, the choice and its reason, silhouettes."""
    return {
        "k_search": [c.as_dict() for c in search.candidates],
        "chosen_reason": search.reason,
        "silhouette": {
            "exact": search.silhouette_exact,
            "search_rows": len(search.labels),
            "points_scored": search.silhouette_points,
            "per_cluster": search.per_cluster_silhouette,
        },
    }


def k_values(config: RunConfig, n_rows: int) -> list[int]:
    if config.num_clusters:
        return [config.num_clusters]
    return list(range(config.min_clusters, config.max_clusters + 1))


def stability_stage(search: SearchResult, x: np.ndarray, config: RunConfig,
                    timer: Timer, backend: Backend | None = None) -> None:
    """Stability of every choosable k beside its silhouette; with --prefer-stable, choose by it."""
    ks = sorted(search.choosable())
    if config.stability_runs < 2 or len(ks) < 2:
        return
    with timer.stage("stability"):
        scores = stability_by_k(x, ks, runs=config.stability_runs, max_rows=STABILITY_ROWS,
                                restarts=STABILITY_RESTARTS, seed=config.seed,
                                backend=backend)
    for cand in search.candidates:
        if cand.k in scores:
            cand.stability = scores[cand.k].mean_ari
    if config.prefer_stable:
        # tie_break="silhouette": several practically perfectly stable k (0.999 vs 0.998)
        # should not merge real segments just because the smaller one is a hair more stable.
        k, reason = choose_stable_k(search.choosable(), scores, tie_break="silhouette")
        if k != search.chosen_k:
            search.choose(k, reason)
        else:
            search.reason += "; also the most stable"


def prepared_centroids(centroids: np.ndarray, projection: Projection | None) -> np.ndarray:
    """Centroids in the prepared (pre-PCA) space, where two fits can be compared."""
    if projection is None:
        return centroids
    return centroids @ projection.components + projection.mean


def stable_ids(
    previous: SegmentationModel | None, spec: FeatureSpec, projection: Projection | None,
    centroids: np.ndarray,
) -> tuple[np.ndarray, dict[str, Any] | None]:
    """Order the new centroids so each cluster keeps the id of the saved model's closest match.

    Ids stay 0..k-1: a matched cluster keeps its old id when that id still exists; the others
    take the free ids and are reported as new, so a CDP segment never silently changes meaning
    without the summary saying so. ``previous`` is the model saved under ``--model-name``
    (``None``: no model name, or the first fit under it).
    """
    if previous is None:
        return centroids, None
    if previous.spec.matrix_columns != spec.matrix_columns:
        note = "the prepared columns changed since the saved model: ids not matched"
        log.warning("cluster ids: %s", note)
        return centroids, {"matched": False, "note": note}
    k = centroids.shape[0]
    matching = match_clusters(prepared_centroids(previous.centroids, previous.projection),
                              prepared_centroids(centroids, projection))
    ids = np.full(k, -1)
    for new, old in matching.mapping.items():
        if old < k:
            ids[new] = old
    free = [i for i in range(k) if i not in set(ids.tolist())]
    renumbered = []
    for new in range(k):
        if ids[new] < 0:
            ids[new] = free.pop(0)
            renumbered.append(int(ids[new]))
    order = np.argsort(ids)
    kept = sorted(int(ids[n]) for n in matching.mapping if ids[n] == matching.mapping[n])
    info = {
        "matched": True,
        "kept": kept,
        "new": sorted(renumbered),
        "vanished": sorted(int(v) for v in matching.vanished_old if v not in kept),
    }
    log.info("cluster ids matched to the saved model: kept %s, new %s, vanished %s",
             info["kept"], info["new"], info["vanished"])
    return centroids[order], info
