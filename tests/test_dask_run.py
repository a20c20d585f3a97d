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

from autoseg import dask_run  # noqa: E402
from autoseg.config import build_config  # noqa: E402
from autoseg.demo import make_customers, to_arrow  # noqa: E402
from autoseg.errors import InputDataError, UsageError  # noqa: E402
from autoseg.model import SegmentationModel  # noqa: E402
from autoseg.pipeline import run  # noqa: E402

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
    summary = dask_run.run_on_dask(_config(tmp_path, data["single"], "dask", model_name="m",
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


def test_failure_while_writing_leaves_no_dataset(
    tmp_path: Path, data: dict[str, Path], client: distributed.Client,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def failing(frame, *args):  # noqa: ANN001, ANN202
        # The first partitions are written, a later one fails (no call back into the real
        # function: pickled by reference it would resolve to this patched one).
        if int(frame["customer_id"].iloc[0]) >= ROWS // 2:
            raise RuntimeError("worker lost")
        return frame.assign(cluster_id=np.zeros(len(frame), dtype=np.int32))

    monkeypatch.setattr(dask_run, "_label_partition", failing)
    out = tmp_path / "labelled"
    with pytest.raises(RuntimeError, match="worker lost"):
        dask_run.run_on_dask(_config(tmp_path, data["single"], "dask", num_clusters=3), client,
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
    dask_run.run_on_dask(config, client, input_path=str(data["dataset"]), output_path=str(out))
    before = sorted(p.name for p in out.iterdir())

    def failing(*args: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(dask_run, "_rename_into_place", failing)
    with pytest.raises(OSError, match="disk full"):
        dask_run.run_on_dask(config, client, input_path=str(data["dataset"]),
                             output_path=str(out))
    assert sorted(p.name for p in out.iterdir()) == before
    assert pq.read_table(out).num_rows == ROWS
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".labelled")] == []


def test_input_with_cluster_id_is_refused(tmp_path: Path, client: distributed.Client) -> None:
    folder = tmp_path / "bad"
    folder.mkdir()
    pq.write_table(pa.table({"x": np.arange(50.0), "cluster_id": np.zeros(50)}),
                   folder / "part-0.parquet")
    with pytest.raises(InputDataError, match="cluster_id"):
        dask_run.run_on_dask(_config(tmp_path, tmp_path / "x.parquet", "dask"), client,
                             input_path=str(folder), output_path=str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_client_from_options() -> None:
    assert dask_run.client_from_options(None, False, None) is None
    with pytest.raises(UsageError, match="exclude each other"):
        dask_run.client_from_options("tcp://127.0.0.1:1", True, None)


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
