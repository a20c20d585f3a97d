"""Faults a nightly job meets, tried on the real CLI in subprocesses.

Every case starts from a workspace after one successful run (table ``s.out`` in a DuckDB file,
``summary.json`` and ``report.html``, model ``m``) and runs again with other settings
(``--num-clusters 3`` instead of 2) while something goes wrong: a directory that cannot be
created, a full file system, a second run on the same DuckDB file, a corrupt model, SIGTERM or
``kill -9`` at the table write and at the model rename. Each checks the exit code, the single
``autoseg: error:`` line, that no traceback is shown, and the bytes of the previous outputs.

Signals are timed without test hooks in the product: the child runs ``autoseg.cli.main`` (what
``python -m autoseg`` runs) from a small launcher that adds, before main starts, a Python audit
hook (fires on the ``os.rename`` event of a given path: the model's rename) or a trace hook
switched on by the "stage write started" log line (fires when the DuckDB store's write
transaction reaches the line of a given statement). The SIGTERM at the table write is also tried the
way an operator meets it: while the run waits for a DuckDB file another process holds.
"""

from __future__ import annotations

import json
import os
import queue
import re
import resource
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd
import pytest

from autoseg.model import ModelUnreadable, SegmentationModel

SRC = Path(__file__).resolve().parents[1] / "src"
ERROR_PREFIX = "autoseg: error:"
CHILD_TIMEOUT = 600  # seconds; generous for a loaded CI machine, never reached when all is well
SIGNAL_TIMEOUT = 120  # seconds a run may take to stop after a signal or a 1 s lock timeout
OLD_K, NEW_K = 2, 3

# The launcher: installs a fault hook, then runs the real entry point with the given arguments.
LAUNCHER = r"""
import linecache, logging, os, signal, sys

when, what = sys.argv[1], sys.argv[2]
sig = signal.SIGKILL if what == "KILL" else signal.SIGTERM


def fire():
    print("autoseg-test: fault injected", file=sys.stderr, flush=True)
    os.kill(os.getpid(), sig)


if when.startswith("rename:"):
    target, _, nth = when[len("rename:"):].rpartition("#")
    seen = [0]

    def audit(event, args):
        if event == "os.rename" and target in (os.fsdecode(args[0]), os.fsdecode(args[1])):
            seen[0] += 1
            if seen[0] == int(nth):
                fire()

    sys.addaudithook(audit)
elif when.startswith("line:"):
    text = when[len("line:"):]

    def in_write(frame, event, arg):
        if event == "line" and text in linecache.getline(frame.f_code.co_filename,
                                                         frame.f_lineno):
            sys.settrace(None)
            fire()
        return in_write

    def calls(frame, event, arg):
        return in_write if frame.f_code.co_name == "_write_in" else None

    class Trigger(logging.Handler):
        def emit(self, record):
            if record.getMessage() == "stage write started":
                sys.settrace(calls)

    logging.getLogger("autoseg.pipeline").addHandler(Trigger())

from autoseg.cli import main

main(sys.argv[3:])
"""

# Holds a DuckDB file open for writing: locks on "lock", lets go when stdin closes.
HOLDER = r"""
import duckdb, sys
sys.stdin.readline()
conn = duckdb.connect(sys.argv[1])
print("locked", flush=True)
sys.stdin.read()
conn.close()
"""


# --- running the CLI -------------------------------------------------------------------------


