"""The input profile (EDA): aggregates only, row-level values hidden on request, sampling."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from autoseg.profile import profile_table


def _frame() -> pd.DataFrame:
    return pd.DataFrame({
        "spend": [1.0, 2.0, np.nan, 4.0, np.inf, 1000.0],
        "city": ["a", "b", "a", None, "a", "c"],
    })


def test_numeric_and_text_profiles() -> None:
    result = profile_table(_frame())
    assert result["rows"] == 6 and result["columns"] == 2 and result["sampled_rows"] is None
    spend, city = result["column_profiles"]
    assert spend["missing"] == 1 and spend["infinite"] == 1 and spend["distinct"] == 5
    assert spend["median"] == pytest.approx(3.0) and spend["max"] == 1000.0
    assert city["missing"] == 1
    assert city["top_values"][0] == {"value": "a", "count": 3}


def test_hidden_contents_leave_out_row_values() -> None:
    spend, city = profile_table(_frame(), hide_table_contents=True)["column_profiles"]
    assert "min" not in spend and "max" not in spend
    assert "top_values" not in city
    assert spend["median"] == pytest.approx(3.0)  # aggregates stay


def test_a_sample_is_profiled_with_the_whole_tables_counts() -> None:
    frame = pd.DataFrame({"x": np.arange(1000.0), "y": [None] * 10 + ["v"] * 990})
    sample = frame.iloc[::10]
    result = profile_table(sample, rows=len(frame), missing=frame.isna().sum().to_dict())
    assert result["sampled_rows"] == 100
    assert result["rows"] == 1000
    x, y = result["column_profiles"]
    assert y["missing"] == 10  # counted on every row
    assert x["distinct"] == 100  # from the sample
