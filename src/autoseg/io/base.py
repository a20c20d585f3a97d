"""The small protocol every table store follows."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Protocol

import pandas as pd
import pyarrow as pa

from autoseg.errors import InputDataError
from autoseg.names import TableName


@dataclass(frozen=True)
class RowChunks:
    """Rows that arrive as a stream of Arrow tables (one Dask partition at a time, say).

    A store writes them exactly as it would write the concatenation of the chunks as one
    ``pa.Table`` with ``schema`` (same rows, column types, modes and checks), without ever
    holding all of them in memory. Iterating ``chunks`` consumes it: a store reads it exactly
    once, one chunk at a time. When the iterator raises part-way, the store leaves every table
    as it was and lets the exception propagate.

    Parameters
    ----------
    schema
        The table's columns and exact types; every chunk is cast to it (see
        :meth:`cast_chunks`), so zero chunks still make a typed, empty table.
    chunks
        The rows, in order; chunks may be empty.
    """

    schema: pa.Schema
    chunks: Iterable[pa.Table]

    def cast_chunks(self, where: str) -> Iterator[pa.Table]:
        """Consume ``chunks``, yielding each one with exactly the columns and types of ``schema``.

        Parameters
        ----------
        where
            What the rows are written to (e.g. ``"output table 'db.t'"``), for messages.

        Yields
        ------
        pyarrow.Table
            The next chunk, columns in schema order, cast to the schema's types.

        Raises
        ------
        InputDataError
            When a chunk lacks a column, has an extra one, or holds values its type cannot take.
        """
        names = list(self.schema.names)
        for chunk in self.chunks:
            have = list(chunk.column_names)
            missing = [n for n in names if n not in have]
            extra = [n for n in have if n not in names]
            if missing or extra:
                # Never drop or invent a column silently: a partition that disagrees with the
                # table's schema is a bug or inconsistent input, and the message says which.
                detail = "; ".join(
                    part for part in (
                        f"missing {', '.join(missing)}" if missing else "",
                        f"unexpected {', '.join(extra)}" if extra else "",
                    ) if part
                )
                raise InputDataError(
                    f"a chunk of rows for {where} does not have the table's columns ({detail}): "
                    "every chunk must have the same columns"
                )
            try:
                yield chunk.select(names).cast(self.schema)
            except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
                first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                raise InputDataError(
                    f"a chunk of rows for {where} does not fit the table's column types: "
                    f"{first_line}"
                ) from None


@dataclass(frozen=True)
class TableWrite:
    """One table to write: its name, rows, and ``overwrite`` or ``append``.

    ``frame`` is an Arrow table, a pandas frame, or :class:`RowChunks` (rows streamed one chunk
    at a time, never all in memory); every store treats a ``RowChunks`` exactly like the one
    Arrow table its chunks make together.
    """

    name: TableName
    frame: pa.Table | pd.DataFrame | RowChunks
    mode: str


class TableStore(Protocol):
    """Where ``dbname.table_name`` tables live."""

    description: str

    def read_table(self, name: TableName) -> pa.Table:
        """Read a whole table as Arrow; raise InputDataError when it does not exist."""
        ...

    def table_columns(self, name: TableName) -> list[str] | None:
        """Column names of a table, or ``None`` when it does not exist."""
        ...

    def write_tables(self, writes: list[TableWrite],
                     before_commit: Callable[[], None] | None = None) -> None:
        """Write every table, all or nothing: on failure every table is as it was.

        ``before_commit`` is called once every table is written but before any is committed
        (made visible); when it raises, nothing is committed and its exception propagates.
        """
        ...

    def check_columns(self, name: TableName, columns: list[str]) -> None:
        """Refuse, before any work, columns this store would rename or cannot hold."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...