def child_env(mpl_dir: Path) -> dict[str, str]:
    """The environment of a child run: this worktree's sources first, no AUTOSEG_* settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTOSEG_")}
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), *filter(None, [env.get("PYTHONPATH")])])
    env["MPLCONFIGDIR"] = str(mpl_dir)  # warmed by the first run: later runs write no cache
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


@dataclass
class Result:
    """What one CLI run produced."""

    code: int
    err: str

    @property
    def error_lines(self) -> list[str]:
        return [line for line in self.err.splitlines() if line.startswith(ERROR_PREFIX)]


def assert_one_line_error(result: Result, code: int, pattern: str) -> str:
    """Exit ``code``; exactly one ``autoseg: error:`` line, the last, matching; no traceback."""
    assert result.code == code, f"exit {result.code}, stderr:\n{result.err}"
    assert len(result.error_lines) == 1, result.err
    line = result.error_lines[0]
    assert result.err.rstrip("\n").splitlines()[-1] == line, result.err
    assert re.search(pattern, line), f"{pattern!r} not in {line!r}"
    assert "Traceback" not in result.err, result.err
    return line


class Child:
    """A CLI run in the background whose stderr lines can be waited for."""

    def __init__(self, argv: list[str], env: dict[str, str], cwd: Path,
                 preexec_fn: Callable[[], None] | None = None) -> None:
        self.process = subprocess.Popen(argv, env=env, cwd=cwd, text=True,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                        preexec_fn=preexec_fn)
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append(line)
            self._queue.put(line)
        self._queue.put(None)

    def wait_for(self, pattern: str) -> str:
        """Block until a stderr line matches ``pattern``; fail if the run ends first."""
        while True:
            try:
                line = self._queue.get(timeout=CHILD_TIMEOUT)
            except queue.Empty:
                pytest.fail(f"no line matching {pattern!r} in time:\n{''.join(self.lines)}")
            if line is None:
                pytest.fail(f"the run ended before {pattern!r}:\n{''.join(self.lines)}")
            if re.search(pattern, line):
                return line

    def finish(self, timeout: float = CHILD_TIMEOUT) -> Result:
        """Wait for the run to end (kill it and fail when it does not end in ``timeout``)."""
        try:
            code = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            self._reader.join(timeout=CHILD_TIMEOUT)
            pytest.fail(f"the run did not end within {timeout}s:\n{''.join(self.lines)}")
        self._reader.join(timeout=CHILD_TIMEOUT)
        return Result(code, "".join(self.lines))


# --- workspaces ------------------------------------------------------------------------------


def blobs(n: int = 60, seed: int = 0) -> pd.DataFrame:
    """Three groups over numeric and category columns, plus a row id."""
    rng = np.random.default_rng(seed)
    third = n // 3
    group = np.repeat([0, 1, 2], [third, third, n - 2 * third])
    return pd.DataFrame({
        "customer_id": np.arange(1, n + 1),
        "spend": (np.array([100.0, 500.0, 900.0])[group] + rng.normal(0, 10, n)).round(2),
        "visits": (np.array([2, 12, 30])[group] + rng.poisson(1, n)).astype("int64"),
        "channel": np.array(["web", "store", "app"])[group],
    })


@dataclass
class Workspace:
    """A store, output and model directory after one successful run."""

    root: Path
    env: dict[str, str]

    @property
    def db(self) -> Path:
        return self.root / "x.duckdb"

    @property
    def out(self) -> Path:
        return self.root / "out"

    @property
    def models(self) -> Path:
        return self.root / "models"

    def args(self, *extra: str, k: int = NEW_K, output_dir: Path | None = None,
             model_dir: Path | None = None) -> list[str]:
        argv = ["run", "--input-table", "s.t", "--output-table", "s.out", "--model-name", "m",
                "--store", f"duckdb:{self.db}", "--output-dir", str(output_dir or self.out),
                "--model-dir", str(model_dir or self.models), "--num-clusters", str(k),
                "--kmeans-restarts", "1", "--stability-runs", "0", "--log-format", "text"]
        return argv + list(extra)

    def cli(self, *extra: str, **options: Any) -> list[str]:
        return [sys.executable, "-m", "autoseg", *self.args(*extra, **options)]

    def faulty(self, when: str, what: str, *extra: str, **options: Any) -> list[str]:
        return [sys.executable, "-c", LAUNCHER, when, what, *self.args(*extra, **options)]

    def run(self, argv: list[str], preexec_fn: Callable[[], None] | None = None) -> Result:
        done = subprocess.run(argv, env=self.env, cwd=self.root, text=True,
                              capture_output=True, timeout=CHILD_TIMEOUT, preexec_fn=preexec_fn)
        return Result(done.returncode, done.stderr)

    def start(self, argv: list[str], preexec_fn: Callable[[], None] | None = None) -> Child:
        return Child(argv, self.env, self.root, preexec_fn)


def table_rows(db: Path, table: str = "s.out") -> list[tuple[Any, ...]] | None:
    """Every row of ``table`` (sorted), or None when it does not exist."""
    with duckdb.connect(str(db), read_only=True) as conn:
        found = conn.execute(
            "SELECT count(*) FROM information_schema.tables "
            "WHERE table_schema = ? AND table_name = ?", table.split("."),
        ).fetchall()[0][0]
        if not found:
            return None
        return conn.sql(f"SELECT * FROM {table} ORDER BY ALL").fetchall()


@dataclass(frozen=True)
class Outputs:
    """The bytes of every output of a workspace."""

    table: list[tuple[Any, ...]] | None
    summary: bytes | None
    report: bytes | None
    model: dict[str, bytes]

    @classmethod
    def of(cls, ws: Workspace, out: Path | None = None) -> Outputs:
        out = out or ws.out

        def read(path: Path) -> bytes | None:
            return path.read_bytes() if path.exists() else None

        model_dir = ws.models / "m"
        model = ({p.name: p.read_bytes() for p in sorted(model_dir.iterdir())}
                 if model_dir.is_dir() else {})
        return cls(table_rows(ws.db), read(out / "summary.json"), read(out / "report.html"),
                   model)


def state(ws: Workspace, before: Outputs, out: Path | None = None) -> dict[str, str]:
    """Each output as ``old`` (the bytes of ``before``), ``new`` (complete, of this run) or
    ``bad`` (missing or incomplete)."""
    out = out or ws.out
    now = Outputs.of(ws, out)
    found: dict[str, str] = {}
    clusters = {row[-1] for row in now.table or []}
    found["table"] = ("old" if now.table == before.table else
                      "new" if now.table and len(now.table) == 60 and clusters == set(range(NEW_K))
                      else "bad")
    try:
        summary = json.loads(now.summary or b"")
        found["summary"] = ("old" if now.summary == before.summary else
                            "new" if summary.get("chosen_k") == NEW_K else "bad")
    except ValueError:
        found["summary"] = "bad"
    found["report"] = ("old" if now.report == before.report else
                       "new" if (now.report or b"").rstrip().endswith(b"</html>") else "bad")
    try:
        k = SegmentationModel.load(ws.models / "m", "m").k
        found["model"] = ("old" if now.model == before.model or k == OLD_K and not now.model
                          else "new" if k == NEW_K else "bad")
    except ModelUnreadable:
        found["model"] = "bad"
    return found


def assert_unchanged(ws: Workspace, before: Outputs, out: Path | None = None) -> None:
    """Every previous output has exactly its previous bytes, and no staged file is left."""
    assert Outputs.of(ws, out) == before
    leftovers = [p for d in (out or ws.out, ws.models) for p in d.iterdir()
                 if p.name.startswith(".")]
    assert leftovers == [], leftovers


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    """A workspace after one successful run with ``--num-clusters 2``."""
    root = tmp_path_factory.mktemp("template")
    ws = Workspace(root, child_env(tmp_path_factory.mktemp("mpl")))
    with duckdb.connect(str(ws.db)) as conn:
        conn.execute("CREATE SCHEMA s")
        conn.register("frame", blobs())
        conn.execute("CREATE TABLE s.t AS SELECT * FROM frame")
    result = ws.run(ws.cli(k=OLD_K))
    assert result.code == 0, result.err
    return ws


@pytest.fixture
def ws(template: Workspace, tmp_path: Path) -> Workspace:
    """A private copy of the template workspace."""
    root = tmp_path / "ws"
    shutil.copytree(template.root, root)
    return Workspace(root, template.env)


@pytest.fixture
def before(ws: Workspace) -> Outputs:
    outputs = Outputs.of(ws)
    assert outputs.table and outputs.summary and outputs.report and outputs.model
    return outputs


# --- pre-flight: a place that cannot be written fails before any work ------------------------


def test_output_dir_under_proc_fails_first_and_writes_nothing(
    ws: Workspace, before: Outputs
) -> None:
    result = ws.run(ws.cli(output_dir=Path("/proc/autoseg-test/out")))
    assert_one_line_error(result, 2, r"^autoseg: error: --output-dir='/proc/autoseg-test/out': "
                          r"cannot create the directory .*: choose a directory")
    assert "stage read started" not in result.err
    assert_unchanged(ws, before)


@pytest.mark.parametrize("where", ["/proc/autoseg-test/models", "{out}/summary.json/models"])
def test_model_dir_that_cannot_be_created_fails_first_and_writes_nothing(
    ws: Workspace, before: Outputs, where: str
) -> None:
    model_dir = Path(where.format(out=ws.out))
    result = ws.run(ws.cli(model_dir=model_dir))
    assert_one_line_error(result, 2, rf"^autoseg: error: --model-dir='{re.escape(str(model_dir))}"
                          r"'(: cannot create the directory .*(ENOENT|ENOTDIR)| cannot be "
                          r"created or written \('.*' is not a directory\))")
    assert "stage read started" not in result.err
    assert_unchanged(ws, before)


def test_store_in_a_missing_directory_fails_before_reading(
    ws: Workspace, before: Outputs
) -> None:
    blobs().to_parquet(ws.root / "in.parquet")
    argv = ws.cli()
    argv[argv.index("s.t")] = str(ws.root / "in.parquet")
    argv[argv.index(f"duckdb:{ws.db}")] = f"duckdb:{ws.root}/nowhere/x.duckdb"
    result = ws.run(argv)
    assert_one_line_error(result, 2, r"^autoseg: error: --store='duckdb:.*nowhere/x.duckdb': "
                          r"directory '.*nowhere' does not exist: create it")
    assert "stage read started" not in result.err
    assert_unchanged(ws, before)
    assert not (ws.root / "nowhere").exists()


# --- a full file system ----------------------------------------------------------------------


def _file_size_limit(limit: int) -> Callable[[], None]:
    """A ``preexec_fn``: no file of the child may grow past ``limit`` bytes (EFBIG)."""

    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def test_file_size_limit_below_every_output_changes_nothing(
    ws: Workspace, before: Outputs
) -> None:
    # Smaller than any file the run writes, larger than the pre-flight's probe.
    result = ws.run(ws.cli(), preexec_fn=_file_size_limit(200))
    line = assert_one_line_error(result, 5, r"File too large \(EFBIG\): .*ulimit -f")
    assert str(ws.root) in line  # names the path that could not be written
    assert_unchanged(ws, before)


@pytest.fixture
def full_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A tmpfs with about 8 KiB free (root only; skipped where mount is not allowed)."""
    mount_point = tmp_path / "tmpfs"
    mount_point.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs",
                              str(mount_point)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def test_full_output_file_system_changes_nothing(
    ws: Workspace, before: Outputs, full_tmpfs: Path
) -> None:
    out = full_tmpfs / "out"
    shutil.copytree(ws.out, out)
    stats = os.statvfs(full_tmpfs)
    with open(full_tmpfs / "filler", "wb") as handle:
        handle.write(b"\0" * (stats.f_bavail * stats.f_frsize - 8192))
    result = ws.run(ws.cli(output_dir=out))
    assert_one_line_error(result, 5, rf"cannot write '{re.escape(str(out))}/"
                          r"(summary.json|report.html)': No space left on device \(ENOSPC\): "
                          rf"free space on the file system of '{re.escape(str(out))}'")
    # the table and the model are committed only with the summary and the report
    assert_unchanged(ws, before, out)


