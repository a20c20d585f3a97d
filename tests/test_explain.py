"""Tests for autoseg.explain: surrogate fidelity, importance, SHAP and sampling."""

from __future__ import annotations

import itertools
import json
import math
import warnings
from typing import Any

import numpy as np
import pandas as pd
import pytest
import xgboost as xgb

from autoseg.explain import (
    BASE_SCORE,
    HOLDOUT_FRACTION,
    MIN_ROWS_PER_CLUSTER,
    Explanation,
    _stratified_sample,
    explain_clusters,
)

REGIONS = ("north", "south", "east", "west", "other")


def planted_frame(n: int = 4_000, k: int = 4, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    """Mixed frame whose clusters are planted in ``spend``.

    ``spend`` separates the clusters by 8 standard deviations; ``region`` (a
    categorical) agrees with the cluster 60% of the time; ``age`` and ``visits``
    are noise with missing values; ``const`` is never worth a split.
    """
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n) % k)
    spend = labels * 8.0 + rng.normal(size=n)
    region = np.where(
        rng.random(n) < 0.6, np.array(REGIONS)[labels % len(REGIONS)], rng.choice(REGIONS, n)
    )
    age = rng.normal(40, 10, size=n)
    age[rng.random(n) < 0.15] = np.nan
    visits = rng.poisson(3, size=n).astype(float)
    visits[rng.random(n) < 0.05] = np.nan
    features = pd.DataFrame(
        {
            "age": age,
            "region": pd.Categorical(region, categories=list(REGIONS)),
            "spend": spend,
            "visits": visits,
            "is_member": rng.integers(0, 2, size=n).astype(float),
            "const": np.ones(n),
        }
    )
    return features, labels


def numeric_frame(n: int = 600, k: int = 3, seed: int = 1) -> tuple[pd.DataFrame, np.ndarray]:
    """Small numeric-only frame (with NaNs) for comparisons against shap.

    Cluster sizes are unequal (1 : 2 : ... : k) on purpose: XGBoost >= 3.1 then
    fits a different intercept per class unless base_score is set.
    """
    rng = np.random.default_rng(seed)
    labels = rng.choice(k, size=n, p=np.arange(1, k + 1) / (k * (k + 1) / 2))
    a = labels * 2.0 + rng.normal(size=n)
    a[rng.random(n) < 0.1] = np.nan
    b = (labels % 2) * 1.5 + rng.normal(size=n)
    c = rng.normal(size=n)
    return pd.DataFrame({"a": a, "b": b, "c": c}), labels


def contributions(expl: Explanation, features: pd.DataFrame) -> np.ndarray:
    """Raw XGBoost TreeSHAP contributions for the explanation's SHAP rows."""
    dmat = xgb.DMatrix(features.iloc[expl.shap_rows], enable_categorical=True)
    # float64 so that test-side means round like the module's own summaries.
    return expl.booster.predict(dmat, pred_contribs=True).astype(np.float64)


def learner_config(booster: xgb.Booster) -> dict[str, Any]:
    return json.loads(booster.save_config())["learner"]


@pytest.fixture(scope="module")
def planted() -> tuple[pd.DataFrame, np.ndarray, Explanation]:
    features, labels = planted_frame()
    # Every row in the SHAP sample (more than the default bound), so the summaries can be
    # checked as plain means of the raw contributions.
    return features, labels, explain_clusters(features, labels, seed=0,
                                              max_shap_rows=len(features))


# --------------------------------------------------------------------------- surrogate


def test_fidelity_is_high_on_planted_clusters(
    planted: tuple[pd.DataFrame, np.ndarray, Explanation],
) -> None:
    _, _, expl = planted
    assert expl.fidelity > 0.9
    assert expl.n_holdout > 0
    assert expl.n_train + expl.n_holdout == 4_000
    assert expl.n_holdout == pytest.approx(HOLDOUT_FRACTION * 4_000, abs=4)
    assert 1 <= expl.n_rounds <= 200
    assert expl.device == "cpu"


