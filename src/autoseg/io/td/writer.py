"""Staged writes to Treasure Data: bulk imports into staging tables, then a swap or one append.

Every frame is first bulk-imported (``writer="bulk_import"``, ``fmt="msgpack"``: the csv format
re-types ``"00123"`` and uploads the index) into its own staging table
``<table>_autoseg_tmp_<random>`` in the target's database. Only when every staging table is
complete are the targets changed: an overwrite swaps the staging table in
(``POST /v3/table/swap``), an append runs ONE server-side ``INSERT INTO target SELECT ... FROM
staging`` Hive job. A failure before that point leaves every target untouched; a failed swap is
undone by swapping back. Staging tables are deleted afterwards, and on any failure
(``KeyboardInterrupt`` included).

Streamed rows (:class:`~autoseg.io.base.RowChunks`, e.g. one Dask partition at a time) go into
the staging table the same way without ever being all in memory: chunks are grouped into bulk
imports of at most ``stream_rows_per_import`` rows; the first import creates the staging table,
each later one appends to it, each in its own bulk-import session (``<staging>_<n>``). Only then
do the targets change, as above, so a stream that fails part-way changes no target.

A frame without a ``time`` column gains one (the upload time, integer unix seconds), as every
TD table has one.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from secrets import token_hex  # the standard library's, not autoseg.secrets
from typing import Any

import pandas as pd
import pyarrow as pa

from autoseg.errors import AutosegError, InputDataError, ServiceError, UsageError
from autoseg.io.base import RowChunks, TableWrite
from autoseg.io.td.client import TDClient
from autoseg.io.td.columns import (
    check_td_columns,
    check_time_column,
    frame_columns,
    frame_for_td,
    td_type_of,
    td_type_of_arrow,
)
from autoseg.names import validate_td_table_name
from autoseg.secrets import one_line, scrubbed_logger

logger = scrubbed_logger(__name__)

MODES = ("overwrite", "append")
STAGING_INFIX = "_autoseg_tmp_"
DEFAULT_STREAM_ROWS_PER_IMPORT = 1_000_000
# Room kept after a staging table's name for the suffix ``_<n>`` of its bulk-import sessions.
_SESSION_SUFFIX_ROOM = 8


@dataclass
class _Plan:
    """One table write as it moves through stage -> commit -> clean-up.

    ``groups`` are the rows as the plain frames that one bulk import each uploads: the whole
    frame of an Arrow or pandas write or, for :class:`RowChunks`, a lazy generator that yields
    the stream in groups of bounded size (a plan never holds a streamed table). ``empty`` is a
    zero-row frame with the upload dtypes: the table's schema when there are no rows at all.
    """

    write: TableWrite
    database: str
    table: str
    columns: list[str]
    empty: pd.DataFrame
    groups: Iterable[pd.DataFrame]
    staging: str
    schema: pa.Schema | None = None  # the Arrow schema of streamed rows
    upload_time: int = 0  # ``time`` of rows without one: one value for the whole write
    rows: int = 0
    imports: int = 0
    # Columns without a value in the first import, and those of them a later import filled.
    valueless_first: set[str] = field(default_factory=set)
    valued_later: set[str] = field(default_factory=set)
    target_exists: bool = False
    target_columns: list[tuple[str, str]] = field(default_factory=list)
    staging_made: bool = False
    sessions_open: list[str] = field(default_factory=list)
    swapped: bool = False
    target_created: bool = False
    appended: bool = False
    append_uncertain: bool = False
    keep_staging: bool = False

    @property
    def name(self) -> str:
        return f"{self.database}.{self.table}"

    @property
    def appends(self) -> bool:
        return self.write.mode == "append" and self.target_exists


class StagedWriter:
    """Writes tables to Treasure Data all or nothing where Treasure Data allows it.

    Parameters
    ----------
    client
        The Treasure Data connection.
    stream_rows_per_import
        Most rows of a streamed write (:class:`RowChunks`) uploaded by one bulk import: chunks
        are grouped up to this many rows, so memory stays bounded whatever the table's size.
    """

    def __init__(self, client: TDClient,
                 stream_rows_per_import: int = DEFAULT_STREAM_ROWS_PER_IMPORT) -> None:
        if stream_rows_per_import < 1:
            raise UsageError(f"TD store settings: stream_rows_per_import="
                             f"{stream_rows_per_import} must be >= 1")
        self._client = client
        self.stream_rows_per_import = stream_rows_per_import
        # What the streamed rows' own iterator raised during the current write, if anything:
        # the caller's failure, not Treasure Data's, so it propagates unchanged.
        self._source_failure: BaseException | None = None

    def _plan(self, write: TableWrite) -> _Plan:
        """Validate one write without any call: name, mode, columns, ``time``.

        Streamed rows are checked from their schema here (names, the ``time`` column's type)
        and group by group while they are uploaded (missing ``time`` values).
        """
        validate_td_table_name(write.name, "output table")
        if write.mode not in MODES:
            raise UsageError(f"--output-mode={write.mode!r} is not supported: use "
                             "`overwrite` or `append`")
        assert write.name.database is not None
        where = f"output table {str(write.name)!r}"
        schema: pa.Schema | None = None
        groups: Iterable[pd.DataFrame]
        if isinstance(write.frame, RowChunks):
            schema = write.frame.schema
            check_td_columns(list(schema.names), where)
            # The schema converts to the same dtypes as any group of rows would (integers
            # with missing values aside, which are checked per group).
            empty = frame_for_td(schema.empty_table())
            check_time_column(empty, where)
            groups = self._stream_groups(write.frame, where)
        else:
            check_td_columns(frame_columns(write.frame), where)
            frame = frame_for_td(write.frame)
            check_time_column(frame, where)
            empty = frame.iloc[:0]
            groups = [frame] if len(frame) else []
        keep = 255 - len(STAGING_INFIX) - 8 - _SESSION_SUFFIX_ROOM
        staging = f"{write.name.table[:keep]}{STAGING_INFIX}{token_hex(4)}"
        return _Plan(write, write.name.database, write.name.table, list(empty.columns), empty,
                     groups, staging, schema=schema, upload_time=int(time.time()))

    def _stream_groups(self, rows: RowChunks, where: str) -> Iterator[pd.DataFrame]:
        """Yield the streamed rows as upload frames of at most ``stream_rows_per_import`` rows.

        Chunks are consumed one at a time; a chunk bigger than a group is sliced (zero-copy),
        so at most one group of rows is held at once.
        """
        limit = self.stream_rows_per_import
        pending: list[pa.Table] = []
        pending_rows = 0
        for chunk in self._pull(rows.cast_chunks(where)):
            start = 0
            while start < chunk.num_rows:
                take = min(limit - pending_rows, chunk.num_rows - start)
                pending.append(chunk.slice(start, take))
                pending_rows += take
                start += take
                if pending_rows == limit:
                    frame = self._group_frame(pending, where)
                    pending, pending_rows = [], 0  # hold the rows once, as the upload frame
                    yield frame
        if pending_rows:
            yield self._group_frame(pending, where)

    @staticmethod
    def _group_frame(pieces: list[pa.Table], where: str) -> pd.DataFrame:
        frame = frame_for_td(pa.concat_tables(pieces))
        check_time_column(frame, where)  # the schema allowed it; now its values
        return frame

    def _pull(self, chunks: Iterable[pa.Table]) -> Iterator[pa.Table]:
        """Pass chunks on, remembering an exception of the caller's iterator as its own."""
        iterator = iter(chunks)
        while True:
            try:
                chunk = next(iterator)
            except StopIteration:
                return
            except BaseException as exc:
                self._source_failure = exc
                raise
            yield chunk

    def write_tables(self, writes: list[TableWrite],
                     before_commit: Callable[[], None] | None = None) -> None:
        """Write every table, all or nothing where Treasure Data allows it.

        Stages every frame in its own staging table first; only then swaps (overwrite) or
        appends (one ``INSERT INTO ... SELECT`` job) into the targets. On any failure the
        staging tables are deleted and swapped targets are swapped back.

        Parameters
        ----------
        writes
            Tables to write; ``mode`` is ``overwrite`` or ``append``.
        before_commit
            Called when every table is staged, before the first swap or append; when it
            raises, the staging tables are deleted and its exception propagates.

        Raises
        ------
        UsageError
            Invalid names, modes, a target named twice, or a missing database.
        InputDataError
            Column names TD would change, a bad ``time`` column, or an append that adds columns.
        ServiceError
            Treasure Data failed; the message says what (if anything) could not be undone.
        """
        if not writes:
            return
        self._source_failure = None
        plans = [self._plan(w) for w in writes]
        names = [p.name for p in plans]
        duplicated = sorted({n for n in names if names.count(n) > 1})
        if duplicated:
            raise UsageError(
                f"table {duplicated[0]!r} is written twice in one run: give --output-table, "
                "--export-feature-importance and --export-shap-values different names"
            )
        action = "writing " + ", ".join(names)
        try:
            with self._client.operation(action, lambda exc: exc is self._source_failure):
                self._prepare_targets(plans)
                for plan in plans:
                    self._stage(plan, action)
                if before_commit is not None:
                    try:
                        before_commit()
                    except BaseException as exc:
                        self._source_failure = exc  # the caller's own: propagates unchanged
                        raise
                # Reversible steps (swaps) first, appends (not reversible) last.
                for plan in sorted(plans, key=lambda p: p.appends):
                    self._commit(plan, action)
        except BaseException as exc:
            # Forget the iterator's exception now: its traceback may hold a chunk of rows.
            from_source, self._source_failure = exc is self._source_failure, None
            notes = self._roll_back(plans)
            self._clean_up(plans)
            if not isinstance(exc, AutosegError):
                raise
            if from_source and not notes:
                raise  # the rows' iterator failed while staging: its own message stands
            if not notes and not isinstance(exc, ServiceError):
                raise  # refused before anything was written: the message says it all
            raise type(exc)(f"{exc}; {notes or 'no table was changed'}") from None
        self._clean_up(plans)
        for plan in plans:
            logger.info("wrote %d rows to Treasure Data table %s (%s)", plan.rows,
                        plan.name, plan.write.mode)

    def _prepare_targets(self, plans: list[_Plan]) -> None:
        listings: dict[str, dict[str, dict[str, Any]]] = {}
        for plan in plans:
            if plan.database not in listings:
                tables = self._client.list_tables(plan.database)
                if tables is None:
                    raise UsageError(
                        f"output table {plan.name!r}: database {plan.database!r} does not exist "
                        f"on Treasure Data ({self._client.host}) or the API key cannot see it: "
                        "create it first, or fix the name"
                    )
                listings[plan.database] = tables
            info = listings[plan.database].get(plan.table)
            plan.target_exists = info is not None
            plan.target_columns = self._client.columns_of(info) if info else []
            if plan.appends:
                known = {c for c, _ in plan.target_columns} | {"time"}
                extra = [c for c in plan.columns if c not in known]
                if extra:
                    raise InputDataError(
                        f"cannot append to {plan.name!r}: column(s) {', '.join(extra)} are not "
                        "in the existing table: write with --output-mode overwrite, or use a "
                        "new table"
                    )

    def _stage(self, plan: _Plan, action: str) -> None:
        """Load the rows into the plan's staging table, one bulk import per group of rows."""
        plan.staging_made = True  # from here on clean-up tries to delete it (404 is fine)
        for frame in plan.groups:
            self._import(plan, frame)
        if plan.imports == 0:
            # pytd refuses to import zero rows; an empty table with the schema is the same.
            api = self._client.api
            api.create_log_table(plan.database, plan.staging)
            schema = [[c, td_type_of(plan.empty[c]), c] for c in plan.columns if c != "time"]
            api.update_schema(plan.database, plan.staging, json.dumps(schema))
        elif plan.valued_later:
            self._settle_types(plan)

    def _import(self, plan: _Plan, frame: pd.DataFrame) -> None:
        """Bulk-import one group of rows: the first creates the staging table, later ones append.

        Each import has its own session, named after the staging table and the import's number;
        it stays in ``sessions_open`` (deleted on clean-up) until pytd has committed and
        deleted it.
        """
        if plan.schema is not None:
            # TD types a column from the values of the import that adds it to the schema:
            # note the columns the first import had no value for, and which a later one fills.
            valued = {c for c in plan.columns if c != "time" and bool(frame[c].notna().any())}
            if plan.imports == 0:
                plan.valueless_first = set(plan.columns) - valued - {"time"}
            else:
                plan.valued_later |= valued & plan.valueless_first
        if "time" not in frame.columns:
            frame["time"] = plan.upload_time  # one upload time for every group of a write
        session = f"{plan.staging}_{plan.imports}"
        plan.sessions_open.append(session)
        try:
            self._client.pytd().load_table_from_dataframe(
                frame, f"{plan.database}.{plan.staging}", writer="bulk_import",
                if_exists="error" if plan.imports == 0 else "append", fmt="msgpack",
                keep_list=True, bulk_import_name=session,
            )
            plan.sessions_open.remove(session)  # pytd deleted the session after the commit
        except Exception:
            # A commit whose reply was lost may have succeeded: ask, never commit again.
            try:
                with self._client.probing():
                    state = self._client.api.show_bulk_import(session).get("status")
            except Exception:  # 404 (pytd deleted the failed session) or no answer: not committed
                state = None
            if state != "committed":
                raise
            logger.warning("the reply to the bulk-import commit of %s was lost; TD reports it "
                           "committed, continuing", plan.name)
        plan.imports += 1
        plan.rows += len(frame)

    def _settle_types(self, plan: _Plan) -> None:
        """Type the columns that only a later import filled as one import of all rows would.

        TD types a column from the values of the import that first adds it; one that held
        only nulls in the first group of a stream would keep a type guessed from nothing, so
        its type is set from the Arrow schema (a schema change: TD applies types on read).
        """
        assert plan.schema is not None
        info = (self._client.list_tables(plan.database) or {}).get(plan.staging) or {}
        current = [(c, t) for c, t in self._client.columns_of(info) if c != "time"]
        wanted = {c: td_type_of_arrow(plan.schema.field(c).type)
                  for c in plan.columns if c in plan.valued_later}
        settled = [(c, wanted.get(c, t)) for c, t in current]
        settled += [(c, t) for c, t in wanted.items() if c not in dict(current)]
        if settled != current:
            self._client.api.update_schema(plan.database, plan.staging,
                                    json.dumps([[c, t, c] for c, t in settled]))

    def _table_ids(self, database: str) -> dict[str, Any]:
        tables = self._client.list_tables(database) or {}
        return {name: info.get("id") for name, info in tables.items()}

    def _swap(self, plan: _Plan) -> None:
        """Swap target and staging; when the reply is lost, find out from the table ids."""
        before = self._table_ids(plan.database)
        try:
            self._client.api.swap_table(plan.database, plan.table, plan.staging)
        except Exception:
            staging_id = before.get(plan.staging)
            try:
                with self._client.probing():
                    after = self._table_ids(plan.database)
            except Exception:
                after = {}
            if staging_id is None or after.get(plan.table) != staging_id:
                raise
            logger.warning("the reply to swapping %s was lost; TD shows it swapped", plan.name)

    def _commit(self, plan: _Plan, action: str) -> None:
        from tdclient import errors as td_errors

        if plan.appends:
            self._append(plan, action)
            return
        if not plan.target_exists:
            try:
                self._client.api.create_log_table(plan.database, plan.table)
            except td_errors.AlreadyExistsError:
                raise
            except Exception:
                try:
                    with self._client.probing():
                        created = plan.table in (self._client.list_tables(plan.database) or {})
                except Exception:
                    created = False
                if not created:
                    raise
            plan.target_created = True
        self._swap(plan)
        plan.swapped = True

    def _append(self, plan: _Plan, action: str) -> None:
        """Copy the staging rows into the target with ONE server-side job.

        The select list follows the target's column order and names, so the statement means
        the same whether the engine matches columns by position (Hive, Presto) or by name;
        target columns the frame lacks get typed NULLs.
        """
        staged = set(plan.columns) | {"time"}
        q = self._client.quote
        casts = {"long": "BIGINT", "int": "BIGINT", "double": "DOUBLE", "float": "DOUBLE",
                 "string": "STRING"}
        select = []
        target = [(c, t) for c, t in plan.target_columns if c != "time"] + [("time", "long")]
        for column, td_type in target:
            if column in staged:
                select.append(q(column, "hive"))
            elif td_type.lower() in casts:
                select.append(f"CAST(NULL AS {casts[td_type.lower()]}) AS {q(column, 'hive')}")
            else:
                select.append(f"NULL AS {q(column, 'hive')}")
        sql = (f"INSERT INTO TABLE {q(plan.database, 'hive')}.{q(plan.table, 'hive')} "
               f"SELECT {', '.join(select)} "
               f"FROM {q(plan.database, 'hive')}.{q(plan.staging, 'hive')}")
        try:
            self._client.run_job(plan.database, sql, "hive", action)
        except Exception:
            plan.append_uncertain = self._client.issue_uncertain
            raise
        plan.appended = True

    def _roll_back(self, plans: list[_Plan]) -> str:
        """Undo the swaps done so far; return a note on what could not be undone."""
        notes = []
        for plan in reversed(plans):
            if plan.swapped:
                try:
                    self._swap(plan)
                    plan.swapped = False
                    if plan.target_created:  # the target did not exist before this write
                        self._delete_table(plan.database, plan.table)
                except BaseException:
                    plan.keep_staging = not plan.target_created
                    notes.append(
                        f"could not restore {plan.name}: its previous rows are in "
                        f"{plan.database}.{plan.staging}" if not plan.target_created
                        else f"could not remove the new table {plan.name}"
                    )
            elif plan.target_created:
                with contextlib.suppress(BaseException):
                    self._delete_table(plan.database, plan.table)
            if plan.appended:
                notes.append(f"{plan.name} was already appended to (an append cannot be undone)")
            elif plan.append_uncertain:
                notes.append(f"the reply to the append job for {plan.name} was lost and the job "
                             "is not in the job list: check the TD job list before rerunning")
        return "; ".join(notes)

    def _delete_table(self, database: str, table: str) -> None:
        from tdclient import errors as td_errors

        with contextlib.suppress(td_errors.NotFoundError):
            self._client.api.delete_table(database, table)

    def _clean_up(self, plans: list[_Plan]) -> None:
        """Delete staging tables and leftover bulk-import sessions (best effort)."""
        from tdclient import errors as td_errors

        for plan in plans:
            for session in list(plan.sessions_open):
                with contextlib.suppress(td_errors.NotFoundError, Exception):
                    self._client.api.delete_bulk_import(session)
                plan.sessions_open.remove(session)
            if plan.staging_made and not plan.keep_staging:
                try:
                    self._delete_table(plan.database, plan.staging)
                    plan.staging_made = False
                except Exception as exc:
                    logger.warning("could not delete the staging table %s.%s (%s): delete it "
                                   "by hand", plan.database, plan.staging,
                                   one_line(str(exc), 80))
