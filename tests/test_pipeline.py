"""The whole run through the library: demo data, real data files, reuse, append, PCA."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import adjusted_rand_score

from autoseg.config import build_config
from autoseg.demo import make_customers
from autoseg.pipeline import run

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
needs_data = pytest.mark.skipif(not DATA.exists(), reason="shared data missing")


def _config(tmp_path: Path, **values: object):  # noqa: ANN202
    base = {
        "store": f"duckdb:{tmp_path / 'store.duckdb'}",
        "output_dir": str(tmp_path / "out"),
        "model_dir": str(tmp_path / "models"),
    }
    base.update({k: v for k, v in values.items()})
    return build_config(base)


def _write_demo(tmp_path: Path, rows: int = 3000) -> np.ndarray:
    frame, planted = make_customers(rows, seed=11)
    with duckdb.connect(str(tmp_path / "store.duckdb")) as conn:
        conn.execute("CREATE SCHEMA IF NOT EXISTS demo")
        conn.register("frame", frame)
        conn.execute("CREATE OR REPLACE TABLE demo.customers AS SELECT * FROM frame")
    return planted


def _table(tmp_path: Path, name: str) -> pd.DataFrame:
    with duckdb.connect(str(tmp_path / "store.duckdb")) as conn:
        return conn.sql(f"SELECT * FROM {name}").df()


def test_demo_table_end_to_end_finds_the_planted_segments(tmp_path: Path) -> None:
    planted = _write_demo(tmp_path)
    result = run(_config(tmp_path, input_table="demo.customers",
                         output_table="demo.segmented", model_name="m1"))
    assert result.chosen_k == 4
    assert adjusted_rand_score(planted, result.labels) > 0.8
    out = _table(tmp_path, "demo.segmented")
    assert len(out) == 3000 and out["cluster_id"].dtype == np.int32
    assert list(out.columns[:-1]) == list(make_customers(10)[0].columns)
    summary = json.loads(result.summary_path.read_text())
    assert summary["chosen_k"] == 4
    assert summary["rows_read"] == 3000
    assert {d["column"] for d in summary["columns_dropped"]} >= {"customer_id", "time",
                                                                 "last_feedback"}
    assert [c["k"] for c in summary["k_search"]] == list(range(2, 10))
    assert sum(summary["cluster_sizes"]) == 3000
    assert summary["values_imputed"]["age"] > 0
    assert set(summary["timings_seconds"]) >= {"read", "features", "search", "write"}
    assert summary["versions"]["scikit-learn"]
    assert summary["device"]["used"] == "cpu"


def test_reuse_assigns_the_same_clusters_without_fitting(tmp_path: Path) -> None:
    _write_demo(tmp_path, rows=1500)
    first = run(_config(tmp_path, input_table="demo.customers", model_name="m",
                        output_table="demo.first"))
    second = run(_config(tmp_path, input_table="demo.customers", model_name="m",
                         force_refit=False, output_table="demo.second"))
    assert second.search is None and second.summary["refit"] is False
    np.testing.assert_array_equal(first.labels, second.labels)
    model_dir = tmp_path / "models" / "m"
    assert sorted(p.name for p in model_dir.iterdir()) == ["arrays.npz", "model.json",
                                                           "surrogate.json"]
    with np.load(model_dir / "arrays.npz", allow_pickle=False) as arrays:
        assert arrays["centroids"].shape[0] == first.chosen_k


def test_append_adds_rows(tmp_path: Path) -> None:
    _write_demo(tmp_path, rows=600)
    cfg = _config(tmp_path, input_table="demo.customers", output_table="demo.out",
                  num_clusters=3)
    run(cfg)
    run(_config(tmp_path, input_table="demo.customers", output_table="demo.out",
                num_clusters=3, output_mode="append"))
    assert len(_table(tmp_path, "demo.out")) == 1200


def test_overwrite_replaces_rows(tmp_path: Path) -> None:
    _write_demo(tmp_path, rows=600)
    for _ in range(2):
        run(_config(tmp_path, input_table="demo.customers", output_table="demo.out",
                    num_clusters=3, output_mode="replace"))
    assert len(_table(tmp_path, "demo.out")) == 600


@needs_data
def test_mall_customers_csv_keeps_zero_padded_ids(tmp_path: Path) -> None:
    result = run(_config(tmp_path, input_table=str(DATA / "Mall_Customers.csv"),
                         output_table="mall.segments"))
    out = _table(tmp_path, "mall.segments")
    assert out["CustomerID"].iloc[0] == "0001"
    assert "CustomerID" not in result.summary["columns_used"]
    assert 2 <= result.chosen_k <= 9
    assert result.summary["rows_read"] == 200


def test_a_column_independent_of_the_others_is_left_out_unless_kept(tmp_path: Path) -> None:
    # The demo's region is drawn regardless of the segment and of every other column.
    _write_demo(tmp_path)
    result = run(_config(tmp_path, input_table="demo.customers", model_name="m"))
    dropped = {d["column"]: d["reason"] for d in result.summary["columns_dropped"]}
    assert dropped["region"].startswith("independent of every other column")
    assert dropped["region"].endswith("keep it with --keep-columns")
    assert "region" not in result.summary["columns_used"]
    # Reused, the saved model leaves it out the same way (no second screen on new rows).
    # --keep-columns is for fitting: with a reused model it changes nothing (and a column
    # the new table lacks is no error).
    again = run(_config(tmp_path, input_table="demo.customers", model_name="m",
                        force_refit=False, keep_columns="region,not_a_column"))
    assert list(again.labels) == list(result.labels)
    kept = run(_config(tmp_path, input_table="demo.customers", keep_columns="region"))
    assert "region" in kept.summary["columns_used"]
    assert "region" not in {d["column"] for d in kept.summary["columns_dropped"]}
    assert kept.summary["parameters"]["keep_columns"] == ["region"]


@needs_data
def test_penguins_with_species_ignored(tmp_path: Path) -> None:
    result = run(_config(tmp_path, input_table=str(DATA / "penguins.csv"),
                         ignore_columns="species,year"))
    used = result.summary["columns_used"]
    assert "species" not in used and "bill_length_mm" in used and "sex" in used
    assert result.summary["values_imputed"]  # 11 rows have missing values
    species = pd.read_csv(DATA / "penguins.csv")["species"]
    # the clusters follow species (and sex) far better than chance
    assert adjusted_rand_score(species, result.labels) > 0.3


@needs_data
def test_wholesale_parquet_input(tmp_path: Path) -> None:
    path = tmp_path / "wholesale.parquet"
    pd.read_csv(DATA / "wholesale_customers_data.csv").to_parquet(path)
    result = run(_config(tmp_path, input_table=str(path)))
    sizes = result.summary["cluster_sizes"]
    assert min(sizes) >= 0.05 * 440  # heavy tails do not produce a handful-of-rows segment


def test_wide_table_is_reduced_with_pca(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    centers = rng.normal(0, 4, size=(3, 60))
    group = rng.integers(0, 3, 900)
    frame = pd.DataFrame(centers[group] + rng.normal(size=(900, 60)),
                         columns=[f"f{i}" for i in range(60)])
    path = tmp_path / "wide.parquet"
    frame.to_parquet(path)
    result = run(_config(tmp_path, input_table=str(path), dimension_reduction_threshold=10))
    assert result.summary["pca_components"] == 10
    assert result.summary["prepared_columns"] == 60
    assert adjusted_rand_score(group, result.labels) > 0.95


def test_explanations_are_summarised_and_exported(tmp_path: Path) -> None:
    _write_demo(tmp_path, rows=1500)
    result = run(_config(tmp_path, input_table="demo.customers", output_table="demo.out",
                         export_feature_importance="fi", export_shap_values="other.shap"))
    explanation = result.summary["explanation"]
    assert explanation["available"] and explanation["fidelity"] > 0.9
    importance = _table(tmp_path, "demo.fi")  # defaults to the output table's database
    assert list(importance.columns) == ["feature", "importance", "rank"]
    assert importance["importance"].sum() == pytest.approx(1.0)
    shap = _table(tmp_path, "other.shap")
    assert list(shap.columns) == ["cluster_id", "feature", "mean_abs_shap", "mean_shap", "rank"]
    assert sorted(shap["cluster_id"].unique()) == list(range(result.chosen_k))
    descriptions = [c["description"] for c in result.summary["clusters"]]
    assert all(d and d != "no distinguishing feature" for d in descriptions)


def test_large_table_is_searched_on_a_sample_and_fitted_on_all_rows(tmp_path: Path) -> None:
    planted = _write_demo(tmp_path, rows=3000)
    result = run(_config(tmp_path, input_table="demo.customers", output_table="demo.out",
                         silhouette_exact_max_rows=2000, search_sample_size=1500))
    summary = result.summary
    assert summary["silhouette"]["search_rows"] == 1500
    assert summary["silhouette"]["exact"] is False
    chosen = next(c for c in summary["k_search"] if c["k"] == result.chosen_k)
    assert 0 < chosen["silhouette_stderr"] < 0.05
    assert "fit_all_rows" in summary["timings_seconds"]
    assert len(result.labels) == 3000 and sum(summary["cluster_sizes"]) == 3000
    assert result.chosen_k == 4
    assert adjusted_rand_score(planted, result.labels) > 0.8


def test_rules_stability_and_min_cluster_size(tmp_path: Path) -> None:
    _write_demo(tmp_path, rows=2000)
    result = run(_config(tmp_path, input_table="demo.customers", output_table="demo.out",
                         export_segment_rules="rules", min_cluster_size="0.2",
                         max_clusters=6))
    summary = result.summary
    rejected = {c["k"]: c["rejected"] for c in summary["k_search"]}
    # the loyal-high-spender and new-app-user segments are under 20% of rows
    assert all(
        (rejected[c["k"]] is not None) == (min(c["sizes"]) < 0.2 * 2000)
        for c in summary["k_search"]
    )
    assert min(summary["cluster_sizes"]) >= 0.2 * 2000 * 0.9  # refit may move a few rows
    assert all(c["stability"] is not None for c in summary["k_search"] if c["rejected"] is None)
    rules = _table(tmp_path, "demo.rules")
    assert list(rules.columns) == ["cluster_id", "rule", "precision", "recall", "support"]
    assert len(rules) == result.chosen_k
    for cluster in summary["clusters"]:
        assert cluster["rule"]["text"] and cluster["rule"]["precision"] > 0.5


def test_prefer_stable_records_the_choice(tmp_path: Path) -> None:
    _write_demo(tmp_path, rows=1500)
    result = run(_config(tmp_path, input_table="demo.customers", prefer_stable=True,
                         max_clusters=6))
    assert "stable" in result.summary["chosen_reason"]


def test_refit_keeps_cluster_ids_and_reuse_reports_drift(tmp_path: Path) -> None:
    frame, _ = make_customers(2000, seed=21)
    path = tmp_path / "day1.parquet"
    frame.to_parquet(path)
    first = run(_config(tmp_path, input_table=str(path), model_name="nightly", num_clusters=4))
    # the next night: the same customers in another order; a refit keeps every id's meaning
    shuffled = frame.sample(frac=1.0, random_state=3)
    path2 = tmp_path / "day2.parquet"
    shuffled.to_parquet(path2)
    second = run(_config(tmp_path, input_table=str(path2), model_name="nightly",
                         num_clusters=4, seed=9))
    assert second.summary["cluster_ids"]["matched"] is True
    assert second.summary["cluster_ids"]["kept"] == [0, 1, 2, 3]
    by_customer = dict(zip(frame["customer_id"], first.labels, strict=True))
    again = [by_customer[c] for c in shuffled["customer_id"]]
    assert adjusted_rand_score(again, second.labels) > 0.95
    assert np.mean(np.array(again) == second.labels) > 0.95  # same ids, not just same groups
    # reuse on drifted data: spend tripled for everyone
    drifted = frame.assign(annual_spend=frame["annual_spend"] * 3)
    path3 = tmp_path / "day3.parquet"
    drifted.to_parquet(path3)
    reuse = run(_config(tmp_path, input_table=str(path3), model_name="nightly",
                        force_refit=False))
    drift = reuse.summary["drift"]
    assert drift["warnings"]
    assert any("annual_spend" in str(w) for w in drift["warnings"])


def test_summary_json_is_strict_json(tmp_path: Path) -> None:
    """NaN (a cluster without a sampled point) is written as null, never as a bare NaN."""
    from autoseg.summary import json_safe

    path = tmp_path / "summary.json"
    path.write_text(json.dumps(json_safe({
        "per_cluster": [0.5, float("nan"), np.float32("nan")], "score": np.float64("inf"),
        "nested": {"ok": 1.5}}), allow_nan=False))

    def refuse(constant: str) -> None:
        raise ValueError(f"not strict JSON: {constant}")

    data = json.loads(path.read_text(), parse_constant=refuse)
    assert data == {"per_cluster": [0.5, None, None], "score": None, "nested": {"ok": 1.5}}


def test_failed_table_write_keeps_the_previous_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The model is staged before the tables and swapped in only after them."""
    from autoseg.errors import ServiceError
    from autoseg.io.duckdb_store import DuckDBStore

    _write_demo(tmp_path, rows=1500)
    run(_config(tmp_path, input_table="demo.customers", model_name="m", num_clusters=3,
                output_table="demo.out"))
    model_dir = tmp_path / "models" / "m"
    before = {p.name: p.read_bytes() for p in model_dir.iterdir()}

    def failing(self: DuckDBStore, writes: object, before_commit: object = None) -> None:
        raise ServiceError("writing to the store failed, nothing was changed: disk full")

    monkeypatch.setattr(DuckDBStore, "write_tables", failing)
    with pytest.raises(ServiceError, match="disk full"):
        run(_config(tmp_path, input_table="demo.customers", model_name="m", num_clusters=4,
                    output_table="demo.out"))
    assert {p.name: p.read_bytes() for p in model_dir.iterdir()} == before
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["m"]  # no staging left


