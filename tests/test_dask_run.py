"""The Dask run against the single-machine run on the same data, on a real LocalCluster.

The cluster runs in-process (``processes=False``): two workers of one thread each still send
every task through the distributed scheduler, but start in well under a second, and a test's
monkeypatch reaches the functions the workers run.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

dd = pytest.importorskip("dask.dataframe")
distributed = pytest.importorskip("distributed")

from sklearn.metrics import adjusted_rand_score  # noqa: E402

from autoseg import pipeline, sampling  # noqa: E402
from autoseg.config import build_config  # noqa: E402
from autoseg.dask import cluster as dask_cluster  # noqa: E402
from autoseg.dask import output as dask_output  # noqa: E402
from autoseg.demo import make_customers, to_arrow  # noqa: E402
from autoseg.errors import InputDataError, UsageError  # noqa: E402
from autoseg.model import SegmentationModel  # noqa: E402
from autoseg.pipeline import run  # noqa: E402
from autoseg.sampling import all_rows_silhouette_points  # noqa: E402


def _run_on_dask(*args: object, **kwargs: object):  # noqa: ANN202
    """The summary of a Dask run on the test's client."""
    return pipeline.run_on_dask(*args, **kwargs).summary  # type: ignore[arg-type]


ROWS = 4000
PARTITIONS = 4
MANIFEST = Path(__file__).resolve().parents[1] / "container" / "k8s" / "dask-cluster.yaml"


