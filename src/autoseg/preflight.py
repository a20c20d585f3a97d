"""Pre-flight: prove every place a run will write is usable, before the input is read.

A nightly job that cannot write its outputs must fail in a second with one line, not after an
hour of work and not half-way through its writes. :func:`run_preflight` checks, in this order:
the output directory and (for a run that saves a model) the model directory, each created and
proven writable by a probe file written, fsynced and removed; the table store (DuckDB: the
directory exists and takes files, the file is a DuckDB database that can be opened for writing;
Treasure Data's credentials were checked when the store was opened); and the previously saved
model, which must be readable when it exists. Table names were already checked by
:func:`autoseg.config.build_config`. Nothing is read from the input and no lock is kept.
"""

from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path

from autoseg.atomic import write_probe
from autoseg.config import RunConfig
from autoseg.errors import UsageError, os_error_fix
from autoseg.io import TableStore
from autoseg.model import SegmentationModel

PROBE_PREFIX = ".autoseg-probe-"


def _fix(path: Path, code: int | None) -> str:
    if code in (errno.ENOENT, errno.ENOTDIR):
        return "choose a directory on a writable file system"
    return os_error_fix(str(path / "x"), code)


def _reason(exc: OSError) -> str:
    name = errno.errorcode.get(exc.errno or -1, "")
    text = exc.strerror or str(exc)
    return f"{text} ({name})" if name else text


def check_directory_writable(path: Path, option: str,
                             created: list[Path] | None = None) -> Path:
    """Create ``path`` (and its parents) and prove it takes files, with a probe file.

    Parameters
    ----------
    path
        The directory a run writes to.
    option
        The option that named it, e.g. ``"--output-dir"``, for the message.
    created
        When given, the directories this call created are appended (deepest last), so a run
        that fails later can remove them again (:func:`remove_created_directories`).

    Returns
    -------
    Path
        ``path``, which now exists.

    Raises
    ------
    UsageError
        One line naming the option, the path, the reason and the fix (exit 2).
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UsageError(f"{option}={str(path)!r} is a file, not a directory: choose a "
                         "directory (it is created when missing)")
    missing = []
    for candidate in (path, *path.parents):
        if candidate.exists():
            if not candidate.is_dir():  # a file where a parent directory should be
                raise UsageError(
                    f"{option}={str(path)!r} cannot be created or written "
                    f"({str(candidate)!r} is not a directory): choose another directory"
                )
            break
        missing.append(candidate)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        failed = Path(exc.filename) if exc.filename else path
        raise UsageError(
            f"{option}={str(path)!r}: cannot create the directory {str(failed)!r}: "
            f"{_reason(exc)}: {_fix(failed, exc.errno)}"
        ) from None
    try:
        write_probe(path, f"{PROBE_PREFIX}{os.getpid()}")
    except OSError as exc:
        raise UsageError(
            f"{option}={str(path)!r} is not writable: {_reason(exc)}: {_fix(path, exc.errno)}"
        ) from None
    if created is not None:
        created.extend(reversed(missing))
    return path


def remove_created_directories(created: list[Path]) -> None:
    """Remove the directories the pre-flight created, deepest first, where still empty.

    A run that fails leaves nothing behind, not even an empty output directory; a directory
    something was written to (another process's file, say) is kept.
    """
    for directory in reversed(created):
        with contextlib.suppress(OSError):  # not empty, or already gone: keep it
            directory.rmdir()


def check_store_writable(store: TableStore) -> None:
    """Prove the store can take the run's tables (a DuckDB store's ``check_writable``).

    Raises
    ------
    UsageError
        The DuckDB file's directory does not exist (exit 2).
    ServiceError
        The store cannot be written or stayed locked past ``--lock-timeout`` (exit 4).
    """
    check = getattr(store, "check_writable", None)
    if check is not None:
        check()


def load_previous_model(config: RunConfig) -> SegmentationModel | None:
    """The saved model of ``--model-name``, loaded before any work.

    With ``--no-force-refit`` it is the model to reuse and must exist; for a refit it is the
    previous fit whose cluster ids are kept, ``None`` when there is none yet.

    Raises
    ------
    ModelNotFound
        ``--no-force-refit`` and no model was saved under the name.
    ModelUnreadable
        A saved model exists but cannot be read (it must not silently renumber clusters).
    """
    if not config.model_name:
        return None
    directory = config.model_dir / config.model_name
    if not config.force_refit:
        return SegmentationModel.load(directory, config.model_name)
    return SegmentationModel.load_if_saved(directory, config.model_name)


def writes_tables(config: RunConfig) -> bool:
    """Whether the run writes any table to the store."""
    return bool(config.output_table or config.export_feature_importance
                or config.export_shap_values or config.export_segment_rules)


def run_preflight(config: RunConfig, store: TableStore | None,
                  created: list[Path] | None = None) -> SegmentationModel | None:
    """Every pre-flight check of a run, before its input is read.

    Parameters
    ----------
    config
        The run's configuration (table names in it are already valid).
    store
        The opened store (its credentials were checked when it was opened), or ``None``
        when the run neither reads nor writes tables.
    created
        Collects the directories the pre-flight created (see
        :func:`check_directory_writable`).

    Returns
    -------
    SegmentationModel or None
        The saved model of ``--model-name`` (to reuse, or to keep cluster ids across a
        refit), or ``None``.

    Raises
    ------
    UsageError
        An output or model directory cannot be created or written, the DuckDB file's
        directory does not exist, or the saved model is missing (reuse) or unreadable.
    ServiceError
        The store cannot be written.
    """
    check_directory_writable(config.output_dir, "--output-dir", created)
    if config.model_name and config.force_refit:
        check_directory_writable(config.model_dir, "--model-dir", created)
    if writes_tables(config) and store is not None:
        check_store_writable(store)
    return load_previous_model(config)
