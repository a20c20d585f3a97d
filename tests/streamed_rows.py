"""Streamed rows (``RowChunks``) that both store test modules write: one table with the awkward
values, cut into chunks, and a stream that dies part-way."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date

import pyarrow as pa

STREAM_SCHEMA = pa.schema([
    ("customer_id", pa.string()),
    ("orders", pa.int64()),
    ("spend", pa.float64()),
    ("signup", pa.date32()),
    ("member", pa.bool_()),
])


def stream_table() -> pa.Table:
    """Seven rows with the awkward values: leading zeros, NaN and null floats, dates, bools."""
    return pa.table({
        "customer_id": ["00123", "00456", "00789", "01000", "02000", "03000", "04000"],
        "orders": pa.array([1, 2, 3, 4, 5, 6, 7], pa.int64()),
        "spend": [10.5, float("nan"), None, 3.0, 4.25, None, 6.0],
        "signup": pa.array([date(2024, 1, d) for d in range(1, 8)], pa.date32()),
        "member": [True, False, None, True, True, False, True],
    }, schema=STREAM_SCHEMA)


def chunks_of(table: pa.Table, sizes: list[int]) -> list[pa.Table]:
    """Slices of ``table`` of the given sizes (zeros make empty chunks), in order."""
    out, start = [], 0
    for size in sizes:
        out.append(table.slice(start, size))
        start += size
    assert start == table.num_rows
    return out


def failing_chunks(chunks: list[pa.Table], error: BaseException) -> Iterator[pa.Table]:
    """The chunks, then ``error``: a stream whose source dies part-way (a Dask worker, say)."""
    yield from chunks
    raise error
