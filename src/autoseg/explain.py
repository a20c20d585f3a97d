"""Explain clusters with a surrogate gradient-boosted tree model and TreeSHAP.

k-means gives every row a ``cluster_id`` but says nothing about *why* a row landed
where it did. This stage answers that by training an XGBoost classifier that
predicts ``cluster_id`` from the human-readable features (not the scaled or PCA
matrix k-means saw), then reading two things off the fitted trees:

* a global feature importance (normalised total split gain), and
* per-cluster SHAP values from XGBoost's built-in TreeSHAP (``pred_contribs``),
  which runs on the GPU when the booster's device is ``cuda``.

How faithful those explanations are is measured by the surrogate's accuracy on a
stratified hold-out (``fidelity``): a low value means the explanation describes
the surrogate more than the clustering.

Work is bounded: the surrogate trains on at most ``max_train_rows`` rows and SHAP
is computed on at most ``max_shap_rows`` rows, both drawn stratified by cluster,
so the cost does not grow with the table beyond building the samples.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

import numpy as np
import pandas as pd
from pandas.api.types import is_bool_dtype, is_numeric_dtype

from autoseg.parallel import cpu_cores

if TYPE_CHECKING:
    # XGBoost (and the scikit-learn it imports, about 1 s) loads when an explanation is
    # computed, not when this module is imported (the CLI's start-up, --help, errors).
    import xgboost as xgb

__all__ = [
    "BASE_SCORE",
    "DEFAULT_DEVICE",
    "DEFAULT_MAX_SHAP_ROWS",
    "DEFAULT_MAX_TRAIN_ROWS",
    "DEFAULT_SEED",
    "EARLY_STOPPING_MIN_DELTA",
    "EARLY_STOPPING_ROUNDS",
    "HOLDOUT_FRACTION",
    "LEARNING_RATE",
    "MAX_DEPTH",
    "MAX_ROUNDS",
    "MIN_ROWS_PER_CLUSTER",
    "VALIDATION_FRACTION",
    "Explanation",
    "explain_clusters",
]

logger = logging.getLogger(__name__)

DEFAULT_SEED: Final = 0
DEFAULT_DEVICE: Final = "cpu"
# Bounded so the stage costs the same from 20,000 rows up. Measured on the benchmark tables
# (benchmarks/explain_check.py, RESULTS.md "Speed"): 20,000 training rows instead of 50,000 and
# 2,000 SHAP rows instead of 5,000 keep the fidelity within 0.002 and the same top features,
# and take the stage from 3.4 s to about 1 s at 50,000 x 30. SHAP means over 2,000 stratified
# rows have a relative standard error of a few per cent, finer than the report shows them.
DEFAULT_MAX_TRAIN_ROWS: Final = 20_000
DEFAULT_MAX_SHAP_ROWS: Final = 2_000

SUPPORTED_DEVICES: Final = ("cpu", "cuda")

# Share of the bounded training sample held out to measure fidelity.
HOLDOUT_FRACTION: Final = 0.2
# Share of the remaining training rows used only to decide when to stop boosting.
# Kept separate from the hold-out so that fidelity is not measured on the rows
# that chose the number of rounds.
VALIDATION_FRACTION: Final = 0.1
# Clusters smaller than this are sampled in full (and larger ones get at least
# this many rows), so a tiny cluster is never sampled away.
MIN_ROWS_PER_CLUSTER: Final = 50

# Surrogate hyper-parameters: shallow trees keep the explanation readable and the
# cost low; the surrogate only has to mimic k-means, whose boundaries are simple.
MAX_DEPTH: Final = 5
LEARNING_RATE: Final = 0.3
MAX_ROUNDS: Final = 200
# Boosting stops once the validation log-loss has not improved by EARLY_STOPPING_MIN_DELTA
# over EARLY_STOPPING_ROUNDS rounds. Without the tolerance, well separated clusters kept
# shaving 1e-5 off a log-loss near 0 until MAX_ROUNDS (the 50,000 x 30 table: 200 rounds,
# 1.2 s); with it, 31 rounds, 0.55 s, the same fidelity, importance and per-cluster SHAP
# ranking (benchmarks/explain_check.py). The loss still sees a tiny cluster being learnt
# (tests/test_explain.py), which a stop on the error rate did not.
EARLY_STOPPING_ROUNDS: Final = 10
EARLY_STOPPING_MIN_DELTA: Final = 1e-3
# An explicit scalar intercept instead of XGBoost's fitted one. Since XGBoost 3.1
# a multiclass model fits one intercept per class and stores ``base_score`` as a
# vector; shap's own model parser (0.51) keeps only its first element, so every
# shap code path that does not delegate to XGBoost (interventional SHAP, plots
# from a reloaded model) would get classes 1..k-1 wrong. A scalar intercept is
# read correctly everywhere. 0.5 is margin 0 for ``binary:logistic``
# (logit(0.5) = 0) and, for ``multi:softprob``, a shift shared by all classes,
# which softmax ignores; boosting learns the class priors in its first rounds.
BASE_SCORE: Final = 0.5

# XGBoost rejects feature names containing these characters.
_XGB_FORBIDDEN_NAME_CHARS: Final = ("[", "]", "<")


@dataclass(frozen=True)
class Explanation:
    """Result of :func:`explain_clusters`.

    Attributes
    ----------
    feature_importance : pandas.DataFrame
        One row per feature, sorted by ``rank``. Columns ``feature`` (str),
        ``importance`` (float, normalised total gain, sums to 1) and ``rank``
        (int, 1 = most important; ties keep the input column order).
    shap_by_cluster : pandas.DataFrame
        One row per (cluster, feature), sorted by ``cluster_id`` then ``rank``.
        Columns ``cluster_id`` (int), ``feature`` (str), ``mean_abs_shap``
        (mean |SHAP| of that cluster's output over all SHAP rows), ``mean_shap``
        (mean signed SHAP of that cluster's output over the SHAP rows that belong
        to the cluster) and ``rank`` (int, within the cluster by
        ``mean_abs_shap``, 1 = top).
    fidelity : float
        Share of hold-out rows whose cluster the surrogate predicts correctly
        (weighted back to the cluster sizes of the full input). NaN when the
        input is too small to hold rows out.
    n_train : int
        Rows the surrogate was fitted on (including its early-stopping rows).
    n_holdout : int
        Rows used to measure ``fidelity``.
    n_shap_rows : int
        Rows SHAP values were computed for.
    booster : xgboost.Booster
        The fitted surrogate, truncated to its best iteration. Feature ``i`` of
        the booster is ``feature_names[i]``.
    feature_names : tuple of str
        The input columns, in order.
    n_rounds : int
        Boosting rounds kept after early stopping.
    device : str
        Device XGBoost actually used (``"cpu"`` or ``"cuda"``); ``"cpu"`` when
        ``"cuda"`` was asked for but XGBoost found no GPU.
    shap_rows : numpy.ndarray
        Sorted positions (``iloc``) in ``features`` of the rows SHAP values were
        computed for, so callers can recompute or plot row-level values.
    """

    feature_importance: pd.DataFrame
    shap_by_cluster: pd.DataFrame
    fidelity: float
    n_train: int
    n_holdout: int
    n_shap_rows: int
    booster: xgb.Booster
    feature_names: tuple[str, ...] = ()
    n_rounds: int = 0
    device: str = DEFAULT_DEVICE
    shap_rows: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))


def explain_clusters(
    features: pd.DataFrame,
    labels: np.ndarray,
    *,
    seed: int = DEFAULT_SEED,
    device: str = DEFAULT_DEVICE,
    max_train_rows: int = DEFAULT_MAX_TRAIN_ROWS,
    max_shap_rows: int = DEFAULT_MAX_SHAP_ROWS,
) -> Explanation:
    """Explain a clustering with a surrogate XGBoost model and TreeSHAP.

    Parameters
    ----------
    features : pandas.DataFrame
        Human-readable features, one row per clustered row: numeric columns
        (float, NaN allowed; ints and booleans are accepted) and categorical
        columns of pandas ``category`` dtype, which XGBoost splits on natively
        (no one-hot encoding). Column names must be unique strings.
    labels : numpy.ndarray
        Integer cluster id of every row, 1-D, values ``0..k-1`` with every id
        present and ``k >= 2``.
    seed : int, default 0
        Seed for sampling and for XGBoost; a fixed seed gives identical results.
    device : {"cpu", "cuda"}, default "cpu"
        Where XGBoost trains and computes SHAP values.
    max_train_rows : int, default 20_000
        Upper bound on the rows sampled (stratified by cluster) to fit and
        evaluate the surrogate; ``n_train + n_holdout <= max_train_rows``.
    max_shap_rows : int, default 2_000
        Upper bound on the rows sampled (stratified by cluster) for SHAP.

    Returns
    -------
    Explanation
        Importances, per-cluster SHAP summaries, fidelity and the fitted booster.

    Raises
    ------
    ValueError
        If ``features`` and ``labels`` differ in length, there are fewer than two
        clusters, the cluster ids are not ``0..k-1``, a column has an unsupported
        dtype or name, or a bound or the device is invalid.

    Notes
    -----
    *Importance* is each feature's total split gain divided by the sum over all
    features; features the model never split on get 0. For gradient-boosted
    trees this plays the role that scikit-learn's Gini (impurity) importance
    plays for classification trees: both add up how much each feature's splits
    reduce the training loss (impurity).

    *SHAP* values come from XGBoost's exact TreeSHAP on the raw margin (log-odds)
    scale. For ``k > 2`` each cluster has its own output. For ``k == 2`` XGBoost
    has one output, the margin of cluster 1; cluster 1 is reported with those
    contributions and cluster 0 with their negation (the margin of "cluster 0
    versus cluster 1"), so both clusters get the same ``mean_abs_shap`` and
    opposite signs.

    Samples keep every cluster: clusters smaller than ``MIN_ROWS_PER_CLUSTER``
    are taken in full, so small clusters are over-represented. Means over the
    SHAP sample and the fidelity are therefore weighted by
    ``cluster size / rows sampled from the cluster``, which makes them estimates
    for the full input rather than for the sample.
    """
    names, label_array, k = _validate(
        features, labels, device=device, max_train_rows=max_train_rows, max_shap_rows=max_shap_rows
    )
    rng = np.random.default_rng(seed)
    cluster_sizes = np.bincount(label_array, minlength=k)

    # --- surrogate: bounded stratified sample -> train / early-stop / hold-out ---
    sample = _stratified_sample(label_array, max_train_rows, rng)
    fit_idx, holdout_idx = _stratified_split(sample, label_array, HOLDOUT_FRACTION, rng)
    train_idx, valid_idx = _stratified_split(fit_idx, label_array, VALIDATION_FRACTION, rng)

    # Positional names only when XGBoost would reject a real one; outputs always
    # use the real names, and Explanation.feature_names maps positions back.
    booster_names = _booster_feature_names(names)
    booster = _fit_surrogate(
        features, label_array, train_idx, valid_idx, k, booster_names, seed=seed, device=device
    )
    n_rounds = booster.num_boosted_rounds()
    ran_on = _booster_device(booster)
    if ran_on != device:
        # XGBoost falls back to the CPU (with only a warning) when no GPU is visible;
        # report where the work really ran rather than what was asked for.
        logger.warning("explain: device=%r was requested but XGBoost ran on %r", device, ran_on)

    fidelity = _fidelity(booster, features, label_array, holdout_idx, cluster_sizes, booster_names)
    importance = _feature_importance(booster, names, booster_names)

    # --- SHAP on its own bounded sample of the full input ---
    shap_idx = _stratified_sample(label_array, max_shap_rows, rng)
    contribs = _cluster_contributions(booster, features, shap_idx, k, booster_names)
    shap_table = _summarise_shap(contribs, label_array[shap_idx], cluster_sizes, names)

    logger.info(
        "explain: device=%s k=%d n_train=%d n_holdout=%d n_shap_rows=%d rounds=%d fidelity=%.4f",
        ran_on,
        k,
        len(fit_idx),
        len(holdout_idx),
        len(shap_idx),
        n_rounds,
        fidelity,
    )
    return Explanation(
        feature_importance=importance,
        shap_by_cluster=shap_table,
        fidelity=fidelity,
        n_train=len(fit_idx),
        n_holdout=len(holdout_idx),
        n_shap_rows=len(shap_idx),
        booster=booster,
        feature_names=names,
        n_rounds=n_rounds,
        device=ran_on,
        shap_rows=shap_idx,
    )


# --------------------------------------------------------------------------- checks


def _validate(
    features: pd.DataFrame,
    labels: np.ndarray,
    *,
    device: str,
    max_train_rows: int,
    max_shap_rows: int,
) -> tuple[tuple[str, ...], np.ndarray, int]:
    """Check the inputs; return column names, labels as int64 and k."""
    if not isinstance(features, pd.DataFrame):
        raise ValueError(f"features must be a pandas DataFrame, got {type(features).__name__}")
    if device not in SUPPORTED_DEVICES:
        raise ValueError(f"device={device!r} must be one of {SUPPORTED_DEVICES}")
    for name, value, minimum in (
        ("max_train_rows", max_train_rows, 2),
        ("max_shap_rows", max_shap_rows, 1),
    ):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
            raise ValueError(f"{name}={value!r} must be an integer >= {minimum}")

    label_array = np.asarray(labels)
    if label_array.ndim != 1:
        raise ValueError(f"labels must be 1-D, got shape {label_array.shape}")
    if len(features) != len(label_array):
        raise ValueError(
            f"features and labels must have the same length: len(features)={len(features)} != "
            f"len(labels)={len(label_array)}"
        )
    if features.shape[1] == 0:
        raise ValueError("features has no columns: nothing to explain the clusters with")
    label_array = _as_cluster_ids(label_array)
    if label_array.size == 0:
        raise ValueError("need at least 2 clusters to explain, got 0 (no rows)")
    k = int(label_array.max()) + 1
    present = np.bincount(label_array, minlength=k) > 0
    if present.sum() < 2:
        raise ValueError(f"need at least 2 clusters to explain, got {int(present.sum())}")
    if not present.all():
        missing = np.flatnonzero(~present).tolist()
        raise ValueError(
            f"cluster ids must be 0..k-1 with every id present; k={k}, missing ids: {missing}"
        )
    # Every cluster must fit in each sample at least once, or it could not be
    # learnt (training) or described (SHAP).
    for name, value in (("max_train_rows", max_train_rows), ("max_shap_rows", max_shap_rows)):
        if value < k:
            raise ValueError(f"{name}={value} must be >= the number of clusters k={k}")

    names = tuple(features.columns)
    not_str = [c for c in names if not isinstance(c, str)]
    if not_str:
        raise ValueError(f"feature column names must be strings, got {not_str!r}")
    duplicated = sorted({c for c in names if names.count(c) > 1})
    if duplicated:
        raise ValueError(f"feature column names must be unique, duplicated: {duplicated}")
    unsupported = [
        f"{c} ({features[c].dtype})"
        for c in names
        if not (
            isinstance(features[c].dtype, pd.CategoricalDtype)
            or is_numeric_dtype(features[c].dtype)
        )
    ]
    if unsupported:
        raise ValueError(
            "features must be numeric or pandas 'category' dtype; convert these columns: "
            + ", ".join(unsupported)
        )
    return names, label_array, k


def _as_cluster_ids(labels: np.ndarray) -> np.ndarray:
    """Return labels as int64, refusing non-integer or negative values."""
    if is_bool_dtype(labels.dtype) or not is_numeric_dtype(labels.dtype):
        raise ValueError(f"labels must be integer cluster ids, got dtype {labels.dtype}")
    # Float labels are accepted only when they are whole numbers (e.g. read back
    # from a table that stored them as float).
    if not np.issubdtype(labels.dtype, np.integer) and not (
        np.all(np.isfinite(labels)) and np.all(labels == np.round(labels))
    ):
        raise ValueError("labels must be integer cluster ids; found NaN, inf or fractional values")
    out = labels.astype(np.int64)
    if out.size and out.min() < 0:
        raise ValueError(f"cluster ids must be >= 0, got min {int(out.min())}")
    return out


def _booster_feature_names(names: Sequence[str]) -> list[str]:
    """Names to give XGBoost: the real ones unless XGBoost would reject one."""
    if any(ch in name for name in names for ch in _XGB_FORBIDDEN_NAME_CHARS):
        return [f"f{i}" for i in range(len(names))]
    return list(names)


# --------------------------------------------------------------------------- sampling


def _stratified_sample(labels: np.ndarray, n_max: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted row indices of a sample of at most ``n_max`` rows, stratified by label.

    Every cluster keeps ``min(size, floor)`` rows, where ``floor`` is
    ``MIN_ROWS_PER_CLUSTER`` (less when ``n_max`` cannot give every cluster that
    many); the rest of the budget is shared in proportion to what each cluster
    has left (largest-remainder rounding, ties to the lower cluster id).
    """
    n = labels.size
    if n <= n_max:
        return np.arange(n)
    k = int(labels.max()) + 1
    sizes = np.bincount(labels, minlength=k)
    floor = min(MIN_ROWS_PER_CLUSTER, n_max // k)
    quota = np.minimum(sizes, floor)
    spare = sizes - quota
    budget = n_max - int(quota.sum())
    # n > n_max guarantees budget < spare.sum(), so no cluster is over-asked.
    share = budget * spare / spare.sum()
    extra = np.floor(share).astype(np.int64)
    leftover = budget - int(extra.sum())
    order = np.lexsort((np.arange(k), -(share - extra)))
    extra[order[:leftover]] += 1
    quota += extra

    order_by_label = np.argsort(labels, kind="stable")
    starts = np.concatenate(([0], np.cumsum(sizes)))
    picked = [
        rng.choice(order_by_label[starts[c] : starts[c + 1]], size=int(quota[c]), replace=False)
        for c in range(k)
    ]
    return np.sort(np.concatenate(picked))


def _stratified_split(
    idx: np.ndarray, labels: np.ndarray, fraction: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Split row indices into (kept, held out), holding out ``fraction`` of each cluster.

    A cluster always keeps at least one row on the kept side, so a one-row cluster
    is still learnt (and simply not evaluated).
    """
    kept: list[np.ndarray] = []
    held: list[np.ndarray] = []
    sub = labels[idx]
    for c in np.unique(sub):
        members = rng.permutation(idx[sub == c])
        n_held = min(int(round(fraction * members.size)), members.size - 1)
        held.append(members[:n_held])
        kept.append(members[n_held:])
    return np.sort(np.concatenate(kept)), np.sort(np.concatenate(held))


def _population_weights(labels: np.ndarray, cluster_sizes: np.ndarray) -> np.ndarray:
    """Per-row weight ``cluster size / rows of that cluster in the sample``."""
    in_sample = np.bincount(labels, minlength=cluster_sizes.size)
    per_cluster = np.divide(
        cluster_sizes,
        in_sample,
        out=np.zeros(cluster_sizes.size, dtype=np.float64),
        where=in_sample > 0,
    )
    return per_cluster[labels]


# --------------------------------------------------------------------------- model




def _dmatrix(
    features: pd.DataFrame,
    idx: np.ndarray,
    booster_names: list[str],
    label: np.ndarray | None = None,
) -> xgb.DMatrix:
    """DMatrix of the given rows with native categorical support."""
    import xgboost as xgb

    return xgb.DMatrix(
        features.iloc[idx],
        label=label,
        enable_categorical=True,
        feature_names=booster_names,
        nthread=cpu_cores(),
    )


def _fit_surrogate(
    features: pd.DataFrame,
    labels: np.ndarray,
    train_idx: np.ndarray,
    valid_idx: np.ndarray,
    k: int,
    booster_names: list[str],
    *,
    seed: int,
    device: str,
) -> xgb.Booster:
    """Fit the surrogate classifier; early-stop on the validation rows when there are any."""
    import xgboost as xgb

    params: dict[str, object] = {
        "tree_method": "hist",
        "device": device,
        "nthread": cpu_cores(),
        "max_depth": MAX_DEPTH,
        "learning_rate": LEARNING_RATE,
        "base_score": BASE_SCORE,
        "seed": seed,
    }
    if k == 2:
        params |= {"objective": "binary:logistic", "eval_metric": "logloss"}
    else:
        params |= {"objective": "multi:softprob", "num_class": k, "eval_metric": "mlogloss"}

    dtrain = _dmatrix(features, train_idx, booster_names, labels[train_idx])
    evals: list[tuple[xgb.DMatrix, str]] = []
    early_stopping: int | None = None
    if valid_idx.size:
        evals = [(_dmatrix(features, valid_idx, booster_names, labels[valid_idx]), "valid")]
        early_stopping = EARLY_STOPPING_ROUNDS
    callbacks = []
    if early_stopping is not None:
        callbacks.append(xgb.callback.EarlyStopping(rounds=early_stopping,
                                                    min_delta=EARLY_STOPPING_MIN_DELTA))
    booster = xgb.train(
        params,
        dtrain,
        num_boost_round=MAX_ROUNDS,
        evals=evals,
        callbacks=callbacks,
        verbose_eval=False,
    )
    if early_stopping is not None:
        # Drop the rounds after the best one so that every later use (predict,
        # pred_contribs, the saved JSON) sees the same model without having to
        # pass iteration_range around.
        booster = booster[: booster.best_iteration + 1]
    return booster


def _booster_device(booster: xgb.Booster) -> str:
    """The device XGBoost ended up using, read back from the booster's config."""
    config = json.loads(booster.save_config())
    device = str(config["learner"]["generic_param"].get("device", DEFAULT_DEVICE))
    # XGBoost may report an ordinal ("cuda:0"); callers speak in "cpu"/"cuda".
    return device.split(":", 1)[0]


def _fidelity(
    booster: xgb.Booster,
    features: pd.DataFrame,
    labels: np.ndarray,
    holdout_idx: np.ndarray,
    cluster_sizes: np.ndarray,
    booster_names: list[str],
) -> float:
    """Hold-out accuracy of the surrogate, weighted back to the full input."""
    if holdout_idx.size == 0:
        return float("nan")
    proba = booster.predict(_dmatrix(features, holdout_idx, booster_names))
    predicted = (proba > 0.5).astype(np.int64) if proba.ndim == 1 else proba.argmax(axis=1)
    truth = labels[holdout_idx]
    weights = _population_weights(truth, cluster_sizes)
    return float(np.average(predicted == truth, weights=weights))


def _feature_importance(
    booster: xgb.Booster, names: tuple[str, ...], booster_names: list[str]
) -> pd.DataFrame:
    """Normalised total gain per feature, with never-used features at 0."""
    gain = booster.get_score(importance_type="total_gain")
    totals = np.array([gain.get(b, 0.0) for b in booster_names], dtype=np.float64)
    if totals.sum() > 0:
        importance = totals / totals.sum()
    else:
        # No split at all (features cannot separate the clusters): nothing to
        # rank, so spread the weight evenly rather than divide by zero.
        logger.warning("explain: the surrogate made no split; feature importance is uniform")
        importance = np.full(len(names), 1.0 / len(names))
    table = pd.DataFrame({"feature": list(names), "importance": importance})
    table = table.sort_values("importance", ascending=False, kind="stable").reset_index(drop=True)
    table["rank"] = np.arange(1, len(table) + 1, dtype=np.int64)
    return table


# --------------------------------------------------------------------------- SHAP


def _cluster_contributions(
    booster: xgb.Booster, features: pd.DataFrame, idx: np.ndarray, k: int, booster_names: list[str]
) -> np.ndarray:
    """TreeSHAP contributions as ``(rows, k, features + 1)``; the last column is the bias.

    XGBoost returns ``(rows, k, features + 1)`` for multiclass and
    ``(rows, features + 1)`` for binary, the latter being cluster 1's margin;
    cluster 0 gets its negation.
    """
    contribs = booster.predict(_dmatrix(features, idx, booster_names), pred_contribs=True)
    if k == 2:
        if contribs.ndim != 2:
            raise RuntimeError(f"unexpected binary pred_contribs shape {contribs.shape}")
        return np.stack([-contribs, contribs], axis=1)
    if contribs.ndim != 3 or contribs.shape[1] != k:
        raise RuntimeError(f"unexpected multiclass pred_contribs shape {contribs.shape} for k={k}")
    return contribs


def _summarise_shap(
    contribs: np.ndarray, labels: np.ndarray, cluster_sizes: np.ndarray, names: tuple[str, ...]
) -> pd.DataFrame:
    """Per-cluster mean |SHAP| (all rows) and mean SHAP (the cluster's own rows)."""
    k = contribs.shape[1]
    phi = contribs[:, :, :-1].astype(np.float64)  # drop the bias column
    weights = _population_weights(labels, cluster_sizes)
    mean_abs = np.einsum("n,nkf->kf", weights, np.abs(phi)) / weights.sum()
    frames = []
    for c in range(k):
        own = labels == c
        mean_signed = (
            np.average(phi[own, c, :], axis=0) if own.any() else np.full(len(names), np.nan)
        )
        frame = pd.DataFrame(
            {
                "cluster_id": np.full(len(names), c, dtype=np.int64),
                "feature": list(names),
                "mean_abs_shap": mean_abs[c],
                "mean_shap": mean_signed,
            }
        )
        frame = frame.sort_values("mean_abs_shap", ascending=False, kind="stable")
        frame["rank"] = np.arange(1, len(names) + 1, dtype=np.int64)
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)
