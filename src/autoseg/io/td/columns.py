"""Columns as Treasure Data stores them: name rules, upload frames, the ``time`` column, types.

Column names are never changed silently: Treasure Data lower-cases names and turns other
characters into ``_``; :func:`check_td_columns` refuses a frame whose names would change (or
collide) before any call. :func:`frame_for_td` turns Arrow or pandas rows into the plain pandas
frame pytd's msgpack writer uploads faithfully (TD has long, double and string columns).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from autoseg.errors import InputDataError

# Treasure Data's naming rules (docs: "Naming Requirements and Restrictions").
_TD_COLUMN_RE = re.compile(r"[a-z_][a-z0-9_]*")


def td_column_name(column: str) -> str:
    """The name Treasure Data (pytd) would store ``column`` under.

    pytd lower-cases names and replaces every character other than ASCII letters and digits
    with ``_``.

    Parameters
    ----------
    column
        A column name.

    Returns
    -------
    str
    """
    return re.sub(r"[^a-zA-Z0-9]", "_", str(column)).lower()


def check_td_columns(columns: Sequence[str], where: str) -> None:
    """Refuse column names Treasure Data would change, silently merge or alias.

    Parameters
    ----------
    columns
        Column names of a frame about to be written.
    where
        What the columns belong to, for the message (e.g. ``"output table 'db.t'"``).

    Raises
    ------
    InputDataError
        When two names collide after TD's normalisation (naming both), when a name would be
        changed, or when it starts with a digit (TD replaces such names with an alias).
    """
    seen: dict[str, str] = {}
    for column in columns:
        normal = td_column_name(column)
        if normal in seen:
            raise InputDataError(
                f"columns {seen[normal]!r} and {str(column)!r} of {where} would both become "
                f"{normal!r} on Treasure Data (it lower-cases names and turns other characters "
                "into '_'): rename one of them"
            )
        seen[normal] = str(column)
    for column in columns:
        normal = td_column_name(column)
        if normal != column or not normal:
            raise InputDataError(
                f"column {str(column)!r} of {where} would be renamed to {normal!r} by Treasure "
                "Data: rename it to lower-case letters, digits and underscores"
            )
        if not _TD_COLUMN_RE.fullmatch(normal):
            raise InputDataError(
                f"column {str(column)!r} of {where} starts with a digit, which Treasure Data "
                "replaces with an alias: rename it to start with a letter or '_'"
            )


def to_text(value: Any) -> str | None:
    """A value as TD text: bytes decoded, lists and maps as JSON, ``None`` kept."""
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, list | tuple | dict):
        return json.dumps(value, default=str)
    return str(value)


def _arrow_column_for_td(column: pa.ChunkedArray) -> Any:
    """One Arrow column as values pytd writes without re-typing (TD has long/double/string)."""
    kind = column.type
    if pa.types.is_dictionary(kind):
        column = pc.cast(column, kind.value_type)
        kind = kind.value_type
    if pa.types.is_integer(kind):
        if column.null_count:
            return pd.array(column.to_pylist(), dtype="Int64")
        return column.to_numpy().astype("int64")
    if pa.types.is_floating(kind) or pa.types.is_decimal(kind):
        return pc.cast(column, pa.float64()).to_numpy(zero_copy_only=False)
    if pa.types.is_boolean(kind):  # pytd stores booleans as "true"/"false" strings
        return pd.Series(column.to_pylist(), dtype=object)
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return pd.Series(column.to_pylist(), dtype=object)
    if pa.types.is_timestamp(kind):
        values = column.to_pandas()
        return pd.Series([None if pd.isna(v) else str(v) for v in values], dtype=object)
    if pa.types.is_date(kind):
        return pd.Series([None if v is None else v.isoformat() for v in column.to_pylist()],
                         dtype=object)
    if pa.types.is_list(kind) or pa.types.is_large_list(kind):
        return pd.Series(column.to_pylist(), dtype=object)
    if pa.types.is_null(kind):
        return pd.Series([None] * len(column), dtype=object)
    return pd.Series([to_text(v) for v in column.to_pylist()], dtype=object)


def frame_for_td(frame: pa.Table | pd.DataFrame) -> pd.DataFrame:
    """Arrow (or pandas) rows as the plain pandas frame pytd uploads without re-typing.

    Parameters
    ----------
    frame
        Rows to upload.

    Returns
    -------
    pandas.DataFrame
        int64 (Int64 where there are missing values), float64 and object columns: booleans as
        ``"true"``/``"false"``, dates and timestamps as text, lists kept as lists.
    """
    if isinstance(frame, pd.DataFrame):
        try:
            frame = pa.Table.from_pandas(frame, preserve_index=False)
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
            # Mixed-type object columns: pytd writes them as text, which is what they are.
            plain = frame.reset_index(drop=True).copy()
            plain.columns = [str(c) for c in plain.columns]
            return plain
    data = {name: _arrow_column_for_td(frame.column(i))
            for i, name in enumerate(frame.column_names)}
    return pd.DataFrame(data, index=pd.RangeIndex(frame.num_rows))


def frame_columns(frame: pa.Table | pd.DataFrame) -> list[str]:
    """Column names of Arrow or pandas rows, as strings."""
    if isinstance(frame, pa.Table):
        return list(frame.column_names)
    return [str(c) for c in frame.columns]


def check_time_column(frame: pd.DataFrame, where: str) -> None:
    """Refuse a ``time`` column Treasure Data would reject row by row.

    TD's ``time`` column is the row's integer unix time; anything else becomes an error row.

    Parameters
    ----------
    frame
        An upload frame (see :func:`frame_for_td`).
    where
        What the rows belong to, for the message.

    Raises
    ------
    InputDataError
        When ``time`` holds other than integers, or has missing values.
    """
    if "time" not in frame.columns:
        return
    values = frame["time"]
    if values.dtype.kind not in "iu" and str(values.dtype) not in ("Int64", "UInt64"):
        raise InputDataError(
            f"column 'time' of {where} holds {values.dtype} values, but Treasure Data needs "
            "integer unix seconds there: convert it, or rename it (e.g. event_time)"
        )
    if values.isna().any():
        raise InputDataError(
            f"column 'time' of {where} has missing values, which Treasure Data rejects: fill "
            "them with integer unix seconds, or rename the column"
        )


def td_type_of(series: pd.Series) -> str:
    """The TD type of an upload frame's column."""
    kind = series.dtype.kind
    if kind in "iu":
        return "long"
    if kind == "f":
        return "double"
    return "string"


def td_type_of_arrow(kind: pa.DataType) -> str:
    """The type TD gives non-null values of an Arrow type as :func:`frame_for_td` uploads them."""
    if pa.types.is_dictionary(kind):
        kind = kind.value_type
    if pa.types.is_integer(kind):
        return "long"
    if pa.types.is_floating(kind) or pa.types.is_decimal(kind):
        return "double"
    if pa.types.is_list(kind) or pa.types.is_large_list(kind):
        return f"array<{td_type_of_arrow(kind.value_type)}>"
    return "string"  # strings, booleans ("true"/"false"), dates and timestamps go up as text
