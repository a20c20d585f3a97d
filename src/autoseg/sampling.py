"""Which rows each stage reads: every row set of a run, drawn once, here.

A run fits the feature scaling, the PCA and the k search on bounded samples of the table and
describes the clusters from another; the rows are chosen by their position in the input, so
both engines (one machine, Dask) hand the stages the very same rows by construction, and no
stage draws a sample of its own.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Rows the feature scaling (medians, spreads, category levels) is fitted on.
FEATURE_FIT_ROWS = 200_000
# Rows the PCA is fitted on: the principal axes are stable long before millions of rows.
PCA_FIT_ROWS = 200_000
# Rows read by explanations, profiles, rules and drift: means and shares from 200,000 rows are
# within about 0.01 standard deviations of the whole table's, and at 1M rows this halves the
# stage (measured: 5.6 s -> under 3 s). Cluster sizes stay exact (counted from all rows).
DESCRIBE_ROWS = 200_000
# Points of the report's 2-D scatter plot, drawn from the describe sample.
PROJECTION_ROWS = 5_000
# Points of the describe sample whose silhouette is computed against *every* row of the table
# after the all-rows fit (Dask runs: the distance sums are a reduction). Each point costs one
# pass of d-dimensional distances over the table, so the point-row pairs are capped: 2,000
# points (a standard error of about 0.005) up to 2M rows, fewer beyond, never under 500 (about
# 0.01). Measured with 2 workers on 2 cores: 2,000 points against 10M rows took 28 s.
ALL_ROWS_SILHOUETTE_POINTS = 2_000
ALL_ROWS_SILHOUETTE_MIN_POINTS = 500
ALL_ROWS_SILHOUETTE_PAIRS = 4_000_000_000


def sample_positions(n: int, limit: int, seed: int) -> np.ndarray | None:
    """Sorted positions of a uniform sample of ``limit`` of ``n`` rows, or ``None`` (all rows).

    Parameters
    ----------
    n
        Rows to choose from.
    limit
        Largest sample; ``n <= limit`` means every row (``None``).
    seed
        The run's seed. Row sets of the same size are the same rows (the feature fit, the PCA
        fit and the describe sample of a large table coincide), which keeps them consistent.

    Returns
    -------
    numpy.ndarray or None
        Sorted int64 positions, or ``None`` for every row.
    """
    if n <= limit:
        return None
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n, size=limit, replace=False)).astype(np.int64)


def search_is_sampled(n_rows: int, silhouette_exact_max_rows: int,
                      search_sample_size: int) -> bool:
    """Whether the k search runs on a sample.

    Tables up to ``silhouette_exact_max_rows`` (and ``search_sample_size``) rows are searched
    whole with exact silhouettes; larger ones on a uniform sample of ``search_sample_size``.
    """
    return n_rows > max(silhouette_exact_max_rows, search_sample_size)


@dataclass(frozen=True)
class RowSets:
    """The rows every sampled stage reads, as sorted positions (``None``: every row)."""

    n_rows: int
    features: np.ndarray | None
    pca: np.ndarray | None
    search: np.ndarray | None
    describe: np.ndarray | None

    @property
    def search_sampled(self) -> bool:
        """Whether the k search sees a sample (then the chosen k is refitted on all rows)."""
        return self.search is not None


def plan_rows(n_rows: int, seed: int, *, search_sample_size: int,
              silhouette_exact_max_rows: int) -> RowSets:
    """Draw every row set of a run on a table of ``n_rows`` rows.

    Parameters
    ----------
    n_rows
        Rows of the input.
    seed
        The run's seed (``--seed``).
    search_sample_size, silhouette_exact_max_rows
        ``--search-sample-size`` and ``--silhouette-exact-max-rows``.

    Returns
    -------
    RowSets
        Positions for the feature fit, the PCA fit, the k search and the describe stage.
    """
    sampled = search_is_sampled(n_rows, silhouette_exact_max_rows, search_sample_size)
    return RowSets(
        n_rows=n_rows,
        features=sample_positions(n_rows, FEATURE_FIT_ROWS, seed),
        pca=sample_positions(n_rows, PCA_FIT_ROWS, seed),
        search=(sample_positions(n_rows, search_sample_size, seed)
                if sampled else None),
        describe=sample_positions(n_rows, DESCRIBE_ROWS, seed),
    )


def projection_positions(n: int, seed: int) -> np.ndarray | None:
    """Rows of the describe sample (``n`` rows) shown in the report's 2-D scatter plot."""
    return sample_positions(n, PROJECTION_ROWS, seed)


def all_rows_silhouette_points(n_rows: int) -> int:
    """How many points the all-rows silhouette scores on a table of ``n_rows`` rows."""
    budget = ALL_ROWS_SILHOUETTE_PAIRS // max(n_rows, 1)
    return int(min(ALL_ROWS_SILHOUETTE_POINTS, max(ALL_ROWS_SILHOUETTE_MIN_POINTS, budget)))