@pytest.fixture(scope="module")
def client() -> Iterator[distributed.Client]:
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster) as c:
        yield c


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The demo table as one Parquet file and as a dataset of PARTITIONS files."""
    root = tmp_path_factory.mktemp("dask-data")
    frame, _ = make_customers(ROWS)
    table = to_arrow(frame)
    single = root / "customers.parquet"
    pq.write_table(table, single)
    folder = root / "customers"
    folder.mkdir()
    step = ROWS // PARTITIONS
    for i in range(PARTITIONS):
        pq.write_table(table.slice(i * step, step), folder / f"part-{i:03d}.parquet")
    return {"single": single, "dataset": folder}


def _config(tmp_path: Path, input_table: Path, name: str, **values: object):  # noqa: ANN202
    return build_config({
        "input_table": str(input_table),
        "store": f"duckdb:{tmp_path / 'store.duckdb'}",
        "output_dir": str(tmp_path / name),
        "model_dir": str(tmp_path / "models"),
        **values,
    })


# Defaults: the table is searched whole, no refit. Small sample settings: the k search runs on a
# 1000-row sample and the chosen k is refitted on all rows by the distributed Lloyd iterations.
# Fewer restarts and k than the defaults keep the test fast; both paths get the same settings.
FAST = {"kmeans_restarts": 3, "max_clusters": 6}
SETTINGS = {
    "whole": FAST,
    "sampled": {"search_sample_size": 1000, "silhouette_exact_max_rows": 1000, **FAST},
}


@pytest.mark.parametrize("setting", sorted(SETTINGS))
def test_same_segmentation_as_single_machine(
    setting: str, tmp_path: Path, data: dict[str, Path], client: distributed.Client
) -> None:
    values = SETTINGS[setting]
    reference = run(_config(tmp_path, data["single"], "single", **values))
    out = tmp_path / "labelled"
    summary = _run_on_dask(_config(tmp_path, data["single"], "dask", model_name="m",
                                           **values), client,
                                   input_path=str(data["dataset"]), output_path=str(out))

    assert summary["chosen_k"] == reference.chosen_k
    ours = [c["silhouette"] for c in summary["k_search"]]
    theirs = [c.silhouette for c in reference.search.candidates]
    np.testing.assert_allclose(ours, theirs, atol=1e-6)
    assert summary["fit_all_rows"]["done"] is (setting == "sampled")

    written = pq.read_table(out)  # the whole dataset, every part
    assert written.num_rows == ROWS
    assert written.column_names[-1] == "cluster_id"
    assert written.schema.field("cluster_id").type == pa.int32()
    # Input types survive (dates stay dates), as in the single-machine output.
    source = pq.read_schema(data["single"])
    assert written.schema.field("signup_date").type == source.field("signup_date").type
    # Row order is not promised across partitions: join on the customer id.
    ids = written.column("customer_id").to_numpy()
    order = np.argsort(ids)
    ref_ids = pq.read_table(data["single"], columns=["customer_id"]).column(0).to_numpy()
    ref_order = np.argsort(ref_ids)
    labels = written.column("cluster_id").to_numpy()[order]
    assert adjusted_rand_score(reference.labels[ref_order], labels) >= 0.99
    assert sorted(summary["cluster_sizes"]) == sorted(
        np.bincount(reference.labels, minlength=reference.chosen_k).tolist())
    assert summary["workers"]["n_workers"] == 2
    saved = json.loads((tmp_path / "dask" / "summary.json").read_text())
    assert saved["chosen_k"] == summary["chosen_k"]
    assert saved["explanation"]["available"] is True
    # profiles, rules and the report as on one machine (profiles from a bounded sample)
    assert [c["size"] for c in saved["clusters"]] == summary["cluster_sizes"]
    assert all(c["description"] and c["rule"]["text"] for c in saved["clusters"])
    model = SegmentationModel.load(tmp_path / "models" / "m", "m")  # saved like a local fit
    assert model.k == summary["chosen_k"] and summary["outputs"]["model"]
    report = (tmp_path / "dask" / "report.html").read_text()
    assert "Cluster profiles" in report and report.count("data:image/png;base64,") == 6
    # nothing but the dataset is left beside it (no staging or backup folders)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".labelled")] == []


def _fails_in_the_second_half(frame, *args):  # noqa: ANN001, ANN202
    """A stand-in for ``_label_partition``: the first partitions are labelled, a later one
    fails like a lost worker (no call back into the real function: pickled by reference it
    would resolve to this patched one)."""
    if int(frame["customer_id"].iloc[0]) >= ROWS // 2:
        raise RuntimeError("worker lost")
    return frame.assign(cluster_id=np.zeros(len(frame), dtype=np.int32))


def test_failure_while_writing_leaves_no_dataset(
    tmp_path: Path, data: dict[str, Path], client: distributed.Client,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(dask_output, "label_partition", _fails_in_the_second_half)
    out = tmp_path / "labelled"
    with pytest.raises(RuntimeError, match="worker lost"):
        _run_on_dask(_config(tmp_path, data["single"], "dask", num_clusters=3), client,
                             input_path=str(data["dataset"]), output_path=str(out))
    assert list(tmp_path.glob("*labelled*")) == []
    assert list(tmp_path.glob(".*labelled*")) == []
    assert not (tmp_path / "dask" / "summary.json").exists()


def test_failed_swap_keeps_the_previous_dataset(
    tmp_path: Path, data: dict[str, Path], client: distributed.Client,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    out = tmp_path / "labelled"
    config = _config(tmp_path, data["single"], "dask", num_clusters=3)
    _run_on_dask(config, client, input_path=str(data["dataset"]), output_path=str(out))
    before = sorted(p.name for p in out.iterdir())

    from fsspec.implementations.local import LocalFileSystem

    real_move = LocalFileSystem.mv

    def failing(fs: LocalFileSystem, source: str, target: str, **kwargs: object) -> None:
        if ".tmp-" in str(source):  # the new dataset cannot be moved in; the backup move worked
            raise OSError("disk full")
        real_move(fs, source, target, **kwargs)

    monkeypatch.setattr(LocalFileSystem, "mv", failing)
    with pytest.raises(OSError, match="disk full"):
        _run_on_dask(config, client, input_path=str(data["dataset"]),
                             output_path=str(out))
    assert sorted(p.name for p in out.iterdir()) == before
    assert pq.read_table(out).num_rows == ROWS
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".labelled")] == []
    assert not list(tmp_path.glob("labelled.old-*"))


def test_input_with_cluster_id_is_refused(tmp_path: Path, client: distributed.Client) -> None:
    folder = tmp_path / "bad"
    folder.mkdir()
    pq.write_table(pa.table({"x": np.arange(50.0), "cluster_id": np.zeros(50)}),
                   folder / "part-0.parquet")
    with pytest.raises(InputDataError, match="cluster_id"):
        _run_on_dask(_config(tmp_path, tmp_path / "x.parquet", "dask"), client,
                             input_path=str(folder), output_path=str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("setting", sorted(SETTINGS))
def test_both_engines_write_summaries_with_the_same_fields(
    setting: str, tmp_path: Path, data: dict[str, Path], client: distributed.Client
) -> None:
    values = SETTINGS[setting]
    run(_config(tmp_path, data["single"], "single", **values))
    _run_on_dask(_config(tmp_path, data["single"], "dask", **values), client,
                 input_path=str(data["dataset"]), output_path=str(tmp_path / "labelled"))
    single = json.loads((tmp_path / "single" / "summary.json").read_text())
    on_dask = json.loads((tmp_path / "dask" / "summary.json").read_text())
    assert set(single) == set(on_dask)
    assert (single["engine"], on_dask["engine"]) == ("local", "dask")
    # the fields the Dask summary used to lack are filled on both
    for summary in (single, on_dask):
        for name in ("started_at", "finished_at", "versions", "stages_device",
                     "values_imputed", "profile", "explanation", "k_search", "silhouette"):
            assert summary[name] is not None, name
        assert set(summary["profile"]) == set(single["profile"])
        assert summary["finished_at"] >= summary["started_at"]
    assert on_dask["values_imputed"] == single["values_imputed"]
    # the report shows the run's date on both engines
    for name in ("single", "dask"):
        report = (tmp_path / name / "report.html").read_text()
        assert single["started_at"][:10] in report


def test_client_from_options() -> None:
    assert dask_cluster.client_from_options(None, False, None) is None
    with pytest.raises(UsageError, match="exclude each other"):
        dask_cluster.client_from_options("tcp://127.0.0.1:1", True, None)


def test_k8s_manifest_is_a_dask_cluster() -> None:
    """kubernetes-validate knows no CRDs: check the DaskCluster fields the operator requires."""
    docs = [d for d in yaml.safe_load_all(MANIFEST.read_text()) if d]
    cluster = next(d for d in docs if d["kind"] == "DaskCluster")
    assert cluster["apiVersion"] == "kubernetes.dask.org/v1"
    assert cluster["metadata"]["name"]
    spec = cluster["spec"]
    worker = spec["worker"]
    assert worker["replicas"] >= 1
    (container,) = worker["spec"]["containers"]
    assert "/autoseg:" in container["image"]
    assert container["command"] == ["dask", "worker"]  # the image's ENTRYPOINT is autoseg
    assert "$(DASK_WORKER_NAME)" in container["args"]
    scheduler = spec["scheduler"]
    assert scheduler["spec"]["containers"][0]["image"] == container["image"]
    ports = {p["name"]: p["port"] for p in scheduler["service"]["ports"]}
    assert ports["tcp-comm"] == 8786
    assert scheduler["service"]["selector"] == {
        "dask.org/cluster-name": cluster["metadata"]["name"], "dask.org/component": "scheduler"}
    # The driver Job connects to the Service the operator creates: <name>-scheduler.
    job = next(d for d in docs if d["kind"] == "Job")
    args = job["spec"]["template"]["spec"]["containers"][0]["args"]
    address = args[args.index("--dask-scheduler") + 1]
    assert address == f"tcp://{cluster['metadata']['name']}-scheduler:8786"


# --------------------------------------------------------------------------- table outputs


def _duckdb_rows(path: Path, table: str) -> pa.Table:
    import duckdb

    with duckdb.connect(str(path), read_only=True) as conn:
        return conn.sql(f"SELECT * FROM {table}").to_arrow_table()


def test_labelled_rows_go_to_a_table_like_the_single_machine_run(
    tmp_path: Path, data: dict[str, Path], client: distributed.Client
) -> None:
    values = {**SETTINGS["sampled"], "export_feature_importance": "out.importance",
              "export_segment_rules": "out.rules"}
    reference = run(_config(tmp_path, data["single"], "single", output_table="out.single",
                            **values))
    summary = _run_on_dask(
        _config(tmp_path, data["single"], "dask", output_table="out.labelled", **values),
        client, input_path=str(data["dataset"]), output_path=None)

    store = tmp_path / "store.duckdb"
    ours, theirs = _duckdb_rows(store, "out.labelled"), _duckdb_rows(store, "out.single")
    assert ours.num_rows == ROWS
    assert ours.schema == theirs.schema  # every column type as the single-machine output
    ours = ours.sort_by("customer_id").column("cluster_id").to_numpy()
    theirs = theirs.sort_by("customer_id").column("cluster_id").to_numpy()
    assert adjusted_rand_score(theirs, ours) >= 0.99
    assert summary["chosen_k"] == reference.chosen_k
    assert _duckdb_rows(store, "out.importance").num_rows > 0
    assert _duckdb_rows(store, "out.rules").column("cluster_id").to_pylist() == list(
        range(summary["chosen_k"]))
    assert summary["outputs"]["output_table"] == "out.labelled"
    assert summary["outputs"]["dataset"] is None
    assert not list(tmp_path.glob(".*tmp-*"))  # no dataset staged beside anything


def test_a_failure_while_streaming_keeps_the_old_table_and_dataset(
    tmp_path: Path, data: dict[str, Path], client: distributed.Client,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    out = tmp_path / "labelled"
    config = _config(tmp_path, data["single"], "dask", num_clusters=3,
                     output_table="out.labelled")
    _run_on_dask(config, client, input_path=str(data["dataset"]),
                         output_path=str(out))
    table_before = _duckdb_rows(tmp_path / "store.duckdb", "out.labelled")
    files_before = sorted(p.name for p in out.iterdir())
    summary_before = (tmp_path / "dask" / "summary.json").read_text()

    real_chunks = dask_output.StagedDataset.chunks

    def failing_chunks(self: dask_output.StagedDataset):  # noqa: ANN202
        yield next(real_chunks(self))  # one real part arrives, then the storage fails
        raise OSError("connection to the object store lost")

    monkeypatch.setattr(dask_output.StagedDataset, "chunks", failing_chunks)
    with pytest.raises(OSError, match="object store lost"):
        _run_on_dask(_config(tmp_path, data["single"], "dask", num_clusters=4,
                                     output_table="out.labelled"),
                             client, input_path=str(data["dataset"]), output_path=str(out))
    assert _duckdb_rows(tmp_path / "store.duckdb", "out.labelled") == table_before
    assert sorted(p.name for p in out.iterdir()) == files_before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".labelled")] == []
    assert (tmp_path / "dask" / "summary.json").read_text() == summary_before


def test_a_failing_partition_leaves_a_new_table_unwritten(
    tmp_path: Path, data: dict[str, Path], client: distributed.Client,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(dask_output, "label_partition", _fails_in_the_second_half)
    with pytest.raises(RuntimeError, match="worker lost"):
        _run_on_dask(_config(tmp_path, data["single"], "dask", num_clusters=3,
                                     output_table="out.labelled"),
                             client, input_path=str(data["dataset"]), output_path=None)
    store = tmp_path / "store.duckdb"
    if store.exists():
        import duckdb

        with duckdb.connect(str(store), read_only=True) as conn:
            assert conn.sql("SELECT table_name FROM information_schema.tables").fetchall() == []


def test_nothing_to_write_is_a_usage_error(tmp_path: Path, data: dict[str, Path],
                                           client: distributed.Client) -> None:
    with pytest.raises(UsageError, match="give --dask-output or --output-table"):
        _run_on_dask(_config(tmp_path, data["single"], "dask"), client,
                             input_path=str(data["dataset"]), output_path=None)


# --------------------------------------------------------------------------- models, ids, drift


def test_reuse_stable_ids_and_drift_as_on_one_machine(
    tmp_path: Path, data: dict[str, Path], client: distributed.Client
) -> None:
    values = {**SETTINGS["sampled"], "model_name": "m"}
    first_out, second_out, reuse_out = (tmp_path / n for n in ("first", "second", "reused"))
    first = _run_on_dask(_config(tmp_path, data["single"], "dask1", **values), client,
                                 input_path=str(data["dataset"]), output_path=str(first_out))
    # a refit under the same model name keeps every cluster's id
    second = _run_on_dask(_config(tmp_path, data["single"], "dask2", **values), client,
                                  input_path=str(data["dataset"]), output_path=str(second_out))
    assert second["cluster_ids"]["matched"] is True
    assert second["cluster_ids"]["kept"] == list(range(first["chosen_k"]))
    # reuse: no fit, the saved centroids label the rows, drift is reported
    reused = _run_on_dask(
        _config(tmp_path, data["single"], "dask3", **values, force_refit=False), client,
        input_path=str(data["dataset"]), output_path=str(reuse_out))
    assert reused["refit"] is False and not reused["k_search"]
    assert reused["chosen_reason"] == "reused saved model 'm'"
    assert reused["drift"]["warnings"] == []  # the same rows: nothing drifted
    assert reused["outputs"]["model"] is None  # the saved model is not rewritten
    labels = {}
    for name, folder in (("first", first_out), ("second", second_out), ("reused", reuse_out)):
        table = pq.read_table(folder).sort_by("customer_id")
        labels[name] = table.column("cluster_id").to_numpy()
    assert (labels["first"] == labels["second"]).mean() >= 0.99  # same ids, not just same sets
    assert (labels["reused"] == labels["second"]).all()
    # the single-machine run can reuse the model the Dask run saved
    local = run(_config(tmp_path, data["single"], "local", model_name="m", force_refit=False,
                        output_table="out.local"))
    ours = _duckdb_rows(tmp_path / "store.duckdb", "out.local").sort_by("customer_id")
    assert (ours.column("cluster_id").to_numpy() == labels["second"]).all()
    assert local.summary["refit"] is False


def test_reuse_refuses_a_dataset_without_the_model_columns(
    tmp_path: Path, data: dict[str, Path], client: distributed.Client
) -> None:
    _run_on_dask(_config(tmp_path, data["single"], "dask", num_clusters=3,
                                 model_name="m"), client,
                         input_path=str(data["dataset"]), output_path=str(tmp_path / "o1"))
    folder = tmp_path / "narrow"
    folder.mkdir()
    pq.write_table(pq.read_table(data["single"]).drop_columns(["annual_spend"]),
                   folder / "part-0.parquet")
    with pytest.raises(InputDataError, match="column 'annual_spend' used by the saved model"):
        _run_on_dask(_config(tmp_path, data["single"], "dask", model_name="m",
                                     force_refit=False), client,
                             input_path=str(folder), output_path=str(tmp_path / "o2"))
    assert not (tmp_path / "o2").exists()


def test_prefer_stable_chooses_as_on_one_machine(
    tmp_path: Path, data: dict[str, Path], client: distributed.Client
) -> None:
    values = {**SETTINGS["sampled"], "prefer_stable": True}
    reference = run(_config(tmp_path, data["single"], "single", **values))
    summary = _run_on_dask(_config(tmp_path, data["single"], "dask", **values), client,
                                   input_path=str(data["dataset"]),
                                   output_path=str(tmp_path / "o"))
    assert summary["chosen_k"] == reference.chosen_k
    assert summary["chosen_reason"] == reference.search.reason
    ours = {c["k"]: c["stability"] for c in summary["k_search"]}
    theirs = {c.k: c.stability for c in reference.search.candidates}
    assert ours == pytest.approx(theirs)


def test_silhouette_of_the_final_fit_is_measured_against_every_row(
    tmp_path: Path, data: dict[str, Path], client: distributed.Client
) -> None:
    from sklearn.metrics import silhouette_score

    out = tmp_path / "o"
    summary = _run_on_dask(
        _config(tmp_path, data["single"], "dask", model_name="m", **SETTINGS["sampled"]),
        client, input_path=str(data["dataset"]), output_path=str(out))
    estimate = summary["silhouette"]["all_rows"]
    assert estimate["rows"] == ROWS and estimate["points_scored"] == 2000
    model = SegmentationModel.load(tmp_path / "models" / "m", "m")
    table = pq.read_table(out)
    matrix, _ = model.prepare(table.to_pandas())
    exact = silhouette_score(matrix, table.column("cluster_id").to_numpy())
    assert 0 < estimate["stderr"] < 0.02
    assert abs(estimate["score"] - exact) <= 4 * estimate["stderr"] + 1e-4
    report = (tmp_path / "dask" / "report.html").read_text()
    assert (f"silhouette against every row is <b>{estimate['score']:.3f}</b> \u00b1 "
            f"{estimate['stderr']:.3f} (2,000 sampled points)") in report


# --------------------------------------------------------------------------- Treasure Data


def test_labelled_rows_and_audience_on_treasure_data(
    tmp_path: Path, client: distributed.Client
) -> None:
    """The real pytd/td-client and our CDP client against the loopback emulators: the rows
    are streamed partition by partition into TD, then one segment per cluster is created."""
    try:
        from emulators.cdp_api import start_cdp_emulator
        from emulators.td_api import fast_client_sleeps, start_td_emulator
    except ImportError:  # tests/ imported as a package
        from tests.emulators.cdp_api import start_cdp_emulator
        from tests.emulators.td_api import fast_client_sleeps, start_td_emulator

    apikey = "1/SENTINEL-dask-key-5b1e0c9d"
    rows = 400
    frame, _ = make_customers(rows, seed=5)
    folder = tmp_path / "customers"
    folder.mkdir()
    table = to_arrow(frame.drop(columns=["last_feedback"]))
    for i in range(4):
        pq.write_table(table.slice(i * 100, 100), folder / f"part-{i}.parquet")
    td = start_td_emulator(apikey=apikey, databases=["shop"])
    cdp = start_cdp_emulator(apikey=apikey, td=td)
    cdp.seed_parent_segment("Customers 360")
    try:
        with fast_client_sleeps():
            config = build_config({
                "input_table": str(folder), "dask": "local", "store": "td", "td_engine": "hive",
                "output_table": "shop.segments", "output_dir": str(tmp_path / "out"),
                "max_clusters": 4, "kmeans_restarts": 3, "audience_name": "Customers 360",
                "foreign_key": "customer_id", "rowid_column": "customer_id",
                "cdp_endpoint": cdp.endpoint, "export_feature_importance": "importance",
            })
            environ = {"TD_API_KEY": apikey, "TD_API_SERVER": td.endpoint}
            summary = _run_on_dask(config, client, input_path=str(folder),
                                           output_path=None, environ=environ)
        written = td.read_table("shop", "segments")
        assert len(written) == rows
        assert sorted(written["cluster_id"].unique()) == list(range(summary["chosen_k"]))
        assert sorted(written["customer_id"]) == sorted(frame["customer_id"])
        assert len(td.read_table("shop", "importance")) > 0
        assert not [t for t in td.table_names("shop") if "tmp" in t or "staging" in t]
        assert len(cdp.segments()) == summary["chosen_k"]
        assert summary["audience"]["created"] == summary["chosen_k"]
        text = (tmp_path / "out" / "summary.json").read_text()
        assert apikey not in text and apikey.split("/")[1] not in text
    finally:
        cdp.stop()
        td.stop()


# --------------------------------------------------------------------------- what it refuses


def test_output_must_not_overlap_the_input_or_other_files(
    tmp_path: Path, data: dict[str, Path], client: distributed.Client
) -> None:
    config = _config(tmp_path, data["single"], "dask", num_clusters=3)
    dataset = data["dataset"]
    for output in (dataset, dataset.parent, dataset / "labelled"):
        with pytest.raises(UsageError, match="overlaps the input dataset"):
            _run_on_dask(config, client, input_path=str(dataset),
                                 output_path=str(output))
    folder = tmp_path / "reports"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep me")
    with pytest.raises(UsageError, match=r"holds 'notes.txt', which is not part of an earlier "
                                         r"autoseg output"):
        _run_on_dask(config, client, input_path=str(dataset), output_path=str(folder))
    assert (folder / "notes.txt").read_text() == "keep me"
    # Parquet files that are not an earlier output's parts are not ours to replace either
    lake = tmp_path / "lake"
    (lake / "orders").mkdir(parents=True)
    pq.write_table(pa.table({"x": [1]}), lake / "orders" / "part.0.parquet")
    mine = tmp_path / "mine"
    mine.mkdir()
    pq.write_table(pa.table({"x": [1]}), mine / "important.parquet")
    for folder, shown in ((lake, "orders/part.0.parquet"), (mine, "important.parquet")):
        with pytest.raises(UsageError, match=f"holds '{shown}'"):
            _run_on_dask(config, client, input_path=str(dataset),
                                 output_path=str(folder))
    assert (lake / "orders" / "part.0.parquet").exists() and (mine / "important.parquet").exists()
    assert len(list(dataset.glob("*.parquet"))) == PARTITIONS
    assert not (tmp_path / "dask" / "summary.json").exists()


def test_append_with_a_dataset_output_is_refused(
    tmp_path: Path, data: dict[str, Path], client: distributed.Client
) -> None:
    config = _config(tmp_path, data["single"], "dask", output_table="out.t",
                     output_mode="append")
    with pytest.raises(UsageError, match="--output-mode=append adds rows to --output-table "
                                         "only"):
        _run_on_dask(config, client, input_path=str(data["dataset"]),
                             output_path=str(tmp_path / "o"))
    summary = _run_on_dask(config, client, input_path=str(data["dataset"]),
                                   output_path=None)  # the table alone may be appended to
    assert summary["outputs"]["output_table"] == "out.t"


def test_gpu_without_a_gpu_is_refused_as_on_one_machine(
    tmp_path: Path, data: dict[str, Path], client: distributed.Client
) -> None:
    with pytest.raises(UsageError, match="--device=gpu: no usable GPU"):
        _run_on_dask(_config(tmp_path, data["single"], "dask", device="gpu"), client,
                             input_path=str(data["dataset"]), output_path=str(tmp_path / "o"))


def test_files_with_different_schemas_are_refused_before_any_work(
    tmp_path: Path, client: distributed.Client
) -> None:
    config = _config(tmp_path, tmp_path / "x.parquet", "dask", num_clusters=2)
    table = to_arrow(make_customers(300)[0])
    cases = {
        "missing": (table.slice(150).drop_columns(["age"]), "lacks column 'age'"),
        "retyped": (table.slice(150).set_column(
            table.schema.get_field_index("customer_id"), "customer_id",
            pa.array([f"C{i}" for i in range(150)])),
            r"column 'customer_id' is string in input file 'part-1.parquet' but int64"),
    }
    for name, (second, message) in cases.items():
        folder = tmp_path / name
        folder.mkdir()
        pq.write_table(table.slice(0, 150), folder / "part-0.parquet")
        pq.write_table(second, folder / "part-1.parquet")
        with pytest.raises(InputDataError, match=message):
            _run_on_dask(config, client, input_path=str(folder),
                                 output_path=str(tmp_path / f"out-{name}"))
        assert not (tmp_path / f"out-{name}").exists()


# --------------------------------------------------------------------------- dataset shapes


def test_datasets_written_by_dask_and_hive_partitions(
    tmp_path: Path, client: distributed.Client
) -> None:
    """A Dask-written dataset (with its stored index) and a hive-partitioned one: the output
    has exactly the frame's columns, the partition column included."""
    frame = make_customers(600)[0]
    written = tmp_path / "by-dask"
    dd.from_pandas(frame, npartitions=3).to_parquet(written)  # stores __null_dask_index__
    hive = tmp_path / "hive"
    pq.write_to_dataset(to_arrow(frame), hive, partition_cols=["region"])
    config = _config(tmp_path, tmp_path / "x.parquet", "dask", num_clusters=3,
                     output_table="out.t")
    for folder in (written, hive):
        out = tmp_path / f"{folder.name}-out"
        _run_on_dask(config, client, input_path=str(folder), output_path=str(out))
        result = pq.read_table(out)
        assert result.num_rows == 600
        assert "__null_dask_index__" not in result.column_names
        assert set(result.column_names) == {*frame.columns, "cluster_id"}
        assert sorted(result.column("region").to_pylist()) == sorted(frame["region"])