# --- two runs on one DuckDB file -------------------------------------------------------------


def test_two_runs_started_together_on_one_file_both_succeed(ws: Workspace) -> None:
    runs = [ws.start(ws.cli(output_dir=ws.root / f"out_{name}",
                            model_dir=ws.root / f"models_{name}", k=k)
                     + ["--output-table", f"s.out_{name}"])
            for name, k in (("a", 2), ("b", 3))]
    results = [run.finish() for run in runs]
    for result in results:
        assert result.code == 0, result.err
    for name, k in (("a", 2), ("b", 3)):
        rows = table_rows(ws.db, f"s.out_{name}")
        assert rows is not None and len(rows) == 60
        assert {row[-1] for row in rows} == set(range(k))
        assert json.loads((ws.root / f"out_{name}" / "summary.json").read_text())["chosen_k"] == k


@pytest.fixture
def holder(ws: Workspace) -> Iterator[subprocess.Popen[str]]:
    """A process ready to hold the workspace's DuckDB file (write "lock\\n" to its stdin)."""
    process = subprocess.Popen([sys.executable, "-c", HOLDER, str(ws.db)], text=True,
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=ws.env)
    try:
        yield process
    finally:
        if process.stdin is not None and not process.stdin.closed:
            process.stdin.close()
        process.wait(timeout=CHILD_TIMEOUT)


