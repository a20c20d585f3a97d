"""Mean silhouette coefficient for many candidate clusterings in one pass.

The silhouette of point ``i`` needs, for every cluster ``c``, the sum of distances from ``i`` to
the points of ``c``. The pairwise distances do not depend on the clustering, so one blocked pass
over them scores every candidate k at once: for a block of distances ``D`` (points x rows) and
the one-hot matrix ``H`` of every candidate labelling side by side (rows x sum(k)), ``D @ H``
holds all the per-cluster sums. Distances come from the GEMM form
``|x|^2 + |y|^2 - 2 x.y`` on centred data. Memory is bounded by the block sizes, never O(n^2).

While ``n <= exact_max_rows`` every point is scored (exact, matches
``sklearn.metrics.silhouette_score``). Beyond that, the silhouettes of a random sample of points
are computed exactly against all rows and combined per cluster (post-stratified by cluster, so a
small cluster is not lost to sampling noise: clusters with few sampled points get extra points),
giving an unbiased estimate of the mean with its standard error.

The k search uses :func:`rank_silhouettes`: nested rounds of sampled points decide which k has
the highest mean silhouette, and only the k a sample cannot separate from the leader (paired
differences on the same points) go on to more points and, up to ``exact_max_rows``, to the
exact value.

The code is written against the array namespace ``xp`` (NumPy here, CuPy on a GPU).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from autoseg.parallel import cpu_cores, map_on_cores

# Distance block size on the host: 1M float32 (4 MB) keeps each core's block in cache (at
# 50,000 x 30 a pass took 0.40 s with 1M-element blocks and 0.63 s with 8M, two threads).
BLOCK_ELEMENTS = 1_000_000
# On a GPU, larger blocks mean fewer kernel launches (32 MB; measured on an H200, docs/gpu.md).
DEVICE_BLOCK_ELEMENTS = 8_000_000
MIN_POINTS_PER_CLUSTER = 30
# Fewer points than this per thread are scored on one thread (thread start-up would dominate).
MIN_POINTS_PER_THREAD = 256
# Fresh points every stratum gets in a refinement round (see _PointScores.refine).
MIN_FRESH_PER_STRATUM = 10
# Scores closer than this count as equal, and the smaller k wins the tie.
TIE_TOLERANCE = 1e-9
# The k search's sequential decision (rank_silhouettes): points of its first round, growth per
# round (the rounds are nested, so a finer growth costs only bookkeeping and stops closer to
# the points a decision needs), and the standard errors of a paired difference that put a
# candidate out: with z = 3 a candidate that is truly the best is put out with probability
# under 0.14% per comparison.
FIRST_ROUND_POINTS = 2_000
ROUND_GROWTH = 2
DECISION_Z = 3.0


@dataclass(frozen=True)
class SilhouetteScore:
    """Mean silhouette of one labelling, with its standard error (0 when exact)."""

    score: float
    stderr: float
    n_points: int
    exact: bool
    per_cluster: tuple[float, ...]


def silhouette_scores(
    x: Any,
    labelings: dict[int, Any],
    *,
    exact_max_rows: int = 50_000,
    sample_size: int = 20_000,
    seed: int = 0,
    population_rows: int | None = None,
    xp: Any = np,
) -> dict[int, SilhouetteScore]:
    """Mean silhouette coefficient of every labelling of the same rows.

    Parameters
    ----------
    x
        (n, d) array of the points.
    labelings
        Maps a key (usually k) to an (n,) integer label array with values ``0..k-1``.
    exact_max_rows
        Score every point while ``n`` is at most this; otherwise sample.
    sample_size
        Number of points scored (each against all ``n`` rows) when sampling.
    seed
        Seed of the point sample.
    population_rows
        When ``x`` is itself a uniform sample of a larger table of this many rows, the
        standard error also accounts for that sampling (scores are then estimates of the whole
        table's silhouette even when every row of ``x`` is scored).
    xp
        Array namespace (``numpy`` or ``cupy``).

    Returns
    -------
    dict
        ``SilhouetteScore`` per key of ``labelings``.
    """
    scoring = _PointScores(x, labelings, seed, xp)
    points = None if scoring.n <= exact_max_rows else sample_size
    return scoring.score(list(labelings), points, population_rows)


@dataclass(frozen=True)
class SilhouetteRanking:
    """The silhouettes of a k search and the best labelling, decided on as few points as can.

    Attributes
    ----------
    scores
        The last score of every labelling (exact for those still in contention at an exact
        final round, sampled estimates for the others).
    best
        The key with the highest silhouette (ties: the smaller key).
    rounds
        Per round: uniformly drawn points so far, keys scored, whether the round was exact.
    """

    scores: dict[int, SilhouetteScore]
    best: int
    rounds: tuple[tuple[int, tuple[int, ...], bool], ...]


def best_key(scores: dict[int, float]) -> int:
    """The key of the highest score; scores within ``TIE_TOLERANCE`` tie and the smaller wins."""
    return min(scores, key=lambda k: (-round(scores[k] / TIE_TOLERANCE), k))


def rank_silhouettes(
    x: Any,
    labelings: dict[int, Any],
    *,
    eligible: set[int] | None = None,
    exact_max_rows: int = 50_000,
    sample_size: int = 20_000,
    seed: int = 0,
    population_rows: int | None = None,
    xp: Any = np,
    first_points: int = FIRST_ROUND_POINTS,
    z: float = DECISION_Z,
) -> SilhouetteRanking:
    """The labelling with the highest mean silhouette, scoring only as many points as it takes.

    An exact silhouette costs ``n^2`` distances, but the k search needs only the winner. The
    first round scores ``first_points`` uniformly drawn points (each against all ``n`` rows)
    for every labelling. Every labelling whose mean silhouette is below the leader's by more
    than ``z`` standard errors *of the paired difference* (the same points score both, so the
    difference is far less noisy than either mean) is out; the rest go on to a round with
    ``ROUND_GROWTH`` times as many points in all (at most ``sample_size``), and, while
    ``n <= exact_max_rows``, finally to an exact round that scores the remaining points.

    While an exact round can settle the choice, the added points are drawn within the first
    leader's clusters in proportion to cluster size times the spread of the leader-rival
    difference there (Neyman allocation: two labellings that differ by one split differ only
    in the clusters involved), and the estimates treat the points scored before as known and
    the fresh ones as a random sample of each cluster's remaining rows, which keeps them
    unbiased (at 50,000 x 30 rows, k = 5 vs 6 differing by 0.0011: settled at 4,000 points
    where uniform rounds needed 16,000; over 300 seeds the standardised errors had mean 0.0
    and standard deviation 1.0-1.06). Beyond ``exact_max_rows`` the rounds stay uniform and
    the last round's ``sample_size`` points decide, as :func:`silhouette_scores` would.
    The rounds are nested (a point is scored once), so a clear winner costs a few percent of
    one exact pass and a near tie at most one exact pass over the contenders.

    Parameters
    ----------
    x, labelings, exact_max_rows, sample_size, seed, population_rows, xp
        As in :func:`silhouette_scores`.
    eligible
        Keys that may win (all when ``None``); the others are scored in the first round only.
    first_points
        Uniformly drawn points of the first round.
    z
        Standard errors of the paired difference that put a labelling out.

    Returns
    -------
    SilhouetteRanking
        The scores, the best key and the rounds.
    """
    scoring = _PointScores(x, labelings, seed, xp)
    contenders = [k for k in labelings if eligible is None or k in eligible]
    if not contenders:
        raise ValueError("rank_silhouettes needs at least one eligible labelling")
    schedule = _round_points(scoring.n, exact_max_rows, sample_size, first_points)
    scores: dict[int, SilhouetteScore] = {}
    rounds: list[tuple[int, tuple[int, ...], bool]] = []
    keys = list(labelings)
    leader = rival = contenders[0]
    for number, points in enumerate(schedule):
        if scoring.strata is None or points is None:
            scores.update(scoring.score(keys, points, population_rows))
        else:
            scoring.refine(keys, points, leader, rival)
            scores.update({k: scoring.stratified_score(k, scores[k]) for k in keys})
        rounds.append((scoring.n if points is None else scoring.decision_points(),
                       tuple(keys), points is None))
        leader = best_key({k: scores[k].score for k in contenders})
        if number == len(schedule) - 1 or len(contenders) == 1:
            break
        if number == 0 and schedule[-1] is None:
            # Later rounds add points where the candidates differ (Neyman allocation over the
            # leader's clusters); only while an exact round can still settle the choice.
            scoring.stratify(leader)
        gaps = {k: scoring.gap(leader, k) for k in contenders if k != leader}
        close = [k for k in contenders if k != leader and not gaps[k] > z]
        if not close:
            break
        rival = min(close, key=lambda k: gaps[k])
        contenders = keys = [leader, *close]
    return SilhouetteRanking(scores=scores, best=leader, rounds=tuple(rounds))


def _round_points(n: int, exact_max_rows: int, sample_size: int,
                  first_points: int) -> list[int | None]:
    """Uniformly drawn points per round, growing by ``ROUND_GROWTH`` up to ``sample_size``;
    while ``n <= exact_max_rows`` the last round is ``None`` (every point, exact)."""
    schedule: list[int | None] = []
    points = min(first_points, sample_size)
    if n > exact_max_rows:
        while points < sample_size:
            schedule.append(points)
            points = min(points * ROUND_GROWTH, sample_size)
        return [*schedule, sample_size]
    # a sampled round that scores most of the rows anyway is not worth its bookkeeping
    while points * 2 <= n:
        schedule.append(points)
        if points >= sample_size:
            break
        points = min(points * ROUND_GROWTH, sample_size)
    return [*schedule, None]


class _PointScores:
    """Per-point silhouettes of every labelling, scored in nested rounds (each point once).

    The uniformly drawn points of every round are a prefix of one random order of the rows,
    so a later round extends the earlier ones; each labelling also gets extra points in its
    thinly sampled clusters (``MIN_POINTS_PER_CLUSTER``), drawn uniformly within the cluster.
    A point is scored for every labelling still compared when it is first drawn; labellings
    only ever drop out, so every later round finds its points' scores already there.
    """

    def __init__(self, x: Any, labelings: dict[int, Any], seed: int, xp: Any) -> None:
        self.xp = xp
        self.x = xp.asarray(x, dtype=xp.float32)
        self.n = int(self.x.shape[0])
        self.labels = {key: xp.asarray(lab).astype(xp.int64) for key, lab in labelings.items()}
        self.host_labels = {key: _to_host(lab) for key, lab in self.labels.items()}
        self.n_clusters = {key: int(lab.max()) + 1 for key, lab in self.host_labels.items()}
        self.sizes = {key: np.bincount(lab, minlength=self.n_clusters[key]).astype(np.float64)
                      for key, lab in self.host_labels.items()}
        self.rng = np.random.default_rng(seed)
        self.order: np.ndarray | None = None  # drawn on the first sampled round
        self.uniform = np.zeros(self.n, dtype=bool)
        self.members = {key: np.zeros(self.n, dtype=bool) for key in labelings}
        self.scored = np.zeros(self.n, dtype=bool)
        self.values = {key: np.zeros(self.n, dtype=np.float64) for key in labelings}
        # the strata of the paired comparisons once stratify() was called
        self.strata: np.ndarray | None = None
        self.stratum_sizes = np.zeros(0)
        self.decision = self.uniform
        self.known = self.uniform

    def score(self, keys: list[int], points: int | None,
              population_rows: int | None) -> dict[int, SilhouetteScore]:
        """Scores of ``keys`` from the first ``points`` of the random order (and each key's
        extra points); ``None``: every point, exact."""
        exact = points is None
        if exact:
            self.uniform[:] = True
        else:
            if self.order is None:
                self.order = self.rng.permutation(self.n)
            self.uniform[self.order[: min(points, self.n)]] = True
        for key in keys:
            self.members[key] |= self.uniform
            if not exact:
                self._add_extras(key)
        wanted = np.zeros(self.n, dtype=bool)
        for key in keys:
            wanted |= self.members[key]
        new = np.flatnonzero(wanted & ~self.scored)
        if new.size:
            self._score_points(keys, new)
        results: dict[int, SilhouetteScore] = {}
        for key in keys:
            mask = self.members[key]
            results[key] = _combine(self.values[key][mask], self.host_labels[key][mask],
                                    self.sizes[key], self.n, exact, population_rows)
        return results

    def stratify(self, key: int) -> None:
        """From now on, draw the points of the paired comparisons within the clusters of
        ``key`` (fixed strata, each drawn uniformly), starting from the uniform sample."""
        self.strata = self.host_labels[key]
        self.stratum_sizes = np.bincount(self.strata).astype(np.float64)
        self.decision = self.uniform.copy()
        self.known = self.decision.copy()  # before the first refine: no fresh points yet

    def decision_points(self) -> int:
        """Points the paired comparisons use (the uniform sample, then the stratified one)."""
        return int(self.decision.sum())  # the uniform sample itself until stratify()

    def refine(self, keys: list[int], total: int, leader: int, rival: int) -> None:
        """Draw fresh points until the comparison sample holds about ``total``, allocated to
        the strata in proportion to their unscored rows times the spread of the leader-rival
        difference there (Neyman allocation), and score them for ``keys``.

        The estimates then take the points scored before as known values and the fresh points
        as a simple random sample of each stratum's remaining rows (two-phase sampling): an
        allocation that depends on earlier values would bias the plain sample mean (a stratum
        whose first points missed its rare large differences would get few more).
        """
        assert self.strata is not None
        difference = self.values[leader] - self.values[rival]
        strata = range(self.stratum_sizes.size)
        have = np.bincount(self.strata[self.decision], minlength=self.stratum_sizes.size)
        left = self.stratum_sizes - have
        spread = np.array([_std(difference[self.decision & (self.strata == h)]) for h in strata])
        # A stratum whose sampled differences happen to agree still gets a share: its spread
        # is floored at a tenth of the largest one, and every stratum gets a few fresh points.
        spread = np.maximum(spread, 0.1 * max(float(spread.max()), 1e-12))
        weights = left * spread
        fresh_total = max(0, total - int(have.sum()))
        wanted = np.ceil(fresh_total * weights / max(float(weights.sum()), 1e-300))
        wanted = np.minimum(left, np.maximum(wanted, MIN_FRESH_PER_STRATUM)).astype(int)
        self.known = self.decision.copy()
        for h in np.flatnonzero(wanted > 0):
            candidates = np.flatnonzero((self.strata == h) & ~self.decision)
            chosen = self.rng.choice(candidates, size=int(wanted[h]), replace=False)
            self.decision[chosen] = True
        new = np.flatnonzero(self.decision & ~self.scored)
        if new.size:
            self._score_points(keys, new)

    def gap(self, leader: int, other: int) -> float:
        """The leader's lead over ``other`` in standard errors of their paired difference
        (stratified once :meth:`stratify` was called, else on the uniform sample); 0 when
        the leader is not ahead."""
        mean, stderr = self._mean_and_stderr(self.values[leader] - self.values[other])
        if not mean > TIE_TOLERANCE:
            return 0.0
        return float("inf") if stderr == 0 else mean / stderr

    def stratified_score(self, key: int, previous: SilhouetteScore) -> SilhouetteScore:
        """``key``'s mean silhouette estimated on the stratified sample, with its standard
        error (the per-cluster means stay those of ``previous``: the stratified points are
        not a uniform sample within the clusters of every key)."""
        mean, stderr = self._mean_and_stderr(self.values[key])
        return SilhouetteScore(score=mean, stderr=stderr, n_points=self.decision_points(),
                               exact=False, per_cluster=previous.per_cluster)

    def _mean_and_stderr(self, values: np.ndarray) -> tuple[float, float]:
        """Mean over every row estimated from the comparison sample, and its standard error
        (stratified with the finite-population correction per stratum, or simple random)."""
        if self.strata is None:
            sample = values[self.uniform]
            m = sample.size
            if m < 2:
                return float(sample.mean()) if m else 0.0, float("inf")
            return float(sample.mean()), float(np.sqrt(_total_variance(sample, self.n))) / self.n
        total = variance = 0.0
        fresh = self.decision & ~self.known
        for h, size in enumerate(self.stratum_sizes):
            in_stratum = self.strata == h
            known = values[self.known & in_stratum]
            drawn = values[fresh & in_stratum]
            if drawn.size == 0:
                # no fresh points yet: the stratum's points are one simple random sample of it
                if known.size:
                    total += size * float(known.mean())
                    variance += _total_variance(known, size)
                continue
            # known values exactly, the fresh points a simple random sample of the rest
            total += float(known.sum()) + (size - known.size) * float(drawn.mean())
            variance += _total_variance(drawn, size - known.size)
        mean = total / self.n
        variance /= float(self.n) ** 2
        return mean, float(np.sqrt(variance))

    def _add_extras(self, key: int) -> None:
        labels, members = self.host_labels[key], self.members[key]
        for c in range(self.n_clusters[key]):
            cluster_rows = np.flatnonzero(labels == c)
            have = int(members[cluster_rows].sum())
            want = min(MIN_POINTS_PER_CLUSTER, cluster_rows.size)
            if have < want:
                candidates = cluster_rows[~members[cluster_rows]]
                members[self.rng.choice(candidates, size=want - have, replace=False)] = True

    def _score_points(self, keys: list[int], points: np.ndarray) -> None:
        offsets: dict[int, int] = {}
        total = 0
        for key in keys:
            offsets[key] = total
            total += self.n_clusters[key]
        sums = _cluster_distance_sums(self.x, {key: self.labels[key] for key in keys},
                                      offsets, total, points, self.xp)
        for key in keys:
            k = self.n_clusters[key]
            own = self.host_labels[key][points]
            self.values[key][points] = _point_silhouettes(
                sums[:, offsets[key] : offsets[key] + k], own, self.sizes[key])
        self.scored[points] = True


def _to_host(array: Any) -> np.ndarray:
    return array.get() if hasattr(array, "get") else np.asarray(array)


def _std(values: np.ndarray) -> float:
    return float(values.std(ddof=1)) if values.size > 1 else 0.0


def _total_variance(sample: np.ndarray, population: float) -> float:
    """Variance of ``population`` times the mean of a simple random sample of it."""
    m = sample.size
    if m < 2 or population <= 0:
        return 0.0
    return population**2 * float(sample.var(ddof=1)) / m * max(0.0, 1.0 - m / population)


def _cluster_distance_sums(
    x: Any,
    labels: dict[int, Any],
    offsets: dict[int, int],
    total: int,
    points: np.ndarray,
    xp: Any,
) -> np.ndarray:
    """(len(points), total) sums of distances from each point to each cluster of each key.

    On the CPU the points are split between the cores, one thread each with single-threaded
    BLAS: the GEMMs ran on both cores already, but the clamp and square root (about 40% of the
    pass) are single-threaded NumPy, so one point block per core keeps both busy throughout
    (measured: see benchmarks/RESULTS.md, speed).
    """
    n = int(x.shape[0])
    centred = x - x.mean(axis=0, dtype=xp.float64).astype(xp.float32)
    sq_norms = xp.sum(centred * centred, axis=1)
    point_idx = xp.asarray(points)
    p = centred[point_idx]
    p_norms = sq_norms[point_idx]
    m = int(p.shape[0])
    sums = xp.zeros((m, total), dtype=xp.float64)

    def add_block(lo: int, hi: int) -> None:
        col_chunk = _column_chunk(n, hi - lo, xp)
        for start in range(0, n, col_chunk):
            stop = min(n, start + col_chunk)
            one_hot = xp.zeros((stop - start, total), dtype=xp.float32)
            rows = xp.arange(stop - start)
            for key in labels:
                one_hot[rows, offsets[key] + labels[key][start:stop]] = 1.0
            _add_distance_sums(sums[lo:hi], p[lo:hi], p_norms[lo:hi], centred[start:stop],
                               sq_norms[start:stop], one_hot, xp)

    workers = cpu_cores() if xp is np else 1
    if workers < 2 or m < 2 * MIN_POINTS_PER_THREAD:
        add_block(0, m)
        return _to_host(sums)
    bounds = np.linspace(0, m, workers + 1).astype(int)
    map_on_cores(lambda i: add_block(int(bounds[i]), int(bounds[i + 1])), range(workers))
    return sums


def _block_elements(xp: Any) -> int:
    return BLOCK_ELEMENTS if xp is np else DEVICE_BLOCK_ELEMENTS


def _column_chunk(n: int, m: int, xp: Any) -> int:
    """Rows per distance block so a (points x rows) block stays near the block size."""
    return max(1024, min(n, _block_elements(xp) // max(1, min(m, 1024))))


def _add_distance_sums(sums: Any, p: Any, p_norms: Any, chunk: Any, chunk_norms: Any,
                       one_hot: Any, xp: Any) -> None:
    """``sums += dist(p, chunk) @ one_hot``, the distances in blocks of points (GEMM form).

    The squared distances ``|p|^2 + |c|^2 - 2 p.c`` come out of one GEMM of augmented
    matrices, ``[-2p, 1, |p|^2] @ [c, |c|^2, 1]^T``, so only the clamp and the square root
    pass over the block afterwards (three element-wise passes fewer); the right-hand matrix
    is built C-ordered, which OpenBLAS multiplies about 3x faster than the strided view
    ``chunk.T`` for d of a few dozen (measured on the 50,000 x 30 benchmark table).
    """
    m = int(p.shape[0])
    rows = int(chunk.shape[0])
    row_block = max(1, _block_elements(xp) // max(1, rows))
    left = xp.concatenate([-2.0 * p, xp.ones((m, 1), dtype=p.dtype), p_norms[:, None]], axis=1)
    right = xp.concatenate([chunk.T, chunk_norms[None, :], xp.ones((1, rows), dtype=p.dtype)],
                           axis=0)
    right = xp.ascontiguousarray(right)
    for r0 in range(0, m, row_block):
        r1 = min(m, r0 + row_block)
        d = left[r0:r1] @ right
        xp.maximum(d, 0.0, out=d)
        xp.sqrt(d, out=d)
        sums[r0:r1] += d @ one_hot


def distance_sums(
    points: Any, rows: Any, row_labels: Any, k: int, centre: Any, xp: Any = np
) -> np.ndarray:
    """Sums of distances from every point to the rows of each cluster, for a block of rows.

    The building block of a silhouette over rows that are not all in one place (a Dask
    dataset): sum the results of every block of the table, then score the points with
    :func:`silhouette_from_sums`. The same distance code as :func:`silhouette_scores`.

    Parameters
    ----------
    points
        (m, d) points being scored.
    rows
        (r, d) a block of the table's rows (the points themselves may be among them).
    row_labels
        (r,) cluster ids ``0..k-1`` of ``rows``.
    k
        Number of clusters.
    centre
        (d,) a vector subtracted from points and rows before the GEMM form of the distances
        (for float32 accuracy); use the same one for every block, e.g. the points' mean.
    xp
        Array namespace (``numpy`` or ``cupy``).

    Returns
    -------
    numpy.ndarray
        (m, k) float64 sums (host memory).
    """
    c = xp.asarray(centre, dtype=xp.float32)
    p = xp.asarray(points, dtype=xp.float32) - c
    x = xp.asarray(rows, dtype=xp.float32) - c
    labels = xp.asarray(row_labels).astype(xp.int64)
    p_norms = xp.sum(p * p, axis=1)
    x_norms = xp.sum(x * x, axis=1)
    n, m = int(x.shape[0]), int(p.shape[0])
    sums = xp.zeros((m, k), dtype=xp.float64)
    col_chunk = _column_chunk(max(n, 1), m, xp)
    for start in range(0, n, col_chunk):
        stop = min(n, start + col_chunk)
        one_hot = xp.zeros((stop - start, k), dtype=xp.float32)
        one_hot[xp.arange(stop - start), labels[start:stop]] = 1.0
        _add_distance_sums(sums, p, p_norms, x[start:stop], x_norms[start:stop], one_hot, xp)
    return _to_host(sums)


def silhouette_from_sums(
    sums: np.ndarray, own: np.ndarray, sizes: np.ndarray, n_rows: int
) -> SilhouetteScore:
    """Mean silhouette estimated from a uniform sample of points and their distance sums.

    Parameters
    ----------
    sums
        (m, k) sums of distances from each sampled point to every row of each cluster (the
        point itself included, at distance 0), e.g. summed :func:`distance_sums` blocks.
    own
        (m,) cluster id of each point.
    sizes
        (k,) exact cluster sizes of the whole table.
    n_rows
        Rows of the whole table.

    Returns
    -------
    SilhouetteScore
        The post-stratified estimate and its standard error (``exact`` is False; a cluster
        without a sampled point has a NaN per-cluster mean and adds nothing to the estimate).
    """
    sizes = np.asarray(sizes, dtype=np.float64)
    s = _point_silhouettes(np.asarray(sums, dtype=np.float64), np.asarray(own), sizes)
    return _combine(s, np.asarray(own), sizes, n_rows, exact=False)


def _point_silhouettes(sums: np.ndarray, own: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Silhouette of each point from its per-cluster distance sums (sklearn's conventions)."""
    rows = np.arange(sums.shape[0])
    own_size = sizes[own]
    with np.errstate(divide="ignore", invalid="ignore"):
        a = sums[rows, own] / np.maximum(own_size - 1, 1)
        means = sums / np.where(sizes > 0, sizes, np.nan)[None, :]
        means[rows, own] = np.inf
        means[:, sizes == 0] = np.inf
        b = means.min(axis=1)
        s = (b - a) / np.maximum(a, b)
    s[own_size <= 1] = 0.0  # sklearn: a point alone in its cluster scores 0
    return np.nan_to_num(s, nan=0.0)


def _combine(
    s: np.ndarray, own: np.ndarray, sizes: np.ndarray, n: int, exact: bool,
    population_rows: int | None = None,
) -> SilhouetteScore:
    """Post-stratified mean over clusters and its standard error.

    Exact scores of a table that is itself a sample of ``population_rows`` rows get the
    standard error of that sample (cluster sizes scale with the sampling fraction).
    """
    outer_fraction = n / population_rows if population_rows and population_rows > n else None
    k = sizes.size
    per_cluster = []
    estimate = 0.0
    variance = 0.0
    for c in range(k):
        sc = s[own == c]
        if sc.size == 0:
            per_cluster.append(float("nan"))
            continue
        weight = sizes[c] / n
        per_cluster.append(float(sc.mean()))
        estimate += weight * sc.mean()
        if not exact and sc.size > 1:
            fpc = 1.0 - sc.size / sizes[c]
            variance += weight**2 * sc.var(ddof=1) / sc.size * fpc
        elif exact and outer_fraction is not None and sc.size > 1:
            variance += weight**2 * sc.var(ddof=1) / sc.size * (1.0 - outer_fraction)
    if exact:
        estimate = float(s.mean())
    return SilhouetteScore(
        score=float(estimate),
        stderr=float(np.sqrt(max(variance, 0.0))),
        n_points=int(s.size),
        exact=exact,
        per_cluster=tuple(per_cluster),
    )
