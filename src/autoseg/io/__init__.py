"""Sources and sinks: read a table, write tables atomically.

Stores implement :class:`autoseg.io.base.TableStore`; :func:`open_store` picks one from the
``--store`` value. Files (Parquet/CSV) are read by :mod:`autoseg.io.files`.
"""

from autoseg.io.base import TableStore, TableWrite, open_store

__all__ = ["TableStore", "TableWrite", "open_store"]