def test_surrogate_configuration(planted: tuple[pd.DataFrame, np.ndarray, Explanation]) -> None:
    features, _, expl = planted
    learner = learner_config(expl.booster)
    assert learner["objective"]["name"] == "multi:softprob"
    assert learner["learner_model_param"]["num_class"] == "4"
    assert (
        json.loads(expl.booster.save_config())["learner"]["gradient_booster"]["gbtree_train_param"][
            "tree_method"
        ]
        == "hist"
    )
    # The scalar intercept is what lets shap's own parser read the model (see
    # test_shap_own_parser_reads_the_surrogate).
    base = [float(v) for v in learner["learner_model_param"]["base_score"].strip("[]").split(",")]
    assert base == [BASE_SCORE] * 4


def test_categorical_columns_are_native(
    planted: tuple[pd.DataFrame, np.ndarray, Explanation],
) -> None:
    features, _, expl = planted
    assert expl.booster.feature_names == list(features.columns)
    types = dict(zip(expl.booster.feature_names, expl.booster.feature_types, strict=True))
    assert types["region"] == "c"
    assert types["spend"] == "float"
    # No one-hot columns such as "region_north" anywhere in the outputs.
    assert set(expl.feature_importance["feature"]) == set(features.columns)
    assert set(expl.shap_by_cluster["feature"]) == set(features.columns)


def test_categorical_alone_explains_clusters() -> None:
    rng = np.random.default_rng(3)
    n = 3_000
    labels = rng.permutation(np.arange(n) % 3)
    features = pd.DataFrame(
        {
            "noise": rng.normal(size=n),
            "segment": pd.Categorical(np.array(["gold", "silver", "bronze"])[labels]),
        }
    )
    expl = explain_clusters(features, labels)
    assert expl.fidelity > 0.99
    assert expl.feature_importance.iloc[0]["feature"] == "segment"


# --------------------------------------------------------------------------- importance


def test_importance_sums_to_one_and_planted_feature_ranks_top(
    planted: tuple[pd.DataFrame, np.ndarray, Explanation],
) -> None:
    features, _, expl = planted
    table = expl.feature_importance
    assert list(table.columns) == ["feature", "importance", "rank"]
    assert len(table) == features.shape[1]
    assert table["importance"].sum() == pytest.approx(1.0)
    assert (table["importance"] >= 0).all()
    assert table["rank"].tolist() == list(range(1, features.shape[1] + 1))
    assert table["importance"].is_monotonic_decreasing
    assert table.iloc[0]["feature"] == "spend"
    assert table.iloc[0]["importance"] > 0.5
    # Never split on: exactly zero, ranked last.
    const = table.set_index("feature").loc["const"]
    assert const["importance"] == 0.0
    assert const["rank"] == features.shape[1]


def test_importance_is_normalised_total_gain(
    planted: tuple[pd.DataFrame, np.ndarray, Explanation],
) -> None:
    _, _, expl = planted
    gain = expl.booster.get_score(importance_type="total_gain")
    total = sum(gain.values())
    got = expl.feature_importance.set_index("feature")["importance"]
    for name, value in gain.items():
        assert got[name] == pytest.approx(value / total)


# --------------------------------------------------------------------------- SHAP


def test_shap_table_structure(planted: tuple[pd.DataFrame, np.ndarray, Explanation]) -> None:
    features, _, expl = planted
    table = expl.shap_by_cluster
    assert list(table.columns) == ["cluster_id", "feature", "mean_abs_shap", "mean_shap", "rank"]
    assert len(table) == 4 * features.shape[1]
    for cluster, group in table.groupby("cluster_id"):
        assert group["rank"].tolist() == list(range(1, features.shape[1] + 1))
        assert group["mean_abs_shap"].is_monotonic_decreasing
        assert group.iloc[0]["feature"] == "spend", f"cluster {cluster}"
    assert (table["mean_abs_shap"] >= 0).all()
    assert table.set_index(["cluster_id", "feature"]).loc[(0, "const"), "mean_abs_shap"] == 0.0


