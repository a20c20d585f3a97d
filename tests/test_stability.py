"""Subsampling stability: the true k of well-separated blobs is stable and chosen."""

from __future__ import annotations

import time

import numpy as np
import pytest
from sklearn.datasets import make_blobs
from sklearn.metrics import silhouette_score

from autoseg.search import fit_kmeans
from autoseg.stability import (
    STABILITY_TIE_TOLERANCE,
    StabilityScore,
    choose_stable_k,
    stability_by_k,
)


def _blobs(n: int = 1500, seed: int = 0) -> np.ndarray:
    x, _ = make_blobs(n_samples=n, centers=4, n_features=5, cluster_std=0.6,
                      center_box=(-10, 10), random_state=seed)
    return x.astype(np.float32)


def test_true_k_is_perfectly_stable_and_chosen() -> None:
    x = _blobs(1000)
    ks = [3, 4, 6]
    stability = stability_by_k(x, ks, runs=3, restarts=2, seed=0)
    assert list(stability) == ks
    assert stability[4].mean_ari > 0.99 and stability[4].std_ari < 0.01
    assert stability[4].runs == 3 and stability[4].eval_rows == len(x)
    # Splitting a blob in two is arbitrary, so more clusters than blobs are less stable.
    assert stability[6].mean_ari < stability[4].mean_ari
    silhouettes = {
        k: float(silhouette_score(x, fit_kmeans(x, k, 2, 0).labels_)) for k in ks
    }
    k, reason = choose_stable_k(silhouettes, stability)
    assert k == 4
    assert "ARI" in reason


def test_stability_is_reproducible_for_a_seed() -> None:
    x = _blobs(600)
    first = stability_by_k(x, [3], runs=3, restarts=1, seed=7)
    second = stability_by_k(x, [3], runs=3, restarts=1, seed=7)
    assert first == second


def test_runtime_is_bounded_on_a_large_table() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300_000, 8)).astype(np.float32)
    x[:100_000, 0] += 8
    started = time.perf_counter()
    scores = stability_by_k(x, [2, 3], runs=3, max_rows=4_000, restarts=1, seed=0)
    elapsed = time.perf_counter() - started
    assert scores[2].eval_rows == 4_000
    assert scores[2].mean_ari > 0.95
    assert elapsed < 10.0


def _score(ari: float) -> StabilityScore:
    return StabilityScore(mean_ari=ari, std_ari=0.0, runs=5)


def test_choice_prefers_stability_among_near_best_silhouettes() -> None:
    silhouettes = {2: 0.50, 3: 0.49, 4: 0.40}
    stability = {2: _score(0.70), 3: _score(0.98), 4: _score(1.0)}
    k, reason = choose_stable_k(silhouettes, stability, tolerance=0.02)
    assert k == 3  # k=4 is more stable but its silhouette is far from the best
    assert "[2, 3]" in reason
    assert choose_stable_k(silhouettes, stability, tolerance=0.0)[0] == 2
    assert choose_stable_k(silhouettes, stability, tolerance=0.2)[0] == 4


def test_ties_go_to_the_smaller_k() -> None:
    silhouettes = {2: 0.50, 3: 0.50, 5: 0.50}
    tie = 1.0 - STABILITY_TIE_TOLERANCE / 2
    stability = {2: _score(tie), 3: _score(1.0), 5: _score(1.0)}
    assert choose_stable_k(silhouettes, stability)[0] == 2


def test_ties_can_go_to_the_higher_silhouette() -> None:
    # Both practically perfectly stable: "smaller_k" merges two real segments, "silhouette"
    # keeps them (measured on the demo table: k=3 ARI 0.999, k=4 ARI 0.998, truth k=4).
    silhouettes = {3: 0.280, 4: 0.290}
    stability = {3: _score(0.999), 4: _score(0.998)}
    assert choose_stable_k(silhouettes, stability)[0] == 3
    k, reason = choose_stable_k(silhouettes, stability, tie_break="silhouette")
    assert k == 4 and "higher silhouette wins" in reason
    assert choose_stable_k(silhouettes, stability, stability_tolerance=0.0,
                           tie_break="silhouette")[0] == 3
    with pytest.raises(ValueError, match="tie_break='x'"):
        choose_stable_k(silhouettes, stability, tie_break="x")


def test_missing_silhouettes_are_ignored() -> None:
    silhouettes = {2: float("nan"), 3: 0.3}
    stability = {2: _score(1.0), 3: _score(0.5)}
    k, reason = choose_stable_k(silhouettes, stability)
    assert k == 3 and "highest silhouette" in reason
    with pytest.raises(ValueError, match="no k has both"):
        choose_stable_k({7: 0.3}, stability)
    with pytest.raises(ValueError, match="tolerance=-1"):
        choose_stable_k(silhouettes, stability, tolerance=-1)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"runs": 1}, "runs=1 must be >= 2"),
        ({"sample_fraction": 0.0}, r"sample_fraction=0.0 must be in \(0, 1\]"),
        ({"k_values": [1, 2]}, "k=1 must be >= 2"),
        ({"k_values": [20]}, "n_rows=10 must be >= max"),
        ({"k_values": []}, "k_values is empty"),
    ],
)
def test_bad_parameters_are_refused(kwargs: dict[str, object], message: str) -> None:
    x = np.zeros((10, 2), dtype=np.float32)
    options: dict[str, object] = {"k_values": [2]}
    options.update(kwargs)
    k_values = options.pop("k_values")
    with pytest.raises(ValueError, match=message):
        stability_by_k(x, k_values, **options)  # type: ignore[arg-type]


def test_an_explicit_cpu_backend_gives_the_default_scores() -> None:
    from autoseg.backend import select_backend

    x = _blobs(900)
    default = stability_by_k(x, [3, 4], runs=2, restarts=1, seed=1)
    explicit = stability_by_k(x, [3, 4], runs=2, restarts=1, seed=1,
                              backend=select_backend("cpu"))
    assert default == explicit
