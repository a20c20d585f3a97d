"""The real pytd / td-client libraries against the loopback TD API emulator.

Every test drives the unmodified clients over HTTP on 127.0.0.1.  Most tests run
inside :func:`fast_client_sleeps`, which records (and skips) the fixed 5 s sleeps
td-client makes; ``test_overwrite_then_read_back_with_real_sleeps`` keeps them to
show the flow works untouched.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pandas as pd
import pytd
import pytest
import tdclient
import urllib3
from tdclient import errors as td_errors

try:
    from emulators.td_api import TDEmulator, fast_client_sleeps, start_td_emulator
except ImportError:  # tests/ imported as a package
    from tests.emulators.td_api import TDEmulator, fast_client_sleeps, start_td_emulator

APIKEY = "1/test-key-0123456789abcdef"
DB = "autoseg_db"


@pytest.fixture
def td() -> Iterator[TDEmulator]:
    """A fresh emulator holding one empty database."""
    emulator = start_td_emulator(apikey=APIKEY, databases=[DB])
    try:
        yield emulator
    finally:
        emulator.stop()


@pytest.fixture
def sleeps() -> Iterator[list[float]]:
    """Skip td-client's sleeps; the list holds what it asked for."""
    with fast_client_sleeps() as record:
        yield record


@pytest.fixture
def client(td: TDEmulator) -> Iterator[pytd.Client]:
    """A pytd client on the emulator, Hive engine (Presto would go to port 443)."""
    c = pytd.Client(apikey=APIKEY, endpoint=td.endpoint, database=DB, default_engine="hive")
    try:
        yield c
    finally:
        c.close()


def _frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "Customer ID": ["00123", "00456", "00789"],
            "Total Spend": [10.5, None, 3.0],
            "visits": [1, 2, 3],
            "flag": ["true", "false", "true"],
        }
    )


def _write(client: pytd.Client, df: pd.DataFrame, table: str, if_exists: str = "overwrite") -> None:
    client.load_table_from_dataframe(
        df, f"{DB}.{table}", writer="bulk_import", if_exists=if_exists, fmt="msgpack"
    )


def test_overwrite_then_read_back_with_real_sleeps(td: TDEmulator, client: pytd.Client) -> None:
    started = time.monotonic()
    _write(client, _frame(), "customers")
    write_seconds = time.monotonic() - started
    # pytd's commit(wait=True) always sleeps its 5 s wait_interval once before it
    # re-reads the session status, even though the emulator commits at once.
    assert 5.0 <= write_seconds < 8.0

    started = time.monotonic()
    res = client.query("SELECT * FROM customers", engine="hive")
    assert time.monotonic() - started < 2.0  # a finished job is never polled twice
    assert res["columns"] == ["customer_id", "total_spend", "visits", "flag", "time"]
    rows = sorted(res["data"])
    assert [r[:4] for r in rows] == [
        ["00123", 10.5, 1, "true"],
        ["00456", None, 2, "false"],
        ["00789", 3.0, 3, "true"],
    ]
    assert all(isinstance(r[4], int) for r in rows)


def test_write_normalizes_columns_and_keeps_msgpack_types(
    td: TDEmulator, client: pytd.Client, sleeps: list[float]
) -> None:
    _write(client, _frame(), "customers")
    assert sleeps == [5]  # the one fixed commit wait
    assert td.table_schema(DB, "customers") == [
        ("customer_id", "string"),
        ("total_spend", "double"),
        ("visits", "long"),
        ("flag", "string"),
    ]
    back = td.read_table(DB, "customers", include_time=False)
    assert back["customer_id"].tolist() == ["00123", "00456", "00789"]
    assert back["flag"].tolist() == ["true", "false", "true"]
    assert back["visits"].tolist() == [1, 2, 3]
    assert back["total_spend"].isna().tolist() == [False, True, False]
    # The bulk import session is cleaned up and pytd issued the expected calls.
    assert td.bulk_imports == {}
    paths = [(r.method, r.path.split("/")[2] + "/" + r.path.split("/")[3]) for r in td.requests]
    for step in [
        ("POST", "table/create"),
        ("POST", "bulk_import/create"),
        ("PUT", "bulk_import/upload_part"),
        ("POST", "bulk_import/freeze"),
        ("POST", "bulk_import/perform"),
        ("POST", "bulk_import/commit"),
        ("POST", "bulk_import/delete"),
    ]:
        assert step in paths


