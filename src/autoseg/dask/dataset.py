"""The input of a Dask run: a partitioned Parquet dataset, its schema, and rows by position.

Listing and footer checks happen before any work; a :class:`Dataset` maps global row
positions to partitions, so the run's row sets (``autoseg.sampling``) are gathered exactly.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import dask
import dask.dataframe as dd
import fsspec
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pads

from autoseg.errors import InputDataError
from autoseg.features import FeatureSpec
from autoseg.model import prepare_matrix
from autoseg.reduce import Projection

# Parquet footers read at once when the input's files are checked (round trips on S3).
FOOTER_READERS = 16


@dataclass
class Dataset:
    """The input as Dask sees it, plus the partition lengths that map global rows to partitions."""

    frame: dd.DataFrame
    offsets: np.ndarray  # (npartitions + 1,) first global row of each partition, then n_rows
    schema: pa.Schema  # the input's Arrow schema: the output keeps every column's exact type
    missing: dict[str, int]  # exact missing values per column (NaN included, as pandas counts)

    @property
    def n_rows(self) -> int:
        return int(self.offsets[-1])

    def take(self, rows: np.ndarray) -> pd.DataFrame:
        """Gather the rows at sorted global positions ``rows`` to the client, in that order.

        Only the chosen rows travel: each partition is read on a worker and cut there.
        """
        parts = []
        for i, part in enumerate(self.frame.to_delayed()):
            lo, hi = np.searchsorted(rows, [self.offsets[i], self.offsets[i + 1]])
            if hi > lo:
                parts.append(dask.delayed(_take_rows)(part, rows[lo:hi] - self.offsets[i]))
        taken = list(dask.compute(*parts))
        if not taken:
            return self.frame._meta.copy()
        return pd.concat(taken, ignore_index=True)


# File names Dask's Parquet reader takes from a folder; it skips others (and hidden ones).
_PARQUET_SUFFIXES = (".parquet", ".parq", ".pq")


def open_dataset(input_path: str) -> Dataset:
    try:
        fs, path = fsspec.core.url_to_fs(input_path)
        files, base = _parquet_files(fs, path)
    except (OSError, ValueError) as exc:
        raise InputDataError(f"input dataset {input_path!r} cannot be listed ({reason(exc)}): "
                             "give a folder or URL of Parquet files") from None
    if not files:
        found = fs.exists(path.rstrip("/")) if not any(ch in path for ch in "*?[") else True
        problem = "holds no Parquet files" if found else "does not exist"
        raise InputDataError(f"input dataset {input_path!r} {problem}: give a folder or URL "
                             "of Parquet files")
    # Strings stay pandas' default string dtype and dates stay datetime.date objects, as
    # pyarrow's to_pandas gives them on the single-machine path: the FeatureSpec then makes the
    # same decisions. (Dask would otherwise turn them into pyarrow-backed dtypes.) A stored
    # named index comes back as a column (index=False), as the single-machine reader gives it.
    with dask.config.set({"dataframe.convert-string": False}):
        try:
            frame = dd.read_parquet(input_path, index=False)
        except (FileNotFoundError, OSError, ValueError, KeyError) as exc:
            raise InputDataError(
                f"input dataset {input_path!r} cannot be read as Parquet ({reason(exc)}): "
                "give a folder or URL of Parquet files"
            ) from None
    columns = [c for c in frame.columns if c != "__null_dask_index__"]
    frame = frame[columns]
    schema = _input_schema(fs, files, base, columns)
    # One pass over the data gives both the partition lengths and the exact missing counts.
    meta = pd.DataFrame({i: pd.Series(dtype="int64") for i in range(len(columns) + 1)})
    counts = frame.map_partitions(_partition_counts, meta=meta).compute()
    lengths = counts[0].to_numpy(dtype=np.int64)
    missing = {c: int(counts[i + 1].sum()) for i, c in enumerate(columns)}
    return Dataset(frame=frame, offsets=np.concatenate([[0], np.cumsum(lengths)]),
                    schema=schema, missing=missing)


def _partition_counts(frame: pd.DataFrame) -> pd.DataFrame:
    """One row: the partition's length, then each column's missing values, by position."""
    return pd.DataFrame([[len(frame), *frame.isna().sum().tolist()]],
                        columns=range(frame.shape[1] + 1), dtype="int64")


def reason(exc: BaseException) -> str:
    """An error in one line; Dask wraps the reader's error in a two-line message."""
    cause = exc.__cause__ or exc
    return " ".join(f"{type(cause).__name__}: {cause}".split())


