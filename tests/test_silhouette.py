"""The all-k silhouette: exact against scikit-learn, sampled estimate against the exact value."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.cluster import KMeans
from sklearn.datasets import make_blobs
from sklearn.metrics import silhouette_samples, silhouette_score

import autoseg.silhouette as silhouette_module
from autoseg.silhouette import (
    best_key,
    distance_sums,
    rank_silhouettes,
    silhouette_from_sums,
    silhouette_scores,
)


def _labelings(x: np.ndarray, ks: range) -> dict[int, np.ndarray]:
    return {k: KMeans(k, n_init=2, random_state=0).fit_predict(x) for k in ks}


@pytest.mark.parametrize(
    ("n", "d", "std", "offset"),
    [(400, 5, 1.0, 0.0), (1500, 30, 4.0, 0.0), (1200, 2, 0.3, 1e4), (300, 60, 2.0, -50.0)],
)
def test_exact_matches_sklearn(n: int, d: int, std: float, offset: float) -> None:
    x, _ = make_blobs(n, d, centers=4, cluster_std=std, random_state=1)
    x = x * 10 + offset  # far from the origin: the GEMM form must not lose precision
    labelings = _labelings(x, range(2, 7))
    ours = silhouette_scores(x, labelings)
    for k, labels in labelings.items():
        assert ours[k].exact
        assert ours[k].stderr == 0.0
        assert ours[k].score == pytest.approx(silhouette_score(x, labels), abs=1e-4)


def test_per_cluster_means_match_sklearn_samples() -> None:
    x, _ = make_blobs(600, 3, centers=3, random_state=4)
    labels = KMeans(3, n_init=2, random_state=0).fit_predict(x)
    ours = silhouette_scores(x, {3: labels})[3]
    samples = silhouette_samples(x, labels)
    for c in range(3):
        assert ours.per_cluster[c] == pytest.approx(samples[labels == c].mean(), abs=1e-4)


def test_singleton_cluster_scores_zero_like_sklearn() -> None:
    x = np.array([[0.0, 0.0], [0.1, 0.0], [0.0, 0.1], [10.0, 10.0], [10.1, 10.0], [50.0, 50.0]])
    labels = np.array([0, 0, 0, 1, 1, 2])
    assert silhouette_scores(x, {3: labels})[3].score == pytest.approx(
        silhouette_score(x, labels), abs=1e-4
    )


def test_sampled_estimate_is_close_to_exact_and_reports_stderr() -> None:
    x, _ = make_blobs(12_000, 8, centers=5, cluster_std=3.0, random_state=2)
    labelings = _labelings(x, range(2, 6))
    exact = silhouette_scores(x, labelings)
    sampled = silhouette_scores(x, labelings, exact_max_rows=1000, sample_size=2000, seed=3)
    for k in labelings:
        est = sampled[k]
        assert not est.exact
        assert 0 < est.stderr < 0.01
        # an unbiased estimate lands within a few standard errors of the exact value
        assert abs(est.score - exact[k].score) < 4 * est.stderr + 1e-3


def test_sampling_keeps_small_clusters() -> None:
    rng = np.random.default_rng(0)
    big = rng.normal(0, 1, size=(20_000, 2))
    small = rng.normal(30, 1, size=(40, 2))
    x = np.vstack([big, small])
    labels = np.r_[np.zeros(20_000, dtype=int), np.ones(40, dtype=int)]
    est = silhouette_scores(x, {2: labels}, exact_max_rows=100, sample_size=500, seed=1)[2]
    # the small cluster was scored although a uniform sample of 500 expects one point in it
    assert not np.isnan(est.per_cluster[1])
    assert est.per_cluster[1] > 0.9
    assert est.score == pytest.approx(silhouette_score(x, labels, sample_size=None), abs=0.02)


def test_block_sizes_do_not_change_the_result(monkeypatch: pytest.MonkeyPatch) -> None:
    import autoseg.silhouette as module

    x, _ = make_blobs(3000, 4, centers=3, random_state=5)
    labelings = _labelings(x, range(2, 5))
    default = silhouette_scores(x, labelings)
    monkeypatch.setattr(module, "BLOCK_ELEMENTS", 5000)
    tiny_blocks = silhouette_scores(x, labelings)
    for k in labelings:
        assert tiny_blocks[k].score == pytest.approx(default[k].score, abs=1e-6)


def test_distance_sums_over_blocks_give_the_exact_silhouette() -> None:
    """Summed block by block (as the Dask run does), every point scored: sklearn's value."""
    x, _ = make_blobs(1500, 5, centers=4, cluster_std=2.0, random_state=3)
    labels = KMeans(4, n_init=1, random_state=0).fit_predict(x)
    centre = x.mean(axis=0)
    sums = sum(distance_sums(x, x[lo:hi], labels[lo:hi], 4, centre)
               for lo, hi in ((0, 400), (400, 401), (401, 1500)))
    score = silhouette_from_sums(sums, labels, np.bincount(labels, minlength=4), len(x))
    assert score.score == pytest.approx(silhouette_score(x, labels), abs=1e-5)
    assert score.stderr == pytest.approx(0.0, abs=1e-12)  # the whole table was scored
    assert score.exact is False and score.n_points == len(x)


def test_silhouette_from_sums_of_a_sample_estimates_the_whole_table() -> None:
    x, _ = make_blobs(6000, 4, centers=3, cluster_std=3.0, random_state=7)
    labels = KMeans(3, n_init=1, random_state=0).fit_predict(x)
    points = np.random.default_rng(1).choice(len(x), 600, replace=False)
    sums = distance_sums(x[points], x, labels, 3, x[points].mean(axis=0))
    score = silhouette_from_sums(sums, labels[points], np.bincount(labels), len(x))
    truth = silhouette_score(x, labels)
    assert 0 < score.stderr < 0.02
    assert abs(score.score - truth) < 4 * score.stderr