def test_shap_summaries_match_contributions(
    planted: tuple[pd.DataFrame, np.ndarray, Explanation],
) -> None:
    # All 4,000 rows fit in the SHAP sample, so every row weighs the same and the
    # summaries are plain means of the raw contributions.
    features, labels, expl = planted
    assert expl.n_shap_rows == len(features)
    phi = contributions(expl, features)
    assert phi.shape == (len(features), 4, features.shape[1] + 1)
    table = expl.shap_by_cluster.set_index(["cluster_id", "feature"])
    for c in range(4):
        own = labels[expl.shap_rows] == c
        for j, name in enumerate(features.columns):
            assert table.loc[(c, name), "mean_abs_shap"] == pytest.approx(
                np.abs(phi[:, c, j]).mean(), abs=1e-6
            )
            assert table.loc[(c, name), "mean_shap"] == pytest.approx(
                phi[own, c, j].mean(), abs=1e-6
            )


def test_shap_additivity(planted: tuple[pd.DataFrame, np.ndarray, Explanation]) -> None:
    features, _, expl = planted
    dmat = xgb.DMatrix(features.iloc[expl.shap_rows], enable_categorical=True)
    phi = expl.booster.predict(dmat, pred_contribs=True)
    margin = expl.booster.predict(dmat, output_margin=True)
    np.testing.assert_allclose(phi.sum(axis=-1), margin, atol=1e-4)


@pytest.mark.parametrize("k", [2, 3])
def test_shap_matches_shap_treeexplainer(k: int) -> None:
    shap = pytest.importorskip("shap")
    features, labels = numeric_frame(k=k)
    expl = explain_clusters(features, labels)
    phi = contributions(expl, features)
    explainer = shap.TreeExplainer(expl.booster)
    values = np.asarray(explainer.shap_values(features.iloc[expl.shap_rows]))
    expected = np.asarray(explainer.expected_value)
    if k == 2:
        # shap gives (rows, features): cluster 1's margin, as XGBoost does.
        np.testing.assert_allclose(values, phi[:, :-1], atol=1e-4)
        np.testing.assert_allclose(expected, phi[0, -1], atol=1e-4)
    else:
        # shap >= 0.45 gives (rows, features, classes); XGBoost (rows, classes, features + 1).
        np.testing.assert_allclose(values, phi[:, :, :-1].transpose(0, 2, 1), atol=1e-4)
        np.testing.assert_allclose(expected, phi[0, :, -1], atol=1e-4)


@pytest.mark.parametrize("k", [2, 3])
def test_shap_own_parser_reads_the_surrogate(k: int) -> None:
    # TreeExplainer's default path hands the work to XGBoost's pred_contribs, so the
    # test above checks layout, sign and bias. Interventional SHAP instead parses the
    # model JSON in shap itself and runs shap's own algorithm; its additivity against
    # XGBoost's margin shows shap reads our trees and intercept correctly. With
    # XGBoost's fitted per-class intercept (>= 3.1) this fails for k > 2: shap 0.51
    # keeps only base_score[0].
    shap = pytest.importorskip("shap")
    features, labels = numeric_frame(k=k)
    expl = explain_clusters(features, labels)
    rows = features.iloc[expl.shap_rows[:100]].to_numpy()
    explainer = shap.TreeExplainer(
        expl.booster, data=features.to_numpy()[:200], feature_perturbation="interventional"
    )
    values = np.asarray(explainer.shap_values(rows, check_additivity=False))
    margin = expl.booster.predict(
        xgb.DMatrix(rows, feature_names=list(features.columns)), output_margin=True
    )
    np.testing.assert_allclose(
        values.sum(axis=1) + np.asarray(explainer.expected_value), margin, atol=1e-4
    )


def _tree_value(node: dict[str, Any], row: dict[str, float], known: frozenset[str]) -> float:
    """Expected output of one tree given the features in ``known`` (path-dependent, by cover)."""
    if "leaf" in node:
        return float(node["leaf"])
    children = {child["nodeid"]: child for child in node["children"]}
    name = node["split"]
    if name in known:
        # XGBoost compares in float32; hist thresholds are often data values
        # themselves, so comparing in float64 would send ties the wrong way.
        x = np.float32(row[name])
        if math.isnan(x):
            target = node["missing"]
        else:
            target = node["yes"] if x < np.float32(node["split_condition"]) else node["no"]
        return _tree_value(children[target], row, known)
    return (
        sum(child["cover"] * _tree_value(child, row, known) for child in children.values())
        / node["cover"]
    )


