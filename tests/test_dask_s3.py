"""The Dask run on object storage: ``s3://`` datasets in and out, against a loopback S3.

moto's standalone server (``ThreadedMotoServer``) is a real S3 HTTP endpoint on 127.0.0.1;
s3fs, the fsspec S3 filesystem the Dask engine uses for ``s3://`` URLs, talks to it over HTTP
exactly as it would to AWS. The endpoint reaches every filesystem instance through fsspec's
configuration (``fsspec.config.conf["s3"]``, applied whenever an ``S3FileSystem`` is created),
and the fake credentials through the environment; the LocalCluster runs in-process
(``processes=False``), so its workers see both. Both are set for this module only. (Worker
*processes* would need the endpoint in their environment before they start, e.g.
``FSSPEC_S3_ENDPOINT_URL``, which fsspec reads when it is imported.)
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

dd = pytest.importorskip("dask.dataframe")
distributed = pytest.importorskip("distributed")
s3fs = pytest.importorskip("s3fs")
moto_server = pytest.importorskip("moto.server")

import fsspec  # noqa: E402
from sklearn.metrics import adjusted_rand_score  # noqa: E402

from autoseg import pipeline  # noqa: E402
from autoseg.config import RunConfig, build_config  # noqa: E402
from autoseg.dask import output as dask_output  # noqa: E402
from autoseg.demo import make_customers, to_arrow  # noqa: E402
from autoseg.errors import InputDataError  # noqa: E402
from autoseg.pipeline import run  # noqa: E402


def _run_on_dask(*args: object, **kwargs: object):  # noqa: ANN202
    """The summary of a Dask run on the test's client."""
    return pipeline.run_on_dask(*args, **kwargs).summary  # type: ignore[arg-type]


ROWS = 4000
PARTITIONS = 4
# Fewer restarts and k than the defaults keep the runs fast; both engines get the same values.
FAST = {"kmeans_restarts": 2, "max_clusters": 5}


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """A moto S3 server on a free loopback port, and s3fs pointed at it (this module only)."""
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("AWS_ACCESS_KEY_ID", "testing")
            mp.setenv("AWS_SECRET_ACCESS_KEY", "testing")
            mp.setenv("AWS_DEFAULT_REGION", "us-east-1")
            for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL",
                         "AWS_ENDPOINT_URL_S3"):
                mp.delenv(name, raising=False)
            mp.setitem(fsspec.config.conf, "s3", {"endpoint_url": endpoint})
            s3fs.S3FileSystem.clear_instance_cache()
            try:
                yield endpoint
            finally:
                s3fs.S3FileSystem.clear_instance_cache()  # no instance keeps the endpoint
    finally:
        server.stop()


@pytest.fixture(scope="module")
def client(s3_endpoint: str) -> Iterator[distributed.Client]:
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster) as c:
        yield c


@pytest.fixture(scope="module")
def table() -> pa.Table:
    frame, _ = make_customers(ROWS)
    return to_arrow(frame)


