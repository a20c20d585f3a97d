"""Cluster profiles and their one-line descriptions."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from autoseg.segments import MIN_ROWS_PER_SHOWN_LEVEL, profile_clusters


def _data() -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1], [300, 100])
    frame = pd.DataFrame({
        "spend": np.where(labels == 0, rng.normal(100, 10, 400), rng.normal(900, 50, 400)),
        "age": rng.normal(40, 5, 400),
        "channel": pd.Categorical(np.where(labels == 1, "app", rng.choice(["web", "store"], 400))),
    })
    return frame, labels


def test_sizes_shares_and_numeric_profile() -> None:
    frame, labels = _data()
    profiles = profile_clusters(frame, labels, 2)
    assert [p["size"] for p in profiles] == [300, 100]
    assert profiles[1]["share"] == pytest.approx(0.25)
    spend = {row["feature"]: row for row in profiles[1]["numeric"]}["spend"]
    assert spend["mean"] > spend["overall_mean"] and spend["z"] > 1
    assert spend["median"] == pytest.approx(np.median(frame["spend"][labels == 1]))


def test_categories_report_lift() -> None:
    frame, labels = _data()
    profiles = profile_clusters(frame, labels, 2)
    channel = profiles[1]["categories"][0]
    assert channel["feature"] == "channel"
    top = channel["levels"][0]
    assert top["level"] == "app" and top["share"] == 1.0
    assert top["lift"] == pytest.approx(4.0)


def test_description_from_shap_ranks_with_direction() -> None:
    frame, labels = _data()
    shap = pd.DataFrame({
        "cluster_id": [0, 0, 0, 1, 1, 1],
        "feature": ["spend", "channel", "age", "channel", "spend", "age"],
        "mean_abs_shap": [2.0, 1.0, 0.1, 3.0, 2.0, 0.1],
        "mean_shap": [0.0] * 6,
        "rank": [1, 2, 3, 1, 2, 3],
    })
    profiles = profile_clusters(frame, labels, 2, shap)
    assert profiles[1]["description"].startswith("channel=app, spend high")
    assert profiles[0]["description"].startswith("spend low")


def test_description_without_explanation_uses_distance_from_overall() -> None:
    frame, labels = _data()
    profiles = profile_clusters(frame, labels, 2)
    assert "spend high" in profiles[1]["description"]


def test_hidden_contents_leave_out_rare_levels() -> None:
    frame, labels = _data()
    frame["channel"] = frame["channel"].cat.add_categories(["kiosk"])
    frame.loc[0, "channel"] = "kiosk"  # one row only
    shown = profile_clusters(frame, labels, 2)
    hidden = profile_clusters(frame, labels, 2, hide_table_contents=True)
    levels = lambda ps: {lvl["level"] for p in ps for c in p["categories"] for lvl in c["levels"]}  # noqa: E731
    assert MIN_ROWS_PER_SHOWN_LEVEL > 1
    assert "kiosk" not in levels(hidden)
    assert levels(hidden) <= levels(shown) | {"web", "store", "app"}
