"""What another k would change: splits, merges, silhouette gaps and the option to choose it."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from autoseg.alternatives import describe_alternatives
from autoseg.features import fit_features
from autoseg.report.alternatives import render_alternatives
from autoseg.search import search_k


def _table(seed: int = 0) -> pd.DataFrame:
    """Three segments; two of them (young app users, older web users) close together."""
    rng = np.random.default_rng(seed)
    n = 3000
    group = rng.choice(3, n, p=[0.4, 0.3, 0.3])
    age = rng.normal(np.array([30.0, 40.0, 60.0])[group], 3.0)
    spend = rng.normal(np.array([100.0, 110.0, 400.0])[group], 15.0)
    channel = np.where(group == 0, "app", np.where(group == 1, "web", "store"))
    return pd.DataFrame({"age": age, "spend": spend, "channel": channel})


@pytest.fixture(scope="module")
def fitted() -> tuple[pd.DataFrame, object, pd.DataFrame]:
    frame = _table()
    spec = fit_features(frame)
    matrix, _ = spec.transform(frame)
    search = search_k(matrix, [2, 3, 4], restarts=3, seed=0, exact_max_rows=10_000,
                      sample_size=2000)
    return frame, search, spec.readable(frame)


def test_neighbours_and_runner_up_are_described(fitted) -> None:
    _, search, readable = fitted
    assert search.chosen_k == 3
    result = describe_alternatives(search, readable)
    by_k = {alt["k"]: alt for alt in result}
    assert sorted(by_k) == [2, 4]
    assert "k-1" in by_k[2]["roles"] and "k+1" in by_k[4]["roles"]
    assert sum("runner-up" in alt["roles"] for alt in result) == 1
    for alt in result:
        assert alt["option"] == f"--num-clusters {alt['k']}"
        chosen = search.candidate(3)
        assert alt["silhouette_gap"] == pytest.approx(alt["silhouette"] - chosen.silhouette)
        assert alt["silhouette_gap"] < 0  # the chosen k has the best silhouette
        assert alt["gap_stderr"] == pytest.approx(0.0)  # exact silhouettes


def test_k_minus_one_merges_the_two_close_segments(fitted) -> None:
    frame, search, readable = fitted
    merge_entry = next(alt for alt in describe_alternatives(search, readable) if alt["k"] == 2)
    assert len(merge_entry["merges"]) == 1
    merge = merge_entry["merges"][0]
    members = [m["cluster"] for m in merge["clusters"]]
    # the merged clusters are the app and the web segments, never the store one
    channels = {frame["channel"][search.labels == c].mode()[0] for c in members}
    assert channels == {"app", "web"}
    assert merge["share"] == pytest.approx(sum(m["share"] for m in merge["clusters"]), abs=0.02)
    assert any("merges clusters" in line for line in merge_entry["summary"])


def test_k_plus_one_splits_a_cluster_and_names_what_separates_the_parts(fitted) -> None:
    _, search, readable = fitted
    split_entry = next(alt for alt in describe_alternatives(search, readable) if alt["k"] == 4)
    assert len(split_entry["splits"]) >= 1
    split = split_entry["splits"][0]
    assert len(split["into"]) >= 2
    assert sum(p["rows"] for p in split["into"]) <= split["rows"]
    # the parts are described in the cluster cards' words: "<feature> high/low"
    for part in split["into"]:
        assert part["description"]
        assert all(word.split()[0] in readable.columns or "=" in word
                   for word in part["description"].split(", "))
    directions = {p["description"] for p in split["into"]}
    assert len(directions) == len(split["into"])  # the parts differ


def test_final_labels_renumber_the_clusters(fitted) -> None:
    _, search, readable = fitted
    permutation = np.array([2, 0, 1])
    renamed = permutation[search.labels]
    plain = describe_alternatives(search, readable)
    moved = describe_alternatives(search, readable, chosen_labels=renamed)
    merged_plain = {m["cluster"] for alt in plain for mg in alt["merges"] for m in mg["clusters"]}
    merged_moved = {m["cluster"] for alt in moved for mg in alt["merges"] for m in mg["clusters"]}
    assert merged_moved == {int(permutation[c]) for c in merged_plain}


def test_hidden_contents_name_no_category_level(fitted) -> None:
    _, search, readable = fitted
    result = describe_alternatives(search, readable, hide_table_contents=True)
    text = repr(result)
    assert "channel=" not in text
    page = render_alternatives(describe_alternatives(search, readable), 3,
                               hide_table_contents=True)
    assert "channel=" not in page


def test_wrong_rows_are_refused(fitted) -> None:
    _, search, readable = fitted
    with pytest.raises(ValueError, match="readable frame of the searched rows"):
        describe_alternatives(search, readable.iloc[:10])


def test_a_single_fitted_k_has_no_alternative() -> None:
    frame = _table(1)
    spec = fit_features(frame)
    matrix, _ = spec.transform(frame)
    search = search_k(matrix, [3], restarts=2, seed=0, exact_max_rows=10_000,
                      sample_size=2000)
    assert describe_alternatives(search, spec.readable(frame)) == []
    assert "No other k" in render_alternatives([], 3)


def test_report_fragment_escapes_everything() -> None:
    evil = "<script>alert(1)</script>"
    alternatives = [{
        "k": 4, "roles": ["k+1"], "silhouette": 0.3, "silhouette_stderr": 0.01,
        "silhouette_gap": -0.02, "gap_stderr": 0.014, "option": "--num-clusters 4",
        "rejected": None, "merges": [],
        "splits": [{"cluster": 1, "rows": 100, "share": 0.5, "separating_features": [evil],
                    "into": [{"share": 0.3, "share_of_cluster": 0.6,
                              "description": f"{evil} high"},
                             {"share": 0.2, "share_of_cluster": 0.4,
                              "description": f"{evil}={evil}"}]}],
    }]
    page = render_alternatives(alternatives, 3)
    assert "<script>" not in page
    assert "&lt;script&gt;" in page
    assert "--num-clusters 4" in page
    assert "-0.0200 \u00b1 0.0140" in page
