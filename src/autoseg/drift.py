"""Has the data moved away from what the model was fitted on?

A saved model (``force_refit=false``) keeps assigning clusters to new rows long after it was
fitted. When the customers change, the clusters quietly stop meaning what the report said. At fit
time :func:`reference_profile` records a small, JSON-able profile of the fitted data; at assign
time :func:`drift_report` compares the new rows against it and lists warnings.

Both the profile and the report hold aggregates only: counts, shares, means, standard deviations
and quantiles, plus category level names (which the cluster profiles already show). No row value
is stored: in particular no minimum or maximum (a single customer's value), only interior
quantiles (deciles).

What is compared, and the default thresholds (``DEFAULT_THRESHOLDS``) beyond which a warning is
raised:

``psi`` = 0.2
    Population stability index, ``sum((now - then) * ln(now / then))`` over bins, for every
    feature (numbers: the reference deciles as bins; categories: the levels; each with a
    missing bin) and for the cluster shares and the distances to the centroid. The usual reading
    in credit scoring, where PSI comes from: under 0.1 no real change, 0.1-0.2 a moderate shift,
    over 0.2 a significant one. Sampling noise alone gives about ``bins / n`` (0.01 for 10 bins
    and 1,000 rows), far below 0.2.
``share_change`` = 0.1
    Largest absolute change of a cluster's share of rows (10 percentage points): a segment that
    grew or shrank that much is a different audience size for every campaign built on it.
``median_distance_ratio`` = 1.5
    Median distance from a row to its centroid, now over then. Rows 50% farther from their
    centroids than at fit time are no longer described well by the clusters (the k-means
    objective has degraded), even when each feature moved only a little.
``mean_shift`` = 0.5
    Absolute standardised mean shift of a numeric feature, ``(mean_now - mean_then) / std_then``:
    half a standard deviation is Cohen's "medium" effect, large enough to move rows between
    clusters.
``unseen_share`` = 0.01
    Share of rows whose category level never occurred at fit time. 1% is the share at which
    feature preparation keeps a level of its own (``features.MIN_LEVEL_SHARE``), so a new level
    that common would have been a level of its own had the model been fitted now. Unseen levels
    are listed by name (at most ``MAX_UNSEEN_LISTED``). A frame from
    :meth:`~autoseg.features.FeatureSpec.readable` has already folded new levels into ``other``
    (or missing), so they show there as a shift of those levels; pass the unfolded category
    columns to see their names.
``missing_share_change`` = 0.1
    Absolute change of a feature's share of missing values: usually a broken upstream job, not
    changed customers.

A feature of the reference that is absent from the current frame always raises a warning.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import numpy as np
import pandas as pd

from autoseg.features import column_text

FORMAT_VERSION = 1
DEFAULT_THRESHOLDS: Mapping[str, float] = MappingProxyType({
    "psi": 0.2,
    "share_change": 0.1,
    "median_distance_ratio": 1.5,
    "mean_shift": 0.5,
    "unseen_share": 0.01,
    "missing_share_change": 0.1,
})
# Interior quantiles only: the minimum and maximum would be single rows' values.
QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)
BIN_QUANTILES = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)  # decile bins for the PSI
# Empty bins get this share so the PSI's logarithm stays finite.
PSI_EPSILON = 1e-4
# A categorical feature keeps its this many most common levels; the rest form one bin.
MAX_LEVELS_STORED = 100
MAX_UNSEEN_LISTED = 20
# Fewer current rows than this make the PSI noisy; the report says so.
MIN_RELIABLE_ROWS = 500
_REST = "__rest__"
_UNSEEN = "__unseen__"
_MISSING = "__missing__"


def reference_profile(
    readable: pd.DataFrame, labels: np.ndarray, distances: np.ndarray, k: int
) -> dict[str, Any]:
    """Aggregates of the fitted data that later runs are compared against.

    Parameters
    ----------
    readable
        Human-readable features at fit time (numbers in original units, categories as
        ``category`` or text).
    labels
        Cluster id of every row, in ``0 .. k-1``.
    distances
        Distance from every row to its cluster's centroid in the prepared space.
    k
        Number of clusters.

    Returns
    -------
    dict
        JSON-able profile: ``format_version, rows, k, cluster_shares, distance`` (quantiles,
        decile bins, median per cluster), ``numeric`` (per feature: mean, std, quantiles, bins,
        missing share) and ``categorical`` (per feature: level shares, missing share).

    Raises
    ------
    ValueError
        When labels or distances do not fit the rows or ``k``.
    """
    labels, distances = _check_rows(readable, labels, distances, k)
    n = len(readable)
    profile: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "rows": n,
        "k": k,
        "cluster_shares": _shares(labels, k),
        "distance": _distance_profile(distances, labels, k),
        "numeric": {},
        "categorical": {},
    }
    for name in readable.columns:
        series = readable[name]
        if _is_categorical(series):
            profile["categorical"][str(name)] = _categorical_profile(series)
        else:
            profile["numeric"][str(name)] = _numeric_profile(_numbers(series))
    return _clean(profile)


def drift_report(
    reference: Mapping[str, Any],
    current_readable: pd.DataFrame,
    current_labels: np.ndarray,
    current_distances: np.ndarray,
    *,
    thresholds: Mapping[str, float] = DEFAULT_THRESHOLDS,
) -> dict[str, Any]:
    """Compare new rows with the reference profile and list what moved too far.

    Parameters
    ----------
    reference
        The profile from :func:`reference_profile` (possibly read back from JSON).
    current_readable
        Human-readable features of the new rows (same columns as at fit time).
    current_labels
        Cluster id of every new row under the saved model.
    current_distances
        Distance from every new row to its centroid.
    thresholds
        Overrides of ``DEFAULT_THRESHOLDS`` (only the keys given change).

    Returns
    -------
    dict
        JSON-able report: ``rows``, ``reliable``, ``clusters``, ``distance``, ``numeric``,
        ``categorical``, ``missing_features``, ``thresholds``, ``warnings`` (each with
        ``check, subject, value, threshold, message``) and ``drifted`` (any warning).

    Raises
    ------
    ValueError
        When a threshold name is unknown, the reference format is not understood, or labels or
        distances do not fit the rows.
    """
    limits = _thresholds(thresholds)
    if reference.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"reference format_version={reference.get('format_version')!r} is not "
            f"{FORMAT_VERSION}: rebuild it with reference_profile"
        )
    k = int(reference["k"])
    labels, distances = _check_rows(current_readable, current_labels, current_distances, k)
    n = len(current_readable)
    warnings: list[dict[str, Any]] = []

    clusters = _compare_clusters(reference["cluster_shares"], _shares(labels, k))
    for cluster, change in enumerate(clusters["share_change"]):
        if abs(change) > limits["share_change"]:
            warnings.append(_warning(
                "cluster_share_change", f"cluster {cluster}", change, limits["share_change"],
                f"cluster {cluster} share moved from {clusters['shares_reference'][cluster]:.1%} "
                f"to {clusters['shares_current'][cluster]:.1%}",
            ))

    distance = _compare_distances(reference["distance"], distances, labels, k)
    ratio = distance["median_ratio"]
    if ratio is not None and ratio > limits["median_distance_ratio"]:
        warnings.append(_warning(
            "median_distance_ratio", "distance to centroid", ratio,
            limits["median_distance_ratio"],
            f"rows are {ratio:.2f}x as far from their centroids as at fit time (median)",
        ))

    numeric: dict[str, Any] = {}
    categorical: dict[str, Any] = {}
    missing_features = [
        name for name in [*reference["numeric"], *reference["categorical"]]
        if name not in current_readable.columns
    ]
    for name in missing_features:
        warnings.append(_warning(
            "missing_feature", name, None, None,
            f"feature {name!r} of the fitted model is absent from the new rows",
        ))
    for name, ref in reference["numeric"].items():
        if name in current_readable.columns:
            numeric[name] = _compare_numeric(ref, _numbers(current_readable[name]))
            warnings.extend(_numeric_warnings(name, numeric[name], limits))
    for name, ref in reference["categorical"].items():
        if name in current_readable.columns:
            categorical[name] = _compare_categorical(ref, current_readable[name])
            warnings.extend(_categorical_warnings(name, categorical[name], limits))

    return _clean({
        "rows": {"reference": int(reference["rows"]), "current": n},
        "reliable": n >= MIN_RELIABLE_ROWS,
        "clusters": clusters,
        "distance": distance,
        "numeric": numeric,
        "categorical": categorical,
        "missing_features": missing_features,
        "thresholds": dict(limits),
        "warnings": warnings,
        "drifted": bool(warnings),
    })


def psi(expected: np.ndarray, actual: np.ndarray) -> float:
    """Population stability index of two share vectors over the same bins.

    Parameters
    ----------
    expected, actual
        Shares per bin (each summing to 1, or all zero when there are no rows).

    Returns
    -------
    float
        ``sum((actual - expected) * ln(actual / expected))``, empty bins counted as
        ``PSI_EPSILON`` so the index stays finite.
    """
    e = np.maximum(np.asarray(expected, dtype=np.float64), PSI_EPSILON)
    a = np.maximum(np.asarray(actual, dtype=np.float64), PSI_EPSILON)
    return float(np.sum((a - e) * np.log(a / e)))


# --------------------------------------------------------------------------------------------
# Reference side
# --------------------------------------------------------------------------------------------


def _check_rows(
    frame: pd.DataFrame, labels: np.ndarray, distances: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    labels = np.asarray(labels)
    distances = np.asarray(distances, dtype=np.float64)
    n = len(frame)
    if k < 1:
        raise ValueError(f"k={k} must be >= 1")
    if labels.shape != (n,) or distances.shape != (n,):
        raise ValueError(
            f"labels {labels.shape} and distances {distances.shape} must have one value per "
            f"row ({n},)"
        )
    if n and (labels.min() < 0 or labels.max() >= k):
        raise ValueError(
            f"labels must lie in 0..{k - 1} for k={k}, got {labels.min()}..{labels.max()}"
        )
    return labels.astype(np.int64), distances


def _is_categorical(series: pd.Series) -> bool:
    dtype = series.dtype
    return isinstance(dtype, pd.CategoricalDtype) or not (
        pd.api.types.is_numeric_dtype(dtype) or pd.api.types.is_bool_dtype(dtype)
    )


def _numbers(series: pd.Series) -> np.ndarray:
    values = pd.to_numeric(series, errors="coerce").to_numpy(
        dtype="float64", na_value=np.nan, copy=True)
    values[~np.isfinite(values)] = np.nan
    return values


def _shares(labels: np.ndarray, k: int) -> list[float]:
    counts = np.bincount(labels, minlength=k)[:k]
    total = counts.sum()
    return (counts / total).tolist() if total else [0.0] * k


def _quantiles(values: np.ndarray, quantiles: tuple[float, ...]) -> list[float] | None:
    finite = values[~np.isnan(values)]
    if finite.size == 0:
        return None
    return [float(q) for q in np.quantile(finite, quantiles)]


def _binned_shares(values: np.ndarray, edges: list[float]) -> list[float]:
    """Shares of ``(-inf, e0], (e0, e1], ..., (e_last, inf)`` and a last bin for missing."""
    n = len(values)
    if n == 0:
        return [0.0] * (len(edges) + 2)
    missing = np.isnan(values)
    bins = np.searchsorted(np.asarray(edges, dtype=np.float64), values[~missing], side="left")
    counts = np.bincount(bins, minlength=len(edges) + 1).astype(np.float64)
    return [*(counts / n).tolist(), float(missing.sum() / n)]


def _numeric_profile(values: np.ndarray) -> dict[str, Any]:
    finite = values[~np.isnan(values)]
    deciles = _quantiles(values, BIN_QUANTILES) or []
    # Repeated deciles (discrete columns) collapse into one edge.
    edges = sorted(set(deciles))
    return {
        "mean": float(finite.mean()) if finite.size else None,
        "std": float(finite.std()) if finite.size else None,
        "quantiles": dict(zip([f"p{round(q * 100)}" for q in QUANTILES],
                              _quantiles(values, QUANTILES) or [None] * len(QUANTILES),
                              strict=True)),
        "missing_share": float(np.isnan(values).mean()) if len(values) else 0.0,
        "bin_edges": edges,
        "bin_shares": _binned_shares(values, edges),
    }


def _level_text(series: pd.Series) -> pd.Series:
    return column_text(series)


def _categorical_profile(series: pd.Series) -> dict[str, Any]:
    text = _level_text(series)
    n = len(text)
    counts = text.value_counts(dropna=True)
    kept = counts.iloc[:MAX_LEVELS_STORED]
    shares = {str(level): float(count / n) for level, count in kept.items()} if n else {}
    rest = float(counts.iloc[MAX_LEVELS_STORED:].sum() / n) if n else 0.0
    return {
        "level_shares": shares,
        "rest_share": rest,
        "levels_truncated": len(counts) > MAX_LEVELS_STORED,
        "missing_share": float(text.isna().mean()) if n else 0.0,
    }


def _distance_profile(distances: np.ndarray, labels: np.ndarray, k: int) -> dict[str, Any]:
    deciles = _quantiles(distances, BIN_QUANTILES) or []
    edges = sorted(set(deciles))
    return {
        "quantiles": dict(zip([f"p{round(q * 100)}" for q in QUANTILES],
                              _quantiles(distances, QUANTILES) or [None] * len(QUANTILES),
                              strict=True)),
        "bin_edges": edges,
        "bin_shares": _binned_shares(distances, edges),
        "median_by_cluster": [_median(distances[labels == c]) for c in range(k)],
    }


def _median(values: np.ndarray) -> float | None:
    finite = values[~np.isnan(values)]
    return float(np.median(finite)) if finite.size else None


# --------------------------------------------------------------------------------------------
# Comparison side
# --------------------------------------------------------------------------------------------


def _thresholds(overrides: Mapping[str, float]) -> dict[str, float]:
    unknown = sorted(set(overrides) - set(DEFAULT_THRESHOLDS))
    if unknown:
        raise ValueError(
            f"unknown drift threshold {unknown[0]!r}: use one of {sorted(DEFAULT_THRESHOLDS)}"
        )
    return {**DEFAULT_THRESHOLDS, **{k: float(v) for k, v in overrides.items()}}


def _ratio(now: float | None, then: float | None) -> float | None:
    if now is None or then is None:
        return None
    if then == 0:
        return 1.0 if now == 0 else None
    return now / then


def _compare_clusters(reference: list[float], current: list[float]) -> dict[str, Any]:
    change = [c - r for r, c in zip(reference, current, strict=True)]
    return {
        "shares_reference": list(reference),
        "shares_current": current,
        "share_change": change,
        "max_abs_share_change": max((abs(c) for c in change), default=0.0),
        "psi": psi(np.array(reference), np.array(current)),
    }


def _compare_distances(
    ref: Mapping[str, Any], distances: np.ndarray, labels: np.ndarray, k: int
) -> dict[str, Any]:
    quantiles = _quantiles(distances, QUANTILES)
    median_now = quantiles[2] if quantiles else None
    p90_now = quantiles[4] if quantiles else None
    by_cluster_now = [_median(distances[labels == c]) for c in range(k)]
    return {
        "median_reference": ref["quantiles"]["p50"],
        "median_current": median_now,
        "median_ratio": _ratio(median_now, ref["quantiles"]["p50"]),
        "p90_reference": ref["quantiles"]["p90"],
        "p90_current": p90_now,
        "p90_ratio": _ratio(p90_now, ref["quantiles"]["p90"]),
        "psi": psi(np.array(ref["bin_shares"]),
                   np.array(_binned_shares(distances, ref["bin_edges"]))),
        "median_ratio_by_cluster": [
            _ratio(now, then)
            for now, then in zip(by_cluster_now, ref["median_by_cluster"], strict=True)
        ],
    }


def _compare_numeric(ref: Mapping[str, Any], values: np.ndarray) -> dict[str, Any]:
    finite = values[~np.isnan(values)]
    mean_now = float(finite.mean()) if finite.size else None
    shift = None
    if mean_now is not None and ref["mean"] is not None and ref["std"]:
        shift = (mean_now - ref["mean"]) / ref["std"]
    missing_now = float(np.isnan(values).mean()) if len(values) else 0.0
    return {
        "mean_reference": ref["mean"],
        "mean_current": mean_now,
        "std_reference": ref["std"],
        "standardized_mean_shift": shift,
        "median_reference": ref["quantiles"]["p50"],
        "median_current": _median(values),
        "psi": psi(np.array(ref["bin_shares"]),
                   np.array(_binned_shares(values, ref["bin_edges"]))),
        "missing_share_reference": ref["missing_share"],
        "missing_share_current": missing_now,
    }


def _compare_categorical(ref: Mapping[str, Any], series: pd.Series) -> dict[str, Any]:
    text = _level_text(series)
    n = len(text)
    counts = text.value_counts(dropna=True)
    known = ref["level_shares"]
    truncated = bool(ref["levels_truncated"])
    now = {level: float(counts.get(level, 0) / n) if n else 0.0 for level in known}
    outside = counts[[level not in known for level in counts.index]]
    outside_share = float(outside.sum() / n) if n else 0.0
    missing_now = float(text.isna().mean()) if n else 0.0
    # Bins: the known levels, everything else (unseen, or the reference's rest), missing.
    expected = [*known.values(), ref["rest_share"], ref["missing_share"]]
    actual = [*now.values(), outside_share, missing_now]
    unseen = None if truncated else [str(level) for level in outside.index[:MAX_UNSEEN_LISTED]]
    return {
        "psi": psi(np.array(expected), np.array(actual)),
        "max_abs_share_change": max((abs(now[lvl] - known[lvl]) for lvl in known), default=0.0),
        "level_shares_current": now,
        "unseen_levels": unseen,
        "unseen_level_count": None if truncated else int(len(outside)),
        "unseen_share": None if truncated else outside_share,
        "missing_share_reference": ref["missing_share"],
        "missing_share_current": missing_now,
    }


def _warning(
    check: str, subject: str, value: float | None, threshold: float | None, message: str
) -> dict[str, Any]:
    return {"check": check, "subject": subject, "value": value, "threshold": threshold,
            "message": message}


def _missing_warning(name: str, cmp: Mapping[str, Any], limit: float) -> list[dict[str, Any]]:
    change = cmp["missing_share_current"] - cmp["missing_share_reference"]
    if abs(change) <= limit:
        return []
    return [_warning(
        "missing_share_change", name, change, limit,
        f"{name}: missing values went from {cmp['missing_share_reference']:.1%} to "
        f"{cmp['missing_share_current']:.1%} of rows",
    )]


def _numeric_warnings(
    name: str, cmp: Mapping[str, Any], limits: Mapping[str, float]
) -> list[dict[str, Any]]:
    out = []
    if cmp["psi"] > limits["psi"]:
        out.append(_warning("feature_psi", name, cmp["psi"], limits["psi"],
                            f"{name}: distribution shifted (PSI {cmp['psi']:.3f})"))
    shift = cmp["standardized_mean_shift"]
    if shift is not None and abs(shift) > limits["mean_shift"]:
        out.append(_warning(
            "mean_shift", name, shift, limits["mean_shift"],
            f"{name}: mean moved {shift:+.2f} standard deviations "
            f"({_fmt(cmp['mean_reference'])} -> {_fmt(cmp['mean_current'])})",
        ))
    return out + _missing_warning(name, cmp, limits["missing_share_change"])


def _categorical_warnings(
    name: str, cmp: Mapping[str, Any], limits: Mapping[str, float]
) -> list[dict[str, Any]]:
    out = []
    if cmp["psi"] > limits["psi"]:
        out.append(_warning("feature_psi", name, cmp["psi"], limits["psi"],
                            f"{name}: level shares shifted (PSI {cmp['psi']:.3f})"))
    share = cmp["unseen_share"]
    if share is not None and share > limits["unseen_share"]:
        levels = ", ".join(repr(v) for v in cmp["unseen_levels"])
        out.append(_warning(
            "unseen_categories", name, share, limits["unseen_share"],
            f"{name}: {share:.1%} of rows hold levels never seen at fit time ({levels})",
        ))
    return out + _missing_warning(name, cmp, limits["missing_share_change"])


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4g}"


def _clean(value: Any) -> Any:
    """Plain JSON types: numpy scalars to Python, NaN and infinities to None."""
    if isinstance(value, Mapping):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


__all__ = ["DEFAULT_THRESHOLDS", "drift_report", "psi", "reference_profile"]
