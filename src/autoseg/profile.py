"""Profile the input table: the basic EDA shown in the summary and the report.

Only aggregates are recorded. With ``hide_table_contents`` the values that are themselves
row-level (minimum, maximum, most frequent values) are left out too.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

TOP_VALUES = 5
SAMPLE_ROWS = 200_000


def profile_table(
    frame: pd.DataFrame, hide_table_contents: bool = False, seed: int = 0
) -> dict[str, Any]:
    """Rows, columns and per-column type, missing, distinct count and distribution.

    Parameters
    ----------
    frame
        The input table.
    hide_table_contents
        Leave out statistics that are individual values of the table.
    seed
        Seed of the row sample used on tables over ``SAMPLE_ROWS`` rows.

    Returns
    -------
    dict
        ``{"rows", "columns", "column_profiles": [...]}``, JSON-able.
    """
    # Missing counts are exact; distributions and distinct counts come from a uniform sample of
    # at most SAMPLE_ROWS rows on larger tables (they cost seconds per column at 10M rows).
    sample = frame
    if len(frame) > SAMPLE_ROWS:
        sample = frame.sample(SAMPLE_ROWS, random_state=seed)
    columns = []
    for name in frame.columns:
        series = sample[name]
        entry: dict[str, Any] = {
            "name": str(name),
            "dtype": str(series.dtype),
            "missing": int(frame[name].isna().sum()),
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
            counts = series.astype("string").value_counts().head(TOP_VALUES)
            entry["top_values"] = [
                {"value": str(v), "count": int(c)} for v, c in counts.items()
            ]
        columns.append(entry)
    return {
        "rows": int(len(frame)),
        "columns": int(frame.shape[1]),
        "sampled_rows": int(len(sample)) if len(sample) < len(frame) else None,
        "column_profiles": columns,
    }
