"""The embedded default store: a local DuckDB file; ``dbname`` is a DuckDB schema.

DuckDB lets one process at a time open a file for writing, and while it does, no other process
may even read it. So the store never holds the file for the whole run: every read opens the file
read-only and closes it at once, and the write opens it read-write for its one transaction only.
A run that finds the file locked by another process waits for it (logging once which process
holds it), at most ``lock_timeout`` seconds (``--lock-timeout``), so runs that share a file
queue instead of failing.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import duckdb
import pyarrow as pa

from autoseg.atomic import raise_if_signalled, write_probe
from autoseg.errors import InputDataError, ServiceError, UsageError, os_error_message
from autoseg.io.base import RowChunks, TableWrite
from autoseg.names import TableName
from autoseg.parallel import cpu_cores

log = logging.getLogger(__name__)

DEFAULT_SCHEMA = "main"
DEFAULT_LOCK_TIMEOUT = 1800  # seconds; a nightly job rather waits than fails
_LOCK_ERROR = re.compile(r"Could not set lock|Conflicting lock", re.IGNORECASE)
_LOCK_HOLDER = re.compile(r"Conflicting lock is held in (?P<program>.*?) \(PID (?P<pid>\d+)\)")
_RETRY_SECONDS = (0.05, 0.1, 0.2, 0.5, 1.0)  # then every second


def lock_holder(message: str) -> str | None:
    """``"PID 123 (/usr/bin/python3)"`` from DuckDB's lock error, ``"another process"`` when
    it names none, or ``None`` when ``message`` is not about a lock.

    Parameters
    ----------
    message
        The text of a ``duckdb.IOException``.
    """
    if not _LOCK_ERROR.search(message):
        return None
    found = _LOCK_HOLDER.search(message)
    if found is None:
        return "another process"
    return f"PID {found['pid']} ({found['program']})"


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
                raise_if_signalled(f"while writing the {self.where}")
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

    Parameters
    ----------
    path
        The database file, or ``:memory:``.
    lock_timeout
        Seconds to wait for a file another process has locked before failing (0: fail at once).
    """

    def __init__(self, path: str, lock_timeout: float = DEFAULT_LOCK_TIMEOUT) -> None:
        self.path = path
        self.description = f"duckdb:{path}"
        self.lock_timeout = lock_timeout
        self._memory: duckdb.DuckDBPyConnection | None = None  # ":memory:" lives in its conn

    def _file_exists(self) -> bool:
        return self.path == ":memory:" or Path(self.path).exists()

    def _check_directory(self) -> None:
        parent = Path(self.path).parent
        if self.path != ":memory:" and not parent.is_dir():
            raise UsageError(
                f"--store={self.description!r}: directory {str(parent)!r} does not exist: "
                "create it or fix the path"
            )

    def _open_error(self, exc: Exception) -> ServiceError:
        first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return ServiceError(
            f"--store={self.description!r}: cannot open the DuckDB file: {first_line}"
        )

    def _open(self, write: bool) -> duckdb.DuckDBPyConnection:
        """Connect, waiting up to ``lock_timeout`` seconds while another process holds the file.

        Raises
        ------
        ServiceError
            The file stayed locked too long, or it cannot be opened (not a DuckDB file, ...).
        """
        started = time.monotonic()
        attempt = 0
        holder: str | None = None
        while True:
            try:
                conn = duckdb.connect(self.path, read_only=not write)
            except duckdb.ConnectionException as exc:
                # This process already has the file open for writing (its connections share
                # one database): a read goes through that same database.
                if not write and "different configuration" in str(exc):
                    write = True
                    continue
                raise self._open_error(exc) from None
            except duckdb.IOException as exc:
                holder = lock_holder(str(exc))
                if holder is None:
                    raise self._open_error(exc) from None
                waited = time.monotonic() - started
                if waited >= self.lock_timeout:
                    raise ServiceError(
                        f"--store={self.description!r}: the DuckDB file is locked by {holder} "
                        f"and stayed locked for {self.lock_timeout:g}s (--lock-timeout): let "
                        "that run finish, or raise --lock-timeout"
                    ) from None
                if attempt == 0:
                    log.warning("%s is locked by %s (another run writing to it?): waiting up "
                                "to %gs for it (--lock-timeout)", self.description, holder,
                                self.lock_timeout)
                pause = _RETRY_SECONDS[min(attempt, len(_RETRY_SECONDS) - 1)]
                time.sleep(min(pause, max(self.lock_timeout - waited, 0.0)))
                raise_if_signalled(f"while waiting for the lock on {self.description}")
                attempt += 1
                continue
            except duckdb.Error as exc:
                raise self._open_error(exc) from None
            if attempt:
                log.info("%s: got the lock after waiting %.1fs", self.description,
                         time.monotonic() - started)
            return conn

    @contextlib.contextmanager
    def _connection(self, write: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection for one operation, closed (the file's lock released) right after."""
        if self.path == ":memory:":
            if self._memory is None:
                self._memory = duckdb.connect(":memory:")
            yield self._memory
            return
        if write:
            # Only writes reach this for a file that does not exist yet: reads check first,
            # so a failed run never leaves a new empty database file behind.
            self._check_directory()
        conn = self._open(write)
        try:
            yield conn
        finally:
            try:
                conn.close()
            except duckdb.Error as exc:  # a checkpoint after a commit: the WAL has the data
                log.warning("%s: closing the file failed (%s); the written data is kept in "
                            "its .wal file", self.description, str(exc).splitlines()[0])

    @staticmethod
    def _catalog(conn: duckdb.DuckDBPyConnection) -> str:
        """The attached database's name (DuckDB names it after the file's stem)."""
        rows = conn.execute("SELECT current_database()").fetchall()
        return str(rows[0][0])

    @staticmethod
    def _exists_in(conn: duckdb.DuckDBPyConnection, name: TableName) -> bool:
        rows = conn.execute(
            "SELECT count(*) FROM information_schema.tables "
            "WHERE table_catalog = current_database() AND table_schema = ? AND table_name = ?",
            [name.database or DEFAULT_SCHEMA, name.table],
        ).fetchall()  # fetch everything: DuckDB 2 refuses new work while a result is open
        return bool(rows and rows[0][0])

    def table_columns(self, name: TableName) -> list[str] | None:
        """Column names of ``name`` in order, or ``None`` when it does not exist."""
        if not self._file_exists():
            return None
        with self._connection() as conn:
            if not self._exists_in(conn, name):
                return None
            rows = conn.execute(
                "SELECT column_name FROM information_schema.columns "
                "WHERE table_catalog = current_database() AND table_schema = ? "
                "AND table_name = ? ORDER BY ordinal_position",
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
        with self._connection() as conn:
            if not self._exists_in(conn, name):
                raise InputDataError(
                    f"--input-table={str(name)!r} does not exist in {self.description}: "
                    "check the name (dbname.table_name) or the --store path"
                )
            relation = conn.sql(f"SELECT * FROM {_qualified(name, self._catalog(conn))}")
            # DuckDB 2 renamed a relation's arrow() to to_arrow_table().
            fetch = getattr(relation, "to_arrow_table", None) or relation.arrow
            return fetch()

    def check_writable(self) -> None:
        """Pre-flight: prove the store can be written, before any work; holds no lock after.

        The directory must exist and take new files (DuckDB writes a ``.wal`` file beside the
        database), and an existing file must be a DuckDB database this process may open for
        writing. Waits for the file like every other open when another run holds it.

        Raises
        ------
        UsageError
            The directory does not exist (exit 2: fix ``--store``).
        ServiceError
            The directory or the file cannot be written, the file is not a DuckDB database (or
            one of a newer DuckDB), or it stayed locked for ``lock_timeout`` seconds (exit 4).
        """
        if self.path == ":memory:":
            return
        self._check_directory()
        path = Path(self.path)
        try:
            write_probe(path.parent, f".{path.name}.autoseg-probe-{os.getpid()}")
        except OSError as exc:
            raise ServiceError(
                f"--store={self.description!r}: "
                + os_error_message(str(path.parent), exc, "write to")
            ) from None
        if not path.exists():
            return
        try:
            os.close(os.open(path, os.O_RDWR))
        except OSError as exc:
            if exc.errno == errno.EISDIR or path.is_dir():
                raise ServiceError(
                    f"--store={self.description!r}: {self.path!r} is a directory, not a DuckDB "
                    "file: give the file's path"
                ) from None
            raise ServiceError(
                f"--store={self.description!r}: " + os_error_message(self.path, exc, "open")
            ) from None
        with self._connection():  # read-only: not a DuckDB file, or a newer one, fails here
            pass

    def write_tables(self, writes: list[TableWrite],
                     before_commit: Callable[[], None] | None = None) -> None:
        """Write all tables in one transaction; roll back everything on any failure.

        Parameters
        ----------
        writes
            Tables to write. A :class:`RowChunks` frame is consumed once, chunk by chunk; when
            its iterator raises, the transaction is rolled back and that exception propagates.
        before_commit
            Called when every table is written, before the transaction commits; when it
            raises, the transaction is rolled back and its exception propagates.

        Raises
        ------
        ServiceError
            DuckDB refused a statement; nothing was changed.
        """
        with self._connection(write=True) as conn:
            # One core fewer than DuckDB's default of all of them: the run draws its report
            # on a core meanwhile (see pipeline._Run._write), and on two cores DuckDB's
            # parallel insert gained nothing anyway, its row groups being rewritten by the
            # checkpoint on close (1M rows: 0.68 s with two threads, 0.62 s with one; 5M:
            # 3.2 s, 2.8 s; drawn beside the report, the whole write 1.32 s, 1.15 s).
            conn.execute(f"SET threads = {max(cpu_cores() - 1, 1)}")
            self._write_in(conn, writes, before_commit)

    def _write_in(self, conn: duckdb.DuckDBPyConnection, writes: list[TableWrite],
                  before_commit: Callable[[], None] | None = None) -> None:
        streams: list[_StreamedRows] = []
        try:
            conn.execute("BEGIN TRANSACTION")
            catalog = self._catalog(conn)
            for i, write in enumerate(writes):
                schema = write.name.database or DEFAULT_SCHEMA
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
                target = _qualified(write.name, catalog)
                if write.mode == "append" and self._exists_in(conn, write.name):
                    columns = ", ".join(_quote(c) for c in names)
                    conn.execute(f"INSERT INTO {target} ({columns}) SELECT * FROM {view}")
                else:
                    staging = _qualified(
                        TableName(schema, f"{write.name.table}__autoseg_staging"), catalog)
                    conn.execute(f"DROP TABLE IF EXISTS {staging}")
                    conn.execute(f"CREATE TABLE {staging} AS SELECT * FROM {view}")
                    conn.execute(f"DROP TABLE IF EXISTS {target}")
                    conn.execute(f"ALTER TABLE {staging} RENAME TO {_quote(write.name.table)}")
                conn.unregister(view)
            if before_commit is not None:
                before_commit()
            # The last moment a signal held by the run's write stage can still stop it cleanly.
            raise_if_signalled(f"while writing to {self.description}")
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
        """Release the in-memory database (a file holds no connection between operations)."""
        if self._memory is not None:
            self._memory.close()
            self._memory = None

