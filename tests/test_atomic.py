"""Staged files: complete, fsynced, 0644, renamed in by a separate commit; errors name the path."""

from __future__ import annotations

import os
import signal
import stat
from pathlib import Path

import pytest

from autoseg.atomic import (
    forget_signals,
    note_signal,
    raise_if_signalled,
    signals_deferred,
    stage_file,
    write_file_atomically,
    write_new_file,
)
from autoseg.errors import EXIT_FILESYSTEM, Interrupted, OutputError


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_stage_leaves_the_target_until_commit(tmp_path: Path) -> None:
    target = tmp_path / "summary.json"
    target.write_text("old")
    staged = stage_file(target, '{"new": true}')
    assert target.read_text() == "old"
    assert staged.temporary.parent == tmp_path and staged.temporary.read_text() == '{"new": true}'
    assert staged.commit() == target
    assert target.read_text() == '{"new": true}'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["summary.json"]


def test_discard_keeps_the_old_file_and_leaves_nothing(tmp_path: Path) -> None:
    target = tmp_path / "report.html"
    target.write_bytes(b"old")
    stage_file(target, b"new").discard()
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html"]


def test_files_are_0644_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o077)
    try:
        written = write_file_atomically(tmp_path / "a" / "summary.json", "{}")
        new = write_new_file(tmp_path / "model.json", "{}")
    finally:
        os.umask(old)
    assert _mode(written) == 0o644 and _mode(new) == 0o644


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes to read-only directories")
def test_unwritable_directory_is_an_output_error(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        with pytest.raises(OutputError, match=r"cannot write '.*locked/summary.json'.*EACCES"):
            write_file_atomically(locked / "summary.json", "{}")
    finally:
        locked.chmod(0o755)


def test_directory_that_cannot_be_created_is_an_output_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match=r"cannot create '.*file/sub'.*ENOTDIR") as raised:
        stage_file(tmp_path / "file" / "sub" / "report.html", "x")
    assert raised.value.exit_code == EXIT_FILESYSTEM


def test_a_failed_commit_keeps_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "out"
    target.mkdir()
    (target / "keep").write_text("x")
    staged = stage_file(tmp_path / "out", "file onto a non-empty directory")
    with pytest.raises(OutputError, match=r"cannot rename '.*out'"):
        staged.commit()
    assert (target / "keep").read_text() == "x"
    assert not staged.temporary.exists()


def test_signals_deferred_finishes_the_block_then_says_so() -> None:
    done = []
    with pytest.raises(Interrupted, match=r"SIGTERM during the final commit; it was finished"), \
            signals_deferred():
        os.kill(os.getpid(), signal.SIGTERM)
        done.append("renamed")
    assert done == ["renamed"]


def test_signals_deferred_restores_the_handlers_and_lets_errors_win() -> None:
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(ValueError, match="boom"), signals_deferred():
        os.kill(os.getpid(), signal.SIGTERM)
        raise ValueError("boom")
    assert signal.getsignal(signal.SIGTERM) == before


def test_raise_if_signalled_gives_up_cleanly_inside_the_deferral() -> None:
    raise_if_signalled("outside any deferral")  # nothing held: nothing happens
    with pytest.raises(Interrupted, match=r"^stopped by signal SIGINT while waiting for the "
                       r"lock; nothing was written$"), signals_deferred():
        raise_if_signalled("while waiting for the lock")
        os.kill(os.getpid(), signal.SIGINT)
        raise_if_signalled("while waiting for the lock")
    with signals_deferred():  # a new deferral starts with nothing held
        raise_if_signalled("again")


def test_a_noted_signal_is_seen_even_if_its_exception_was_swallowed() -> None:
    note_signal(signal.SIGTERM)
    with pytest.raises(Interrupted, match=r"^stopped by signal SIGTERM while waiting for the "
                       r"lock; nothing was written$"):
        raise_if_signalled("while waiting for the lock")
    raise_if_signalled("again")  # seen once
    note_signal(signal.SIGTERM)
    forget_signals()
    raise_if_signalled("after a new run started")
