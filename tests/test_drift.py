"""Drift between the fitted data and new rows: quiet on a resample, loud on real shifts."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from autoseg.drift import DEFAULT_THRESHOLDS, drift_report, psi, reference_profile

K = 3


def _table(n: int, seed: int, *, spend_shift: float = 0.0,
           channels: tuple[str, ...] = ("app", "web", "store"),
           channel_p: tuple[float, ...] = (0.5, 0.3, 0.2)) -> tuple[pd.DataFrame, np.ndarray,
                                                                   np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.choice(K, size=n, p=[0.5, 0.3, 0.2])
    spend = rng.lognormal(4 + labels * 0.5, 0.5) + spend_shift
    orders = rng.poisson(3 + 4 * labels).astype("float64")
    orders[rng.random(n) < 0.05] = np.nan
    member = rng.integers(0, 2, n).astype("float64")
    channel = rng.choice(list(channels), size=n, p=list(channel_p))
    frame = pd.DataFrame({
        "spend": spend, "orders_90d": orders, "is_member": member,
        "channel": pd.Categorical(channel),
    })
    distances = rng.gamma(2.0, 0.5, n)
    return frame, labels, distances


@pytest.fixture(scope="module")
def reference() -> dict:
    frame, labels, distances = _table(5000, seed=0)
    return reference_profile(frame, labels, distances, K)


def test_reference_is_aggregates_only_and_json_able(reference: dict) -> None:
    text = json.dumps(reference, allow_nan=False)
    assert reference["rows"] == 5000 and reference["k"] == K
    assert sum(reference["cluster_shares"]) == pytest.approx(1.0)
    assert set(reference["numeric"]) == {"spend", "orders_90d", "is_member"}
    assert set(reference["categorical"]["channel"]["level_shares"]) == {"app", "web", "store"}
    spend = reference["numeric"]["spend"]
    assert set(spend["quantiles"]) == {"p10", "p25", "p50", "p75", "p90"}
    assert len(spend["bin_edges"]) == 9 and len(spend["bin_shares"]) == 11
    assert sum(spend["bin_shares"]) == pytest.approx(1.0)
    assert reference["numeric"]["orders_90d"]["missing_share"] == pytest.approx(0.05, abs=0.01)
    # No row's value is stored: not the minimum or maximum of any column.
    frame, _, distances = _table(5000, seed=0)
    for value in [frame["spend"].min(), frame["spend"].max(), distances.max()]:
        assert repr(float(value)) not in text


def test_no_drift_on_a_resample_of_the_same_data(reference: dict) -> None:
    frame, labels, distances = _table(3000, seed=1)
    report = drift_report(reference, frame, labels, distances)
    assert report["warnings"] == [] and report["drifted"] is False
    assert report["reliable"] is True
    assert report["clusters"]["max_abs_share_change"] < 0.05
    assert 0.9 < report["distance"]["median_ratio"] < 1.1
    for name, cmp in report["numeric"].items():
        assert cmp["psi"] < 0.05, name
    assert report["categorical"]["channel"]["unseen_levels"] == []
    json.dumps(report, allow_nan=False)


def test_shifted_numeric_feature_warns_psi_and_mean_shift(reference: dict) -> None:
    frame, labels, distances = _table(3000, seed=2, spend_shift=60.0)
    report = drift_report(reference, frame, labels, distances)
    checks = {(w["check"], w["subject"]) for w in report["warnings"]}
    assert checks == {("feature_psi", "spend"), ("mean_shift", "spend")}
    assert report["numeric"]["spend"]["standardized_mean_shift"] > 0.5


def test_new_category_warns_unseen_and_psi(reference: dict) -> None:
    frame, labels, distances = _table(3000, seed=3, channels=("app", "web", "store", "kiosk"),
                                      channel_p=(0.35, 0.25, 0.15, 0.25))
    report = drift_report(reference, frame, labels, distances)
    channel = report["categorical"]["channel"]
    assert channel["unseen_levels"] == ["kiosk"]
    assert channel["unseen_share"] == pytest.approx(0.25, abs=0.03)
    checks = {(w["check"], w["subject"]) for w in report["warnings"]}
    assert checks == {("unseen_categories", "channel"), ("feature_psi", "channel")}
    unseen = next(w for w in report["warnings"] if w["check"] == "unseen_categories")
    assert "'kiosk'" in unseen["message"]


def test_cluster_shares_and_distances_warn(reference: dict) -> None:
    frame, _, distances = _table(3000, seed=4)
    labels = np.where(np.random.default_rng(4).random(3000) < 0.8, 2, 0)
    report = drift_report(reference, frame, labels, distances * 2.0)
    checks = [w["check"] for w in report["warnings"]]
    assert checks.count("cluster_share_change") == 3  # every share moved > 10 points
    assert "median_distance_ratio" in checks
    assert report["distance"]["median_ratio"] == pytest.approx(2.0, rel=0.1)
    assert report["clusters"]["psi"] > 0.2


def test_missing_feature_and_missing_values_warn(reference: dict) -> None:
    frame, labels, distances = _table(3000, seed=5)
    frame = frame.drop(columns=["is_member"])
    frame.loc[frame.index[:1500], "orders_90d"] = np.nan
    report = drift_report(reference, frame, labels, distances)
    checks = {(w["check"], w["subject"]) for w in report["warnings"]}
    assert ("missing_feature", "is_member") in checks
    assert ("missing_share_change", "orders_90d") in checks
    assert report["missing_features"] == ["is_member"]


def test_thresholds_can_be_overridden_and_are_checked(reference: dict) -> None:
    frame, labels, distances = _table(3000, seed=2, spend_shift=60.0)
    quiet = drift_report(reference, frame, labels, distances,
                         thresholds={"psi": 10.0, "mean_shift": 10.0})
    assert quiet["warnings"] == []
    assert quiet["thresholds"]["share_change"] == DEFAULT_THRESHOLDS["share_change"]
    with pytest.raises(ValueError, match="unknown drift threshold 'psy'"):
        drift_report(reference, frame, labels, distances, thresholds={"psy": 0.1})


def test_reference_survives_a_json_round_trip(reference: dict) -> None:
    restored = json.loads(json.dumps(reference))
    frame, labels, distances = _table(3000, seed=1)
    assert drift_report(restored, frame, labels, distances) == drift_report(
        reference, frame, labels, distances)


def test_bad_inputs_are_refused(reference: dict) -> None:
    frame, labels, distances = _table(100, seed=6)
    with pytest.raises(ValueError, match=r"labels must lie in 0\.\.2"):
        drift_report(reference, frame, labels + 5, distances)
    with pytest.raises(ValueError, match="one value per row"):
        reference_profile(frame, labels[:5], distances, K)
    with pytest.raises(ValueError, match="format_version"):
        drift_report({**reference, "format_version": 99}, frame, labels, distances)
    assert drift_report(reference, frame, labels, distances)["reliable"] is False


def test_psi_basics() -> None:
    assert psi(np.array([0.5, 0.5]), np.array([0.5, 0.5])) == 0.0
    assert psi(np.array([0.9, 0.1]), np.array([0.1, 0.9])) > 1.0
    assert np.isfinite(psi(np.array([1.0, 0.0]), np.array([0.0, 1.0])))