def test_shap_matches_brute_force_shapley_values() -> None:
    # An oracle independent of both XGBoost's and shap's TreeSHAP code: exact
    # Shapley values of the path-dependent value function, by enumerating subsets.
    features, labels = numeric_frame(n=300, k=3)
    expl = explain_clusters(features, labels)
    trees = [json.loads(t) for t in expl.booster.get_dump(dump_format="json", with_stats=True)]
    names = list(features.columns)
    m = len(names)
    phi = contributions(expl, features)
    for pos in range(4):
        row = features.iloc[expl.shap_rows[pos]].to_dict()
        value = {
            subset: np.array(
                [sum(_tree_value(t, row, subset) for t in trees[c::3]) for c in range(3)]
            )
            for size in range(m + 1)
            for subset in map(frozenset, itertools.combinations(names, size))
        }
        for j, name in enumerate(names):
            others = [f for f in names if f != name]
            expected = sum(
                math.factorial(len(s))
                * math.factorial(m - len(s) - 1)
                / math.factorial(m)
                * (value[frozenset(s) | {name}] - value[frozenset(s)])
                for size in range(m)
                for s in itertools.combinations(others, size)
            )
            np.testing.assert_allclose(phi[pos, :, j], expected, atol=1e-4)
        np.testing.assert_allclose(phi[pos, :, -1], value[frozenset()] + BASE_SCORE, atol=1e-4)


# --------------------------------------------------------------------------- binary


def test_binary_clusters() -> None:
    features, labels = planted_frame(n=2_000, k=2)
    expl = explain_clusters(features, labels)
    assert learner_config(expl.booster)["objective"]["name"] == "binary:logistic"
    assert expl.fidelity > 0.9
    assert expl.feature_importance.iloc[0]["feature"] == "spend"

    phi = contributions(expl, features)
    assert phi.shape == (len(features), features.shape[1] + 1)
    table = expl.shap_by_cluster.set_index(["cluster_id", "feature"])
    sub = labels[expl.shap_rows]
    for j, name in enumerate(features.columns):
        # Cluster 1 is XGBoost's positive class; cluster 0 is its negation.
        assert table.loc[(1, name), "mean_abs_shap"] == pytest.approx(
            np.abs(phi[:, j]).mean(), abs=1e-6
        )
        assert table.loc[(0, name), "mean_abs_shap"] == pytest.approx(
            table.loc[(1, name), "mean_abs_shap"]
        )
        assert table.loc[(1, name), "mean_shap"] == pytest.approx(phi[sub == 1, j].mean(), abs=1e-6)
        assert table.loc[(0, name), "mean_shap"] == pytest.approx(
            -phi[sub == 0, j].mean(), abs=1e-6
        )
    # Planted direction: cluster 1 has the higher spend, so spend pushes towards it.
    assert table.loc[(1, "spend"), "mean_shap"] > 0
    assert table.loc[(0, "spend"), "mean_shap"] > 0


# --------------------------------------------------------------------------- sampling


def test_sample_sizes_are_bounded() -> None:
    features, labels = planted_frame(n=20_000, k=5)
    expl = explain_clusters(features, labels, max_train_rows=2_000, max_shap_rows=500)
    assert expl.n_train + expl.n_holdout == 2_000
    assert expl.n_holdout == pytest.approx(HOLDOUT_FRACTION * 2_000, abs=5)
    assert expl.n_shap_rows == 500 == len(expl.shap_rows)
    assert len(np.unique(expl.shap_rows)) == 500
    assert expl.fidelity > 0.9


