"""A realistic sample customer table for ``autoseg demo`` and the tests.

Four planted segments (loyal high spenders, bargain hunters, lapsed customers, new app users)
over mixed columns: skewed spend, counts, categories with a rare level, booleans, dates, a few
missing values, a row id, a free-text column and a ``time`` column.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

DEMO_TABLE = "demo.customers"
DEMO_OUTPUT_TABLE = "demo.customers_segmented"
DEMO_MODEL = "demo"

_SEGMENTS = {
    # name: (share, spend median, orders_90d mean, days since last order mean, app share, tier)
    "loyal_high_spenders": (0.2, 2400.0, 14.0, 6.0, 0.5, "gold"),
    "bargain_hunters": (0.35, 380.0, 7.0, 15.0, 0.3, "silver"),
    "lapsed": (0.3, 150.0, 0.4, 160.0, 0.1, "bronze"),
    "new_app_users": (0.15, 220.0, 3.0, 9.0, 0.9, "bronze"),
}
_REGIONS = ["north", "south", "east", "west", "central"]
_FEEDBACK = [
    "delivery was quick and the packaging was fine",
    "could not find my size in the store this time",
    "great prices during the weekend sale, will come back",
    "the app crashed twice while I was paying for my order",
    "staff at the checkout were friendly and helpful",
]


def make_customers(n_rows: int = 5000, seed: int = 7) -> tuple[pd.DataFrame, np.ndarray]:
    """Generate the sample table and its planted segment of every row.

    Parameters
    ----------
    n_rows
        Number of customers.
    seed
        Random seed.

    Returns
    -------
    (DataFrame, ndarray)
        The table and the planted segment index (0..3) of every row.
    """
    rng = np.random.default_rng(seed)
    names = list(_SEGMENTS)
    shares = np.array([_SEGMENTS[s][0] for s in names])
    segment = rng.choice(len(names), size=n_rows, p=shares / shares.sum())
    spend_median = np.array([_SEGMENTS[s][1] for s in names])[segment]
    orders_mean = np.array([_SEGMENTS[s][2] for s in names])[segment]
    recency_mean = np.array([_SEGMENTS[s][3] for s in names])[segment]
    app_share = np.array([_SEGMENTS[s][4] for s in names])[segment]
    tiers = np.array([_SEGMENTS[s][5] for s in names])[segment]

    annual_spend = np.round(spend_median * rng.lognormal(0.0, 0.45, n_rows), 2)
    orders_90d = rng.poisson(orders_mean)
    recency = np.round(rng.gamma(4.0, recency_mean / 4.0), 0)
    age = np.clip(np.round(rng.normal(np.where(segment == 3, 27, 44), 9.0)), 18, 90)
    channel = np.where(
        rng.random(n_rows) < app_share, "app",
        np.where(rng.random(n_rows) < 0.5, "web", "store"),
    )
    region = rng.choice(_REGIONS + ["islands"], size=n_rows, p=[0.24, 0.24, 0.2, 0.2, 0.115, 0.005])
    # a tier matches the segment most of the time
    noisy = rng.random(n_rows) < 0.15
    tiers = np.where(noisy, rng.choice(["bronze", "silver", "gold"], n_rows), tiers)
    signup = pd.Timestamp("2026-06-30") - pd.to_timedelta(
        np.where(segment == 3, rng.integers(5, 120, n_rows), rng.integers(200, 2500, n_rows)),
        unit="D",
    )
    is_member = np.where(segment == 0, rng.random(n_rows) < 0.9, rng.random(n_rows) < 0.3)
    frame = pd.DataFrame({
        "customer_id": np.arange(100001, 100001 + n_rows, dtype=np.int64),
        "age": pd.array(age, dtype="Int64"),
        "region": region,
        "channel": channel,
        "loyalty_tier": tiers,
        "is_member": is_member,
        "signup_date": signup.normalize(),
        "annual_spend": annual_spend,
        "orders_90d": orders_90d.astype(np.int64),
        "days_since_last_order": recency.astype(np.int64),
        "avg_basket": np.round(annual_spend / np.maximum(orders_90d * 4, 1), 2),
        "last_feedback": [
            f"{_FEEDBACK[i]} (ticket {t})"
            for i, t in zip(rng.integers(0, len(_FEEDBACK), n_rows), rng.integers(1, 10**6, n_rows),
                            strict=True)
        ],
        "time": np.int64(1782777600) + np.arange(n_rows, dtype=np.int64),
    })
    # a few missing values, as in real exports
    frame.loc[rng.random(n_rows) < 0.02, "age"] = pd.NA
    frame.loc[rng.random(n_rows) < 0.01, "annual_spend"] = np.nan
    frame.loc[rng.random(n_rows) < 0.01, "channel"] = None
    return frame, segment


def to_arrow(frame: pd.DataFrame) -> pa.Table:
    """The sample table as Arrow, with ``signup_date`` stored as a DATE as real exports do."""
    table = pa.Table.from_pandas(frame, preserve_index=False)
    index = table.schema.get_field_index("signup_date")
    return table.set_column(index, "signup_date", table.column(index).cast(pa.date32()))