def test_table_rows_keep_the_input_order_with_many_partitions(
    tmp_path: Path, client: distributed.Client
) -> None:
    folder = tmp_path / "many"
    folder.mkdir()
    table = to_arrow(make_customers(1200)[0])
    for i in range(12):  # part-00 .. part-11: "part.10" sorts before "part.2" as text
        pq.write_table(table.slice(i * 100, 100), folder / f"part-{i:02d}.parquet")
    _run_on_dask(_config(tmp_path, tmp_path / "x.parquet", "dask", num_clusters=3,
                                 output_table="out.t"), client,
                         input_path=str(folder), output_path=str(tmp_path / "o"))
    ids = _duckdb_rows(tmp_path / "store.duckdb", "out.t").column("customer_id").to_pylist()
    assert ids == table.column("customer_id").to_pylist()


def test_missing_counts_are_exact_when_the_profile_reads_a_sample(
    tmp_path: Path, data: dict[str, Path], client: distributed.Client,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sampling, "DESCRIBE_ROWS", 1000)  # describe 1000 of the 4000 rows
    summary = _run_on_dask(_config(tmp_path, data["single"], "dask", num_clusters=3),
                                   client, input_path=str(data["dataset"]),
                                   output_path=str(tmp_path / "o"))
    truth = pq.read_table(data["single"]).to_pandas().isna().sum()
    profiles = {c["name"]: c for c in summary["profile"]["column_profiles"]}
    assert summary["profile"]["sampled_rows"] == 1000
    assert any(truth[name] > 0 for name in profiles)
    assert {name: c["missing"] for name, c in profiles.items()} == {
        name: int(truth[name]) for name in profiles}