def _lock(holder: subprocess.Popen[str]) -> None:
    assert holder.stdin is not None and holder.stdout is not None
    holder.stdin.write("lock\n")
    holder.stdin.flush()
    assert holder.stdout.readline() == "locked\n"


def test_a_file_locked_past_the_lock_timeout_fails_in_one_line(
    ws: Workspace, before: Outputs, holder: subprocess.Popen[str]
) -> None:
    _lock(holder)
    child = ws.start(ws.cli("--lock-timeout", "1"))
    waiting = child.wait_for(rf"is locked by PID {holder.pid}")
    if "waiting up to 1s" not in waiting:
        child.process.kill()
        child.finish()
        pytest.fail(f"--lock-timeout 1 did not reach the store: {waiting}")
    result = child.finish(timeout=SIGNAL_TIMEOUT)
    assert_one_line_error(result, 4, rf"^autoseg: error: --store='duckdb:.*x.duckdb': the DuckDB "
                          rf"file is locked by PID {holder.pid} \(.*\) and stayed locked for 1s "
                          r"\(--lock-timeout\)")
    assert len(re.findall(r"waiting up to 1s", result.err)) == 1  # logged once
    if holder.stdin is not None:
        holder.stdin.close()
    holder.wait(timeout=CHILD_TIMEOUT)
    assert_unchanged(ws, before)


