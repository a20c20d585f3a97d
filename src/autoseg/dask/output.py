"""The labelled rows of a Dask run: a staged Parquet dataset swapped into place, and the rows
streamed to a table store partition by partition."""

from __future__ import annotations

import contextlib
import logging
import os
import posixpath
import re
import uuid
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dask
import fsspec
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pads
from distributed import Client
from fsspec.implementations.local import LocalFileSystem

from autoseg.checks import CLUSTER_COLUMN
from autoseg.dask.cluster import workers
from autoseg.dask.dataset import Dataset, reason
from autoseg.errors import ServiceError, UsageError
from autoseg.features import FeatureSpec
from autoseg.model import SegmentationModel, prepare_matrix
from autoseg.reduce import Projection
from autoseg.search import nearest_centroid

log = logging.getLogger(__name__)

# Partitions computed ahead per worker while a table store consumes them one at a time.
STREAM_AHEAD_PER_WORKER = 2


# What an earlier output may hold: Dask's part files (``part.0.parquet``, ours zero-padded)
# directly in the folder, and the metadata files Dask or Spark write beside them. Anything else
# (another dataset, a subfolder, a user's file) is not ours to delete.
_OUTPUT_PART = re.compile(r"part\.\d+\.parquet")


_DATASET_EXTRAS = ("_metadata", "_common_metadata", "_SUCCESS")


def _is_output_file(folder: str, path: str) -> bool:
    relative = path[len(folder):].lstrip("/")
    return "/" not in relative and (bool(_OUTPUT_PART.fullmatch(relative))
                                    or relative in _DATASET_EXTRAS)


def check_output_path(input_path: str, output_path: str) -> None:
    """Refuse an output that would destroy data: the output replaces the folder at its path.

    The path must not be the input, contain it or lie inside it, and an existing folder there
    must hold nothing but a Parquet dataset (an earlier output).
    """
    out_fs, out = fsspec.core.url_to_fs(output_path)
    in_fs, source = fsspec.core.url_to_fs(input_path)
    out, source = _comparable(out_fs, out), _comparable(in_fs, source)
    same_store = out_fs.protocol == in_fs.protocol
    if same_store and (out == source or source.startswith(out + "/")
                       or out.startswith(source + "/")):
        raise UsageError(
            f"--dask-output={output_path!r} overlaps the input dataset {input_path!r}: it "
            "would be replaced; choose a path outside the input"
        )
    if not posixpath.dirname(out):
        raise UsageError(f"--dask-output={output_path!r} is the root of its store (a bucket): "
                         "give a folder inside it")
    if not out_fs.exists(out):
        return
    if not out_fs.isdir(out):
        raise UsageError(f"--dask-output={output_path!r} exists and is not a dataset folder: "
                         "choose another output path")
    # Keys ending in "/" are the empty "folder" markers of S3 consoles and Hadoop.
    others = [f for f in out_fs.find(out) if not f.endswith("/")
              and f.rstrip("/") != out and not _is_output_file(out, f)]
    if others:
        shown = others[0][len(out):].lstrip("/")
        raise UsageError(
            f"--dask-output={output_path!r} holds {shown!r}, which is not part of an earlier "
            "autoseg output, and the folder would be replaced: choose an empty folder or an "
            "earlier output"
        )


def _comparable(fs: fsspec.AbstractFileSystem, path: str) -> str:
    """A path normalised for comparison: absolute and without links on a local disk."""
    path = path.rstrip("/")
    if isinstance(fs, LocalFileSystem):
        return os.path.realpath(path)
    return path


def label_partition(frame: pd.DataFrame, spec: FeatureSpec, projection: Projection | None,
                     centroids: np.ndarray) -> pd.DataFrame:
    """One partition's rows, every column as read, plus ``cluster_id``."""
    labels = nearest_centroid(prepare_matrix(frame, spec, projection)[0], centroids) if len(frame) \
        else np.empty(0, dtype=np.int32)
    return frame.assign(**{CLUSTER_COLUMN: labels.astype(np.int32)})


