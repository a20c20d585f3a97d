"""TDStore drives the real pytd / td-client against the loopback TD API emulator.

Every test runs inside :func:`fast_client_sleeps` (td-client's fixed 5 s commit and poll sleeps
are skipped) and with ``backoff_base=0`` so retries do not wait either.
"""

from __future__ import annotations

import logging
import re
import traceback
from collections.abc import Iterator
from typing import Any

import pandas as pd
import pyarrow as pa
import pytest

from autoseg.errors import InputDataError, Interrupted, ServiceError, UsageError
from autoseg.io.base import RowChunks, TableWrite
from autoseg.io.td import (
    DEFAULT_TD_API_SERVER,
    MISSING_KEY_MESSAGE,
    STAGING_INFIX,
    TDStore,
    check_td_columns,
    td_store_from_environment,
)
from autoseg.names import TableName, validate_td_table_name
from autoseg.secrets import scrub

try:
    from streamed_rows import STREAM_SCHEMA, chunks_of, failing_chunks, stream_table
except ImportError:  # tests/ imported as a package
    from tests.streamed_rows import STREAM_SCHEMA, chunks_of, failing_chunks, stream_table

try:
    from emulators.td_api import TDEmulator, fast_client_sleeps, start_td_emulator
except ImportError:  # tests/ imported as a package
    from tests.emulators.td_api import TDEmulator, fast_client_sleeps, start_td_emulator

# Sentinel keys: they must never show up in a message, a log record or a traceback.
APIKEY = "1/SENTINEL-td-key-4f9a0c7e21b3d5e6"
WRONG_KEY = "1/WRONG-sentinel-key-93b1d0aa77c2"
DB = "autoseg_db"
T0 = 1_700_000_000


@pytest.fixture(autouse=True)
def _fast_sleeps() -> Iterator[list[float]]:
    with fast_client_sleeps() as record:
        yield record


@pytest.fixture
def td() -> Iterator[TDEmulator]:
    emulator = start_td_emulator(apikey=APIKEY, databases=[DB])
    try:
        yield emulator
    finally:
        emulator.stop()


def _store(td: TDEmulator, engine: str = "hive", apikey: str = APIKEY, **kw: object) -> TDStore:
    settings: dict[str, object] = {"max_retries": 2, "backoff_base": 0.0, "poll_interval": 0.0}
    settings.update(kw)
    return TDStore(apikey, td.endpoint, engine, **settings)  # type: ignore[arg-type]


@pytest.fixture
def store(td: TDEmulator) -> Iterator[TDStore]:
    s = _store(td)
    try:
        yield s
    finally:
        s.close()


def _seed_customers(td: TDEmulator, table: str = "customers") -> None:
    td.seed_table(
        DB,
        table,
        pd.DataFrame(
            {"customer_id": ["00123", "00456", "00789"], "spend": [10.5, None, 3.0],
             "orders": [1, 2, 3]}
        ),
        time_value=T0,
    )


def _new_rows(n: int = 2, start: int = 10) -> pa.Table:
    return pa.table({
        "customer_id": [f"n{start + i:04d}" for i in range(n)],
        "spend": [float(start + i) for i in range(n)],
        "orders": [start + i for i in range(n)],
        "cluster_id": list(range(n)),
    })


def _staging_left(td: TDEmulator, db: str = DB) -> list[str]:
    return [t for t in td.table_names(db) if STAGING_INFIX in t]


def _ids(td: TDEmulator, table: str) -> list[str]:
    return sorted(td.read_table(DB, table)["customer_id"].tolist())


OLD_IDS = ["00123", "00456", "00789"]


# -- reads ------------------------------------------------------------------------------------


def test_read_seeded_table_keeps_types_and_time(td: TDEmulator, store: TDStore) -> None:
    _seed_customers(td)
    table = store.read_table(TableName(DB, "customers"))
    assert table.column_names == ["customer_id", "spend", "orders", "time"]
    assert table.schema.field("customer_id").type == pa.string()
    assert table.schema.field("spend").type == pa.float64()
    assert table.schema.field("orders").type == pa.int64()
    assert table.schema.field("time").type == pa.int64()
    rows = sorted(zip(*table.to_pydict().values(), strict=True))
    assert rows == [("00123", 10.5, 1, T0), ("00456", None, 2, T0), ("00789", 3.0, 3, T0)]
    # The table list is checked before the one query job runs.
    assert td.requests[0].path == f"/v3/table/list/{DB}"
    assert [j["type"] for j in td.jobs] == ["hive"]


def test_read_with_presto_goes_through_the_job_api(td: TDEmulator) -> None:
    _seed_customers(td)
    with _store(td, engine="presto") as store:
        table = store.read_table(TableName(DB, "customers"))
    assert table.num_rows == 3 and table.schema.field("orders").type == pa.int64()
    assert [j["type"] for j in td.jobs] == ["presto"]
    assert '"autoseg_db"."customers"' in td.jobs[0]["query"]


def test_read_empty_table_gives_typed_empty_arrow(td: TDEmulator, store: TDStore) -> None:
    td.seed_table(DB, "empty_t", pd.DataFrame({"a": pd.Series([], dtype="int64")}))
    table = store.read_table(TableName(DB, "empty_t"))
    assert table.num_rows == 0
    assert table.column_names == ["a", "time"]
    assert table.schema.field("a").type == pa.int64()


@pytest.mark.parametrize(
    ("name", "match"),
    [
        (TableName(DB, "no_such_table"), "does not exist on Treasure Data"),
        (TableName("no_such_db", "customers"), "database 'no_such_db' does not exist"),
    ],
)
def test_read_missing_table_is_input_error_before_any_query(
    td: TDEmulator, store: TDStore, name: TableName, match: str
) -> None:
    with pytest.raises(InputDataError, match=match) as info:
        store.read_table(name)
    assert f"--input-table={str(name)!r}" in str(info.value)
    assert td.jobs == []


