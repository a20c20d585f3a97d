"""Treasure Data as a table store: :class:`TDStore` ties the client, the reader and the writer.

Reads run as TD jobs (:mod:`autoseg.io.td.reader`); writes are staged bulk imports swapped in
or appended by one job (:mod:`autoseg.io.td.writer`); every request goes through the client's
bounded retries of idempotent calls (:mod:`autoseg.io.td.client`). Column names Treasure Data
would change are refused before any call (:mod:`autoseg.io.td.columns`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import pyarrow as pa

from autoseg.errors import UsageError
from autoseg.io.base import TableWrite
from autoseg.io.td import reader
from autoseg.io.td.client import DEFAULT_TD_API_SERVER, MISSING_KEY_MESSAGE, TDClient
from autoseg.io.td.columns import check_td_columns
from autoseg.io.td.writer import DEFAULT_STREAM_ROWS_PER_IMPORT, StagedWriter
from autoseg.names import TableName


def td_store_from_environment(env: Mapping[str, str], engine: str, **settings: Any) -> TDStore:
    """Build a :class:`TDStore` from ``TD_API_KEY`` and ``TD_API_SERVER``.

    Parameters
    ----------
    env
        The environment (``os.environ`` at the CLI edge; the library never reads it itself).
    engine
        ``presto`` or ``hive`` (``--td-engine``).
    **settings
        Retry and time-out settings passed on to :class:`TDStore`.

    Returns
    -------
    TDStore

    Raises
    ------
    UsageError
        When ``TD_API_KEY`` is missing or empty, or ``TD_API_SERVER`` is not a URL.
    """
    apikey = (env.get("TD_API_KEY") or "").strip()
    if not apikey:
        raise UsageError(MISSING_KEY_MESSAGE)
    endpoint = (env.get("TD_API_SERVER") or "").strip() or DEFAULT_TD_API_SERVER
    return TDStore(apikey, endpoint, engine, **settings)


class TDStore:
    """Tables in Treasure Data (``dbname.table_name``), read and written all or nothing.

    Parameters
    ----------
    apikey, endpoint, engine
        The API key (never shown in messages or logs), the TD API server (``TD_API_SERVER``)
        and the engine reads run on (``presto`` or ``hive``; the append step always runs as a
        Hive job), as :class:`~autoseg.io.td.client.TDClient` takes them.
    stream_rows_per_import
        Most rows of a streamed write (:class:`~autoseg.io.base.RowChunks`) uploaded by one
        bulk import: chunks are grouped up to this many rows, so memory stays bounded whatever
        the table's size.
    **settings
        Retries and time-outs, passed on to :class:`~autoseg.io.td.client.TDClient`:
        ``max_retries`` (how often an idempotent request -- GET, part upload, table delete --
        is retried on HTTP 429/5xx, time-outs and connection errors), ``backoff_base`` and
        ``backoff_max`` (retry ``n`` waits ``min(backoff_base * 2**n, backoff_max)`` seconds,
        longer when a 429 reply asks for it with ``Retry-After``, still capped), ``timeout``
        (seconds to wait for a connection and for each reply), ``poll_interval`` (first wait
        between job status polls; it doubles up to 30 s) and ``job_timeout`` (seconds a query
        or append job may run before it is killed; ``None``: no limit).
    """

    def __init__(
        self,
        apikey: str,
        endpoint: str = DEFAULT_TD_API_SERVER,
        engine: str = "presto",
        *,
        stream_rows_per_import: int = DEFAULT_STREAM_ROWS_PER_IMPORT,
        **settings: Any,
    ) -> None:
        self._client = TDClient(apikey, endpoint, engine, **settings)
        self._writer = StagedWriter(self._client, stream_rows_per_import)
        self.endpoint = self._client.endpoint
        self.host = self._client.host
        self.engine = engine
        self.description = f"td:{self.host} ({engine})"

    @property
    def _api(self) -> Any:
        """td-client's REST API object (tests replace its methods to inject failures)."""
        return self._client.api

    def read_table(self, name: TableName) -> pa.Table:
        """Read every row of ``name`` (see :func:`autoseg.io.td.reader.read_table`).

        Parameters
        ----------
        name
            ``dbname.table_name``.

        Returns
        -------
        pyarrow.Table
        """
        return reader.read_table(self._client, name)

    def table_columns(self, name: TableName) -> list[str] | None:
        """Column names of ``name`` (``time`` last), or ``None`` when it does not exist.

        Parameters
        ----------
        name
            ``dbname.table_name``.

        Returns
        -------
        list of str or None
        """
        return reader.table_columns(self._client, name)

    def write_tables(self, writes: list[TableWrite],
                     before_commit: Callable[[], None] | None = None) -> None:
        """Write every table, all or nothing (see :meth:`StagedWriter.write_tables`).

        Parameters
        ----------
        writes
            Tables to write; ``mode`` is ``overwrite`` or ``append``.
        before_commit
            Called when every table is staged, before the first swap or append.
        """
        self._writer.write_tables(writes, before_commit)

    def check_columns(self, name: TableName, columns: list[str]) -> None:
        """Refuse columns Treasure Data would rename or merge (see :func:`check_td_columns`)."""
        check_td_columns(columns, f"output table {str(name)!r}")

    def close(self) -> None:
        """Close the HTTP connections."""
        self._client.close()

    def __enter__(self) -> TDStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
