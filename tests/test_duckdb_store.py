"""The DuckDB store: reads, writes, all-or-nothing transactions, and files shared between
processes (a locked file is waited for, never held between operations)."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow as pa
import pytest

from autoseg.atomic import signals_deferred
from autoseg.errors import InputDataError, Interrupted, ServiceError, UsageError
from autoseg.io import RowChunks, TableWrite
from autoseg.io.duckdb_store import DuckDBStore, lock_holder
from autoseg.names import TableName

try:
    from streamed_rows import STREAM_SCHEMA, chunks_of, failing_chunks, stream_table
except ImportError:  # tests/ imported as a package
    from tests.streamed_rows import STREAM_SCHEMA, chunks_of, failing_chunks, stream_table


def _rows(path: Path, table: str) -> list[tuple]:
    with duckdb.connect(str(path)) as conn:
        return conn.sql(f"SELECT * FROM {table} ORDER BY ALL").fetchall()


def test_round_trip_keeps_types(tmp_path: Path) -> None:
    path = tmp_path / "s.duckdb"
    with duckdb.connect(str(path)) as conn:
        conn.execute("CREATE SCHEMA shop")
        conn.execute(
            "CREATE TABLE shop.t AS SELECT 1 AS id, DATE '2024-01-02' AS d, "
            "1.25::DECIMAL(10,2) AS m, '007' AS code"
        )
    store = DuckDBStore(str(path))
    table = store.read_table(TableName("shop", "t"))
    assert isinstance(table, pa.Table)
    store.write_tables([TableWrite(TableName("shop", "copy"), table, "overwrite")])
    store.close()
    with duckdb.connect(str(path)) as conn:
        described = {r[0]: r[1] for r in conn.sql("DESCRIBE shop.copy").fetchall()}
    assert described == {"id": "INTEGER", "d": "DATE", "m": "DECIMAL(10,2)", "code": "VARCHAR"}
    assert _rows(path, "shop.copy") == _rows(path, "shop.t")


def test_missing_table_and_missing_file(tmp_path: Path) -> None:
    missing_file = DuckDBStore(str(tmp_path / "nope.duckdb"))
    with pytest.raises(InputDataError, match="store file .* does not exist"):
        missing_file.read_table(TableName("db", "t"))
    assert not (tmp_path / "nope.duckdb").exists()  # reading never creates the file
    assert missing_file.table_columns(TableName("db", "t")) is None
    path = tmp_path / "s.duckdb"
    duckdb.connect(str(path)).close()
    with pytest.raises(InputDataError, match="'db.t' does not exist"):
        DuckDBStore(str(path)).read_table(TableName("db", "t"))


def test_overwrite_append_and_columns(tmp_path: Path) -> None:
    store = DuckDBStore(str(tmp_path / "s.duckdb"))
    name = TableName("db", "t")
    store.write_tables([TableWrite(name, pd.DataFrame({"a": [1, 2]}), "overwrite")])
    store.write_tables([TableWrite(name, pd.DataFrame({"a": [3]}), "append")])
    assert store.table_columns(name) == ["a"]
    store.write_tables([TableWrite(name, pd.DataFrame({"a": [9]}), "overwrite")])
    store.close()
    assert _rows(tmp_path / "s.duckdb", "db.t") == [(9,)]


def test_schema_named_like_the_database_file(tmp_path: Path) -> None:
    """``shop.duckdb`` holding ``shop.segments``: DuckDB calls the bare ``shop`` ambiguous
    (catalog or schema), so every statement names the catalog too."""
    store = DuckDBStore(str(tmp_path / "shop.duckdb"))
    name = TableName("shop", "segments")
    store.write_tables([TableWrite(name, pa.table({"id": [1, 2]}), "overwrite")])
    store.write_tables([TableWrite(name, pa.table({"id": [3]}), "append")])
    assert store.table_columns(name) == ["id"]
    assert store.read_table(name).column("id").to_pylist() == [1, 2, 3]
    store.write_tables([TableWrite(name, pa.table({"id": [9]}), "overwrite")])
    assert store.read_table(name).column("id").to_pylist() == [9]
    store.close()


def test_failed_write_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "s.duckdb"
    store = DuckDBStore(str(path))
    first, second = TableName("db", "first"), TableName("db", "second")
    store.write_tables([
        TableWrite(first, pd.DataFrame({"a": [1, 2]}), "overwrite"),
        TableWrite(second, pd.DataFrame({"b": ["x"]}), "overwrite"),
    ])
    # the second append has a column the table lacks: the whole transaction rolls back,
    # including the overwrite of the first table that had already run
    with pytest.raises(ServiceError, match="nothing was changed"):
        store.write_tables([
            TableWrite(first, pd.DataFrame({"a": [7, 8, 9]}), "overwrite"),
            TableWrite(second, pd.DataFrame({"zzz": [1]}), "append"),
        ])
    store.close()
    assert _rows(path, "db.first") == [(1,), (2,)]
    assert _rows(path, "db.second") == [("x",)]
    with duckdb.connect(str(path)) as conn:
        names = {r[0] for r in conn.sql("SELECT table_name FROM information_schema.tables")
                 .fetchall()}
    assert names == {"first", "second"}  # no staging table left behind


# -- streamed rows (RowChunks) -----------------------------------------------------------------


def _typed_rows(path: Path, table: str) -> tuple[dict[str, str], list[tuple]]:
    """Column types and rows (NaN and NULL told apart) of ``table``."""
    with duckdb.connect(str(path)) as conn:
        described = {r[0]: r[1] for r in conn.sql(f"DESCRIBE {table}").fetchall()}
        rows = conn.sql(
            f"SELECT customer_id, orders, CASE WHEN isnan(spend) THEN 'NaN' "
            f"ELSE CAST(spend AS VARCHAR) END, signup, member FROM {table} ORDER BY customer_id"
        ).fetchall()
    return described, rows


def _table_names(path: Path) -> set[str]:
    with duckdb.connect(str(path)) as conn:
        return {r[0] for r in conn.sql("SELECT table_name FROM information_schema.tables")
                .fetchall()}


def test_streamed_chunks_write_like_one_arrow_table(tmp_path: Path) -> None:
    path = tmp_path / "s.duckdb"
    table = stream_table()
    # Chunks of different sizes, some empty; one with its columns in another order and a
    # narrower integer type: every chunk is cast to the schema.
    chunks = chunks_of(table, [0, 3, 0, 2, 2])
    chunks[3] = chunks[3].select(["member", "spend", "signup", "orders", "customer_id"])
    chunks[3] = chunks[3].set_column(3, "orders", chunks[3].column("orders").cast(pa.int32()))
    store = DuckDBStore(str(path))
    store.write_tables([TableWrite(TableName("db", "whole"), table, "overwrite")])
    store.write_tables([TableWrite(TableName("db", "streamed"),
                                   RowChunks(STREAM_SCHEMA, iter(chunks)), "overwrite")])
    assert store.read_table(TableName("db", "streamed")).schema == table.schema
    store.close()
    described, rows = _typed_rows(path, "db.streamed")
    assert (described, rows) == _typed_rows(path, "db.whole")
    assert described == {"customer_id": "VARCHAR", "orders": "BIGINT", "spend": "DOUBLE",
                         "signup": "DATE", "member": "BOOLEAN"}
    assert rows[:3] == [("00123", 1, "10.5", date(2024, 1, 1), True),
                        ("00456", 2, "NaN", date(2024, 1, 2), False),
                        ("00789", 3, None, date(2024, 1, 3), None)]


def test_zero_chunks_make_a_typed_empty_table(tmp_path: Path) -> None:
    path = tmp_path / "s.duckdb"
    store = DuckDBStore(str(path))
    store.write_tables([TableWrite(TableName("db", "t"), pd.DataFrame({"a": [1, 2]}),
                                   "overwrite")])
    store.write_tables([TableWrite(TableName("db", "t"), RowChunks(STREAM_SCHEMA, iter([])),
                                   "overwrite")])
    store.close()
    described, rows = _typed_rows(path, "db.t")
    assert rows == []
    assert described == {"customer_id": "VARCHAR", "orders": "BIGINT", "spend": "DOUBLE",
                         "signup": "DATE", "member": "BOOLEAN"}


def test_append_streamed_chunks(tmp_path: Path) -> None:
    path = tmp_path / "s.duckdb"
    table = stream_table()
    store = DuckDBStore(str(path))
    store.write_tables([TableWrite(TableName("db", "t"), table.slice(0, 2), "overwrite")])
    rows = RowChunks(STREAM_SCHEMA, iter(chunks_of(table.slice(2), [2, 0, 3])))
    store.write_tables([TableWrite(TableName("db", "t"), rows, "append")])
    store.close()
    assert _typed_rows(path, "db.t")[1] == _typed_rows_of(tmp_path, table)


def _typed_rows_of(tmp_path: Path, table: pa.Table) -> list[tuple]:
    """The rows ``_typed_rows`` reads back after writing ``table`` whole to a fresh file."""
    path = tmp_path / "reference.duckdb"
    store = DuckDBStore(str(path))
    store.write_tables([TableWrite(TableName("db", "ref"), table, "overwrite")])
    store.close()
    return _typed_rows(path, "db.ref")[1]


@pytest.mark.parametrize(
    "error",
    [RuntimeError("a Dask worker died"),
     InputDataError("column 'x' of the input table holds text"),
     KeyboardInterrupt()],
    ids=["runtime-error", "autoseg-error", "keyboard-interrupt"],
)
@pytest.mark.parametrize("mode", ["overwrite", "append"])
def test_stream_failing_midway_changes_nothing(
    tmp_path: Path, error: BaseException, mode: str
) -> None:
    path = tmp_path / "s.duckdb"
    table = stream_table()
    store = DuckDBStore(str(path))
    store.write_tables([TableWrite(TableName("db", "t"), table.slice(0, 2), "overwrite")])
    before = _typed_rows(path, "db.t")
    rows = RowChunks(STREAM_SCHEMA, failing_chunks(chunks_of(table, [3, 4]), error))
    with pytest.raises(type(error)) as info:
        store.write_tables([TableWrite(TableName("db", "t"), rows, mode)])
    assert info.value is error and str(info.value) == str(error)  # propagates unchanged
    store.close()
    assert _typed_rows(path, "db.t") == before  # the old rows, exactly
    assert _table_names(path) == {"t"}  # no staging table left behind


def test_streamed_and_pandas_writes_fail_together(tmp_path: Path) -> None:
    path = tmp_path / "s.duckdb"
    store = DuckDBStore(str(path))
    first, labelled = TableName("db", "importance"), TableName("db", "labelled")
    store.write_tables([TableWrite(first, pd.DataFrame({"feature": ["old"]}), "overwrite")])
    table = stream_table()
    rows = RowChunks(STREAM_SCHEMA, failing_chunks(chunks_of(table, [3, 4])[:1],
                                                    RuntimeError("worker died")))
    with pytest.raises(RuntimeError, match="^worker died$"):
        store.write_tables([
            TableWrite(first, pd.DataFrame({"feature": ["new"]}), "overwrite"),
            TableWrite(labelled, rows, "overwrite"),
            TableWrite(TableName("db", "shap"), pd.DataFrame({"v": [1.0]}), "overwrite"),
        ])
    store.close()
    assert _rows(path, "db.importance") == [("old",)]
    assert _table_names(path) == {"importance"}


def test_before_commit_failure_rolls_every_table_back(tmp_path: Path) -> None:
    # The pipeline stages its report there, after the rows are written: when that fails,
    # no table may change.
    path = tmp_path / "s.duckdb"
    store = DuckDBStore(str(path))
    first = TableName("db", "importance")
    store.write_tables([TableWrite(first, pd.DataFrame({"feature": ["old"]}), "overwrite")])
    calls: list[int] = []

    def failing_report() -> None:
        calls.append(1)
        raise RuntimeError("report failed")

    with pytest.raises(RuntimeError, match="^report failed$"):
        store.write_tables([
            TableWrite(first, pd.DataFrame({"feature": ["new"]}), "overwrite"),
            TableWrite(TableName("db", "labelled"), stream_table(), "overwrite"),
        ], before_commit=failing_report)
    assert calls == [1]
    assert _rows(path, "db.importance") == [("old",)]
    assert _table_names(path) == {"importance"}
    store.write_tables([TableWrite(first, pd.DataFrame({"feature": ["new"]}), "overwrite")],
                       before_commit=calls.clear)
    assert _rows(path, "db.importance") == [("new",)] and calls == []


def test_streamed_write_and_pandas_write_succeed_together(tmp_path: Path) -> None:
    path = tmp_path / "s.duckdb"
    table = stream_table()
    store = DuckDBStore(str(path))
    store.write_tables([
        TableWrite(TableName("db", "labelled"),
                   RowChunks(STREAM_SCHEMA, iter(chunks_of(table, [4, 3]))), "overwrite"),
        TableWrite(TableName("db", "importance"), pd.DataFrame({"feature": ["f"]}),
                   "overwrite"),
    ])
    store.close()
    assert _typed_rows(path, "db.labelled")[1] == _typed_rows_of(tmp_path, table)
    assert _rows(path, "db.importance") == [("f",)]


def test_streamed_append_of_unknown_column_is_a_service_error(tmp_path: Path) -> None:
    path = tmp_path / "s.duckdb"
    store = DuckDBStore(str(path))
    store.write_tables([TableWrite(TableName("db", "t"), pd.DataFrame({"a": [1]}), "overwrite")])
    schema = pa.schema([("zzz", pa.int64())])
    rows = RowChunks(schema, iter([pa.table({"zzz": [1, 2]}, schema=schema)]))
    with pytest.raises(ServiceError, match=r"^writing to duckdb:.* failed, nothing was changed: "
                                           r"Binder Error"):
        store.write_tables([TableWrite(TableName("db", "t"), rows, "append")])
    store.close()
    assert _rows(path, "db.t") == [(1,)]


@pytest.mark.parametrize(
    ("chunk", "match"),
    [
        (pa.table({"a": [1], "b": ["x"]}),
         r"^a chunk of rows for output table 'db.t' does not have the table's columns "
         r"\(unexpected b\): every chunk must have the same columns$"),
        (pa.table({"b": ["x"]}),
         r"^a chunk of rows for output table 'db.t' does not have the table's columns "
         r"\(missing a; unexpected b\)"),
        (pa.table({"a": ["not a number"]}),
         r"^a chunk of rows for output table 'db.t' does not fit the table's column types: "),
    ],
    ids=["extra-column", "missing-column", "bad-value"],
)
def test_chunk_that_does_not_fit_the_schema_is_refused(
    tmp_path: Path, chunk: pa.Table, match: str
) -> None:
    path = tmp_path / "s.duckdb"
    store = DuckDBStore(str(path))
    store.write_tables([TableWrite(TableName("db", "t"), pd.DataFrame({"a": [1]}), "overwrite")])
    rows = RowChunks(pa.schema([("a", pa.int64())]), iter([chunk]))
    with pytest.raises(InputDataError, match=match):
        store.write_tables([TableWrite(TableName("db", "t"), rows, "overwrite")])
    store.close()
    assert _rows(path, "db.t") == [(1,)]


# --- sharing one file between processes ------------------------------------------------------

_HOLD_LOCK = (
    "import duckdb, sys\n"
    "conn = duckdb.connect(sys.argv[1])\n"
    "print('locked', flush=True)\n"
    "sys.stdin.read()\n"
    "conn.close()\n"
)


@contextlib.contextmanager
def _locked_by_another_process(path: Path) -> Iterator[subprocess.Popen[str]]:
    """Another process holding ``path`` open for writing until its stdin is closed."""
    holder = subprocess.Popen([sys.executable, "-c", _HOLD_LOCK, str(path)], text=True,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        yield holder
    finally:
        if holder.stdin is not None and not holder.stdin.closed:
            holder.stdin.close()
        holder.wait(timeout=60)


def _frame() -> pd.DataFrame:
    return pd.DataFrame({"a": [1, 2, 3]})


def test_locked_file_times_out_in_one_line_naming_the_process(tmp_path: Path) -> None:
    path = tmp_path / "x.duckdb"
    DuckDBStore(str(path)).write_tables([TableWrite(TableName("s", "t"), _frame(), "overwrite")])
    store = DuckDBStore(str(path), lock_timeout=0)
    with _locked_by_another_process(path) as holder:
        pattern = (rf"^--store='duckdb:.*x.duckdb': the DuckDB file is locked by PID "
                   rf"{holder.pid} \(.*\) and stayed locked for 0s \(--lock-timeout\): let that "
                   r"run finish, or raise --lock-timeout$")
        with pytest.raises(ServiceError, match=pattern):
            store.read_table(TableName("s", "t"))
        with pytest.raises(ServiceError, match=pattern):
            store.write_tables([TableWrite(TableName("s", "u"), _frame(), "overwrite")])
        with pytest.raises(ServiceError, match=pattern):
            store.check_writable()
    assert _rows(path, "s.t") == [(1,), (2,), (3,)]


def test_a_run_waits_for_the_lock_and_logs_once_who_holds_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "x.duckdb"
    store = DuckDBStore(str(path), lock_timeout=120)
    store.write_tables([TableWrite(TableName("s", "t"), _frame(), "overwrite")])
    with _locked_by_another_process(path) as holder:
        # the holder lets go a moment after this run has started to wait
        assert holder.stdin is not None
        release = threading.Timer(1.0, holder.stdin.close)
        release.start()
        with caplog.at_level(logging.INFO, logger="autoseg.io.duckdb_store"):
            store.write_tables([TableWrite(TableName("s", "u"), _frame(), "overwrite")])
        release.join()
    waits = [r.getMessage() for r in caplog.records if "waiting up to" in r.getMessage()]
    assert len(waits) == 1, caplog.text
    assert f"is locked by PID {holder.pid} (" in waits[0]
    assert "waiting up to 120s for it (--lock-timeout)" in waits[0]
    assert _rows(path, "s.u") == [(1,), (2,), (3,)]


def test_the_store_holds_no_lock_between_operations(tmp_path: Path) -> None:
    path = tmp_path / "x.duckdb"
    store = DuckDBStore(str(path), lock_timeout=0)
    store.write_tables([TableWrite(TableName("s", "t"), _frame(), "overwrite")])
    assert store.table_columns(TableName("s", "t")) == ["a"]
    store.read_table(TableName("s", "t"))
    store.check_writable()
    # another process can write to the file while this store is open (between operations)
    other = subprocess.run(
        [sys.executable, "-c", "import duckdb, sys; duckdb.connect(sys.argv[1]).execute("
         "'CREATE TABLE s.other AS SELECT 42 AS b').close()", str(path)],
        capture_output=True, text=True, timeout=120,
    )
    assert other.returncode == 0, other.stderr
    assert store.read_table(TableName("s", "other")).to_pylist() == [{"b": 42}]
    store.close()


def test_reads_while_this_process_has_the_file_open_for_writing(tmp_path: Path) -> None:
    path = tmp_path / "x.duckdb"
    with duckdb.connect(str(path)) as conn:
        conn.execute("CREATE SCHEMA s; CREATE TABLE s.t AS SELECT 1 AS a")
        store = DuckDBStore(str(path), lock_timeout=0)
        assert store.read_table(TableName("s", "t")).to_pylist() == [{"a": 1}]


def test_missing_directory_is_a_usage_error_on_write(tmp_path: Path) -> None:
    store = DuckDBStore(str(tmp_path / "nowhere" / "x.duckdb"))
    with pytest.raises(UsageError, match=r"directory '.*nowhere' does not exist: create it"):
        store.write_tables([TableWrite(TableName("s", "t"), _frame(), "overwrite")])


@pytest.mark.parametrize(("message", "holder"), [
    ('IO Error: Could not set lock on file "/x.duckdb": Conflicting lock is held in '
     "/usr/bin/python3.11 (PID 4242). See also https://duckdb.org/docs", "PID 4242 "
     "(/usr/bin/python3.11)"),
    ('IO Error: Could not set lock on file "/x.duckdb": Resource temporarily unavailable',
     "another process"),
    ("IO Error: No space left on device", None),
])
def test_lock_holder_is_parsed_from_the_message(message: str, holder: str | None) -> None:
    assert lock_holder(message) == holder


def test_a_signal_held_by_the_write_stage_stops_before_the_commit(tmp_path: Path) -> None:
    path = tmp_path / "x.duckdb"
    store = DuckDBStore(str(path))
    store.write_tables([TableWrite(TableName("s", "t"), _frame(), "overwrite")])
    with pytest.raises(Interrupted, match=r"^stopped by signal SIGTERM while writing to "
                       r"duckdb:.*; nothing was written$"), signals_deferred():
        os.kill(os.getpid(), signal.SIGTERM)
        store.write_tables([TableWrite(TableName("s", "t"), pd.DataFrame({"a": [9]}),
                                       "overwrite")])
    assert _rows(path, "s.t") == [(1,), (2,), (3,)]
    with pytest.raises(Interrupted, match=r"while writing the output table"), \
            signals_deferred():
        os.kill(os.getpid(), signal.SIGTERM)
        rows = RowChunks(STREAM_SCHEMA, iter(chunks_of(stream_table(), [3, 4])))
        store.write_tables([TableWrite(TableName("s", "t"), rows, "overwrite")])
    assert _rows(path, "s.t") == [(1,), (2,), (3,)]