@dataclass
class StagedDataset:
    """The labelled dataset, written to a hidden sibling of its destination.

    :meth:`swap_in` moves it into place and keeps the previous dataset aside;
    :meth:`commit` then deletes that backup, and :meth:`roll_back` restores it (or, before the
    swap, deletes the staged copy). The run swaps the dataset in *before* the table writes, so
    a table write that fails can still be undone on both sides.

    On a local disk every move is one rename. On object stores a move is a copy and a delete,
    so the state is recorded as it changes rather than probed afterwards: the backup counts only
    once its copy has returned, and the keys of the new dataset are listed before they are
    copied, so a roll-back deletes exactly those.
    """

    fs: fsspec.AbstractFileSystem
    staging: str
    path: str
    token: str
    schema: pa.Schema
    in_place: bool = False
    backup: str | None = None
    placed: list[str] = field(default_factory=list)

    @property
    def _local(self) -> bool:
        return isinstance(self.fs, LocalFileSystem)

    def chunks(self) -> Iterator[pa.Table]:
        """The labelled rows, one Parquet file at a time in partition order (for the stores)."""
        folder = self.path if self.in_place else self.staging
        dataset = pads.dataset(folder, filesystem=self.fs, format="parquet",
                               schema=self.schema)
        # File names carry the zero-padded partition number: their order is the input's.
        for fragment in sorted(dataset.get_fragments(), key=lambda f: f.path):
            yield fragment.to_table(schema=self.schema)

    def swap_in(self) -> None:
        """Move the staged dataset into place; the previous one (if any) goes aside."""
        if self.fs.exists(self.path):
            backup = f"{self.path}.old-{self.token}"
            if self._local:
                self.fs.mv(self.path, backup, recursive=True)
                self.backup = backup
            else:
                _copy_tree(self.fs, self.path, backup)
                self.backup = backup  # complete: its copy returned
                self.fs.rm(self.path, recursive=True)  # if this fails, restore clears the rest
        try:
            if self._local:
                self.fs.mv(self.staging, self.path, recursive=True)
            else:
                files = self.fs.find(self.staging)
                self.placed = [self.path + f[len(self.staging):] for f in files]
                self.fs.copy(files, self.placed)
                self.fs.rm(self.staging, recursive=True)
        except BaseException:
            self._restore()
            raise
        self.in_place = True

    def commit(self) -> None:
        """Delete the previous dataset: the run succeeded (a failure here only warns)."""
        self.placed = []
        if self.backup is None:
            return
        try:
            self.fs.rm(self.backup, recursive=True)
        except Exception as exc:  # the new outputs are all in place: do not undo them
            log.warning("could not delete the previous dataset at %s (%s): delete it by hand",
                        self.backup, type(exc).__name__)
        self.backup = None

    def roll_back(self) -> None:
        """Leave the output path as it was before the run.

        Raises
        ------
        ServiceError
            When the previous dataset could not be put back; the message says where it is.
        """
        try:
            if self.fs.exists(self.staging):
                self.fs.rm(self.staging, recursive=True)
        except Exception as exc:  # only our own scratch copy: say so, keep going
            log.warning("could not delete the staging folder %s (%s): delete it by hand",
                        self.staging, type(exc).__name__)
        try:
            self._restore()
        except Exception as exc:
            where = (f"; the previous dataset is in {self.backup!r}" if self.backup
                     else "")
            raise ServiceError(
                f"the run failed and the output {self.path!r} could not be restored "
                f"({reason(exc)}){where}: restore it by hand"
            ) from None
        self.in_place = False

    def _restore(self) -> None:
        if self.backup is not None:
            # The previous dataset is whole in the backup; whatever is at the path now is new
            # (or what a failed delete left of the old one).
            if self.fs.exists(self.path):
                self.fs.rm(self.path, recursive=True)
            if self._local:
                self.fs.mv(self.backup, self.path, recursive=True)
            else:
                _copy_tree(self.fs, self.backup, self.path)
                self.fs.rm(self.backup, recursive=True)
            self.backup = None
        elif self.in_place and self._local:
            self.fs.rm(self.path, recursive=True)  # nothing was there before the run
        elif self.placed:
            there = [key for key in self.placed if self.fs.exists(key)]
            if there:
                self.fs.rm(there)
        self.placed = []