def _blobs_labelings(n: int, seed: int) -> tuple[np.ndarray, dict[int, np.ndarray]]:
    x, _ = make_blobs(n, 6, centers=4, cluster_std=1.5, random_state=seed)
    return x.astype(np.float32), _labelings(x, range(2, 8))


def _scored_points(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Records how many points every distance pass scores."""
    counts: list[int] = []
    original = silhouette_module._cluster_distance_sums

    def counting(x, labels, offsets, total, points, xp):  # type: ignore[no-untyped-def]
        counts.append(len(points))
        return original(x, labels, offsets, total, points, xp)

    monkeypatch.setattr(silhouette_module, "_cluster_distance_sums", counting)
    return counts


def test_a_clear_winner_is_decided_on_the_first_sampled_points(
        monkeypatch: pytest.MonkeyPatch) -> None:
    x, labelings = _blobs_labelings(20_000, 0)
    exact = silhouette_scores(x, labelings)
    counts = _scored_points(monkeypatch)
    ranking = rank_silhouettes(x, labelings, first_points=1000)
    assert ranking.best == max(exact, key=lambda k: exact[k].score) == 4
    assert len(ranking.rounds) == 1 and not ranking.rounds[0][2]
    assert sum(counts) < 2000  # 1,000 uniform points and a few extras, not 20,000
    assert not ranking.scores[4].exact and ranking.scores[4].stderr > 0
    assert abs(ranking.scores[4].score - exact[4].score) < 4 * ranking.scores[4].stderr


def test_a_near_tie_goes_on_to_the_exact_silhouette(monkeypatch: pytest.MonkeyPatch) -> None:
    # four blobs placed with the symmetries of a square: splitting left/right and splitting
    # top/bottom score exactly the same, so no sample can separate them
    rng = np.random.default_rng(0)
    quadrant = rng.normal(3.0, 1.0, size=(400, 2))
    quadrant = np.vstack([quadrant, quadrant[:, ::-1]])
    x = np.vstack([quadrant * sign for sign in ([1, 1], [-1, 1], [1, -1], [-1, -1])])
    x = x.astype(np.float32)
    left_right, top_bottom = (x[:, 0] < 0).astype(int), (x[:, 1] < 0).astype(int)
    poor = rng.integers(0, 3, size=len(x))
    exact = silhouette_scores(x, {2: left_right, 12: top_bottom})
    counts = _scored_points(monkeypatch)
    ranking = rank_silhouettes(x, {12: top_bottom, 2: left_right, 3: poor}, first_points=500)
    assert ranking.rounds[-1][2] and set(ranking.rounds[-1][1]) == {2, 12}
    assert ranking.scores[2].exact and ranking.scores[12].exact
    assert ranking.scores[2].score == pytest.approx(exact[2].score, abs=1e-7)
    assert ranking.scores[12].score == pytest.approx(exact[12].score, abs=1e-7)
    # the same choice as the exact silhouettes (equal but for float rounding)
    assert ranking.scores[2].score == pytest.approx(ranking.scores[12].score, abs=1e-6)
    assert ranking.best == best_key({k: score.score for k, score in exact.items()})
    assert not ranking.scores[3].exact  # put out on the sample
    assert sum(counts) == len(x)  # the rounds are nested: every point is scored once


def test_ineligible_labellings_are_scored_but_never_chosen() -> None:
    x, labelings = _blobs_labelings(3_000, 2)
    ranking = rank_silhouettes(x, labelings, eligible={2, 3, 5})
    assert set(ranking.scores) == set(labelings)
    assert ranking.best in {2, 3, 5}
    with pytest.raises(ValueError, match="eligible"):
        rank_silhouettes(x, labelings, eligible=set())


def test_beyond_exact_max_rows_the_last_sample_decides() -> None:
    x, labelings = _blobs_labelings(12_000, 3)
    ranking = rank_silhouettes(x, labelings, exact_max_rows=5_000, sample_size=3_000,
                               first_points=200, z=50.0)  # nothing separates at z = 50
    assert [r[0] for r in ranking.rounds] == [200, 400, 800, 1_600, 3_000]
    assert not any(r[2] for r in ranking.rounds)
    assert ranking.best == 4


def test_refinement_draws_where_the_candidates_differ_and_stays_unbiased() -> None:
    # k=3 and k=4 differ only where k=4 splits one blob: the fresh points go there, and the
    # two-phase estimate of the difference lands within a few standard errors of the exact one
    x, labelings = _blobs_labelings(8_000, 4)
    pair = {3: labelings[3], 4: labelings[4]}
    exact = silhouette_module._PointScores(x, pair, 0, np)
    exact.score([3, 4], None, None)
    truth = float((exact.values[4] - exact.values[3]).mean())
    leader, rival = (4, 3) if truth > 0 else (3, 4)
    scoring = silhouette_module._PointScores(x, pair, 1, np)
    scoring.score([3, 4], 500, None)
    scoring.stratify(leader)
    before = scoring.decision.copy()
    scoring.refine([3, 4], 2000, leader, rival)
    fresh = scoring.decision & ~before
    assert 1400 <= fresh.sum() <= 1600
    strata = scoring.strata
    difference = exact.values[leader] - exact.values[rival]
    spread = [difference[strata == h].std() for h in range(int(strata.max()) + 1)]
    busiest = int(np.argmax([s * (strata == h).sum() for h, s in enumerate(spread)]))
    assert (strata[fresh] == busiest).mean() > (strata == busiest).mean()
    mean, stderr = scoring._mean_and_stderr(scoring.values[leader] - scoring.values[rival])
    assert stderr > 0 and abs(mean - abs(truth)) < 4 * stderr
