"""The DuckDB store: reads, writes, and all-or-nothing transactions."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pandas as pd
import pyarrow as pa
import pytest

from autoseg.config import TableName
from autoseg.errors import InputDataError, ServiceError
from autoseg.io import TableWrite
from autoseg.io.duckdb_store import DuckDBStore


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
