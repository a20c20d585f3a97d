"""Read an input table from a Parquet or CSV file.

CSV columns are read as text first and converted only where the conversion loses nothing, so a
zero-padded id such as ``00123`` stays text instead of silently becoming the number 123.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from autoseg.errors import InputDataError

# The usual spellings of a missing value in exported CSV files (R writes NA).
_MISSING_TOKENS = ["", "NA", "N/A", "NaN", "nan", "NULL", "null", "None"]
_LEADING_ZERO = re.compile(r"^[+-]?0\d")
_BOOL_WORDS = {"true": True, "false": False}
_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}([ T]\d{2}:\d{2}(:\d{2}(\.\d+)?)?)?$")


def read_file(path_text: str) -> pa.Table:
    """Read a ``.parquet`` or ``.csv``/``.tsv`` file as an Arrow table.

    Raises
    ------
    InputDataError
        When the file is missing or cannot be parsed.
    """
    path = Path(path_text)
    if not path.exists():
        raise InputDataError(
            f"--input-table={path_text!r}: file does not exist; check the path"
        )
    lowered = path.name.lower()
    try:
        if lowered.endswith((".parquet", ".pq")):
            return pq.read_table(path)
        sep = "\t" if ".tsv" in lowered else ","
        raw = pd.read_csv(
            path, sep=sep, dtype=str, keep_default_na=False, na_values=_MISSING_TOKENS,
            skipinitialspace=True,
        )
    except (pa.ArrowException, pd.errors.ParserError, UnicodeDecodeError, OSError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputDataError(
            f"--input-table={path_text!r} cannot be read: {first}"
        ) from None
    except pd.errors.EmptyDataError:
        raise InputDataError(f"--input-table={path_text!r} is empty: it has no header") from None
    raw.columns = [str(c).strip() for c in raw.columns]
    typed = pd.DataFrame({name: _infer_text_column(raw[name]) for name in raw.columns})
    return pa.Table.from_pandas(typed, preserve_index=False)


def _infer_text_column(column: pd.Series) -> pd.Series:
    """Convert a text column to bool, integer, float or datetime when nothing is lost."""
    values = column.dropna().str.strip()
    if values.empty:
        return column
    lowered = values.str.lower()
    if lowered.isin(_BOOL_WORDS).all():
        return column.str.strip().str.lower().map(_BOOL_WORDS).astype("boolean")
    if values.str.match(_LEADING_ZERO).any():
        return column  # zero-padded codes are identifiers, not numbers
    numbers = pd.to_numeric(values, errors="coerce")
    if numbers.notna().all():
        converted = pd.to_numeric(column.str.strip(), errors="coerce")
        if (numbers == numbers.round()).all() and values.str.fullmatch(r"[+-]?\d+").all():
            return converted.astype("Int64") if converted.isna().any() else converted.astype(
                "int64"
            )
        return converted.astype("float64")
    if values.str.match(_ISO_DATE).all():
        dates = pd.to_datetime(column.str.strip(), errors="coerce")
        if dates.notna().sum() == len(values):
            return dates
    return column