def test_csv_format_retypes_values_and_uploads_the_index(
    td: TDEmulator, client: pytd.Client, sleeps: list[float]
) -> None:
    df = pd.DataFrame({"code": ["00123", "00456"], "flag": ["true", "false"]})
    client.load_table_from_dataframe(df, f"{DB}.csv_t", writer="bulk_import", if_exists="overwrite")
    schema = dict(td.table_schema(DB, "csv_t"))
    assert schema["code"] == "long"  # "00123" became 123
    back = td.read_table(DB, "csv_t", include_time=False)
    assert sorted(back["code"].tolist()) == [123, 456]
    assert "" in schema  # DataFrame.to_csv wrote the index as an unnamed column


def test_append_adds_rows_and_sends_mode_append(
    td: TDEmulator, client: pytd.Client, sleeps: list[float]
) -> None:
    _write(client, _frame(), "customers")
    _write(client, _frame().head(2), "customers", if_exists="append")
    assert len(td.read_table(DB, "customers")) == 5
    res = client.query("SELECT COUNT(*) FROM customers")
    assert res == {"data": [[5]], "columns": ["_c0"]}
    assert sleeps == [5, 5]


def test_overwrite_replaces_rows(td: TDEmulator, client: pytd.Client, sleeps: list[float]) -> None:
    _write(client, _frame(), "customers")
    _write(client, pd.DataFrame({"visits": [7]}), "customers")
    assert td.read_table(DB, "customers", include_time=False)["visits"].tolist() == [7]
    assert [c for c, _ in td.table_schema(DB, "customers")] == ["visits"]


def test_select_columns_where_and_aggregates(td: TDEmulator, client: pytd.Client) -> None:
    td.seed_table(
        DB,
        "people",
        pd.DataFrame({"id": [1, 2, 3, 4], "grp": ["a", "b", "a", "b"], "x": [1.0, 2.0, 3.0, 4.0]}),
        time_value=1_700_000_000,
    )
    res = client.query("SELECT id, x FROM people WHERE grp = 'a' ORDER BY id")
    assert res == {"data": [[1, 1.0], [3, 3.0]], "columns": ["id", "x"]}
    res = client.query(
        f"SELECT grp, COUNT(*) AS n, AVG(x) FROM {DB}.people GROUP BY grp ORDER BY grp"
    )
    assert res == {"data": [["a", 2, 2.0], ["b", 2, 3.0]], "columns": ["grp", "n", "_c2"]}
    res = client.query("SELECT `time` FROM people LIMIT 1")
    assert res["data"] == [[1_700_000_000]]


def test_seeded_table_reads_back_through_tdclient_job_api(td: TDEmulator) -> None:
    td.seed_table(DB, "items", pd.DataFrame({"sku": ["a1", "b2"], "price": [1, 2]}))
    with tdclient.Client(apikey=APIKEY, endpoint=td.endpoint) as tdc:
        job = tdc.query(DB, "SELECT sku, price FROM items ORDER BY sku", type="hive")
        job.wait(wait_interval=1)
        assert job.success()
        assert [list(r) for r in job.result()] == [["a1", 1], ["b2", 2]]
        assert job.result_schema == [["sku", "string"], ["price", "bigint"]]
        assert job.num_records == 2
        # Other result formats answer too.
        assert list(tdc.api.job_result_format_each(job.id, "json")) == [["a1", 1], ["b2", 2]]
        names = {t.name for t in tdc.tables(DB)}
        assert names == {"items"}
        table = tdc.table(DB, "items")
        assert table.count == 2
        assert [tuple(c[:2]) for c in table.schema] == [("sku", "string"), ("price", "long")]