def test_table_columns(td: TDEmulator, store: TDStore) -> None:
    _seed_customers(td)
    assert store.table_columns(TableName(DB, "customers")) == [
        "customer_id", "spend", "orders", "time"]
    assert store.table_columns(TableName(DB, "missing_t")) is None
    assert store.table_columns(TableName("other_db", "customers")) is None


# -- writes -----------------------------------------------------------------------------------


def test_overwrite_new_table_then_read_back(td: TDEmulator, store: TDStore) -> None:
    rows = _new_rows(3)
    store.write_tables([TableWrite(TableName(DB, "clusters"), rows, "overwrite")])
    assert td.table_names(DB) == ["clusters"]
    assert td.bulk_imports == {}
    back = store.read_table(TableName(DB, "clusters"))
    # The frame had no time column: TD rows always have one (the upload time).
    assert back.column_names == ["customer_id", "spend", "orders", "cluster_id", "time"]
    assert back.drop_columns(["time"]).sort_by("customer_id").equals(rows)
    assert all(isinstance(t, int) for t in back.column("time").to_pylist())
    assert td.requests_matching("POST", r"/v3/table/swap/")


def test_overwrite_existing_table_swaps_atomically(td: TDEmulator, store: TDStore) -> None:
    _seed_customers(td)
    store.write_tables([TableWrite(TableName(DB, "customers"), _new_rows(2), "overwrite")])
    assert _ids(td, "customers") == ["n0010", "n0011"]
    assert [c for c, _ in td.table_schema(DB, "customers")] == [
        "customer_id", "spend", "orders", "cluster_id"]
    assert _staging_left(td) == [] and td.bulk_imports == {}
    # Never pytd's delete-then-recreate overwrite: the target itself is never deleted.
    assert not td.requests_matching("POST", rf"/v3/table/delete/{DB}/customers$")


def test_write_keeps_values_and_types(td: TDEmulator, store: TDStore) -> None:
    frame = pa.table({
        "code": ["00123", None, "true"],
        "n": pa.array([1, None, 3], pa.int64()),
        "x": [0.5, float("nan"), None],
        "flag": [True, False, None],
        "seen": pa.array([pd.Timestamp("2024-01-02 03:04:05"), None, None], pa.timestamp("us")),
        "tags": [[1, 2], None, [3]],
        "cat": pa.array(["a", "b", "a"]).dictionary_encode(),
        "time": pa.array([T0, T0 + 1, T0 + 2], pa.int64()),
    })
    store.write_tables([TableWrite(TableName(DB, "typed_t"), frame, "overwrite")])
    back = store.read_table(TableName(DB, "typed_t")).sort_by("time").to_pydict()
    assert back["code"] == ["00123", None, "true"]  # strings stay strings
    assert back["n"] == [1, None, 3]
    assert back["x"][0] == 0.5 and back["x"][1] is None and back["x"][2] is None
    assert back["flag"] == ["true", "false", None]  # TD has no boolean type
    assert back["seen"] == ["2024-01-02 03:04:05", None, None]
    assert back["tags"] == [[1, 2], None, [3]]
    assert back["cat"] == ["a", "b", "a"]
    assert back["time"] == [T0, T0 + 1, T0 + 2]  # a valid time column is kept as given


def test_pandas_frame_index_is_not_uploaded(td: TDEmulator, store: TDStore) -> None:
    frame = pd.DataFrame({"k": ["a", "b"], "v": [1, 2]}, index=[10, 20])
    store.write_tables([TableWrite(TableName(DB, "pandas_t"), frame, "overwrite")])
    assert [c for c, _ in td.table_schema(DB, "pandas_t")] == ["k", "v"]


def test_overwrite_with_empty_frame_creates_empty_table(td: TDEmulator, store: TDStore) -> None:
    _seed_customers(td)
    empty = _new_rows(0)
    store.write_tables([TableWrite(TableName(DB, "customers"), empty, "overwrite")])
    back = store.read_table(TableName(DB, "customers"))
    assert back.num_rows == 0
    assert back.column_names == ["customer_id", "spend", "orders", "cluster_id", "time"]
    assert _staging_left(td) == []


def test_append_runs_one_insert_job(td: TDEmulator, store: TDStore) -> None:
    _seed_customers(td)
    store.write_tables([TableWrite(TableName(DB, "customers"),
                                   _new_rows(2).drop_columns(["cluster_id"]), "append")])
    assert _ids(td, "customers") == OLD_IDS + ["n0010", "n0011"]
    inserts = [j for j in td.jobs if "INSERT INTO" in j["query"]]
    assert len(inserts) == 1 and inserts[0]["type"] == "hive"
    assert _staging_left(td) == [] and td.bulk_imports == {}


def test_append_fills_missing_target_columns_with_null(td: TDEmulator, store: TDStore) -> None:
    _seed_customers(td)
    store.write_tables([TableWrite(TableName(DB, "customers"),
                                   pa.table({"customer_id": ["z9"]}), "append")])
    back = td.read_table(DB, "customers")
    new = back[back["customer_id"] == "z9"]
    assert len(new) == 1 and pd.isna(new["spend"].iloc[0]) and pd.isna(new["orders"].iloc[0])


def test_append_to_missing_table_creates_it(td: TDEmulator, store: TDStore) -> None:
    store.write_tables([TableWrite(TableName(DB, "fresh_t"), _new_rows(2), "append")])
    assert _ids(td, "fresh_t") == ["n0010", "n0011"]
    assert _staging_left(td) == []


def test_append_with_new_columns_is_refused_before_upload(
    td: TDEmulator, store: TDStore
) -> None:
    _seed_customers(td)
    with pytest.raises(InputDataError, match="column\\(s\\) cluster_id are not in the existing"):
        store.write_tables([TableWrite(TableName(DB, "customers"), _new_rows(1), "append")])
    assert not td.requests_matching(None, "bulk_import")
    assert _ids(td, "customers") == OLD_IDS


def test_long_table_name_gets_a_valid_staging_name(td: TDEmulator, store: TDStore) -> None:
    name = "t" * 255
    store.write_tables([TableWrite(TableName(DB, name), _new_rows(1), "overwrite")])
    assert td.table_names(DB) == [name]


