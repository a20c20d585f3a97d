"""Files written whole or not at all: staged beside their target, renamed into place later.

Every file a run writes (``summary.json``, ``report.html``) goes through :func:`stage_file`:
the content is written to a hidden temporary file in the target's directory, flushed and
fsynced, and given the permissions of an ordinary file (0644: a report is meant to be read by
others; nothing secret is ever written). :meth:`StagedFile.commit` renames it over the target
(atomic on POSIX) and fsyncs the directory, so the run can stage everything first and only
rename once its tables are committed.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

FILE_MODE = 0o644


@dataclass
class StagedFile:
    """A complete file beside its target, not yet visible there."""

    path: Path
    staging: Path

    def commit(self) -> Path:
        """Rename the staged file over the target; returns the target."""
        os.replace(self.staging, self.path)
        fsync_directory(self.path.parent)
        return self.path

    def discard(self) -> None:
        """Forget the staged file: the target stays as it was."""
        self.staging.unlink(missing_ok=True)


def stage_file(path: Path | str, data: bytes | str) -> StagedFile:
    """Write ``data`` to a temporary file beside ``path`` (its directory is created).

    Parameters
    ----------
    path
        The target.
    data
        The whole content (text is written as UTF-8).

    Returns
    -------
    StagedFile
        Commit it to put the file in place, or discard it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data.encode("utf-8") if isinstance(data, str) else data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, FILE_MODE)  # mkstemp creates files private (0600)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return StagedFile(path, Path(tmp))


def write_file_atomically(path: Path | str, data: bytes | str) -> Path:
    """Stage ``data`` beside ``path`` and rename it into place at once."""
    return stage_file(path, data).commit()


def fsync_directory(directory: Path) -> None:
    """Make a rename in ``directory`` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