def test_all_rows_silhouette_points_are_capped_on_large_tables() -> None:
    assert all_rows_silhouette_points(4_000) == 2_000
    assert all_rows_silhouette_points(2_000_000) == 2_000
    assert all_rows_silhouette_points(4_000_000) == 1_000
    assert all_rows_silhouette_points(100_000_000) == 500


def test_inputs_dask_reads_are_read_like_dask(tmp_path: Path, client: distributed.Client) -> None:
    """A stored named index stays a column; other files in the folder are skipped; string and
    large_string files unify; a corrupt file is a one-line error."""
    frame = make_customers(400)[0]
    indexed = tmp_path / "indexed"
    dd.from_pandas(frame.set_index("customer_id"), npartitions=2).to_parquet(indexed)
    (indexed / "README.txt").write_text("not data")
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    table = to_arrow(frame)
    pq.write_table(table.slice(0, 200), mixed / "a.parquet")
    region = table.schema.get_field_index("region")
    pq.write_table(table.slice(200).set_column(
        region, pa.field("region", pa.large_string()),
        table.column("region").slice(200).cast(pa.large_string())), mixed / "b.parquet")
    config = _config(tmp_path, tmp_path / "x.parquet", "dask", num_clusters=3)
    for folder in (indexed, mixed):
        out = tmp_path / f"{folder.name}-out"
        _run_on_dask(config, client, input_path=str(folder), output_path=str(out))
        result = pq.read_table(out)
        assert result.num_rows == 400
        assert sorted(result.column("customer_id").to_pylist()) == sorted(frame["customer_id"])
    broken = tmp_path / "broken"
    broken.mkdir()
    pq.write_table(table, broken / "a.parquet")
    (broken / "b.parquet").write_bytes(b"PAR1 not really parquet")
    with pytest.raises(InputDataError, match="cannot be read as Parquet"):
        _run_on_dask(config, client, input_path=str(broken),
                             output_path=str(tmp_path / "broken-out"))
    assert not (tmp_path / "broken-out").exists()