# -- failures leave the old table intact --------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "options", "match"),
    [
        ("PUT", r"/v3/bulk_import/upload_part/", {"status": 500, "times": 10}, "HTTP 500"),
        ("PUT", r"/v3/bulk_import/upload_part/", {"drop_connection": True, "times": 10},
         "cannot reach Treasure Data"),
        ("POST", r"/v3/bulk_import/perform/", {"status": 503}, "HTTP 503"),
        ("POST", r"/v3/bulk_import/commit/", {"status": 500}, "HTTP 500"),
        ("POST", r"/v3/table/swap/", {"status": 500}, "HTTP 500"),
        ("POST", r"/v3/table/swap/", {"drop_connection": True}, "cannot reach"),
    ],
    ids=["upload-500", "upload-dropped", "perform-503", "commit-500", "swap-500",
         "swap-dropped"],
)
def test_failed_overwrite_leaves_old_table_and_no_staging(
    td: TDEmulator, store: TDStore, method: str, path: str, options: dict, match: str
) -> None:
    _seed_customers(td)
    rule = td.fail_next(method, path, **options)
    with pytest.raises(ServiceError, match=match) as info:
        store.write_tables([TableWrite(TableName(DB, "customers"), _new_rows(2), "overwrite")])
    assert rule.fired >= 1
    assert "\n" not in str(info.value)
    assert str(info.value).endswith("; no table was changed")
    assert _ids(td, "customers") == OLD_IDS
    assert td.read_table(DB, "customers")["time"].tolist() == [T0] * 3
    assert _staging_left(td) == []
    assert td.bulk_imports == {}


@pytest.mark.parametrize("options", [{"status": 500}, {"drop_connection": True}])
def test_one_failed_part_upload_is_retried(
    td: TDEmulator, store: TDStore, options: dict
) -> None:
    _seed_customers(td)
    rule = td.fail_next("PUT", r"/v3/bulk_import/upload_part/", **options)
    store.write_tables([TableWrite(TableName(DB, "customers"), _new_rows(2), "overwrite")])
    assert rule.fired == 1
    assert len(td.requests_matching("PUT", r"/v3/bulk_import/upload_part/")) == 2
    assert _ids(td, "customers") == ["n0010", "n0011"]  # the re-sent part is complete


def test_lost_swap_reply_is_detected_from_table_ids(td: TDEmulator, store: TDStore) -> None:
    _seed_customers(td)
    td.fail_next("POST", r"/v3/table/swap/", drop_connection=True, after_processing=True)
    store.write_tables([TableWrite(TableName(DB, "customers"), _new_rows(2), "overwrite")])
    assert _ids(td, "customers") == ["n0010", "n0011"]
    assert _staging_left(td) == []
    assert len(td.requests_matching("POST", r"/v3/table/swap/")) == 1  # never re-sent


def test_lost_commit_reply_on_append_does_not_duplicate_rows(
    td: TDEmulator, store: TDStore
) -> None:
    _seed_customers(td)
    td.fail_next("POST", r"/v3/bulk_import/commit/", drop_connection=True, after_processing=True)
    store.write_tables([TableWrite(TableName(DB, "customers"),
                                   _new_rows(2).drop_columns(["cluster_id"]), "append")])
    assert _ids(td, "customers") == OLD_IDS + ["n0010", "n0011"]  # exactly once
    assert len(td.requests_matching("POST", r"/v3/bulk_import/commit/")) == 1
    assert _staging_left(td) == [] and td.bulk_imports == {}


def test_failed_append_commit_changes_nothing_and_a_rerun_appends_once(
    td: TDEmulator, store: TDStore
) -> None:
    _seed_customers(td)
    rows = _new_rows(2).drop_columns(["cluster_id"])
    td.fail_next("POST", r"/v3/bulk_import/commit/", status=500)
    with pytest.raises(ServiceError, match="HTTP 500"):
        store.write_tables([TableWrite(TableName(DB, "customers"), rows, "append")])
    assert _ids(td, "customers") == OLD_IDS
    assert _staging_left(td) == [] and td.bulk_imports == {}
    store.write_tables([TableWrite(TableName(DB, "customers"), rows, "append")])
    assert _ids(td, "customers") == OLD_IDS + ["n0010", "n0011"]


def test_lost_insert_job_issue_reply_is_followed_not_reissued(
    td: TDEmulator, store: TDStore
) -> None:
    _seed_customers(td)
    td.fail_next("POST", r"/v3/job/issue/hive/", drop_connection=True, after_processing=True)
    store.write_tables([TableWrite(TableName(DB, "customers"),
                                   _new_rows(2).drop_columns(["cluster_id"]), "append")])
    assert _ids(td, "customers") == OLD_IDS + ["n0010", "n0011"]
    assert len([j for j in td.jobs if "INSERT INTO" in j["query"]]) == 1
    assert _staging_left(td) == []


def test_refused_insert_job_leaves_target_unchanged(td: TDEmulator, store: TDStore) -> None:
    _seed_customers(td)
    td.fail_next("POST", r"/v3/job/issue/hive/", status=503)
    with pytest.raises(ServiceError, match="HTTP 503"):
        store.write_tables([TableWrite(TableName(DB, "customers"),
                                       _new_rows(2).drop_columns(["cluster_id"]), "append")])
    assert len(td.requests_matching("POST", r"/v3/job/issue/")) == 1  # a job issue is not retried
    assert _ids(td, "customers") == OLD_IDS
    assert _staging_left(td) == []


def test_lost_insert_job_issue_reply_not_in_job_list_is_reported(
    td: TDEmulator, store: TDStore
) -> None:
    _seed_customers(td)
    td.fail_next("POST", r"/v3/job/issue/hive/", drop_connection=True)
    match = (r"\(ProtocolError\) .*the reply to the append job for autoseg_db\.customers was "
             r"lost .*check the TD job list")
    with pytest.raises(ServiceError, match=match):
        store.write_tables([TableWrite(TableName(DB, "customers"),
                                       _new_rows(2).drop_columns(["cluster_id"]), "append")])
    assert _ids(td, "customers") == OLD_IDS
    assert _staging_left(td) == []


