"""Profile the input table: the basic EDA shown in the summary and the report.

Only aggregates are recorded. With ``hide_table_contents`` the values that are themselves
row-level (minimum, maximum, most frequent values) are left out too.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from autoseg.features import column_text

TOP_VALUES = 5


def profile_table(
    frame: pd.DataFrame, hide_table_contents: bool = False, *, rows: int | None = None,
    missing: Mapping[str, int] | None = None,
) -> dict[str, Any]:
    """Rows, columns and per-column type, missing, distinct count and distribution.

    Parameters
    ----------
    frame
        The rows to describe: the whole table, or the run's describe sample of a large one
        (``autoseg.sampling``; distributions and distinct counts cost seconds per column at
        10M rows, and 200,000 rows give them to well within display precision).
    hide_table_contents
        Leave out statistics that are individual values of the table.
    rows
        Rows of the whole table when ``frame`` is a sample (default: ``len(frame)``).
    missing
        Exact missing values per column of the whole table (default: counted in ``frame``).

    Returns
    -------
    dict
        ``{"rows", "columns", "sampled_rows", "column_profiles": [...]}``, JSON-able;
        ``sampled_rows`` is ``None`` when ``frame`` is the whole table.
    """
    total = len(frame) if rows is None else int(rows)
    sample = frame
    columns = []
    for name in frame.columns:
        series = sample[name]
        entry: dict[str, Any] = {
            "name": str(name),
            "dtype": str(series.dtype),
            "missing": int(missing[str(name)] if missing is not None
                           else frame[name].isna().sum()),
        }
        try:
            entry["distinct"] = int(series.nunique(dropna=True))
        except TypeError:
            entry["distinct"] = None
        if pd.api.types.is_numeric_dtype(series.dtype) and not pd.api.types.is_bool_dtype(
            series.dtype
        ):
            values = pd.to_numeric(series, errors="coerce").to_numpy(
                dtype="float64", na_value=np.nan
            )
            finite = values[np.isfinite(values)]
            entry["infinite"] = int(np.isinf(values).sum())
            if finite.size:
                entry["mean"] = float(finite.mean())
                entry["std"] = float(finite.std())
                quartiles = np.percentile(finite, [25, 50, 75])
                entry["p25"], entry["median"], entry["p75"] = (float(q) for q in quartiles)
                if not hide_table_contents:
                    entry["min"] = float(finite.min())
                    entry["max"] = float(finite.max())
        elif not hide_table_contents and entry["distinct"] is not None:
            counts = column_text(series).value_counts().head(TOP_VALUES)
            entry["top_values"] = [
                {"value": str(v), "count": int(c)} for v, c in counts.items()
            ]
        columns.append(entry)
    return {
        "rows": total,
        "columns": int(frame.shape[1]),
        "sampled_rows": int(len(frame)) if len(frame) < total else None,
        "column_profiles": columns,
    }