def test_insert_into_from_staging_appends(
    td: TDEmulator, client: pytd.Client, sleeps: list[float]
) -> None:
    _write(client, _frame(), "customers")
    _write(client, _frame().head(1), "customers_staging")
    client.query(f"INSERT INTO {DB}.customers SELECT * FROM {DB}.customers_staging")
    assert len(td.read_table(DB, "customers")) == 4
    assert td.read_table(DB, "customers")["customer_id"].tolist()[-1] == "00123"
    # Hive's own spelling works as well.
    client.query("INSERT INTO TABLE customers SELECT * FROM customers_staging")
    assert len(td.read_table(DB, "customers")) == 5
    client.query("INSERT OVERWRITE TABLE customers SELECT * FROM customers_staging")
    assert len(td.read_table(DB, "customers")) == 1


def test_swap_then_delete_staging(td: TDEmulator, client: pytd.Client, sleeps: list[float]) -> None:
    _write(client, _frame(), "customers")
    _write(client, pd.DataFrame({"customer_id": ["x"], "score": [1.0]}), "customers_staging")
    assert client.api_client.swap_table(DB, "customers", "customers_staging") is True
    assert td.read_table(DB, "customers", include_time=False)["customer_id"].tolist() == ["x"]
    assert len(td.read_table(DB, "customers_staging")) == 3
    client.api_client.delete_table(DB, "customers_staging")
    assert td.table_names(DB) == ["customers"]
    assert td.requests_matching("POST", r"^/v3/table/swap/autoseg_db/customers/customers_staging$")


def test_upload_part_500_makes_pytd_raise_and_leaves_overwritten_table_empty(
    td: TDEmulator, client: pytd.Client, sleeps: list[float]
) -> None:
    _write(client, _frame(), "customers")
    rule = td.fail_next("PUT", r"/v3/bulk_import/upload_part/", status=500)
    with pytest.raises(RuntimeError, match="failed to upload file"):
        _write(client, _frame(), "customers")
    assert rule.fired == 1
    assert len(td.requests_matching("PUT", "upload_part")) == 2  # never retried
    # if_exists="overwrite" deleted and recreated the table before uploading.
    assert td.has_table(DB, "customers")
    assert len(td.read_table(DB, "customers")) == 0
    assert td.bulk_imports == {}  # pytd deleted the failed session


def test_lost_commit_reply_raises_raw_urllib3_error_but_rows_are_committed(
    td: TDEmulator, client: pytd.Client, sleeps: list[float]
) -> None:
    _write(client, _frame(), "customers")
    td.fail_next("POST", r"/v3/bulk_import/commit/", drop_connection=True, after_processing=True)
    with pytest.raises(urllib3.exceptions.ProtocolError):
        _write(client, _frame(), "customers", if_exists="append")
    assert len(td.read_table(DB, "customers")) == 6
    assert td.requests_matching("POST", "commit")[-1].status is None


def test_nth_request_failure_and_post_not_retried(td: TDEmulator, client: pytd.Client) -> None:
    rule = td.fail_next("POST", r"/v3/job/issue/hive/", status=503, skip=1)
    assert client.query("SELECT 1 AS one")["data"] == [[1]]  # first matching call passes
    with pytest.raises(td_errors.APIError, match="retry_post_requests"):
        client.query("SELECT 1 AS one")
    assert rule.fired == 1
    assert client.query("SELECT 1 AS one")["data"] == [[1]]


def test_get_5xx_is_retried_after_a_5_second_sleep(
    td: TDEmulator, client: pytd.Client, sleeps: list[float]
) -> None:
    td.fail_next("GET", r"/v3/database/list", status=502, times=2)
    assert DB in [d.name for d in client.list_databases()]
    assert sleeps == [5, 10]  # exponential back-off: 5 s, then 10 s
    statuses = [r.status for r in td.requests_matching("GET", "/v3/database/list")]
    assert statuses == [502, 502, 200]


def test_wrong_apikey_gets_401_auth_error(td: TDEmulator) -> None:
    bad = pytd.Client(apikey="wrong", endpoint=td.endpoint, database=DB, default_engine="hive")
    with pytest.raises(td_errors.AuthError):
        bad.list_databases()
    with pytest.raises(td_errors.AuthError, match="List databases failed"):  # not wrapped by pytd
        bad.load_table_from_dataframe(
            _frame(), f"{DB}.t_x", writer="bulk_import", if_exists="overwrite"
        )
    assert {r.status for r in td.requests} == {401}
    bad.close()