def test_report_drawn_beside_the_table_write_fails_with_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The report is drawn on a second thread while the tables are written; when drawing
    fails, the tables are not committed and every earlier output stays as it was."""
    import threading

    import autoseg.report.html as report_html

    _write_demo(tmp_path, rows=1500)
    run(_config(tmp_path, input_table="demo.customers", model_name="m", num_clusters=3,
                output_table="demo.out"))
    table_before = _table(tmp_path, "demo.out")
    out_before = {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()}
    models_before = {p.name: p.read_bytes() for p in (tmp_path / "models" / "m").iterdir()}
    threads: list[str] = []

    def failing_render(*args: object, **kwargs: object) -> str:
        threads.append(threading.current_thread().name)
        raise RuntimeError("drawing failed")

    monkeypatch.setattr(report_html, "render_report", failing_render)
    with pytest.raises(RuntimeError, match="^drawing failed$"):
        run(_config(tmp_path, input_table="demo.customers", model_name="m", num_clusters=4,
                    output_table="demo.out"))
    assert threads and threads[0].startswith("autoseg-report")
    pd.testing.assert_frame_equal(_table(tmp_path, "demo.out"), table_before)
    assert {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()} == out_before
    assert {p.name: p.read_bytes() for p in (tmp_path / "models" / "m").iterdir()} == (
        models_before)
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["m"]


def test_summary_and_report_show_what_the_neighbouring_k_would_change(tmp_path: Path) -> None:
    _write_demo(tmp_path)
    result = run(_config(tmp_path, input_table="demo.customers", max_clusters=6,
                         kmeans_restarts=2, stability_runs=0))
    summary = json.loads(result.summary_path.read_text())
    chosen = summary["chosen_k"]
    by_k = {alt["k"]: alt for alt in summary["alternatives"]}
    assert {chosen - 1, chosen + 1} <= set(by_k)
    bigger = by_k[chosen + 1]
    assert bigger["option"] == f"--num-clusters {chosen + 1}"
    assert bigger["splits"], "one more cluster splits one of the chosen clusters"
    assert bigger["silhouette_gap"] < 0  # the chosen k has the best silhouette
    report = (tmp_path / "out" / "report.html").read_text()
    assert "Another k: what it would change" in report
    assert f"--num-clusters {chosen + 1}" in report
