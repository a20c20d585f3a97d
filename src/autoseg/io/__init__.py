"""Sources and sinks: read a table, write tables atomically.

Stores implement :class:`autoseg.io.base.TableStore`; :func:`open_store` picks one from the
``--store`` value. Rows to write are Arrow, pandas, or :class:`autoseg.io.base.RowChunks` (a
stream of Arrow chunks, never all in memory). Files (Parquet/CSV) are read by
:mod:`autoseg.io.files`.
"""

from autoseg.io.base import RowChunks, TableStore, TableWrite, open_store

__all__ = ["RowChunks", "TableStore", "TableWrite", "open_store"]
