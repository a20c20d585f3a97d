"""Treasure Data: the table store and its parts, one module per job.

* :mod:`~autoseg.io.td.client` -- the REST API connection: settings, pytd/td-client, bounded
  retries of idempotent requests, one-line error messages, jobs;
* :mod:`~autoseg.io.td.reader` -- reading a table through a ``SELECT *`` job into Arrow;
* :mod:`~autoseg.io.td.writer` -- staged bulk-import writes, the swap, the append job, streamed
  rows;
* :mod:`~autoseg.io.td.columns` -- column names, values and types as Treasure Data stores them;
* :mod:`~autoseg.io.td.store` -- :class:`TDStore`, the :class:`~autoseg.io.base.TableStore`
  tying them together.
"""

from autoseg.io.td.client import DEFAULT_TD_API_SERVER, ENGINES, MISSING_KEY_MESSAGE, TDClient
from autoseg.io.td.columns import check_td_columns, td_column_name
from autoseg.io.td.store import TDStore, td_store_from_environment
from autoseg.io.td.writer import DEFAULT_STREAM_ROWS_PER_IMPORT, MODES, STAGING_INFIX

__all__ = [
    "DEFAULT_STREAM_ROWS_PER_IMPORT",
    "DEFAULT_TD_API_SERVER",
    "ENGINES",
    "MISSING_KEY_MESSAGE",
    "MODES",
    "STAGING_INFIX",
    "TDClient",
    "TDStore",
    "check_td_columns",
    "td_column_name",
    "td_store_from_environment",
]
