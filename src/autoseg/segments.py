"""Describe every cluster: size, how its features differ from everyone, and a short label.

Profiles are aggregates only. The description names a cluster's top three features (by mean
|SHAP| when the explanation stage ran, else by how far the cluster's mean sits from the overall
mean) with a direction: ``high``/``low`` for numbers, the most over-represented level for
categories, e.g. ``annual_spend high, orders_90d high, channel=app``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

TOP_LEVELS = 3
DESCRIPTION_FEATURES = 3
# Under hide_table_contents a category level is shown only when this many rows share it.
MIN_ROWS_PER_SHOWN_LEVEL = 10


def profile_clusters(
    readable: pd.DataFrame,
    labels: np.ndarray,
    k: int,
    shap_by_cluster: pd.DataFrame | None = None,
    hide_table_contents: bool = False,
    kinds: dict[str, str] | None = None,
) -> list[dict[str, Any]]:
    """Profile of every cluster.

    Parameters
    ----------
    readable
        Human-readable features (numbers in original units, categories as ``category``).
    labels
        Cluster id of every row.
    k
        Number of clusters.
    shap_by_cluster
        Optional SHAP summary (``cluster_id, feature, mean_abs_shap, mean_shap, rank``).
    hide_table_contents
        Leave out category levels shared by fewer than ``MIN_ROWS_PER_SHOWN_LEVEL`` rows.
    kinds
        ``numeric``, ``date`` (days since 1970-01-01) or ``binary`` (0/1) per numeric column,
        recorded with each numeric profile so a reader can format the values.

    Returns
    -------
    list of dict
        One JSON-able profile per cluster: ``cluster_id, size, share, numeric, categories,
        top_features, description``.
    """
    n = len(labels)
    numeric_cols = [c for c in readable.columns
                    if not isinstance(readable[c].dtype, pd.CategoricalDtype)]
    category_cols = [c for c in readable.columns if c not in numeric_cols]
    numbers = readable[numeric_cols].astype("float64")
    overall_mean = numbers.mean()
    overall_median = numbers.median()
    overall_std = numbers.std(ddof=0).replace(0.0, np.nan)
    overall_shares = {
        c: readable[c].value_counts(normalize=True, dropna=False) for c in category_cols
    }
    overall_counts = {c: readable[c].value_counts(dropna=False) for c in category_cols}

    profiles = []
    for cluster in range(k):
        mask = labels == cluster
        size = int(mask.sum())
        members = numbers[mask]
        means = members.mean()
        medians = members.median()
        z = ((means - overall_mean) / overall_std).fillna(0.0)
        numeric = [
            {
                "feature": c, "kind": (kinds or {}).get(c, "numeric"),
                "mean": _num(means[c]), "median": _num(medians[c]),
                "overall_mean": _num(overall_mean[c]), "overall_median": _num(overall_median[c]),
                "z": _num(z[c]),
            }
            for c in numeric_cols
        ]
        categories = []
        for c in category_cols:
            shares = readable.loc[mask, c].value_counts(normalize=True, dropna=False)
            rows = []
            for level, share in shares.items():
                if hide_table_contents and overall_counts[c].get(level, 0) < \
                        MIN_ROWS_PER_SHOWN_LEVEL:
                    continue
                base = float(overall_shares[c].get(level, np.nan))
                rows.append({"level": str(level), "share": float(share),
                             "overall_share": base, "lift": float(share / base) if base else None})
            rows.sort(key=lambda r: -(r["lift"] or 0.0) * r["share"])
            categories.append({"feature": c, "levels": rows[:TOP_LEVELS]})
        top = _top_features(cluster, numeric, categories, shap_by_cluster)
        profiles.append({
            "cluster_id": cluster,
            "size": size,
            "share": size / n if n else 0.0,
            "numeric": numeric,
            "categories": categories,
            "top_features": top,
            "description": ", ".join(t["text"] for t in top) or "no distinguishing feature",
        })
    return profiles


def _num(value: Any) -> float | None:
    return None if value is None or pd.isna(value) else float(value)


def _top_features(
    cluster: int,
    numeric: list[dict[str, Any]],
    categories: list[dict[str, Any]],
    shap_by_cluster: pd.DataFrame | None,
) -> list[dict[str, Any]]:
    """The cluster's three most telling features with their direction."""
    by_name_numeric = {row["feature"]: row for row in numeric}
    by_name_category = {row["feature"]: row for row in categories}
    if shap_by_cluster is not None and len(shap_by_cluster):
        rows = shap_by_cluster[shap_by_cluster["cluster_id"] == cluster].sort_values("rank")
        ranked = [(str(r.feature), float(r.mean_abs_shap)) for r in rows.itertuples()
                  if r.mean_abs_shap > 0]
    else:
        scores = [(name, abs(row["z"] or 0.0)) for name, row in by_name_numeric.items()]
        for name, row in by_name_category.items():
            best = max((lvl["lift"] or 0.0 for lvl in row["levels"]), default=0.0)
            scores.append((name, max(best - 1.0, 0.0)))
        ranked = sorted(scores, key=lambda s: -s[1])
    top = []
    for name, weight in ranked:
        if name in by_name_numeric:
            z = by_name_numeric[name]["z"] or 0.0
            if abs(z) < 0.05:
                continue
            direction = "high" if z > 0 else "low"
            top.append({"feature": name, "direction": direction, "weight": weight,
                        "text": f"{name} {direction}"})
        elif name in by_name_category:
            levels = by_name_category[name]["levels"]
            if not levels:
                continue
            best = levels[0]
            top.append({"feature": name, "direction": best["level"], "weight": weight,
                        "text": f"{name}={best['level']}"})
        if len(top) == DESCRIPTION_FEATURES:
            break
    return top