def test_object_store_swap_failures_restore_the_previous_dataset(
    tmp_path: Path, data: dict[str, Path], client: distributed.Client,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """On an object store (fsspec's memory:// here) a move is copy + delete: a copy that fails
    part-way, or a table write that fails after the swap, leaves the previous dataset whole."""
    import fsspec
    from fsspec.implementations.memory import MemoryFileSystem

    fs = fsspec.filesystem("memory")
    output = f"memory://seg-{tmp_path.name}/labelled"
    config = _config(tmp_path, data["single"], "dask", num_clusters=3,
                     output_table="out.labelled")
    _run_on_dask(config, client, input_path=str(data["dataset"]), output_path=output)
    root = output.removeprefix("memory:/")
    before = {key: fs.cat(key) for key in fs.find(root)}
    assert len(before) == PARTITIONS

    real_copy = MemoryFileSystem.copy

    def half_copy(self: MemoryFileSystem, path1: object, path2: object, **kwargs: object) -> None:
        sources, targets = list(path1), list(path2)  # type: ignore[call-overload]
        if ".tmp-" in sources[0]:  # moving the new dataset in: half arrives, then it fails
            real_copy(self, sources[:2], targets[:2], **kwargs)
            raise OSError("connection reset")
        real_copy(self, path1, path2, **kwargs)

    monkeypatch.setattr(MemoryFileSystem, "copy", half_copy)
    changed = _config(tmp_path, data["single"], "dask", num_clusters=4,
                      output_table="out.labelled")
    with pytest.raises(OSError, match="connection reset"):
        _run_on_dask(changed, client, input_path=str(data["dataset"]),
                             output_path=output)
    assert {key: fs.cat(key) for key in fs.find(root)} == before
    monkeypatch.setattr(MemoryFileSystem, "copy", real_copy)

    real_chunks = dask_output.StagedDataset.chunks

    def failing_chunks(self: dask_output.StagedDataset):  # noqa: ANN202
        yield next(real_chunks(self))  # the dataset is in place; the table write then fails
        raise OSError("store went away")

    monkeypatch.setattr(dask_output.StagedDataset, "chunks", failing_chunks)
    with pytest.raises(OSError, match="store went away"):
        _run_on_dask(changed, client, input_path=str(data["dataset"]),
                             output_path=output)
    assert {key: fs.cat(key) for key in fs.find(root)} == before
    leftovers = [k for k in fs.find(f"/seg-{tmp_path.name}") if ".tmp-" in k or ".old-" in k]
    assert leftovers == []
