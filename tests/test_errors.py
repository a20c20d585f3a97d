"""One mapping from an exception to an exit code and a one-line message."""

from __future__ import annotations

import errno
import re
import socket
from pathlib import Path

import duckdb
import pytest

from autoseg.errors import (
    EXIT_FILESYSTEM,
    EXIT_INPUT,
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    EXIT_MEMORY,
    EXIT_SERVICE,
    EXIT_USAGE,
    INTERNAL_MESSAGE,
    InputDataError,
    Interrupted,
    OutputError,
    ServiceError,
    UsageError,
    classify,
    os_error_message,
)


@pytest.mark.parametrize(("exc", "code"), [
    (UsageError("--x=1 is wrong"), EXIT_USAGE),
    (InputDataError("--input-table is empty"), EXIT_INPUT),
    (ServiceError("td failed"), EXIT_SERVICE),
    (Interrupted("stopped"), EXIT_INTERRUPTED),
])
def test_autoseg_errors_keep_their_code_and_message(exc: Exception, code: int) -> None:
    assert classify(exc) == (code, str(exc))


def test_a_message_is_always_one_line() -> None:
    assert classify(ServiceError("first\nsecond  third")) == (EXIT_SERVICE, "first second third")


@pytest.mark.parametrize(("code", "fix"), [
    (errno.ENOSPC, r"free space on the file system of '/data/out'"),
    (errno.EDQUOT, r"disk quota on '/data/out'"),
    (errno.EACCES, r"make '/data/out' writable"),
    (errno.EROFS, r"'/data/out' is on a read-only file system"),
    (errno.EIO, r"I/O error: check the device"),
    (errno.EFBIG, r"file-size limit \(ulimit -f\)"),
])
def test_os_errors_name_the_path_the_errno_and_the_fix(code: int, fix: str) -> None:
    exc = OSError(code, "ignored", "/data/out/summary.json")
    exit_code, message = classify(exc)
    assert exit_code == EXIT_FILESYSTEM
    assert "'/data/out/summary.json'" in message
    assert f"({errno.errorcode[code]})" in message
    assert "\n" not in message
    assert re.search(fix, message), message


def test_missing_directory_and_a_directory_that_takes_no_files(tmp_path: Path) -> None:
    gone = classify(FileNotFoundError(errno.ENOENT, "x", str(tmp_path / "gone" / "f.json")))[1]
    assert "does not exist (removed during the run?)" in gone
    proc = classify(FileNotFoundError(errno.ENOENT, "x", "/proc/autoseg-out"))[1]
    assert "'/proc' does not take new files or folders" in proc


def test_output_error_carries_path_and_errno() -> None:
    error = OutputError("/out/report.html", OSError(errno.ENOSPC, "No space left on device"))
    assert (error.path, error.errno, error.exit_code) == ("/out/report.html", errno.ENOSPC,
                                                          EXIT_FILESYSTEM)
    assert str(error).startswith("cannot write '/out/report.html': No space left on device "
                                 "(ENOSPC): free space")
    assert classify(error) == (EXIT_FILESYSTEM, str(error))


def test_os_error_without_a_path_is_still_a_file_system_error() -> None:
    assert classify(OSError(errno.EIO, "Input/output error")) == (
        EXIT_FILESYSTEM, "operating-system error: [Errno 5] Input/output error")


@pytest.mark.parametrize("exc", [
    ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused"),
    TimeoutError("timed out"),
    socket.gaierror(-2, "Name or service not known"),
    OSError(errno.ENETUNREACH, "Network is unreachable"),
])
def test_network_errors_are_service_errors(exc: OSError) -> None:
    code, message = classify(exc)
    assert code == EXIT_SERVICE
    assert message.startswith("network error: ")


def test_duckdb_io_errors_are_store_errors(tmp_path: Path) -> None:
    bad = tmp_path / "not.duckdb"
    bad.write_bytes(b"not a database at all" * 500)
    with pytest.raises(duckdb.Error) as raised:
        duckdb.connect(str(bad))
    code, message = classify(raised.value)
    assert code == EXIT_SERVICE
    assert message.startswith("the DuckDB store failed: ")


def test_memory_error_is_out_of_memory_not_a_bug() -> None:
    code, message = classify(MemoryError())
    assert code == EXIT_MEMORY == 6
    assert message.startswith("out of memory: ")
    assert "raise the memory limit" in message


def test_cupy_out_of_memory_names_the_gpu() -> None:
    gpu_error = type("OutOfMemoryError", (MemoryError,), {"__module__": "cupy.cuda.memory"})
    code, message = classify(gpu_error("out of memory to allocate 800000000 bytes"))
    assert code == EXIT_MEMORY
    assert message.startswith("out of GPU memory: ") and "--device cpu" in message


def test_ctrl_c_and_bugs() -> None:
    assert classify(KeyboardInterrupt()) == (EXIT_INTERRUPTED, "interrupted; nothing was written")
    assert classify(RuntimeError("boom")) == (EXIT_INTERNAL, INTERNAL_MESSAGE)
    assert classify(KeyError("x")) == (EXIT_INTERNAL, INTERNAL_MESSAGE)


def test_os_error_message_for_an_errno_alone() -> None:
    assert os_error_message("/x/y", errno.EROFS, "rename") == (
        "cannot rename '/x/y': Read-only file system (EROFS): '/x' is on a read-only file "
        "system: choose a writable directory")