# --- signals ---------------------------------------------------------------------------------


def test_sigterm_while_waiting_for_the_table_write_writes_nothing(
    ws: Workspace, before: Outputs, holder: subprocess.Popen[str]
) -> None:
    child = ws.start(ws.cli())
    child.wait_for(r"stage profile started")  # the input was read; the file is free
    _lock(holder)
    child.wait_for(rf"is locked by PID {holder.pid}")
    child.process.send_signal(signal.SIGTERM)
    result = child.finish(timeout=SIGNAL_TIMEOUT)
    assert_one_line_error(result, 130, r"^autoseg: error: stopped by signal SIGTERM.*; nothing "
                          r"was written$")
    if holder.stdin is not None:
        holder.stdin.close()
    holder.wait(timeout=CHILD_TIMEOUT)
    assert_unchanged(ws, before)


def test_sigterm_in_the_table_transaction_writes_nothing(ws: Workspace, before: Outputs) -> None:
    result = ws.run(ws.faulty("line:CREATE TABLE", "TERM"))
    assert "autoseg-test: fault injected" in result.err
    assert_one_line_error(result, 130, r"^autoseg: error: stopped by signal SIGTERM.*; nothing "
                          r"was written$")
    assert_unchanged(ws, before)


@pytest.mark.parametrize("nth", [1, 2], ids=["first-rename", "second-rename"])
def test_sigterm_at_the_model_rename_leaves_old_or_new_outputs_never_a_mix(
    ws: Workspace, before: Outputs, nth: int
) -> None:
    result = ws.run(ws.faulty(f"rename:{ws.models / 'm'}#{nth}", "TERM"))
    assert "autoseg-test: fault injected" in result.err
    assert_one_line_error(result, 130, r"^autoseg: error: stopped by signal SIGTERM")
    found = state(ws, before)
    assert set(found.values()) in ({"old"}, {"new"}), found
    if set(found.values()) == {"old"}:
        assert result.error_lines[0].endswith("nothing was written")
    else:
        assert "every output of this run is written and complete" in result.error_lines[0]


def test_kill_9_at_the_table_commit_keeps_the_old_table(ws: Workspace, before: Outputs) -> None:
    result = ws.run(ws.faulty("line:COMMIT", "KILL"))
    assert result.code == -signal.SIGKILL, result.err
    assert "autoseg-test: fault injected" in result.err
    found = state(ws, before)
    assert found["table"] == "old", found
    assert "bad" not in found.values(), found
    assert Outputs.of(ws).table == before.table


@pytest.mark.parametrize("nth", [1, 2], ids=["first-rename", "second-rename"])
def test_kill_9_at_the_model_rename_leaves_a_complete_model(
    ws: Workspace, before: Outputs, nth: int
) -> None:
    result = ws.run(ws.faulty(f"rename:{ws.models / 'm'}#{nth}", "KILL"))
    assert result.code == -signal.SIGKILL, result.err
    found = state(ws, before)
    assert "bad" not in found.values(), found
    assert found["model"] == "old", found  # killed before the new model was in place
    if nth == 2:
        # killed between the renames: the next run finds the previous model (for its cluster
        # ids) and replaces it cleanly
        refit = ws.run(ws.cli())
        assert refit.code == 0, refit.err
        assert state(ws, before) == dict.fromkeys(("table", "summary", "report", "model"),
                                                  "new")
        assert sorted(p.name for p in ws.models.iterdir() if not p.name.startswith(".m.")
                      or p.name == ".m.old") == ["m"]


# --- a saved model that cannot be read -------------------------------------------------------


def test_corrupt_saved_model_stops_the_refit_before_any_work(
    ws: Workspace, before: Outputs
) -> None:
    (ws.models / "m" / "model.json").write_text('{"format_version": 1, "k": 2, "feat')
    before = Outputs.of(ws)
    result = ws.run(ws.cli())
    assert_one_line_error(result, 2, r"^autoseg: error: --model-name='m': the saved model "
                          r"'.*models/m/model.json' cannot be read \(not valid JSON: truncated or "
                          r"corrupt\): .* to start the cluster ids afresh")
    assert "stage read started" not in result.err
    assert_unchanged(ws, before)
