"""Sources and sinks: read a table, write tables atomically.

Stores implement :class:`autoseg.io.base.TableStore`; :func:`open_store` picks one from the
``--store`` value. Rows to write are Arrow, pandas, or :class:`autoseg.io.base.RowChunks` (a
stream of Arrow chunks, never all in memory). Files (Parquet/CSV) are read by
:mod:`autoseg.io.files`.

:func:`open_store` lives here, above the stores, and not in :mod:`autoseg.io.base`: every store
imports the protocol's types from :mod:`autoseg.io.base`, so a factory there importing the
stores back would be an import circle.
"""

from __future__ import annotations

from collections.abc import Mapping

from autoseg.errors import UsageError
from autoseg.io.base import RowChunks, TableStore, TableWrite

__all__ = ["RowChunks", "TableStore", "TableWrite", "open_store"]


def open_store(spec: str, environ: Mapping[str, str] | None = None,
               td_engine: str = "presto", lock_timeout: float | None = None) -> TableStore:
    """Open the store named by ``--store``: ``duckdb:PATH`` or ``td``.

    ``environ`` (``os.environ``, passed in by the CLI) supplies ``TD_API_KEY`` and
    ``TD_API_SERVER`` for Treasure Data; the library never reads the environment itself.
    ``lock_timeout`` (``--lock-timeout``; ``None``: the default, 1800 s) bounds how long a
    DuckDB store waits for a file another process has locked.
    """
    if spec.startswith("duckdb:"):
        from autoseg.io.duckdb_store import DEFAULT_LOCK_TIMEOUT, DuckDBStore

        return DuckDBStore(spec.removeprefix("duckdb:") or "autoseg.duckdb",
                           DEFAULT_LOCK_TIMEOUT if lock_timeout is None else lock_timeout)
    if spec == "td":
        from autoseg.io.td import td_store_from_environment

        return td_store_from_environment(environ or {}, td_engine)
    raise UsageError(f"--store={spec!r} is not supported: use `duckdb:PATH` or `td`")
