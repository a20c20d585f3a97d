"""The embedded default store: a local DuckDB file; ``dbname`` is a DuckDB schema."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pyarrow as pa

from autoseg.errors import InputDataError, ServiceError, UsageError
from autoseg.io.base import RowChunks, TableWrite
from autoseg.names import TableName

DEFAULT_SCHEMA = "main"


class _StreamedRows:
    """:class:`RowChunks` as a one-pass Arrow stream DuckDB scans, one chunk at a time.

    DuckDB reports an exception raised while it pulls from the stream as its own
    ``InvalidInputException`` (the original only as text); the stream keeps the original in
    ``failure`` so that the store can roll back and re-raise it unchanged.
    """

    def __init__(self, rows: RowChunks, where: str) -> None:
        self.rows = rows
        self.where = where
        self.failure: BaseException | None = None

    def reader(self) -> pa.RecordBatchReader:
        return pa.RecordBatchReader.from_batches(self.rows.schema, self._batches())

    def _batches(self) -> Iterator[pa.RecordBatch]:
        try:
            for chunk in self.rows.cast_chunks(self.where):
                yield from chunk.to_batches()
        except GeneratorExit:  # closed early by the reader: not a failure of the rows
            raise
        except BaseException as exc:
            self.failure = exc
            raise


def _quote(identifier: str) -> str:
    """Quote an identifier for DuckDB SQL (names are validated earlier; this is belt and braces)."""
    return '"' + identifier.replace('"', '""') + '"'


def _qualified(name: TableName, catalog: str) -> str:
    """``catalog.schema.table``: with the catalog, a schema named like the database file
    (``shop.duckdb`` holding ``shop.customers``) is not ambiguous to DuckDB."""
    return f"{_quote(catalog)}.{_quote(name.database or DEFAULT_SCHEMA)}.{_quote(name.table)}"


class DuckDBStore:
    """Tables in a DuckDB database file.

    Writes happen in one transaction: an overwrite builds the new table under a staging name,
    drops the old one and renames the staging table, and either all tables change or none does.
    :class:`RowChunks` are scanned as an Arrow stream inside that transaction, so they are never
    all in memory, and a stream that fails part-way rolls everything back.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.description = f"duckdb:{path}"
        self._conn: duckdb.DuckDBPyConnection | None = None

    def _file_exists(self) -> bool:
        return self.path == ":memory:" or Path(self.path).exists()

    def _connect(self) -> duckdb.DuckDBPyConnection:
        # Only writes reach this for a file that does not exist yet: reads check first, so a
        # failed run never leaves a new empty database file behind.
        if self._conn is None:
            parent = Path(self.path).parent
            if self.path != ":memory:" and not parent.exists():
                raise UsageError(
                    f"--store={self.description!r}: directory {str(parent)!r} does not exist"
                )
            try:
                self._conn = duckdb.connect(self.path)
            except duckdb.Error as exc:
                first_line = str(exc).splitlines()[0]
                raise ServiceError(
                    f"--store={self.description!r}: cannot open the DuckDB file: {first_line}"
                ) from None
        return self._conn

    def _catalog(self) -> str:
        """The attached database's name (DuckDB names it after the file's stem)."""
        rows = self._connect().execute("SELECT current_database()").fetchall()
        return str(rows[0][0])

    def _qualified(self, name: TableName) -> str:
        return _qualified(name, self._catalog())

    def _exists(self, name: TableName) -> bool:
        if not self._file_exists():
            return False
        rows = self._connect().execute(
            "SELECT count(*) FROM information_schema.tables "
            "WHERE table_catalog = current_database() AND table_schema = ? AND table_name = ?",
            [name.database or DEFAULT_SCHEMA, name.table],
        ).fetchall()  # fetch everything: DuckDB 2 refuses new work while a result is open
        return bool(rows and rows[0][0])

    def table_columns(self, name: TableName) -> list[str] | None:
        """Column names of ``name`` in order, or ``None`` when it does not exist."""
        if not self._exists(name):
            return None
        rows = self._connect().execute(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_catalog = current_database() AND table_schema = ? AND table_name = ? "
            "ORDER BY ordinal_position",
            [name.database or DEFAULT_SCHEMA, name.table],
        ).fetchall()
        return [r[0] for r in rows]

    def read_table(self, name: TableName) -> pa.Table:
        """Read ``name`` whole as an Arrow table (types kept exactly for the output)."""
        if not self._file_exists():
            raise InputDataError(
                f"--input-table={str(name)!r}: the store file {self.path!r} does not exist: "
                "check --store (run `autoseg demo` to create the sample database)"
            )
        if not self._exists(name):
            raise InputDataError(
                f"--input-table={str(name)!r} does not exist in {self.description}: "
                "check the name (dbname.table_name) or the --store path"
            )
        relation = self._connect().sql(f"SELECT * FROM {self._qualified(name)}")
        # DuckDB 2 renamed a relation's arrow() to to_arrow_table().
        fetch = getattr(relation, "to_arrow_table", None) or relation.arrow
        return fetch()

    def write_tables(self, writes: list[TableWrite]) -> None:
        """Write all tables in one transaction; roll back everything on any failure.

        Parameters
        ----------
        writes
            Tables to write. A :class:`RowChunks` frame is consumed once, chunk by chunk; when
            its iterator raises, the transaction is rolled back and that exception propagates.

        Raises
        ------
        ServiceError
            DuckDB refused a statement; nothing was changed.
        """
        conn = self._connect()
        streams: list[_StreamedRows] = []
        try:
            conn.execute("BEGIN TRANSACTION")
            for i, write in enumerate(writes):
                schema = write.name.database or DEFAULT_SCHEMA
                catalog = self._catalog()
                conn.execute(f"CREATE SCHEMA IF NOT EXISTS {_quote(catalog)}.{_quote(schema)}")
                view = f"autoseg_write_{i}"
                if isinstance(write.frame, RowChunks):
                    stream = _StreamedRows(write.frame, f"output table {str(write.name)!r}")
                    streams.append(stream)
                    # The statement below scans the reader once; DuckDB stores the rows as
                    # they arrive, so the client never holds the whole table.
                    conn.register(view, stream.reader())
                    names = list(write.frame.schema.names)
                elif isinstance(write.frame, pa.Table):
                    conn.register(view, write.frame)
                    names = list(write.frame.column_names)
                else:
                    conn.register(view, write.frame)
                    names = [str(c) for c in write.frame.columns]
                target = self._qualified(write.name)
                if write.mode == "append" and self._exists(write.name):
                    columns = ", ".join(_quote(c) for c in names)
                    conn.execute(f"INSERT INTO {target} ({columns}) SELECT * FROM {view}")
                else:
                    staging = TableName(schema, f"{write.name.table}__autoseg_staging")
                    conn.execute(f"DROP TABLE IF EXISTS {self._qualified(staging)}")
                    conn.execute(f"CREATE TABLE {self._qualified(staging)} AS SELECT * FROM {view}")
                    conn.execute(f"DROP TABLE IF EXISTS {target}")
                    conn.execute(f"ALTER TABLE {self._qualified(staging)} "
                                 f"RENAME TO {_quote(write.name.table)}")
                conn.unregister(view)
            conn.execute("COMMIT")
        except BaseException as exc:
            with contextlib.suppress(duckdb.Error):
                conn.execute("ROLLBACK")
            # A chunk iterator that failed reaches us as DuckDB's error about the stream:
            # re-raise the iterator's own exception (an AutosegError keeps its message), with
            # its own cause, not DuckDB's wrapper, attached.
            failure = next((s.failure for s in streams if s.failure is not None), None)
            if failure is not None:
                raise failure from failure.__cause__
            if isinstance(exc, duckdb.Error):
                first_line = str(exc).splitlines()[0]
                raise ServiceError(
                    f"writing to {self.description} failed, nothing was changed: {first_line}"
                ) from None
            raise

    def check_columns(self, name: TableName, columns: list[str]) -> None:
        """DuckDB keeps every column name as given: nothing to refuse."""

    def close(self) -> None:
        """Close the connection."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

