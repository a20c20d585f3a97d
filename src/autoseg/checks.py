"""Checks of the input and the output tables that must pass before any work starts.

Shared by both engines: they describe the input as an :class:`autoseg.engine.InputInfo`
(columns, row count, an empty frame with the input's dtypes) and answer whether a column is a
key; the wording and the rules live here once.
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from autoseg.config import RunConfig
from autoseg.errors import InputDataError
from autoseg.io import TableStore
from autoseg.model import SegmentationModel
from autoseg.names import TableName

if TYPE_CHECKING:
    from autoseg.engine import Engine, InputInfo

log = logging.getLogger(__name__)

CLUSTER_COLUMN = "cluster_id"


def check_csv_header(path: str) -> None:
    """Refuse duplicate CSV header names before pandas silently renames them."""
    if not path.lower().endswith((".csv", ".tsv")) or not Path(path).exists():
        return
    with open(path, newline="", encoding="utf-8", errors="replace") as handle:
        header = next(csv.reader(handle, delimiter="\t" if path.endswith(".tsv") else ","), [])
    check_column_names([h.strip() for h in header], f"--input-table={path!r}")


def check_column_names(names: list[str], where: str = "--input-table") -> None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise InputDataError(f"{where} has two columns named {name!r}: rename one")
        seen.add(name)


def check_input(info: InputInfo, engine: Engine, config: RunConfig,
                saved_model: SegmentationModel | None) -> None:
    """Data checks that must pass before any work starts (both engines).

    Raises
    ------
    InputDataError
        Empty input, an existing ``cluster_id`` column, a missing or non-unique
        ``--rowid-column``, columns a reused model needs, too few rows for the k range.
    """
    if info.n_rows == 0:
        raise InputDataError(
            f"--input-table={config.input_table!r} is empty: it has no rows to cluster"
        )
    if CLUSTER_COLUMN in info.columns:
        raise InputDataError(
            f"--input-table already has a {CLUSTER_COLUMN!r} column: drop or rename it first "
            "(it would be overwritten)"
        )
    # `time` is ignored by default (TD adds it to every table); its absence is no news
    unknown = [c for c in config.ignore_columns if c not in info.columns and c != "time"]
    if unknown:
        log.warning("--ignore-columns: %s not in the input; ignored", ", ".join(map(repr, unknown)))
    if config.rowid_column:
        if config.rowid_column not in info.columns:
            raise InputDataError(
                f"--rowid-column={config.rowid_column!r} is not a column of the input: use one "
                "of its columns"
            )
        if not engine.is_key(config.rowid_column):
            raise InputDataError(
                f"--rowid-column={config.rowid_column!r} is not unique: give the table's "
                "primary key"
            )
    if saved_model is not None:
        saved_model.spec.check_columns(info.meta)
        if config.keep_columns:
            log.warning("--keep-columns applies when a model is fitted: the reused model keeps "
                        "the columns it was fitted with (refit with --force-refit to change them)")
        return
    unknown = [c for c in config.keep_columns if c not in info.columns]
    if unknown:
        raise InputDataError(
            f"--keep-columns={unknown[0]!r} is not a column of the input: use one of its "
            "columns"
        )
    needed = config.num_clusters or config.max_clusters
    if info.n_rows < needed + 1:
        option = "--num-clusters" if config.num_clusters else "--max-clusters"
        raise InputDataError(
            f"n_rows={info.n_rows} must be >= {option.lstrip('-').replace('-', '_')}+1="
            f"{needed + 1}: lower {option} or give more rows"
        )


def check_output_table(store: TableStore, name: TableName, info: InputInfo,
                       mode: str) -> None:
    """An append must match the existing table's columns; checked before any work."""
    if mode != "append":
        return
    existing = store.table_columns(name)
    if existing is None:
        return
    expected = [str(c) for c in info.columns] + [CLUSTER_COLUMN]
    if [c.lower() for c in existing] != [c.lower() for c in expected]:
        extra = sorted(set(expected) - set(existing))
        missing = sorted(set(existing) - set(expected))
        detail = f"new columns {extra}" if extra else f"missing columns {missing}"
        if not extra and not missing:
            detail = "columns in a different order"
        raise InputDataError(
            f"--output-mode=append: {str(name)!r} has different columns ({detail}): use "
            "--output-mode overwrite or another --output-table"
        )
