"""Reading Treasure Data tables through jobs: ``SELECT *`` as a TD job, the result as Arrow.

:func:`read_table` checks the table list first (a missing table is an input error, not a failed
job), then runs ``SELECT *`` as a TD job with the chosen engine (``presto`` or ``hive``)
through the REST job API, and turns the msgpack result into Arrow using the job's result
schema. Both engines go through the job API -- the same path as pytd's
``query(..., force_tdclient=True)`` -- because pytd's default Presto path talks Trino to
``api-presto.*`` on port 443 (it cannot reach a proxy or an emulator) and returns untyped rows,
and one path means one set of retries, error messages and tests.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from autoseg.errors import InputDataError
from autoseg.io.td.client import TRANSPORT_ERRORS, TDClient
from autoseg.io.td.columns import to_text
from autoseg.names import TableName, validate_td_table_name
from autoseg.secrets import scrubbed_logger

logger = scrubbed_logger(__name__)

_RESULT_BATCH_ROWS = 100_000


def table_columns(client: TDClient, name: TableName) -> list[str] | None:
    """Column names of ``name`` (``time`` last), or ``None`` when it does not exist.

    Parameters
    ----------
    client
        The Treasure Data connection.
    name
        ``dbname.table_name``.

    Returns
    -------
    list of str or None
    """
    validate_td_table_name(name, "table")
    assert name.database is not None
    with client.operation(f"reading the columns of {name}"):
        tables = client.list_tables(name.database)
        if tables is None or name.table not in tables:
            return None
        columns = [c for c, _ in client.columns_of(tables[name.table])]
        return [c for c in columns if c != "time"] + ["time"]


def read_table(client: TDClient, name: TableName) -> pa.Table:
    """Read every row of ``name`` (``SELECT *`` as a TD job), ``time`` column included.

    Parameters
    ----------
    client
        The Treasure Data connection; the job runs on its engine.
    name
        ``dbname.table_name``.

    Returns
    -------
    pyarrow.Table
        Columns typed from the job's result schema: integers as int64, floating point as
        float64, strings as strings (``"00123"`` stays a string), arrays as lists.

    Raises
    ------
    UsageError
        When the name breaks TD's naming rules.
    InputDataError
        When the database or table does not exist (checked before any query runs).
    ServiceError
        When Treasure Data fails or refuses.
    """
    validate_td_table_name(name, "--input-table")
    assert name.database is not None
    action = f"reading --input-table={str(name)!r}"
    with client.operation(action):
        tables = client.list_tables(name.database)
        if tables is None:
            raise InputDataError(
                f"--input-table={str(name)!r}: database {name.database!r} does not exist on "
                f"Treasure Data ({client.host}) or the API key cannot see it: check the name"
            )
        if name.table not in tables:
            raise InputDataError(
                f"--input-table={str(name)!r} does not exist on Treasure Data "
                f"({client.host}): check the name (dbname.table_name) and that the API key "
                "can read it"
            )
        engine = client.engine
        sql = (f"SELECT * FROM {client.quote(name.database, engine)}."
               f"{client.quote(name.table, engine)}")
        info = client.run_job(name.database, sql, engine, action)
        return _fetch_result(client, str(info.get("job_id")), info)


def _fetch_result(client: TDClient, job_id: str, info: Mapping[str, Any]) -> pa.Table:
    schema = info.get("hive_result_schema") or []
    names = [str(entry[0]) for entry in schema]
    kinds = [_arrow_type(str(entry[1])) for entry in schema]

    def download(_retries: int) -> pa.Table:
        batches: list[list[pa.Array]] = []
        rows: list[list[Any]] = []
        for row in client.api.job_result_format_each(job_id, "msgpack"):
            rows.append(list(row))
            if len(rows) >= _RESULT_BATCH_ROWS:
                batches.append(_rows_to_batch(rows, names, kinds))
                rows = []
        if rows:
            batches.append(_rows_to_batch(rows, names, kinds))
        return _assemble(names, kinds, batches)

    # A result download cut mid-stream is simply downloaded again (a GET).
    return client.retry.call(download, what=f"downloading the result of job {job_id}",
                             log=logger, errors=TRANSPORT_ERRORS)


def _arrow_type(td_type: str) -> pa.DataType:
    """Arrow type for a Hive/Presto result column type."""
    t = td_type.strip().lower()
    if t in ("bigint", "int", "integer", "smallint", "tinyint", "long"):
        return pa.int64()
    if t in ("double", "float", "real") or t.startswith("decimal"):
        return pa.float64()
    if t == "boolean":
        return pa.bool_()
    for start, end in (("array<", ">"), ("array(", ")")):
        if t.startswith(start) and t.endswith(end):
            return pa.list_(_arrow_type(t[len(start):-len(end)]))
    return pa.string()


def _column_array(values: list[Any], kind: pa.DataType) -> pa.Array:
    try:
        return pa.array(values, type=kind)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        pass
    if not pa.types.is_string(kind):
        with contextlib.suppress(pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
            return pa.array(values)
    return pa.array([to_text(v) for v in values], type=pa.string())


def _rows_to_batch(rows: list[list[Any]], names: list[str],
                   kinds: list[pa.DataType]) -> list[pa.Array]:
    width = len(names)
    columns: list[list[Any]] = [[] for _ in range(width)]
    for row in rows:
        for i in range(width):
            columns[i].append(row[i] if i < len(row) else None)
    return [_column_array(columns[i], kinds[i]) for i in range(width)]


def _assemble(names: list[str], kinds: list[pa.DataType],
              batches: list[list[pa.Array]]) -> pa.Table:
    """Join result batches; a column whose values did not fit its type in some batch is text."""
    if not batches:
        return pa.table({n: pa.array([], type=k) for n, k in zip(names, kinds, strict=True)})
    columns = []
    for i in range(len(names)):
        chunks = [batch[i] for batch in batches]
        types = {c.type for c in chunks}
        if len(types) > 1:
            chunks = [c if pa.types.is_string(c.type) else pc.cast(c, pa.string())
                      if not pa.types.is_list(c.type)
                      else pa.array([to_text(v) for v in c.to_pylist()], pa.string())
                      for c in chunks]
        columns.append(pa.chunked_array(chunks))
    return pa.Table.from_arrays(columns, names=names)