@pytest.mark.parametrize("trailing_slash", [False, True])
def test_endpoint_with_and_without_trailing_slash(td: TDEmulator, trailing_slash: bool) -> None:
    endpoint = td.endpoint + ("/" if trailing_slash else "")
    with tdclient.Client(apikey=APIKEY, endpoint=endpoint) as tdc:
        assert [d.name for d in tdc.databases()] == [DB]
    raw = td.requests[-1].raw_path
    assert raw == ("/v3/database/list" if trailing_slash else "//v3/database/list")
    assert td.requests[-1].path == "/v3/database/list"


def test_failed_query_raises_job_error(td: TDEmulator, client: pytd.Client) -> None:
    with pytest.raises(td_errors.InternalError, match="job error"):
        client.query("SELECT * FROM no_such_table")
    job = td.jobs[-1]
    assert job["status"] == "error"
    assert "no_such_table" in job["debug"]["stderr"]


def test_presto_through_tdclient_names_columns_like_presto(
    td: TDEmulator, client: pytd.Client
) -> None:
    td.seed_table(DB, "nums", pd.DataFrame({"v": [1, 2, 3]}))
    res = client.query("SELECT SUM(v) FROM nums", engine="presto", force_tdclient=True)
    assert res == {"data": [[6]], "columns": ["_col0"]}
    assert td.jobs[-1]["type"] == "presto"


def test_job_polling_when_jobs_report_running(
    td: TDEmulator, client: pytd.Client, sleeps: list[float]
) -> None:
    td.job_running_polls = 2
    assert client.query("SELECT 42 AS answer")["data"] == [[42]]
    assert sleeps == [5, 5]  # tdclient.Cursor polls job status every 5 s


def test_create_table_and_database_errors(td: TDEmulator) -> None:
    with tdclient.Client(apikey=APIKEY, endpoint=td.endpoint) as tdc:
        tdc.create_log_table(DB, "abc")
        with pytest.raises(td_errors.AlreadyExistsError):
            tdc.create_log_table(DB, "abc")
        with pytest.raises(td_errors.NotFoundError):
            tdc.table(DB, "missing")
        with pytest.raises(td_errors.APIError, match="Invalid table name"):
            tdc.create_log_table(DB, "Bad-Name")
        tdc.create_database("other_db")
        assert td.database_names() == [DB, "other_db"]


def test_create_table_as_select_and_drop_through_queries(
    td: TDEmulator, client: pytd.Client
) -> None:
    td.seed_table(DB, "src", pd.DataFrame({"k": ["a", "b"], "v": [1.5, 2.5]}), time_value=123)
    client.query("CREATE TABLE doubled AS SELECT k, v * 2 AS v2 FROM src")
    assert td.table_schema(DB, "doubled") == [("k", "string"), ("v2", "double")]
    back = td.read_table(DB, "doubled")
    assert back["v2"].tolist() == [3.0, 5.0]
    assert back["time"].notna().all()  # TD stamps rows that have no time column
    client.query("DROP TABLE doubled")
    assert not td.has_table(DB, "doubled")
    with pytest.raises(td_errors.InternalError):
        client.query("CREATE TABLE ab AS SELECT 1 AS x")  # 2-character names are invalid on TD
    assert "Invalid table name" in td.jobs[-1]["debug"]["stderr"]
    assert td.run_sql(DB, "SELECT COUNT(*) FROM src") == (["_c0"], [[2]])


def test_stop_closes_connections_kept_by_client_pools() -> None:
    emulator = start_td_emulator(apikey=APIKEY, databases=[DB])
    with fast_client_sleeps():
        api = tdclient.Client(apikey=APIKEY, endpoint=emulator.endpoint)
        assert [d.name for d in api.databases()] == [DB]
        emulator.stop()
        with pytest.raises(td_errors.APIError, match="Retrying stopped"):
            api.databases()
        api.close()
