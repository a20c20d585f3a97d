"""Cluster rules: planted threshold and category clusters are recovered as short rules."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest

from autoseg.features import MISSING_LEVEL, OTHER_LEVEL
from autoseg.rules import (
    ClusterRule,
    Condition,
    cluster_rules,
    format_value,
    rule_mask,
    rules_to_cdp,
)


def _planted(n: int = 3000, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    """Four clusters defined by thresholds and a category (labels follow from the features).

    0: ``orders_90d >= 12 AND days_since_last_order < 10``; 1: ``channel in ('app')``;
    2: ``days_since_last_order >= 10 AND channel not in ('app')``;
    3: ``orders_90d < 12 AND days_since_last_order < 10``. App users all ordered 10+ days ago.
    """
    rng = np.random.default_rng(seed)
    channel = rng.choice(["app", "store", "web"], size=n, p=[0.25, 0.35, 0.4])
    recent = (channel != "app") & (rng.random(n) < 0.5)
    days = np.where(recent, rng.uniform(0, 9.9, n), rng.uniform(10.2, 200, n))
    orders = rng.integers(0, 41, n).astype("float64")
    labels = np.where(channel == "app", 1, np.where(~recent, 2, np.where(orders >= 12, 0, 3)))
    frame = pd.DataFrame({
        "orders_90d": orders,
        "days_since_last_order": days,
        "spend": rng.lognormal(4, 1, n),
        "is_member": rng.integers(0, 2, n).astype("float64"),
        "channel": pd.Categorical(channel, categories=["app", "store", "web"]),
    })
    return frame, labels


def test_planted_clusters_are_recovered_with_high_precision_and_recall() -> None:
    frame, labels = _planted()
    rules = cluster_rules(frame, labels, 4)
    assert [r.cluster_id for r in rules] == [0, 1, 2, 3]
    for rule in rules:
        assert rule.precision >= 0.9 and rule.recall >= 0.9, rule.text
        assert 1 <= len(rule.conditions) <= 3
        assert rule.support == int(rule_mask(frame, rule.conditions).sum())
        assert rule.cluster_size == int((labels == rule.cluster_id).sum())
    first = {c.feature: c for c in rules[0].conditions}
    assert first["orders_90d"].operator == ">=" and first["orders_90d"].value == 12
    assert first["days_since_last_order"].operator == "<"
    assert 9.9 <= first["days_since_last_order"].value <= 10.2
    assert "orders_90d >= 12" in rules[0].text and " AND " in rules[0].text


def test_categorical_rule_names_the_level() -> None:
    frame, labels = _planted()
    rule = cluster_rules(frame, labels, 4)[1]
    assert rule.text == "channel in ('app')"
    assert rule.conditions == [Condition("channel", "in", ["app"], "category")]
    assert rule.precision == 1.0 and rule.recall == 1.0


def test_max_conditions_bounds_the_rule() -> None:
    frame, labels = _planted()
    for rule in cluster_rules(frame, labels, 4, max_conditions=1):
        assert len(rule.conditions) <= 1
    with pytest.raises(ValueError, match="max_conditions=0"):
        cluster_rules(frame, labels, 4, max_conditions=0)


def test_binary_feature_reads_equals_one() -> None:
    rng = np.random.default_rng(1)
    n = 2000
    member = rng.integers(0, 2, n)
    frame = pd.DataFrame({"is_member": member.astype("float64"), "age": rng.normal(40, 8, n)})
    rules = cluster_rules(frame, member.astype(int), 2)
    assert rules[1].text == "is_member = 1" and rules[0].text == "is_member = 0"
    assert rules[1].precision == 1.0 and rules[1].recall == 1.0


def test_nan_values_are_safe_and_never_match() -> None:
    frame, labels = _planted(seed=3)
    rng = np.random.default_rng(3)
    holed = frame.copy()
    for column in ["orders_90d", "days_since_last_order", "spend"]:
        holed.loc[rng.random(len(holed)) < 0.1, column] = np.nan
    holed["channel"] = holed["channel"].mask(rng.random(len(holed)) < 0.1)
    holed["empty"] = np.nan
    rules = cluster_rules(holed, labels, 4)
    for rule in rules:
        assert 0.0 <= rule.precision <= 1.0 and 0.0 <= rule.recall <= 1.0
        assert rule.support == int(rule_mask(holed, rule.conditions).sum())
        json.dumps(rule.as_dict(), allow_nan=False)
    # Missing values satisfy no condition, like NULL in a segment.
    nan_rows = holed["orders_90d"].isna().to_numpy()
    assert not rule_mask(holed, [Condition("orders_90d", ">=", 0.0)])[nan_rows].any()
    assert not rule_mask(holed, [Condition("orders_90d", "<", 1e9)])[nan_rows].any()
    missing_channel = holed["channel"].isna().to_numpy()
    assert not rule_mask(holed, [Condition("channel", "not in", ["web"], "category")])[
        missing_channel].any()
    # Most of cluster 1 is still found through its category despite the holes.
    assert rules[1].precision >= 0.9 and rules[1].recall >= 0.8


def test_folded_levels_other_and_missing() -> None:
    rng = np.random.default_rng(2)
    n = 2000
    labels = rng.integers(0, 2, n)
    channel = np.where(labels == 1, rng.choice(["app", OTHER_LEVEL], n),
                       rng.choice(["web", MISSING_LEVEL], n))
    frame = pd.DataFrame({
        "channel": pd.Categorical(channel, categories=["app", "web", OTHER_LEVEL, MISSING_LEVEL]),
        "noise": rng.normal(size=n),
    })
    rules = cluster_rules(frame, labels, 2)
    # A set holding "other" is written as "not in" the other kept levels (never names "other").
    assert rules[1].text == "channel not in ('web')"
    assert rules[1].precision == 1.0 and rules[1].recall == 1.0
    # "missing" stands for NULL: a rule cannot select it, so cluster 0 is only partly found.
    assert OTHER_LEVEL not in rules[0].text and MISSING_LEVEL not in rules[0].text
    assert rules[0].f1 < 0.7


def test_dates_are_shown_as_iso_dates() -> None:
    rng = np.random.default_rng(4)
    n = 2000
    days = rng.integers(18_000, 19_500, n).astype("float64")  # 2019-04 .. 2023-05
    cut = float((pd.Timestamp("2021-07-01") - pd.Timestamp("1970-01-01")).days)
    labels = (days >= cut).astype(int)
    frame = pd.DataFrame({"signup_date": days, "noise": rng.normal(size=n)})
    rule = cluster_rules(frame, labels, 2, kinds={"signup_date": "date"})[1]
    assert rule.text == "signup_date >= 2021-07-01"
    assert rule.precision == 1.0 and rule.recall == 1.0
    cdp = rules_to_cdp(rule)
    assert cdp["conditions"][0]["operator"] == {
        "type": "GreaterEqual", "rightValue": "2021-07-01", "not": False}


def test_sampled_fit_measures_on_all_rows_and_tops_up_small_clusters() -> None:
    frame, labels = _planted(n=20_000, seed=5)
    # A small planted cluster (about 0.5% of rows) on a spend threshold.
    labels = labels.copy()
    small = frame["spend"].to_numpy() >= np.quantile(frame["spend"], 0.995)
    labels[small] = 4
    rules = cluster_rules(frame, labels, 5, max_rows=2_000, seed=1)
    assert rules[4].support == int(rule_mask(frame, rules[4].conditions).sum())
    assert rules[4].cluster_size == int(small.sum())
    assert rules[4].text.startswith("spend >= ")
    assert rules[4].precision >= 0.9 and rules[4].recall >= 0.9


def test_tree_on_a_subsample_still_gives_exact_thresholds(monkeypatch: pytest.MonkeyPatch) -> None:
    # The tree that proposes rules sees at most TREE_ROWS rows; the thresholds are then set on
    # all of the rule's rows, so a planted threshold is still found exactly.
    import autoseg.rules as rules_module

    monkeypatch.setattr(rules_module, "TREE_ROWS", 1_000)
    frame, labels = _planted(n=12_000, seed=2)
    rules = cluster_rules(frame, labels, 4)
    for rule in rules:
        assert rule.precision >= 0.9 and rule.recall >= 0.9, rule.text
    first = {c.feature: c for c in rules[0].conditions}
    assert first["orders_90d"].operator == ">=" and first["orders_90d"].value == 12
    assert 9.9 <= first["days_since_last_order"].value <= 10.2


def test_empty_cluster_and_whole_table() -> None:
    frame, labels = _planted(n=500)
    rules = cluster_rules(frame, labels, 5)
    assert rules[4] == ClusterRule(4, [], 0.0, 0.0, 0, "(empty cluster)")
    only = cluster_rules(frame, np.zeros(len(frame), dtype=int), 1)[0]
    assert only.text == "(all rows)" and only.precision == 1.0 and only.recall == 1.0


@pytest.mark.parametrize(
    ("labels", "message"),
    [(np.array([0, 1, 5]), r"labels must lie in 0\.\.2"), (np.array([0, 1]), "one label per row")],
)
def test_bad_labels_are_refused(labels: np.ndarray, message: str) -> None:
    frame = pd.DataFrame({"x": [1.0, 2.0, 3.0]})
    with pytest.raises(ValueError, match=message):
        cluster_rules(frame, labels, 3)


def test_texts_and_number_formatting() -> None:
    assert Condition("orders_90d", ">=", 12.0).text == "orders_90d >= 12"
    assert Condition("score", "<", 0.05).text == "score < 0.05"
    assert Condition("is_member", "=", 1.0, "binary").text == "is_member = 1"
    assert Condition("channel", "in", ["app", "o'neil"], "category").text == \
        "channel in ('app', 'o''neil')"
    assert Condition("channel", "not in", ["web"], "category").text == "channel not in ('web')"
    assert format_value(1_500_000.0) == "1500000"
    assert format_value(18_628.0, "date") == "2021-01-01"
    assert format_value(-2.5) == "-2.5"


def test_thresholds_are_rounded_readably() -> None:
    rng = np.random.default_rng(6)
    n = 3000
    spend = rng.uniform(0, 1000, n)
    labels = (spend >= 437.2).astype(int)
    rule = cluster_rules(pd.DataFrame({"spend": spend}), labels, 2)[1]
    (condition,) = rule.conditions
    assert condition.operator == ">="
    digits = re.sub(r"[^0-9]", "", format_value(condition.value)).strip("0")
    assert len(digits) <= 3 and abs(condition.value - 437.2) < 1.0
    assert rule.f1 >= 0.99


def test_rules_to_cdp_builds_the_segment_rule_json() -> None:
    rule = ClusterRule(
        0,
        [
            Condition("orders_90d", ">=", 12.0),
            Condition("Days Since", "<", 9.5),
            Condition("is_member", "=", 1.0, "binary"),
            Condition("channel", "in", ["app"], "category"),
            Condition("region", "not in", ["eu", "us"], "category"),
        ],
        0.9, 0.9, 10, "text",
    )
    cdp = rules_to_cdp(rule, attribute_names={"Days Since": "days_since"},
                       binary_values={"is_member": (False, True)})
    assert cdp["type"] == "And"
    operators = [c["operator"] for c in cdp["conditions"]]
    assert operators == [
        {"type": "GreaterEqual", "rightValue": 12, "not": False},
        {"type": "Less", "rightValue": 9.5, "not": False},
        {"type": "Equal", "rightValue": True, "not": False},
        {"type": "In", "rightValues": ["app"], "not": False},
        {"type": "In", "rightValues": ["eu", "us"], "not": True},
    ]
    assert [c["leftValue"]["name"] for c in cdp["conditions"]] == [
        "orders_90d", "days_since", "is_member", "channel", "region"]
    assert all(c["type"] == "Value" for c in cdp["conditions"])
    json.dumps(cdp, allow_nan=False)