def _copy_tree(fs: fsspec.AbstractFileSystem, source: str, target: str) -> None:
    """Copy every file under ``source`` to the same relative key under ``target``.

    Not ``fs.copy(source, target, recursive=True)``: fsspec's recursive copy also copies the
    "directory" ``source`` itself, a key that does not exist on S3, and s3fs raises
    ``FileNotFoundError`` after having copied every file. A failed copy removes what it copied
    (best effort) and raises.
    """
    files = fs.find(source)
    targets = [target + f[len(source):] for f in files]
    try:
        fs.copy(files, targets)
    except BaseException:
        with contextlib.suppress(Exception):
            fs.rm([t for t in targets if fs.exists(t)])
        raise


def stage_dataset(data: Dataset, model: SegmentationModel, output_path: str,
                   schema: pa.Schema) -> StagedDataset:
    """Label every partition and write the dataset to a hidden staging folder beside
    ``output_path`` (renamed into place later by :meth:`StagedDataset.swap_in`)."""
    meta = data.frame._meta.assign(**{CLUSTER_COLUMN: np.empty(0, dtype=np.int32)})
    labelled = data.frame.map_partitions(label_partition, model.spec, model.projection,
                                         model.centroids, meta=meta)
    fs, path = fsspec.core.url_to_fs(output_path)
    path = path.rstrip("/")
    parent, name = posixpath.split(path)
    token = uuid.uuid4().hex[:12]
    staging = posixpath.join(parent, f".{name}.tmp-{token}")
    staged = StagedDataset(fs, staging, path, token, schema)
    try:
        # The input's Arrow schema, not one inferred from pandas: DATE stays DATE, DECIMAL
        # stays DECIMAL, as on the single-machine path. Zero-padded part numbers keep the
        # files' order the partitions' order for any reader that sorts names.
        labelled.to_parquet(_with_protocol(output_path, fs, staging), write_index=False,
                            schema=schema, name_function=_part_name)
    except BaseException:
        staged.roll_back()
        raise
    return staged


def _part_name(index: int) -> str:
    return f"part.{index:06d}.parquet"


def partition_chunks(data: Dataset, model: SegmentationModel, schema: pa.Schema,
                      client: Client) -> Iterator[pa.Table]:
    """The labelled rows partition by partition, in order, computed a few partitions ahead.

    For a table store when no dataset is written: at most ``STREAM_AHEAD_PER_WORKER`` x
    workers partitions are in flight or waiting on the client at any time.
    """
    ahead = max(1, STREAM_AHEAD_PER_WORKER * max(1, workers(client)["n_workers"]))
    parts = [dask.delayed(label_partition)(part, model.spec, model.projection,
                                            model.centroids)
             for part in data.frame.to_delayed()]
    pending: deque[Any] = deque()
    for part in parts:
        pending.append(client.compute(part))
        if len(pending) >= ahead:
            yield _arrow_chunk(pending.popleft().result(), schema)
    while pending:
        yield _arrow_chunk(pending.popleft().result(), schema)


def _arrow_chunk(frame: pd.DataFrame, schema: pa.Schema) -> pa.Table:
    return pa.Table.from_pandas(frame, schema=schema, preserve_index=False)


def _with_protocol(original: str, fs: fsspec.AbstractFileSystem, path: str) -> str:
    """``path`` as a URL of the same filesystem as ``original`` (``s3://...`` stays remote)."""
    if "://" not in original:
        return path
    protocol = original.split("://", 1)[0]
    return f"{protocol}://{path}"


def default_output_path(input_path: str) -> str:
    """``<input>-clustered`` beside the input dataset (used when no output path is given)."""
    return str(Path(input_path.rstrip("/"))) + "-clustered" if "://" not in input_path \
        else input_path.rstrip("/") + "-clustered"