@pytest.mark.parametrize("n_max", [200, 1_000, 5_000])
def test_stratified_sample_keeps_every_cluster(n_max: int) -> None:
    sizes = [20_000, 3_000, 5, 120]
    labels = np.random.default_rng(0).permutation(np.repeat(np.arange(4), sizes))
    picked = _stratified_sample(labels, n_max, np.random.default_rng(1))
    assert len(picked) == n_max == len(np.unique(picked))
    assert (np.diff(picked) > 0).all()
    counts = np.bincount(labels[picked], minlength=4)
    assert counts[2] == 5  # smaller than the per-cluster floor: taken whole
    assert (counts >= np.minimum(sizes, min(MIN_ROWS_PER_CLUSTER, n_max // 4))).all()


def test_stratified_sample_counts() -> None:
    labels = np.repeat(np.arange(4), [20_000, 3_000, 5, 120])
    picked = _stratified_sample(labels, 1_000, np.random.default_rng(1))
    # Floors 50, 50, 5 (all of it), 50 use 155 rows; the other 845 are shared in
    # proportion to what is left (19_950 : 2_950 : 0 : 70) = 733.9, 108.5, 0, 2.6,
    # and the two rows lost to rounding go to the largest remainders (clusters 0, 3).
    assert np.bincount(labels[picked], minlength=4).tolist() == [784, 158, 5, 53]
    assert MIN_ROWS_PER_CLUSTER == 50


def test_tiny_cluster_survives_sampling() -> None:
    features, labels = planted_frame(n=30_000, k=4)
    tiny = np.flatnonzero(labels == 3)[:6]
    labels = np.where(labels == 3, 0, labels)
    labels[tiny] = 3
    features.loc[tiny, "spend"] = 100.0  # make the tiny cluster learnable
    expl = explain_clusters(features, labels, max_train_rows=1_000, max_shap_rows=300)
    assert set(tiny) <= set(expl.shap_rows)
    tiny_rows = expl.shap_by_cluster[expl.shap_by_cluster["cluster_id"] == 3]
    assert len(tiny_rows) == features.shape[1]
    assert tiny_rows["mean_shap"].notna().all()
    proba = expl.booster.predict(xgb.DMatrix(features.iloc[tiny], enable_categorical=True))
    assert (proba.argmax(axis=1) == 3).all()


def test_one_row_cluster_is_trained_on_and_not_held_out() -> None:
    features, labels = planted_frame(n=400, k=3)
    labels = labels.copy()
    labels[0] = 3
    expl = explain_clusters(features, labels)
    assert learner_config(expl.booster)["learner_model_param"]["num_class"] == "4"
    assert expl.n_train + expl.n_holdout == 400
    assert 3 in set(expl.shap_by_cluster["cluster_id"])


# --------------------------------------------------------------------------- determinism


def test_deterministic_for_a_fixed_seed() -> None:
    features, labels = planted_frame(n=8_000, k=3)
    kwargs: dict[str, Any] = {"seed": 7, "max_train_rows": 3_000, "max_shap_rows": 1_000}
    first = explain_clusters(features, labels, **kwargs)
    second = explain_clusters(features, labels, **kwargs)
    pd.testing.assert_frame_equal(first.feature_importance, second.feature_importance)
    pd.testing.assert_frame_equal(first.shap_by_cluster, second.shap_by_cluster)
    assert first.fidelity == second.fidelity
    np.testing.assert_array_equal(first.shap_rows, second.shap_rows)
    assert first.booster.save_raw("json") == second.booster.save_raw("json")
    other = explain_clusters(features, labels, **{**kwargs, "seed": 8})
    assert not np.array_equal(first.shap_rows, other.shap_rows)


def test_names_xgboost_rejects_are_kept_in_outputs() -> None:
    features, labels = numeric_frame()
    features = features.rename(columns={"a": "price[usd]", "b": "score<10"})
    expl = explain_clusters(features, labels)
    assert expl.feature_names == ("price[usd]", "score<10", "c")
    assert expl.booster.feature_names == ["f0", "f1", "f2"]
    assert set(expl.feature_importance["feature"]) == set(features.columns)
    assert expl.feature_importance.iloc[0]["feature"] == "price[usd]"


# --------------------------------------------------------------------------- errors


def _bad_inputs() -> list[Any]:
    features, labels = numeric_frame(n=60)
    text = features.assign(city=["tokyo"] * 60)
    return [
        pytest.param(
            features,
            labels[:-1],
            {},
            r"same length.*len\(features\)=60 != len\(labels\)=59",
            id="length",
        ),
        pytest.param(
            features,
            np.zeros(60, int),
            {},
            r"at least 2 clusters to explain, got 1",
            id="one-cluster",
        ),
        pytest.param(
            features.iloc[:0], labels[:0], {}, r"at least 2 clusters to explain, got 0", id="empty"
        ),
        pytest.param(
            features, np.where(labels == 1, 2, labels), {}, r"missing ids: \[1\]", id="gap"
        ),
        pytest.param(features, labels - 1, {}, r"must be >= 0", id="negative"),
        pytest.param(features, labels + 0.5, {}, r"fractional", id="fractional"),
        pytest.param(features, labels.astype(str), {}, r"integer cluster ids", id="string-labels"),
        pytest.param(features, labels.reshape(-1, 1), {}, r"1-D", id="2d-labels"),
        pytest.param(features.to_numpy(), labels, {}, r"pandas DataFrame", id="ndarray"),
        pytest.param(features[[]], labels, {}, r"no columns", id="no-columns"),
        pytest.param(text, labels, {}, r"convert these columns: city", id="text-column"),
        pytest.param(
            features.set_axis(["a", "a", "c"], axis=1), labels, {}, r"duplicated: \['a'\]", id="dup"
        ),
        pytest.param(
            features.set_axis(["a", 1, "c"], axis=1), labels, {}, r"must be strings", id="int-name"
        ),
        pytest.param(
            features, labels, {"device": "tpu"}, r"device='tpu' must be one of", id="device"
        ),
        pytest.param(
            features, labels, {"max_train_rows": 0}, r"max_train_rows=0 must be", id="train-rows"
        ),
        pytest.param(
            features, labels, {"max_shap_rows": 1.5}, r"max_shap_rows=1.5 must be", id="shap-rows"
        ),
        pytest.param(
            features,
            labels,
            {"max_shap_rows": 2},
            r"max_shap_rows=2 must be >= .* k=3",
            id="shap<k",
        ),
    ]


@pytest.mark.parametrize(("features", "labels", "kwargs", "match"), _bad_inputs())
def test_invalid_inputs_raise(
    features: Any, labels: Any, kwargs: dict[str, Any], match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        explain_clusters(features, labels, **kwargs)


# --------------------------------------------------------------------------- GPU


def _cuda_usable() -> bool:
    # XGBoost wheels are built with CUDA and fall back to the CPU (with a warning)
    # when no GPU is visible, so ask the trained booster where it actually ran.
    if not xgb.build_info().get("USE_CUDA"):
        return False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        booster = xgb.train({"device": "cuda"}, xgb.DMatrix(np.eye(4), label=np.arange(4) % 2), 1)
    return bool(
        json.loads(booster.save_config())["learner"]["generic_param"]["device"].startswith("cuda")
    )


def test_cuda_request_without_gpu_reports_cpu() -> None:
    if _cuda_usable():
        pytest.skip("a GPU is visible")
    features, labels = numeric_frame()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expl = explain_clusters(features, labels, device="cuda")
    assert expl.device == "cpu"


@pytest.mark.gpu
@pytest.mark.skipif(not _cuda_usable(), reason="needs XGBoost built with CUDA and a GPU")
def test_cuda_matches_cpu_by_score() -> None:
    # Compare devices by score, never by raw values (different float summation order).
    features, labels = planted_frame()
    cpu = explain_clusters(features, labels, device="cpu")
    gpu = explain_clusters(features, labels, device="cuda")
    assert gpu.device == "cuda"
    assert abs(gpu.fidelity - cpu.fidelity) < 0.02
    assert gpu.feature_importance.iloc[0]["feature"] == cpu.feature_importance.iloc[0]["feature"]
    phi = contributions(gpu, features)
    margin = gpu.booster.predict(
        xgb.DMatrix(features.iloc[gpu.shap_rows], enable_categorical=True), output_margin=True
    )
    np.testing.assert_allclose(phi.sum(axis=-1), margin, atol=1e-3)
