"""The small protocol every table store follows."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

import pandas as pd
import pyarrow as pa

from autoseg.config import TableName
from autoseg.errors import UsageError


@dataclass(frozen=True)
class TableWrite:
    """One table to write: its name, rows (Arrow or pandas), and ``overwrite`` or ``append``."""

    name: TableName
    frame: pa.Table | pd.DataFrame
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

    def write_tables(self, writes: list[TableWrite]) -> None:
        """Write every table, all or nothing: on failure every table is as it was."""
        ...

    def check_columns(self, name: TableName, columns: list[str]) -> None:
        """Refuse, before any work, columns this store would rename or cannot hold."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...


def open_store(spec: str, environ: Mapping[str, str] | None = None,
               td_engine: str = "presto") -> TableStore:
    """Open the store named by ``--store``: ``duckdb:PATH`` or ``td``.

    ``environ`` (``os.environ``, passed in by the CLI) supplies ``TD_API_KEY`` and
    ``TD_API_SERVER`` for Treasure Data; the library never reads the environment itself.
    """
    if spec.startswith("duckdb:"):
        from autoseg.io.duckdb_store import DuckDBStore

        return DuckDBStore(spec.removeprefix("duckdb:") or "autoseg.duckdb")
    if spec == "td":
        from autoseg.io.td_store import td_store_from_environment

        return td_store_from_environment(environ or {}, td_engine)
    raise UsageError(f"--store={spec!r} is not supported: use `duckdb:PATH` or `td`")
