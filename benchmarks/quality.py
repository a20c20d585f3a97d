"""Segment quality against ground truth: autoseg's k search vs the k-means optimum and a notebook.

For every data set the script reports the k autoseg chooses against the true k, the adjusted
Rand index (ARI) of autoseg's segments against the true labels next to the ceiling k-means can
reach (Lloyd started from the true clusters' centroids, in the same prepared space), the inertia
gap between autoseg's fit at the true k and that optimum, and the notebook baseline on the same
data in the same run (one-hot + standardise, ``KMeans(n_init="auto")`` for every k, the k of
the best exact silhouette; sampled silhouette above 50,000 rows).

Data sets:

* the public sets in ``../shared/data``: Fränti s1, s3, a2, unbalance, g2-2-30 (2-D point
  sets with true labels), Palmer penguins, Mall customers and UCI wholesale (real tables: no
  true k; the segment sizes are checked for degenerate clusters);
* generated sets of the same kinds as Fränti's (A: many round clusters in 2-D, S: overlapping
  Gaussian clusters, dim: well separated clusters in 16-64 dimensions), with other seeds and
  cluster counts, so the result is not a tuning to the public files;
* generated tables with planted segments: numeric, mixed (numbers and categories), with and
  without noise columns (a uniform 5-level region, a random signup date, 3% missing values),
  a customer table like the one of issue 15 (two mid-sized segments close together), and an
  Adult-like census table (heavy tails, zero-inflated capital gains, rare categories; no true
  k: checked for degenerate clusters).

autoseg runs through its library with the run defaults (``autoseg.config.build_config``,
``autoseg.features.fit_features``, ``autoseg.pipeline.search_candidates``, the refit on all
rows for sampled searches). ``--quick`` (the default) keeps generated tables at 10,000 rows;
``--full`` uses 200,000 rows for the customer tables (the search then runs on a 20,000-row
sample, as in a real run).

    python benchmarks/quality.py            # quick, a few minutes on 2 cores
    python benchmarks/quality.py --full
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# As the CLI does: spinning OpenMP threads slow k-means 2-3x when other processes share the cores.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score, silhouette_score
from sklearn.preprocessing import StandardScaler

from autoseg.alternatives import describe_alternatives
from autoseg.backend import select_backend
from autoseg.config import build_config
from autoseg.features import fit_features
from autoseg.fitting import search_candidates
from autoseg.reduce import fit_projection
from autoseg.sampling import plan_rows
from autoseg.search import nearest_centroid, refit_on_all_rows

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "quality.json"
QUICK_ROWS = 10_000
FULL_ROWS = 200_000
BASELINE_EXACT_MAX_ROWS = 50_000
# The checks of "no degenerate segments" on real tables (issue 15).
MIN_SHARE = 0.01
MAX_SHARE = 0.80


@dataclass
class Case:
    """One data set: the table, its true labels (if any) and the k range searched."""

    name: str
    group: str  # "franti", "franti-like", "planted", "real"
    frame: pd.DataFrame
    truth: np.ndarray | None
    k_range: tuple[int, int]
    ignore: tuple[str, ...] = ()
    note: str = ""
    weak_labels: np.ndarray | None = None  # real tables: a weak label for information

    @property
    def true_k(self) -> int | None:
        return None if self.truth is None else int(np.unique(self.truth).size)


@dataclass
class Outcome:
    """What one method found on one case."""

    k: int
    ari: float | None
    seconds: float
    sizes: list[int] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------- data sets


def _franti(name: str, k_range: tuple[int, int], note: str = "") -> Case:
    folder = DATA / "franti"
    x = np.loadtxt(folder / f"{name}.txt")
    truth = np.loadtxt(folder / f"{name}-labels.txt").astype(int) - 1
    frame = pd.DataFrame(x, columns=[f"x{i}" for i in range(x.shape[1])])
    return Case(name, "franti", frame, truth, k_range, note=note)


def _separated_centres(k: int, dim: int, separation: float, box: float,
                       rng: np.random.Generator) -> np.ndarray:
    """k centres uniform in a box, each at least ``separation`` from the others."""
    centres: list[np.ndarray] = []
    while len(centres) < k:
        c = rng.uniform(0.0, box, dim)
        if all(np.linalg.norm(c - o) >= separation for o in centres):
            centres.append(c)
    return np.array(centres)


def a_like(k: int, seed: int) -> Case:
    """Fränti A-type: k round clusters of 150 points in 2-D, neighbours 3.9-6 sd apart."""
    rng = np.random.default_rng(seed)
    centres = _separated_centres(k, 2, 3.9, np.sqrt(k) * 5.4, rng)
    truth = np.repeat(np.arange(k), 150)
    x = centres[truth] * [1.0, 0.7] * 1000 + rng.normal(0, 1000, (truth.size, 2)) * [1, 0.7]
    frame = pd.DataFrame(x, columns=["x0", "x1"])
    lo, hi = max(2, k - 10), k + 10
    return Case(f"A-like k={k} (seed {seed})", "franti-like", frame, truth, (lo, hi))


def a_like_uneven(k: int, seed: int) -> Case:
    """A-type with an uneven layout: three quarters of the clusters crowd one side of ``x``.

    The crowd fills three columns of a jittered grid, the rest one sparse column far to the
    right. The quartiles of ``x`` then fall inside the crowd, so a quartile-based scale
    (``IQR``) stretches ``x`` against ``y``; a standard deviation keeps the clusters round.
    """
    rng = np.random.default_rng(seed)
    crowd = (3 * k) // 4
    rows = int(np.ceil(crowd / 3))
    step = 4.6
    centres = [[step * (i % 3), step * (i // 3)] for i in range(crowd)]
    rest = k - crowd
    centres += [[step * 3 + 12.0, (rows - 1) * step * j / max(rest - 1, 1)] for j in range(rest)]
    centres_array = np.array(centres) + rng.uniform(-0.3, 0.3, (k, 2))
    truth = np.repeat(np.arange(k), 150)
    x = (centres_array[truth] + rng.normal(0, 1, (truth.size, 2))) * 1000
    frame = pd.DataFrame(x, columns=["x0", "x1"])
    return Case(f"A-like uneven k={k} (seed {seed})", "franti-like", frame, truth,
                (max(2, k - 10), k + 10))


def s_like(k: int, separation: float, seed: int) -> Case:
    """Fränti S-type: k Gaussian clusters of 300-350 points in 2-D with varying overlap."""
    rng = np.random.default_rng(seed)
    centres = _separated_centres(k, 2, separation, np.sqrt(k) * separation * 1.6, rng)
    sizes = rng.integers(300, 351, k)
    truth = np.repeat(np.arange(k), sizes)
    spread = rng.uniform(0.8, 1.2, (k, 2))
    x = centres[truth] + rng.normal(0, 1, (truth.size, 2)) * spread[truth]
    frame = pd.DataFrame(x * 10_000, columns=["x0", "x1"])
    return Case(f"S-like k={k} sep {separation:g} (seed {seed})", "franti-like", frame, truth,
                (max(2, k - 5), k + 5))


def dim_like(dim: int, seed: int) -> Case:
    """Fränti dim-type: 16 well separated Gaussian clusters of 64 points in ``dim`` dims."""
    rng = np.random.default_rng(seed)
    k = 16
    centres = rng.uniform(0, 100, (k, dim))
    truth = np.repeat(np.arange(k), 64)
    x = centres[truth] + rng.normal(0, 4, (truth.size, dim))
    frame = pd.DataFrame(x, columns=[f"x{i}" for i in range(dim)])
    return Case(f"dim-like d={dim} (seed {seed})", "franti-like", frame, truth, (10, 22))


def _real_cases() -> list[Case]:
    penguins = pd.read_csv(DATA / "penguins.csv")
    mall = pd.read_csv(DATA / "Mall_Customers.csv")
    wholesale = pd.read_csv(DATA / "wholesale_customers_data.csv")
    return [
        Case("penguins", "real", penguins, None, (2, 9), ignore=("species",),
             weak_labels=pd.factorize(penguins["species"])[0],
             note="species left out; ARI against species for information"),
        Case("Mall customers", "real", mall, None, (2, 9), note="tutorials use k = 5"),
        Case("wholesale", "real", wholesale, None, (2, 9), ignore=("Channel", "Region"),
             weak_labels=wholesale["Channel"].to_numpy(),
             note="Channel and Region left out; ARI against Channel for information"),
    ]


PLANTED_MEANS = {  # age, annual spend (lognormal median), basket, visits per month, tenure years
    "young browsers": (27, 40, 22, 9, 1.0),
    "families": (38, 147, 45, 4, 4.0),
    "established": (52, 54, 67, 2, 9.0),
    "bargain hunters": (45, 20, 15, 6, 3.0),
    "big spenders": (44, 900, 160, 5, 6.0),
}
PLANTED_SHARES = (0.30, 0.25, 0.20, 0.20, 0.05)


def planted(rows: int, seed: int, *, mixed: bool, noise: bool, separation: float = 1.0,
            name: str | None = None) -> Case:
    """A customer table with 5 planted segments (shares 30/25/20/20/5%).

    ``separation`` scales the distance between segment means (1 = the figures of issue 15:
    median age 38 vs 52, spend 147 vs 54, basket 45 vs 67 for the 25% and 20% segments).
    ``mixed`` adds a channel category and a premium flag that depend on the segment;
    ``noise`` adds a uniform 5-level region, a random signup date and 3% missing values.
    """
    rng = np.random.default_rng(seed)
    truth = rng.choice(len(PLANTED_SHARES), size=rows, p=PLANTED_SHARES)
    means = np.array(list(PLANTED_MEANS.values()))
    centre = means.mean(axis=0)
    means = centre + (means - centre) * separation
    columns = {
        "customer_id": np.arange(1, rows + 1),
        "age": np.clip(rng.normal(means[truth, 0], 6), 18, 90).round(),
        "annual_spend": np.exp(rng.normal(np.log(np.maximum(means[truth, 1], 1.0)), 0.35)),
        "basket": np.maximum(rng.normal(means[truth, 2], 8), 1.0),
        "visits_per_month": rng.poisson(np.maximum(means[truth, 3], 0.2)),
        "tenure_years": np.maximum(rng.normal(means[truth, 4], 1.2), 0.0),
    }
    frame = pd.DataFrame(columns)
    if mixed:
        channel_probs = np.array([[0.8, 0.15, 0.05], [0.3, 0.5, 0.2], [0.1, 0.3, 0.6],
                                  [0.5, 0.4, 0.1], [0.4, 0.2, 0.4]])
        u = rng.random(rows)[:, None]
        channel_idx = (u > np.cumsum(channel_probs[truth], axis=1)).sum(axis=1)
        frame["channel"] = np.array(["app", "web", "store"])[channel_idx]
        frame["premium"] = rng.random(rows) < np.array([0.05, 0.2, 0.3, 0.02, 0.9])[truth]
    if noise:
        frame["region"] = rng.choice(["north", "south", "east", "west", "central"], rows)
        frame["signup_date"] = pd.Timestamp("2015-01-01") + pd.to_timedelta(
            rng.integers(0, 3650, rows), unit="D")
        for column in ("age", "basket", "tenure_years"):
            frame.loc[rng.random(rows) < 0.03, column] = np.nan
    label = name or ("mixed" if mixed else "numeric") + (" + noise" if noise else "")
    if separation != 1.0 and name is None:
        label += f", separation {separation:g}"
    return Case(f"planted {label} ({rows:,} rows)", "planted", frame, truth, (2, 9))


def adult_like(rows: int, seed: int) -> Case:
    """A census-like table: heavy tails, zero-inflated capital columns, rare categories."""
    rng = np.random.default_rng(seed)
    age = np.clip(rng.gamma(4.0, 9.5, rows) + 17, 17, 90).round()
    education_num = np.clip(rng.choice(np.arange(1, 17), rows, p=_education_p()), 1, 16)
    hours = np.where(rng.random(rows) < 0.47, 40,
                     np.clip(rng.normal(40, 12, rows), 1, 99)).round()
    gain = np.where(rng.random(rows) < 0.92, 0.0, np.exp(rng.normal(8.5, 1.2, rows)))
    gain[rng.random(rows) < 0.005] = 99999
    loss = np.where(rng.random(rows) < 0.953, 0.0, rng.normal(1870, 360, rows).clip(150))
    frame = pd.DataFrame({
        "age": age,
        "fnlwgt": np.exp(rng.normal(12.1, 0.55, rows)).round(),
        "education_num": education_num,
        "capital_gain": gain.round(),
        "capital_loss": loss.round(),
        "hours_per_week": hours,
        "workclass": rng.choice(["Private", "Self-emp", "Local-gov", "State-gov", "Federal-gov",
                                 "Without-pay", "?"], rows,
                                p=[0.70, 0.11, 0.064, 0.04, 0.03, 0.001, 0.055]),
        "marital_status": rng.choice(["Married", "Never-married", "Divorced", "Separated",
                                      "Widowed"], rows, p=[0.47, 0.33, 0.14, 0.03, 0.03]),
        "sex": rng.choice(["Male", "Female"], rows, p=[0.67, 0.33]),
        "race": rng.choice(["White", "Black", "Asian-Pac", "Amer-Indian", "Other"], rows,
                           p=[0.854, 0.096, 0.032, 0.01, 0.008]),
        "native_country": rng.choice(
            ["United-States", "Mexico", "?", "Philippines", "Germany"] + [f"c{i}" for i in
                                                                           range(36)],
            rows, p=[0.895, 0.02, 0.018, 0.006, 0.005] + [0.056 / 36] * 36),
    })
    return Case(f"Adult-like census ({rows:,} rows)", "real", frame, None, (2, 9),
                note="generated; no true k: degenerate-cluster check only")


def _education_p() -> np.ndarray:
    p = np.array([0.2, 0.5, 1.0, 2.0, 1.6, 2.9, 3.6, 1.3, 32.3, 22.4, 4.2, 3.3, 16.4, 5.3,
                  1.8, 1.3])
    return p / p.sum()


def cases(full: bool) -> list[Case]:
    """Every data set of the run."""
    rows = FULL_ROWS if full else QUICK_ROWS
    found = [
        _franti("s1", (10, 20)),
        _franti("s3", (10, 20)),
        _franti("a2", (25, 45)),
        _franti("unbalance", (2, 12), note="the silhouette prefers 6 even at the optimum"),
        _franti("g2-2-30", (2, 9)),
        a_like(20, 1), a_like(35, 2), a_like(50, 3), a_like_uneven(20, 4), a_like_uneven(30, 5),
        s_like(15, 4.5, 5), s_like(15, 3.2, 6),
        dim_like(16, 7), dim_like(64, 8),
        *_real_cases(),
        adult_like(min(rows, 30_000), 9),
        planted(QUICK_ROWS, 10, mixed=False, noise=False, separation=2.5),
        planted(QUICK_ROWS, 11, mixed=True, noise=False, separation=2.5),
        planted(QUICK_ROWS, 12, mixed=True, noise=True, separation=2.5),
        planted(QUICK_ROWS, 14, mixed=False, noise=False, separation=1.6),
        planted(rows, 13, mixed=True, noise=True, name="customer table as in issue 15"),
    ]
    return found


# --------------------------------------------------------------------------- methods


# Run parameters that replace the defaults (--set NAME=VALUE), e.g. to compare restarts.
OVERRIDES: dict[str, str] = {}


def run_autoseg(case: Case) -> tuple[Outcome, dict[str, Any]]:
    """autoseg through its library with the run defaults; also the ceiling in its space."""
    lo, hi = case.k_range
    config = build_config({"input_table": "quality.csv", "min_clusters": lo, "max_clusters": hi,
                           "ignore_columns": ",".join(("time", *case.ignore)), **OVERRIDES})
    backend = select_backend("cpu")
    started = time.perf_counter()
    # The row sets of a run (autoseg.sampling), as pipeline.run draws them.
    plan = plan_rows(len(case.frame), config.seed, search_sample_size=config.search_sample_size,
                     silhouette_exact_max_rows=config.silhouette_exact_max_rows)
    fit_rows = case.frame if plan.features is None else case.frame.iloc[plan.features]
    spec = fit_features(fit_rows.reset_index(drop=True), config.ignore_columns)
    matrix, _ = spec.transform(case.frame)
    pca_rows = matrix if plan.pca is None else matrix[plan.pca]
    projection = fit_projection(pca_rows, config.dimension_reduction_threshold, config.seed,
                                backend)
    if projection is not None:
        matrix = projection.transform(matrix)
    n_rows = matrix.shape[0]
    rows = plan.search
    search_x = matrix if rows is None else matrix[rows]
    search = search_candidates(search_x, n_rows, config, backend)
    centroids = search.centroids
    if rows is not None:
        centroids, _ = refit_on_all_rows(matrix, centroids, config.seed, backend)
    labels = nearest_centroid(matrix, centroids)
    seconds = time.perf_counter() - started
    sizes = np.bincount(labels, minlength=search.chosen_k).tolist()
    silhouettes = {c.k: c.silhouette for c in search.candidates}
    outcome = Outcome(search.chosen_k, None, seconds, sizes,
                      {"silhouette": silhouettes,
                       "stderr": {c.k: c.silhouette_stderr for c in search.candidates},
                       "swaps": {c.k: c.swaps for c in search.candidates},
                       "fit_seconds": sum(c.fit_seconds for c in search.candidates)})
    ceiling: dict[str, Any] = {}
    if case.truth is not None:
        outcome.ari = float(adjusted_rand_score(case.truth, labels))
        truth = case.truth if rows is None else case.truth[rows]
        k = case.true_k
        assert k is not None
        start = np.stack([search_x[truth == c].mean(axis=0) for c in np.unique(truth)])
        optimum = KMeans(k, init=start, n_init=1).fit(search_x)
        opt_all = nearest_centroid(matrix, optimum.cluster_centers_.astype(np.float32))
        ceiling["ari"] = float(adjusted_rand_score(case.truth, opt_all))
        ceiling["inertia"] = float(optimum.inertia_)
        ours_at_k = search.candidate(k)
        if ours_at_k is not None and ours_at_k.silhouette is not None:
            ceiling["ours_inertia_at_true_k"] = ours_at_k.inertia
            ceiling["restart_inertia_at_true_k"] = ours_at_k.restart_inertia
            ceiling["inertia_gap"] = ours_at_k.inertia / optimum.inertia_ - 1.0
            ceiling["restart_inertia_gap"] = ours_at_k.restart_inertia / optimum.inertia_ - 1.0
            fit_labels = search.fits[k][1]
            ceiling["ours_ari_at_true_k"] = float(adjusted_rand_score(truth, fit_labels))
            # the silhouette of the optimum itself: does the criterion pick k at the optimum?
            ceiling["optimum_silhouette"] = float(
                silhouette_score(search_x, optimum.labels_)) if len(search_x) <= 20_000 \
                else None
    if case.weak_labels is not None:
        outcome.extra["ari_weak_labels"] = float(adjusted_rand_score(case.weak_labels, labels))
    # What another k would change, from the search's own fits of the search rows.
    search_frame = case.frame if rows is None else case.frame.iloc[rows]
    chosen_labels = labels if rows is None else labels[rows]
    alternatives = describe_alternatives(
        search, spec.readable(search_frame), chosen_labels=chosen_labels,
        kinds={f.column: f.kind for f in spec.numeric})
    outcome.extra["alternatives"] = [line for alt in alternatives for line in alt["summary"]]
    if case.truth is not None:
        outcome.extra["true_split_named"] = _true_split_named(
            alternatives, chosen_labels, search, case.truth if rows is None else case.truth[rows],
            case.true_k)
    return outcome, ceiling


def _true_split_named(alternatives: list[dict[str, Any]], chosen_labels: np.ndarray,
                      search: Any, truth: np.ndarray, true_k: int | None) -> bool | None:
    """Whether the alternative at the true k names a split into two different true segments.

    ``None`` when the true k is not among the alternatives (or is the chosen k).
    """
    entry = next((alt for alt in alternatives if alt["k"] == true_k), None)
    if entry is None:
        return None
    alt_labels = search.fits[true_k][1]
    for split in entry["splits"]:
        majorities = set()
        for part in split["into"]:
            mask = (chosen_labels == split["cluster"]) & (alt_labels == part["other_cluster"])
            majorities.add(int(np.bincount(truth[mask]).argmax()))
        if len(majorities) >= 2:
            return True
    return False


def run_notebook(case: Case) -> Outcome:
    """The notebook: one-hot + standardise, KMeans(n_init='auto'), best exact silhouette."""
    started = time.perf_counter()
    frame = case.frame.drop(columns=[c for c in (*case.ignore, "customer_id", "CustomerID")
                                     if c in case.frame.columns])
    for column in frame.columns:
        if pd.api.types.is_datetime64_any_dtype(frame[column]):
            frame[column] = (frame[column] - pd.Timestamp("1970-01-01")).dt.days
    frame = pd.get_dummies(frame, dtype=float)
    frame = frame.fillna(frame.median())
    x = StandardScaler().fit_transform(frame.to_numpy(dtype=float))
    lo, hi = case.k_range
    best: tuple[float, int, np.ndarray] | None = None
    sampled = len(x) > BASELINE_EXACT_MAX_ROWS
    for k in range(lo, hi + 1):
        labels = KMeans(k, n_init="auto", random_state=0).fit_predict(x)
        score = silhouette_score(x, labels, sample_size=20_000 if sampled else None,
                                 random_state=0)
        if best is None or score > best[0]:
            best = (score, k, labels)
    assert best is not None
    seconds = time.perf_counter() - started
    ari = None if case.truth is None else float(adjusted_rand_score(case.truth, best[2]))
    extra = {"silhouette_sampled": sampled}
    if case.weak_labels is not None:
        extra["ari_weak_labels"] = float(adjusted_rand_score(case.weak_labels, best[2]))
    return Outcome(best[1], ari, seconds, np.bincount(best[2]).tolist(), extra)


# --------------------------------------------------------------------------- report


def evaluate(case: Case) -> dict[str, Any]:
    """Both methods on one case, with the checks of issue 15."""
    ours, ceiling = run_autoseg(case)
    notebook = run_notebook(case)
    shares = np.array(ours.sizes) / max(1, sum(ours.sizes))
    record: dict[str, Any] = {
        "name": case.name, "group": case.group, "rows": len(case.frame),
        "k_range": list(case.k_range), "true_k": case.true_k, "note": case.note,
        "ours": ours.__dict__, "notebook": notebook.__dict__, "ceiling": ceiling,
        "min_share": float(shares.min()), "max_share": float(shares.max()),
    }
    if case.truth is not None:
        record["goal_met"] = bool(ours.k == case.true_k
                                  and ours.ari is not None
                                  and ours.ari >= ceiling["ari"] - 0.01)
    else:
        record["goal_met"] = bool(shares.min() >= MIN_SHARE and shares.max() <= MAX_SHARE)
    return record


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def markdown_table(records: list[dict[str, Any]]) -> str:
    """The results as the Markdown table of benchmarks/RESULTS.md."""
    lines = [
        "| data | rows | true k | ours: k, ARI | ceiling ARI | inertia gap at true k "
        "(restarts only -> with swaps) | notebook: k, ARI | ours / notebook s | goal |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in records:
        ours, nb, ceil = r["ours"], r["notebook"], r["ceiling"]
        if r["true_k"] is None:
            ours_text = f"{ours['k']}, sizes {100 * r['min_share']:.1f}-" \
                        f"{100 * r['max_share']:.1f}%"
            if "ari_weak_labels" in ours["extra"]:
                ours_text += f", weak-label ARI {ours['extra']['ari_weak_labels']:.3f}"
            nb_text = str(nb["k"])
            if "ari_weak_labels" in nb["extra"]:
                nb_text += f", weak-label ARI {nb['extra']['ari_weak_labels']:.3f}"
            gap = "-"
        else:
            ours_text = f"{ours['k']}, {_fmt(ours['ari'])}"
            nb_text = f"{nb['k']}, {_fmt(nb['ari'])}"
            gap = "-" if "inertia_gap" not in ceil else (
                f"{100 * ceil['restart_inertia_gap']:+.2f}% -> {100 * ceil['inertia_gap']:+.2f}%")
        lines.append(
            f"| {r['name']} | {r['rows']:,} | {_fmt(r['true_k'])} | {ours_text} | "
            f"{_fmt(ceil.get('ari'))} | {gap} | {nb_text} | "
            f"{ours['seconds']:.1f} / {nb['seconds']:.1f} | {'yes' if r['goal_met'] else 'no'} |"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", default=True,
                      help=f"generated tables of {QUICK_ROWS:,} rows (default)")
    size.add_argument("--full", action="store_true",
                      help=f"the issue's customer table at {FULL_ROWS:,} rows")
    parser.add_argument("--only", default=None,
                        help="run only the data sets whose name contains this text")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON result file")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="a run parameter instead of its default (repeatable), "
                             "e.g. --set kmeans_restarts=3")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    OVERRIDES.update(item.split("=", 1) for item in args.set)
    records = []
    selected: list[Case] = [c for c in cases(args.full)
                            if args.only is None or args.only.lower() in c.name.lower()]
    for case in selected:
        record = evaluate(case)
        records.append(record)
        ours, nb, ceil = record["ours"], record["notebook"], record["ceiling"]
        print(f"{case.name}: true k {record['true_k']}, ours k={ours['k']} ARI "
              f"{_fmt(ours['ari'])} (ceiling {_fmt(ceil.get('ari'))}, inertia gap "
              f"{_fmt(ceil.get('inertia_gap'), 5)}), notebook k={nb['k']} ARI "
              f"{_fmt(nb['ari'])}, sizes {100 * record['min_share']:.1f}-"
              f"{100 * record['max_share']:.1f}%, {ours['seconds']:.1f}s / "
              f"{nb['seconds']:.1f}s, goal {'met' if record['goal_met'] else 'NOT met'}",
              flush=True)
        if case.group == "planted" or not record["goal_met"]:
            for line in ours["extra"]["alternatives"]:
                print(f"    {line}", flush=True)
    print()
    print(markdown_table(records))
    result = {
        "benchmark": "quality",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "records": records,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=_jsonable) + "\n")
    print(f"wrote {args.out}")
    return 0


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(type(value))


if __name__ == "__main__":
    raise SystemExit(main())