def _parquet_files(fs: fsspec.AbstractFileSystem, path: str) -> tuple[list[str], str | None]:
    """The Parquet files Dask reads for ``path`` (a file, a folder or a glob), sorted, and the
    folder hive partition names are relative to (``None`` for a file or a glob)."""
    if any(ch in path for ch in "*?["):
        return sorted(fs.glob(path)), None
    path = path.rstrip("/")
    if not fs.isdir(path):
        return ([path] if fs.exists(path) else []), None
    files = []
    for found in fs.find(path):
        relative = found[len(path):].lstrip("/").split("/")
        if any(part.startswith((".", "_")) for part in relative):
            continue  # hidden files and folders, _metadata, _SUCCESS: Dask skips them too
        if found.endswith(_PARQUET_SUFFIXES):
            files.append(found)
    return sorted(files), path


def _input_schema(fs: fsspec.AbstractFileSystem, files: list[str], base: str | None,
                  columns: list[str]) -> pa.Schema:
    """The Arrow schema of the columns Dask reads, checked file by file (footers only).

    Every file must have the same columns, with types Arrow can unify (``string`` and
    ``large_string``, ``timestamp[us]`` and ``[ns]``, a column all null in some files), so a
    mismatch is refused here, before any work, rather than failing (or printing a cell)
    part-way through the write. Hive partition columns (``region=north/``) stay in, as Dask
    reads them.
    """
    partitioning = pads.HivePartitioning.discover() if base is not None else None
    try:
        dataset = pads.dataset(files, filesystem=fs, format="parquet",
                               partitioning=partitioning, partition_base_dir=base)
        fragments = list(dataset.get_fragments())
        # One footer read per file: on object stores each is a round trip, so in parallel.
        with ThreadPoolExecutor(max_workers=FOOTER_READERS) as pool:
            schemas = list(pool.map(lambda f: f.physical_schema, fragments))
    except (OSError, ValueError) as exc:  # pa.ArrowInvalid is a ValueError
        raise InputDataError(f"an input file cannot be read as Parquet ({reason(exc)}): "
                             "remove or rewrite it") from None
    first: tuple[set[str], str] | None = None
    for fragment, physical in zip(fragments, schemas, strict=True):
        where = fragment.path.rsplit("/", 1)[-1]
        names = {n for n in physical.names if n in columns}
        if first is None:
            first = (names, where)
        elif names != first[0]:
            missing = sorted(first[0] - names)
            extra = sorted(names - first[0])
            problem = (f"lacks column {missing[0]!r}" if missing
                       else f"has column {extra[0]!r} that {first[1]!r} lacks")
            raise InputDataError(
                f"input file {where!r} {problem}: every file of the dataset must have the "
                "same columns (rewrite the dataset with one schema)"
            )
    try:
        unified = pa.unify_schemas([s.remove_metadata() for s in schemas],
                                   promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        raise _type_conflict(fragments, schemas, columns) from None
    full = dataset.schema
    fields = [unified.field(c) if c in unified.names else full.field(c) for c in columns]
    return pa.schema(fields)


def _type_conflict(fragments: list[Any], schemas: list[pa.Schema],
                   columns: list[str]) -> InputDataError:
    """The first column whose types two files cannot share, as a one-line error."""
    seen: dict[str, tuple[pa.Field, str]] = {}
    for fragment, physical in zip(fragments, schemas, strict=True):
        where = fragment.path.rsplit("/", 1)[-1]
        for name in (n for n in physical.names if n in columns):
            field = physical.field(name)
            if name not in seen:
                seen[name] = (field, where)
                continue
            try:
                pa.unify_schemas([pa.schema([seen[name][0]]), pa.schema([field])],
                                 promote_options="permissive")
            except (pa.ArrowInvalid, pa.ArrowTypeError):
                return InputDataError(
                    f"column {name!r} is {field.type} in input file {where!r} but "
                    f"{seen[name][0].type} in {seen[name][1]!r}: every file of the dataset "
                    "must give a column one type (rewrite the dataset with one schema)"
                )
    return InputDataError("the input files' column types cannot be unified: rewrite the "
                          "dataset with one schema")


def _take_rows(frame: pd.DataFrame, local_rows: np.ndarray) -> pd.DataFrame:
    return frame.iloc[local_rows]


def _prepared_partition(frame: pd.DataFrame, spec: FeatureSpec,
                        projection: Projection | None) -> np.ndarray:
    return prepare_matrix(frame, spec, projection)[0]


def prepared_array(data: Dataset, spec: FeatureSpec, projection: Projection | None) -> Any:
    """The prepared matrix of every row as a Dask array, one chunk per partition.

    Built from delayed partitions rather than ``map_partitions`` so the chunk sizes are known
    (the partition lengths were counted once) and block-wise reductions need no extra pass.
    """
    import dask.array as da

    width = (projection.components.shape[0] if projection is not None
             else len(spec.matrix_columns))
    lengths = np.diff(data.offsets)
    blocks = [
        da.from_delayed(dask.delayed(_prepared_partition)(part, spec, projection),
                        shape=(int(n), width), dtype=np.float32)
        for part, n in zip(data.frame.to_delayed(), lengths, strict=True) if n > 0
    ]
    return da.concatenate(blocks, axis=0)