@pytest.fixture(scope="module")
def single(table: pa.Table, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo table as one local Parquet file, for the single-machine reference run."""
    path = tmp_path_factory.mktemp("s3-reference") / "customers.parquet"
    pq.write_table(table, path)
    return path


def _fs() -> fsspec.AbstractFileSystem:
    """A fresh S3 filesystem with no listing cache: what the bucket really holds."""
    return s3fs.S3FileSystem(skip_instance_cache=True, use_listings_cache=False)


def _upload(table: pa.Table, fs: fsspec.AbstractFileSystem, prefix: str, parts: int) -> None:
    step = len(table) // parts
    for i in range(parts):
        with fs.open(f"{prefix}/part-{i:03d}.parquet", "wb") as f:
            pq.write_table(table.slice(i * step, step), f)


@pytest.fixture
def bucket(s3_endpoint: str, table: pa.Table) -> str:
    """A new bucket holding the demo table as PARTITIONS Parquet files under ``customers/``."""
    name = f"autoseg-{uuid.uuid4().hex[:8]}"
    fs = _fs()
    fs.mkdir(name)
    _upload(table, fs, f"{name}/customers", PARTITIONS)
    return name


def _config(tmp_path: Path, input_table: str | Path, name: str, **values: object) -> RunConfig:
    return build_config({
        "input_table": str(input_table),
        "store": f"duckdb:{tmp_path / 'store.duckdb'}",
        "output_dir": str(tmp_path / name),
        "model_dir": str(tmp_path / "models"),
        **values,
    })


def _dask_config(tmp_path: Path, bucket: str, name: str = "dask", **values: object) -> RunConfig:
    return _config(tmp_path, f"s3://{bucket}/customers/", name, dask="local", **values)


def _objects(bucket: str) -> dict[str, str]:
    """Every object key in the bucket with its ETag (its content's checksum)."""
    found = _fs().find(bucket, detail=True)
    return {key.split("/", 1)[1]: info["ETag"] for key, info in found.items()}


def _leftovers(bucket: str, name: str) -> list[str]:
    """Staging (``.name.tmp-*``) and backup (``name.old-*``) objects of dataset ``name``."""
    return [key for key in _objects(bucket)
            if key.startswith(f".{name}.tmp-") or key.startswith(f"{name}.old-")]


def test_s3_dataset_in_and_out_matches_single_machine(
    tmp_path: Path, bucket: str, single: Path, client: distributed.Client
) -> None:
    reference = run(_config(tmp_path, single, "single", **FAST))
    summary = _run_on_dask(_dask_config(tmp_path, bucket, **FAST), client,
                                   input_path=f"s3://{bucket}/customers/",
                                   output_path=f"s3://{bucket}/segmented/")

    assert summary["chosen_k"] == reference.chosen_k
    assert summary["rows_read"] == ROWS and summary["partitions"] == PARTITIONS
    written = pq.read_table(f"{bucket}/segmented", filesystem=_fs())
    assert written.num_rows == ROWS
    assert written.column_names[-1] == "cluster_id"
    assert written.schema.field("cluster_id").type == pa.int32()
    source = pq.read_schema(single)
    for field in source:  # every input column keeps its type (dates stay dates)
        assert written.schema.field(field.name).type == field.type, field.name
    assert pa.types.is_date(written.schema.field("signup_date").type)
    # Row order is not promised across partitions: join on the customer id.
    ids = written.column("customer_id").to_numpy()
    ref_ids = pq.read_table(single, columns=["customer_id"]).column(0).to_numpy()
    labels = written.column("cluster_id").to_numpy()[np.argsort(ids)]
    assert adjusted_rand_score(reference.labels[np.argsort(ref_ids)], labels) >= 0.99
    assert _leftovers(bucket, "segmented") == []
    assert all(key.startswith(("customers/", "segmented/")) for key in _objects(bucket))


def test_second_run_replaces_the_s3_dataset(
    tmp_path: Path, bucket: str, table: pa.Table, client: distributed.Client
) -> None:
    output = f"s3://{bucket}/segmented/"
    _run_on_dask(_dask_config(tmp_path, bucket, num_clusters=3), client,
                         input_path=f"s3://{bucket}/customers/", output_path=output)
    first = sorted(k for k in _objects(bucket) if k.startswith("segmented/"))
    assert len(first) == PARTITIONS

    # The same rows in two partitions: a stale part file of the first run would show as an
    # extra object and as duplicated rows.
    _upload(table, _fs(), f"{bucket}/customers2", 2)
    config = _config(tmp_path, f"s3://{bucket}/customers2/", "dask2", dask="local",
                     num_clusters=3)
    summary = _run_on_dask(config, client, input_path=f"s3://{bucket}/customers2/",
                                   output_path=output)
    assert summary["partitions"] == 2
    second = sorted(k for k in _objects(bucket) if k.startswith("segmented/"))
    assert len(second) == 2
    written = pq.read_table(f"{bucket}/segmented", filesystem=_fs())
    assert written.num_rows == ROWS
    assert np.unique(written.column("customer_id").to_numpy()).size == ROWS
    assert _leftovers(bucket, "segmented") == []


def test_failure_while_writing_keeps_the_previous_s3_dataset(
    tmp_path: Path, bucket: str, table: pa.Table, client: distributed.Client,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A previous labelled dataset (three parts, all in cluster 0), put there directly so this
    # test does not depend on the swap into place.
    labelled = table.append_column("cluster_id", pa.array(np.zeros(ROWS, dtype=np.int32)))
    fs = _fs()
    for i, start in enumerate(range(0, ROWS, 1500)):
        with fs.open(f"{bucket}/segmented/part.{i}.parquet", "wb") as f:
            pq.write_table(labelled.slice(start, 1500), f)
    before = _objects(bucket)

    def failing(frame, *args):  # noqa: ANN001, ANN202
        # The first partitions are written, a later one fails (no call back into the real
        # function: pickled by reference it would resolve to this patched one).
        if int(frame["customer_id"].iloc[0]) >= ROWS // 2:
            raise RuntimeError("worker lost")
        return frame.assign(cluster_id=np.ones(len(frame), dtype=np.int32))

    monkeypatch.setattr(dask_output, "label_partition", failing)
    with pytest.raises(RuntimeError, match="worker lost"):
        _run_on_dask(_dask_config(tmp_path, bucket, num_clusters=3), client,
                             input_path=f"s3://{bucket}/customers/",
                             output_path=f"s3://{bucket}/segmented/")
    assert _objects(bucket) == before  # same keys, same contents
    assert _leftovers(bucket, "segmented") == []
    assert pq.read_table(f"{bucket}/segmented", filesystem=_fs()).equals(labelled)
    assert not (tmp_path / "dask" / "summary.json").exists()


def _missing_input_error(tmp_path: Path, bucket: str, client: distributed.Client,
                         missing: str) -> str:
    with pytest.raises(InputDataError) as caught:
        _run_on_dask(_dask_config(tmp_path, bucket, num_clusters=3), client,
                             input_path=missing, output_path=f"s3://{bucket}/segmented/")
    assert not any(key.startswith(("segmented", ".segmented")) for key in _objects(bucket))
    return str(caught.value)


def test_missing_s3_input_is_an_input_data_error(
    tmp_path: Path, bucket: str, client: distributed.Client
) -> None:
    missing = f"s3://{bucket}/no-such-prefix/"
    message = _missing_input_error(tmp_path, bucket, client, missing)
    assert message == (f"input dataset {missing!r} does not exist: give a folder or URL of "
                       "Parquet files")


def test_missing_s3_input_message_is_one_line(
    tmp_path: Path, bucket: str, client: distributed.Client
) -> None:
    missing = f"s3://{bucket}/no-such-prefix/"
    message = _missing_input_error(tmp_path, bucket, client, missing)
    assert "\n" not in message