def test_second_table_upload_failure_leaves_both_targets_untouched(
    td: TDEmulator, store: TDStore
) -> None:
    _seed_customers(td, "customers")
    _seed_customers(td, "shap_values")
    # The first table's only part passes; every upload of the second one fails.
    td.fail_next("PUT", r"/v3/bulk_import/upload_part/", status=500, skip=1, times=10)
    with pytest.raises(ServiceError):
        store.write_tables([
            TableWrite(TableName(DB, "customers"), _new_rows(2), "overwrite"),
            TableWrite(TableName(DB, "shap_values"), _new_rows(3), "overwrite"),
            TableWrite(TableName(DB, "importance"), _new_rows(1), "overwrite"),
        ])
    assert _ids(td, "customers") == OLD_IDS
    assert _ids(td, "shap_values") == OLD_IDS
    assert td.table_names(DB) == ["customers", "shap_values"]  # no new table either
    assert not td.requests_matching("POST", r"/v3/table/swap/")
    assert td.bulk_imports == {}


def test_second_swap_failure_swaps_the_first_back(td: TDEmulator, store: TDStore) -> None:
    _seed_customers(td, "customers")
    _seed_customers(td, "shap_values")
    td.fail_next("POST", r"/v3/table/swap/", status=500, skip=1)
    with pytest.raises(ServiceError, match="HTTP 500"):
        store.write_tables([
            TableWrite(TableName(DB, "customers"), _new_rows(2), "overwrite"),
            TableWrite(TableName(DB, "shap_values"), _new_rows(3), "overwrite"),
            TableWrite(TableName(DB, "importance"), _new_rows(1), "overwrite"),
        ])
    assert _ids(td, "customers") == OLD_IDS
    assert _ids(td, "shap_values") == OLD_IDS
    assert td.table_names(DB) == ["customers", "shap_values"]


def test_failed_roll_back_keeps_the_old_rows_and_says_where(
    td: TDEmulator, store: TDStore
) -> None:
    _seed_customers(td, "customers")
    _seed_customers(td, "shap_values")
    # Second swap fails, and so does swapping the first one back.
    td.fail_next("POST", r"/v3/table/swap/", status=500, skip=1, times=2)
    with pytest.raises(ServiceError,
                       match=r"HTTP 500.*; could not restore autoseg_db\.customers: its previous "
                             r"rows are in autoseg_db\.customers_autoseg_tmp_[0-9a-f]{8}$"):
        store.write_tables([
            TableWrite(TableName(DB, "customers"), _new_rows(2), "overwrite"),
            TableWrite(TableName(DB, "shap_values"), _new_rows(3), "overwrite"),
        ])
    kept = _staging_left(td)
    assert len(kept) == 1 and kept[0].startswith("customers_")
    assert _ids(td, kept[0]) == OLD_IDS
    assert _ids(td, "shap_values") == OLD_IDS


def test_keyboard_interrupt_after_staging_cleans_up(
    td: TDEmulator, store: TDStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    _seed_customers(td)
    api = store._api

    def interrupted_swap(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(api, "swap_table", interrupted_swap)
    with pytest.raises(KeyboardInterrupt):
        store.write_tables([TableWrite(TableName(DB, "customers"), _new_rows(2), "overwrite")])
    assert _ids(td, "customers") == OLD_IDS
    assert _staging_left(td) == [] and td.bulk_imports == {}


def test_before_commit_runs_after_staging_and_its_failure_changes_nothing(
    td: TDEmulator, store: TDStore
) -> None:
    # The pipeline stages its report there: a failure must leave every target as it was.
    _seed_customers(td)
    staged_then: list[list[str]] = []

    def failing_report() -> None:
        staged_then.append(_staging_left(td))
        raise RuntimeError("report failed")

    with pytest.raises(RuntimeError, match="^report failed$"):
        store.write_tables([TableWrite(TableName(DB, "customers"), _new_rows(2), "overwrite")],
                           before_commit=failing_report)
    assert len(staged_then) == 1 and staged_then[0], "called once, with the rows staged"
    assert _ids(td, "customers") == OLD_IDS
    assert _staging_left(td) == [] and td.bulk_imports == {}
    store.write_tables([TableWrite(TableName(DB, "customers"), _new_rows(2), "overwrite")],
                       before_commit=lambda: None)
    assert _ids(td, "customers") != OLD_IDS


def test_keyboard_interrupt_during_upload_cleans_up(
    td: TDEmulator, store: TDStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pytd.writer

    _seed_customers(td)
    original = pytd.writer.BulkImportWriter._bulk_import

    def interrupted(self: object, table: Any, *args: object, **kwargs: Any) -> None:
        # What pytd has done when Ctrl-C arrives mid-upload: table and session exist.
        table.create()
        table.client.api_client.create_bulk_import(
            kwargs["bulk_import_name"], table.database, table.table)
        raise KeyboardInterrupt

    monkeypatch.setattr(pytd.writer.BulkImportWriter, "_bulk_import", interrupted)
    with pytest.raises(KeyboardInterrupt):
        store.write_tables([TableWrite(TableName(DB, "customers"), _new_rows(2), "overwrite")])
    monkeypatch.setattr(pytd.writer.BulkImportWriter, "_bulk_import", original)
    assert _ids(td, "customers") == OLD_IDS
    assert _staging_left(td) == [] and td.bulk_imports == {}


@pytest.mark.parametrize("where", ["swap", "upload"])
def test_sigterm_interruption_stays_an_interruption_and_cleans_up(
    td: TDEmulator, store: TDStore, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    # The CLI turns SIGTERM into Interrupted, raised wherever the main thread is; pytd wraps
    # errors during an upload in RuntimeError, which must not hide the interruption.
    import tdclient.bulk_import_model

    _seed_customers(td)

    def stop(*args: object, **kwargs: object) -> None:
        raise Interrupted("stopped by signal SIGTERM; nothing was written")

    if where == "swap":
        monkeypatch.setattr(store._api, "swap_table", stop)
    else:
        monkeypatch.setattr(tdclient.bulk_import_model.BulkImport, "upload_part", stop)
    with pytest.raises(Interrupted, match="^stopped by signal SIGTERM; nothing was written$"):
        store.write_tables([TableWrite(TableName(DB, "customers"), _new_rows(2), "overwrite")])
    assert _ids(td, "customers") == OLD_IDS
    assert _staging_left(td) == [] and td.bulk_imports == {}


# -- refused before any call ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("columns", "match"),
    [
        (["Spend", "spend"], r"columns 'Spend' and 'spend' of output table .* would both become "
                             r"'spend'"),
        (["a-b", "a_b"], r"columns 'a-b' and 'a_b' .* would both become 'a_b'"),
        (["Total Spend"], r"column 'Total Spend' .* would be renamed to 'total_spend' by "
                          r"Treasure Data: rename it"),
        (["1st_order"], r"column '1st_order' .* starts with a digit"),
    ],
)
def test_column_names_td_would_change_are_refused(
    td: TDEmulator, store: TDStore, columns: list[str], match: str
) -> None:
    frame = pd.DataFrame({c: [1] for c in columns})
    with pytest.raises(InputDataError, match=match):
        store.write_tables([TableWrite(TableName(DB, "out_t"), frame, "overwrite")])
    assert td.requests == []


def test_check_td_columns_accepts_valid_names() -> None:
    check_td_columns(["customer_id", "_x", "time", "a1"], "t")


@pytest.mark.parametrize(
    ("time_values", "match"),
    [
        (["2024-01-01", "2024-01-02"], "needs integer unix seconds"),
        ([1.5, 2.5], "needs integer unix seconds"),
        (pd.array([T0, None], dtype="Int64"), "has missing values"),
    ],
)
def test_time_column_must_be_integer_unix_seconds(
    td: TDEmulator, store: TDStore, time_values: object, match: str
) -> None:
    frame = pd.DataFrame({"k": ["a", "b"], "time": time_values})
    with pytest.raises(InputDataError, match=match):
        store.write_tables([TableWrite(TableName(DB, "out_t"), frame, "overwrite")])
    assert td.requests == []


@pytest.mark.parametrize(
    ("name", "match"),
    [
        (TableName(None, "customers"), "need a database"),
        (TableName("My_DB", "customers"), "database name 'My_DB' is not valid"),
        (TableName(DB, "ab"), "table name 'ab' is not valid on Treasure Data: use 3-255"),
        (TableName(DB, "x" * 256), "table name 'x+' is not valid"),
    ],
)
def test_invalid_names_are_usage_errors_before_any_call(
    td: TDEmulator, store: TDStore, name: TableName, match: str
) -> None:
    with pytest.raises(UsageError, match=f"^--input-table=.*{match}"):
        store.read_table(name)
    with pytest.raises(UsageError, match=match):
        store.write_tables([TableWrite(name, _new_rows(1), "overwrite")])
    assert td.requests == []


def test_validate_td_table_name_names_the_option() -> None:
    with pytest.raises(UsageError, match=r"^--output-table='db_ok\.Bad': table name 'Bad'"):
        validate_td_table_name(TableName("db_ok", "Bad"), "--output-table")


def test_bad_mode_and_duplicate_targets_are_usage_errors(
    td: TDEmulator, store: TDStore
) -> None:
    with pytest.raises(UsageError, match="--output-mode='replace_all'"):
        store.write_tables([TableWrite(TableName(DB, "out_t"), _new_rows(1), "replace_all")])
    with pytest.raises(UsageError, match="'autoseg_db.out_t' is written twice"):
        store.write_tables([TableWrite(TableName(DB, "out_t"), _new_rows(1), "overwrite")] * 2)
    assert td.requests == []


def test_missing_output_database_is_usage_error(td: TDEmulator, store: TDStore) -> None:
    with pytest.raises(UsageError, match="database 'other_db' does not exist"):
        store.write_tables([TableWrite(TableName("other_db", "out_t"), _new_rows(1),
                                       "overwrite")])
    assert td.database_names() == [DB]


# -- environment ------------------------------------------------------------------------------


@pytest.mark.parametrize("env", [{}, {"TD_API_KEY": ""}, {"TD_API_KEY": "  "}])
def test_missing_td_api_key(env: dict[str, str]) -> None:
    with pytest.raises(UsageError) as info:
        td_store_from_environment(env, "presto")
    assert str(info.value) == MISSING_KEY_MESSAGE
    assert str(info.value) == ("TD_API_KEY is not set: export your Treasure Data API key "
                               "(Profile > API Keys) for --store td")


def test_environment_endpoint_and_engine() -> None:
    store = td_store_from_environment({"TD_API_KEY": APIKEY}, "hive")
    assert store.endpoint == DEFAULT_TD_API_SERVER and store.engine == "hive"
    assert store.description == "td:api.treasuredata.com (hive)"
    store = td_store_from_environment(
        {"TD_API_KEY": APIKEY, "TD_API_SERVER": "api.treasuredata.co.jp"}, "presto")
    assert store.endpoint == "https://api.treasuredata.co.jp"
    with pytest.raises(UsageError, match="--td-engine='spark'"):
        td_store_from_environment({"TD_API_KEY": APIKEY}, "spark")
    with pytest.raises(UsageError, match="TD_API_SERVER='http://' is not a URL"):
        td_store_from_environment({"TD_API_KEY": APIKEY, "TD_API_SERVER": "http://"}, "hive")


# -- service failures and secrets -------------------------------------------------------------


def _assert_secret_free(exc: BaseException, caplog: pytest.LogCaptureFixture, key: str) -> None:
    assert key not in str(exc)
    assert exc.__cause__ is None and exc.__suppress_context__
    assert key not in "".join(traceback.format_exception(exc))
    assert caplog.records, "expected the clients' DEBUG records to be captured"
    for record in caplog.records:
        assert key not in record.getMessage()


def test_wrong_key_is_a_401_service_error_without_the_key(
    td: TDEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    _seed_customers(td)
    with _store(td, apikey=WRONG_KEY) as bad:
        with pytest.raises(ServiceError, match=r"HTTP 401") as read_info:
            bad.read_table(TableName(DB, "customers"))
        with pytest.raises(ServiceError, match=r"HTTP 401") as write_info:
            bad.write_tables([TableWrite(TableName(DB, "out_t"), _new_rows(1), "overwrite")])
    message = str(read_info.value)
    assert message.startswith("Treasure Data rejected the API key (HTTP 401)")
    assert message.endswith("check TD_API_KEY and TD_API_SERVER")
    for info in (read_info, write_info):
        _assert_secret_free(info.value, caplog, WRONG_KEY)
    # tdclient logs every request's headers at DEBUG; the filter masked the key there.
    assert any("TD1 ***" in r.getMessage() for r in caplog.records)


def test_key_echoed_by_the_server_is_scrubbed(
    td: TDEmulator, store: TDStore, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    td.fail_next("GET", r"/v3/table/list/", status=400,
                 body={"error": f"bad request for key {APIKEY}"})
    with pytest.raises(ServiceError, match=r"HTTP 400.*bad request for key \*\*\*") as info:
        store.read_table(TableName(DB, "customers"))
    _assert_secret_free(info.value, caplog, APIKEY)
    assert scrub(f"x {APIKEY} y Authorization: TD1 abc") == "x *** y Authorization: TD1 ***"


def test_429_then_success_is_retried(td: TDEmulator, store: TDStore) -> None:
    _seed_customers(td)
    td.fail_next("GET", r"/v3/table/list/", status=429)
    assert store.read_table(TableName(DB, "customers")).num_rows == 3
    statuses = [r.status for r in td.requests_matching("GET", r"/v3/table/list/")]
    assert statuses == [429, 200]


def test_transient_failures_of_polls_and_downloads_are_retried(
    td: TDEmulator, store: TDStore
) -> None:
    _seed_customers(td)
    td.fail_next("GET", r"/v3/job/status/", status=502)
    td.fail_next("GET", r"/v3/job/result/", drop_connection=True)
    assert store.read_table(TableName(DB, "customers")).num_rows == 3


def test_persistent_503_gives_up_after_bounded_retries(td: TDEmulator, store: TDStore) -> None:
    td.fail_next("GET", r"/v3/table/list/", status=503, times=100)
    with pytest.raises(ServiceError) as info:
        store.read_table(TableName(DB, "customers"))
    message = str(info.value)
    assert message == (
        "Treasure Data failed (HTTP 503) while reading --input-table='autoseg_db.customers', "
        "gave up after 2 retries: rerun later, or check TD_API_SERVER"
    )
    assert len(td.requests_matching("GET", r"/v3/table/list/")) == 3  # 1 try + 2 retries


def test_redirects_are_reported_not_followed(td: TDEmulator, store: TDStore) -> None:
    td.fail_next("GET", r"/v3/table/list/", status=301)
    with pytest.raises(ServiceError, match=r"redirected reading .* \(HTTP 301\), which autoseg "
                                           r"does not follow: set TD_API_SERVER"):
        store.read_table(TableName(DB, "customers"))


def test_unreachable_server_is_a_one_line_service_error() -> None:
    emulator = start_td_emulator(apikey=APIKEY, databases=[DB])
    endpoint = emulator.endpoint
    emulator.stop()
    match = (r"^cannot reach Treasure Data at 127\.0\.0\.1 \(\w+\) .*gave up after 1 retries: "
             "check TD_API_SERVER")
    with (TDStore(APIKEY, endpoint, "hive", max_retries=1, backoff_base=0.0) as store,
          pytest.raises(ServiceError, match=match) as info):
        store.table_columns(TableName(DB, "customers"))
    assert "\n" not in str(info.value)


def test_job_timeout_kills_the_job(td: TDEmulator) -> None:
    _seed_customers(td)
    td.job_running_polls = 1000
    with (_store(td, job_timeout=0.0) as store,
          pytest.raises(ServiceError, match=r"did not finish within 0 s .* it was killed")):
        store.read_table(TableName(DB, "customers"))
    assert td.requests_matching("POST", r"/v3/job/kill/")


# -- streamed rows (RowChunks) -----------------------------------------------------------------


CHUNK_SIZES = [0, 3, 0, 1, 2, 1, 0]  # several chunks, some empty


def _bulk_sessions(td: TDEmulator) -> list[str]:
    """Names of the bulk-import sessions created, in order."""
    return [r.path.split("/")[4] for r in td.requests_matching("POST", r"/v3/bulk_import/create/")]


@pytest.mark.parametrize("rows_per_import", [1_000_000, 2])
def test_streamed_chunks_write_like_one_arrow_table(
    td: TDEmulator, rows_per_import: int
) -> None:
    table = stream_table()
    with _store(td, stream_rows_per_import=rows_per_import) as store:
        store.write_tables([TableWrite(TableName(DB, "whole_t"), table, "overwrite")])
        rows = RowChunks(STREAM_SCHEMA, iter(chunks_of(table, CHUNK_SIZES)))
        store.write_tables([TableWrite(TableName(DB, "streamed_t"), rows, "overwrite")])
        whole = store.read_table(TableName(DB, "whole_t"))
        streamed = store.read_table(TableName(DB, "streamed_t"))
    assert td.table_schema(DB, "streamed_t") == td.table_schema(DB, "whole_t") == [
        ("customer_id", "string"), ("orders", "long"), ("spend", "double"),
        ("signup", "string"), ("member", "string")]
    assert streamed.schema == whole.schema
    # Everything but the upload time, which differs between the two writes.
    assert (streamed.drop_columns(["time"]).sort_by("customer_id")
            .equals(whole.drop_columns(["time"]).sort_by("customer_id")))
    back = streamed.sort_by("customer_id").to_pydict()
    assert back["customer_id"][:3] == ["00123", "00456", "00789"]  # leading zeros kept
    assert back["spend"] == [10.5, None, None, 3.0, 4.25, None, 6.0]  # NaN is null on TD
    assert back["signup"][0] == "2024-01-01" and back["member"][:3] == ["true", "false", None]
    assert len(set(back["time"])) == 1  # one upload time for the whole write
    assert _staging_left(td) == [] and td.bulk_imports == {}


def test_stream_larger_than_rows_per_import_uses_several_sessions(
    td: TDEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    table = _new_rows(23)
    # One chunk bigger than a group (sliced) and a few smaller ones.
    rows = RowChunks(table.schema, iter(chunks_of(table, [12, 0, 3, 5, 3])))
    with _store(td, stream_rows_per_import=5) as store:
        store.write_tables([TableWrite(TableName(DB, "clusters"), rows, "overwrite")])
    sessions = _bulk_sessions(td)
    assert len(sessions) == 5  # ceil(23 / 5) imports of at most 5 rows
    assert len(set(sessions)) == 5
    assert all(re.fullmatch(r"clusters_autoseg_tmp_[0-9a-f]{8}_[0-4]", s) for s in sessions)
    assert _ids(td, "clusters") == sorted(table.column("customer_id").to_pylist())
    assert td.read_table(DB, "clusters")["cluster_id"].sum() == sum(range(23))
    assert _staging_left(td) == [] and td.bulk_imports == {}
    assert "wrote 23 rows to Treasure Data table autoseg_db.clusters (overwrite)" in caplog.text
    for record in caplog.records:
        assert APIKEY not in record.getMessage()


def test_stream_column_null_in_the_first_import_gets_the_one_import_type(
    td: TDEmulator,
) -> None:
    # TD types a column from the import that adds it: "spend" has no value in the first group.
    table = pa.table({"k": ["a", "b", "c", "d"], "spend": [None, None, 1.5, 2.0],
                      "n": pa.array([None, None, 7, None], pa.int64())})
    with _store(td, stream_rows_per_import=2) as store:
        store.write_tables([TableWrite(TableName(DB, "whole_t"), table, "overwrite")])
        rows = RowChunks(table.schema, iter(chunks_of(table, [1, 1, 2])))
        store.write_tables([TableWrite(TableName(DB, "streamed_t"), rows, "overwrite")])
        streamed = store.read_table(TableName(DB, "streamed_t")).drop_columns(["time"])
        whole = store.read_table(TableName(DB, "whole_t")).drop_columns(["time"])
    assert streamed.sort_by("k").equals(whole.sort_by("k"))
    assert td.table_schema(DB, "streamed_t") == td.table_schema(DB, "whole_t") == [
        ("k", "string"), ("spend", "double"), ("n", "long")]


def test_zero_chunks_make_a_typed_empty_table(td: TDEmulator, store: TDStore) -> None:
    _seed_customers(td)
    empty = _new_rows(1).slice(0, 0)  # typed columns, no rows
    store.write_tables([TableWrite(TableName(DB, "customers"),
                                   RowChunks(empty.schema, iter([])), "overwrite")])
    store.write_tables([TableWrite(TableName(DB, "whole_t"), empty, "overwrite")])
    back = store.read_table(TableName(DB, "customers"))
    assert back.num_rows == 0
    assert back.column_names == ["customer_id", "spend", "orders", "cluster_id", "time"]
    assert td.table_schema(DB, "customers") == td.table_schema(DB, "whole_t") == [
        ("customer_id", "string"), ("spend", "double"), ("orders", "long"),
        ("cluster_id", "long")]
    assert _bulk_sessions(td) == []  # pytd refuses zero rows: the staging table is made empty
    assert _staging_left(td) == []


def test_append_streamed_chunks(td: TDEmulator) -> None:
    _seed_customers(td)
    table = _new_rows(5).drop_columns(["cluster_id"])
    with _store(td, stream_rows_per_import=2) as store:
        store.write_tables([TableWrite(TableName(DB, "customers"),
                                       RowChunks(table.schema, iter(chunks_of(table, [2, 3]))),
                                       "append")])
    assert _ids(td, "customers") == OLD_IDS + [f"n{i:04d}" for i in range(10, 15)]
    assert len(_bulk_sessions(td)) == 3  # all into one staging table...
    assert len([j for j in td.jobs if "INSERT INTO" in j["query"]]) == 1  # ...one INSERT job
    assert _staging_left(td) == [] and td.bulk_imports == {}


@pytest.mark.parametrize(
    "error",
    [RuntimeError("a Dask worker died"),
     InputDataError("column 'x' of the input table holds text"),
     KeyboardInterrupt()],
    ids=["runtime-error", "autoseg-error", "keyboard-interrupt"],
)
def test_stream_failing_midway_leaves_the_old_table(
    td: TDEmulator, error: BaseException
) -> None:
    _seed_customers(td)
    table = _new_rows(6)
    rows = RowChunks(table.schema, failing_chunks(chunks_of(table, [3, 3]), error))
    with (_store(td, stream_rows_per_import=2) as store,
          pytest.raises(type(error)) as info):
        store.write_tables([TableWrite(TableName(DB, "customers"), rows, "overwrite")])
    assert info.value is error and str(info.value) == str(error)  # propagates unchanged
    assert len(_bulk_sessions(td)) == 3  # three groups were imported before the failure
    assert _ids(td, "customers") == OLD_IDS
    assert td.read_table(DB, "customers")["time"].tolist() == [T0] * 3
    assert [c for c, _ in td.table_schema(DB, "customers")] == [
        "customer_id", "spend", "orders"]
    assert not td.requests_matching("POST", r"/v3/table/swap/")
    assert _staging_left(td) == [] and td.bulk_imports == {}


def test_failed_later_import_cleans_up_every_session(td: TDEmulator) -> None:
    _seed_customers(td)
    table = _new_rows(6)
    # The second import's commit fails: its session (not deleted by pytd) must go too.
    td.fail_next("POST", r"/v3/bulk_import/commit/", status=500, skip=1)
    with (_store(td, stream_rows_per_import=2) as store,
          pytest.raises(ServiceError, match="HTTP 500") as info):
        store.write_tables([TableWrite(TableName(DB, "customers"),
                                       RowChunks(table.schema, iter([table])), "overwrite")])
    assert str(info.value).endswith("; no table was changed")
    assert len(_bulk_sessions(td)) == 2
    assert _ids(td, "customers") == OLD_IDS
    assert _staging_left(td) == [] and td.bulk_imports == {}


def test_streamed_and_pandas_writes_fail_together(td: TDEmulator) -> None:
    _seed_customers(td)
    _seed_customers(td, "shap_values")
    table = _new_rows(4)
    rows = RowChunks(table.schema,
                     failing_chunks(chunks_of(table, [4]), RuntimeError("worker died")))
    with _store(td, stream_rows_per_import=2) as store, pytest.raises(RuntimeError,
                                                                      match="^worker died$"):
        store.write_tables([
            TableWrite(TableName(DB, "shap_values"), pd.DataFrame({"customer_id": ["s1"]}),
                       "overwrite"),
            TableWrite(TableName(DB, "customers"), rows, "overwrite"),
            TableWrite(TableName(DB, "importance"), pd.DataFrame({"feature": ["f"]}),
                       "overwrite"),
        ])
    assert _ids(td, "customers") == OLD_IDS
    assert _ids(td, "shap_values") == OLD_IDS
    assert td.table_names(DB) == ["customers", "shap_values"]
    assert _staging_left(td) == [] and td.bulk_imports == {}


def test_streamed_write_and_pandas_write_succeed_together(td: TDEmulator) -> None:
    _seed_customers(td)
    table = _new_rows(3)
    with _store(td, stream_rows_per_import=2) as store:
        store.write_tables([
            TableWrite(TableName(DB, "customers"),
                       RowChunks(table.schema, iter(chunks_of(table, [1, 2]))), "overwrite"),
            TableWrite(TableName(DB, "importance"), pd.DataFrame({"feature": ["f"]}),
                       "overwrite"),
        ])
    assert _ids(td, "customers") == ["n0010", "n0011", "n0012"]
    assert td.read_table(DB, "importance")["feature"].tolist() == ["f"]
    assert _staging_left(td) == [] and td.bulk_imports == {}


def test_streamed_column_names_are_checked_from_the_schema(
    td: TDEmulator, store: TDStore
) -> None:
    pulled: list[pa.Table] = []

    def chunks() -> Iterator[pa.Table]:
        table = pa.table({"Total Spend": [1.0]})
        pulled.append(table)
        yield table

    rows = RowChunks(pa.schema([("Total Spend", pa.float64())]), chunks())
    with pytest.raises(InputDataError, match=r"^column 'Total Spend' of output table "
                                             r"'autoseg_db.out_t' would be renamed to "
                                             r"'total_spend' by Treasure Data: rename it"):
        store.write_tables([TableWrite(TableName(DB, "out_t"), rows, "overwrite")])
    assert pulled == [] and td.requests == []  # refused before the stream or TD was touched


@pytest.mark.parametrize(
    ("time_type", "match"),
    [(pa.string(), r"column 'time' of output table 'autoseg_db.out_t' holds object values, but "
                   r"Treasure Data needs integer unix seconds there"),
     (pa.float64(), "holds float64 values")],
)
def test_streamed_time_column_type_is_checked_from_the_schema(
    td: TDEmulator, store: TDStore, time_type: pa.DataType, match: str
) -> None:
    schema = pa.schema([("k", pa.string()), ("time", time_type)])
    with pytest.raises(InputDataError, match=match):
        store.write_tables([TableWrite(TableName(DB, "out_t"), RowChunks(schema, iter([])),
                                       "overwrite")])
    assert td.requests == []


def test_streamed_time_values_are_checked_per_chunk(td: TDEmulator) -> None:
    _seed_customers(td)
    schema = pa.schema([("customer_id", pa.string()), ("time", pa.int64())])
    good = pa.table({"customer_id": ["a", "b"], "time": [T0, T0 + 1]}, schema=schema)
    bad = pa.table({"customer_id": ["c"], "time": pa.array([None], pa.int64())}, schema=schema)
    with (_store(td, stream_rows_per_import=2) as store,
          pytest.raises(InputDataError, match=r"^column 'time' of output table "
                                              r"'autoseg_db.customers' has missing values")):
        store.write_tables([TableWrite(TableName(DB, "customers"),
                                       RowChunks(schema, iter([good, bad])), "overwrite")])
    assert _ids(td, "customers") == OLD_IDS
    assert _staging_left(td) == [] and td.bulk_imports == {}
    # A valid time column is kept as given.
    with _store(td, stream_rows_per_import=2) as store:
        store.write_tables([TableWrite(TableName(DB, "timed_t"), RowChunks(schema, iter([good])),
                                       "overwrite")])
    assert td.read_table(DB, "timed_t")["time"].tolist() == [T0, T0 + 1]


def test_chunk_without_the_schema_columns_is_refused(td: TDEmulator, store: TDStore) -> None:
    _seed_customers(td)
    schema = pa.schema([("customer_id", pa.string()), ("orders", pa.int64())])
    chunk = pa.table({"customer_id": ["a"], "spend": [1.0]})
    with pytest.raises(InputDataError, match=r"^a chunk of rows for output table "
                                             r"'autoseg_db.customers' does not have the table's "
                                             r"columns \(missing orders; unexpected spend\)"):
        store.write_tables([TableWrite(TableName(DB, "customers"),
                                       RowChunks(schema, iter([chunk])), "overwrite")])
    assert _ids(td, "customers") == OLD_IDS and _staging_left(td) == []


def test_stream_rows_per_import_must_be_positive(td: TDEmulator) -> None:
    with pytest.raises(UsageError, match="stream_rows_per_import=0 must be >= 1"):
        _store(td, stream_rows_per_import=0)
