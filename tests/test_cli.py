"""The command line: flags, environment, params files, help, one-line errors and exit codes.

Most tests call :func:`autoseg.cli.main` in-process (fast); a few run ``python -m autoseg`` in a
subprocess to check what an operator really sees: the exit status, a single ``autoseg: error:``
line on stderr and no traceback. Every test works in its own ``tmp_path`` (DuckDB store,
output and model directories) on tables of at most 60 rows.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd
import pytest

from autoseg import cli
from autoseg.config import PARAMETERS, RunConfig, build_config

# --- helpers ---------------------------------------------------------------------------------

ERROR_PREFIX = "autoseg: error:"
BAD_TABLE_NAME = "db.t; drop table x"


@dataclass
class Result:
    """What one CLI invocation produced."""

    code: int
    out: str
    err: str

    @property
    def error_lines(self) -> list[str]:
        return [line for line in self.err.splitlines() if line.startswith(ERROR_PREFIX)]


def _exit_code(exc: SystemExit) -> int:
    if exc.code is None:
        return 0
    return exc.code if isinstance(exc.code, int) else 1


def assert_error(result: Result, code: int, pattern: str) -> str:
    """Exactly one ``autoseg: error:`` line, last on stderr, matching ``pattern``; no traceback."""
    assert result.code == code, f"exit {result.code}, stderr:\n{result.err}"
    assert len(result.error_lines) == 1, result.err
    line = result.error_lines[0]
    assert result.err.rstrip("\n").splitlines()[-1] == line, result.err
    assert re.search(pattern, line), f"{pattern!r} not in {line!r}"
    assert "Traceback" not in result.err and "Traceback" not in result.out
    return line


def blobs(n: int = 60, seed: int = 0) -> pd.DataFrame:
    """Two clear groups over numeric, count and category columns, plus a row id and ``time``."""
    rng = np.random.default_rng(seed)
    half = n // 2
    return pd.DataFrame(
        {
            "customer_id": np.arange(1, n + 1),
            "spend": np.r_[rng.normal(100, 10, half), rng.normal(500, 30, n - half)].round(2),
            "visits": np.r_[rng.poisson(2, half), rng.poisson(12, n - half)].astype("int64"),
            "channel": np.where(np.arange(n) < half, "web", "store"),
            "time": np.arange(n, dtype="int64") + 1_700_000_000,
        }
    )


def write_tables(db: Path, tables: dict[str, pd.DataFrame]) -> None:
    with duckdb.connect(str(db)) as conn:
        for name, frame in tables.items():
            schema = name.split(".")[0]
            conn.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
            conn.register("frame", frame)
            conn.execute(f"CREATE OR REPLACE TABLE {name} AS SELECT * FROM frame")
            conn.unregister("frame")


def db_snapshot(db: Path) -> dict[str, tuple[str, list[tuple[Any, ...]]]]:
    """Every table and view of the DuckDB file with its type and all its rows."""
    if not db.exists():
        return {}
    with duckdb.connect(str(db), read_only=True) as conn:
        names = conn.execute(
            "SELECT table_schema, table_name, table_type FROM information_schema.tables "
            "ORDER BY 1, 2"
        ).fetchall()
        return {
            f"{schema}.{table}": (
                kind, conn.sql(f'SELECT * FROM "{schema}"."{table}" ORDER BY ALL').fetchall()
            )
            for schema, table, kind in names
        }


def file_snapshot(root: Path) -> dict[str, bytes | None]:
    """Every file under ``root`` with its bytes (DuckDB files by name only)."""
    return {
        str(path.relative_to(root)): None if path.suffix == ".duckdb" else path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


@dataclass
class Workspace:
    """A store, output and model directory under ``tmp_path``."""

    root: Path

    @property
    def db(self) -> Path:
        return self.root / "x.duckdb"

    @property
    def out(self) -> Path:
        return self.root / "out"

    @property
    def models(self) -> Path:
        return self.root / "models"

    def args(self, *extra: str) -> list[str]:
        """``run`` arguments: the workspace's paths, small k and few restarts, then ``extra``."""
        argv = ["run", "--store", f"duckdb:{self.db}", "--output-dir", str(self.out),
                "--model-dir", str(self.models), "--kmeans-restarts", "2"]
        if "--max-clusters" not in extra and "--num-clusters" not in extra:
            argv += ["--max-clusters", "3"]
        return argv + list(extra)


INPUT_TABLES: dict[str, Callable[[], pd.DataFrame]] = {
    "s.t": blobs,
    "s.empty": lambda: blobs().iloc[:0],
    "s.one": lambda: blobs().iloc[:1],
    "s.five": lambda: blobs().iloc[:5],
    "s.const": lambda: pd.DataFrame(
        {"k": [1] * 60, "label": ["x"] * 60, "time": np.arange(60, dtype="int64")}
    ),
    "s.cid": lambda: blobs().assign(cluster_id=1),
    "s.fewer": lambda: blobs().drop(columns=["visits"]),
    "main.x": lambda: pd.DataFrame({"v": [1, 2, 3]}),
}


@pytest.fixture(autouse=True)
def _restore_process_state() -> Iterator[None]:
    """``main`` installs a SIGTERM handler and configures the ``autoseg`` logger: undo both."""
    handler = signal.getsignal(signal.SIGTERM)
    yield
    signal.signal(signal.SIGTERM, handler)
    logger = logging.getLogger("autoseg")
    for old in list(logger.handlers):
        logger.removeHandler(old)
    logger.setLevel(logging.NOTSET)
    logger.propagate = True


@pytest.fixture
def invoke(capsys: pytest.CaptureFixture[str]) -> Callable[[list[str]], Result]:
    """Run ``autoseg.cli.main(argv)`` in-process and capture its exit code and output."""

    def _invoke(argv: list[str]) -> Result:
        capsys.readouterr()
        try:
            cli.main(argv)
            code = 0
        except SystemExit as exc:
            code = _exit_code(exc)
        out, err = capsys.readouterr()
        return Result(code, out, err)

    return _invoke


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    """A workspace whose DuckDB file holds the input tables of :data:`INPUT_TABLES`."""
    workspace = Workspace(tmp_path)
    write_tables(workspace.db, {name: make() for name, make in INPUT_TABLES.items()})
    return workspace


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> list[RunConfig]:
    """Replace the pipeline by a recorder of the config the CLI built."""
    configs: list[RunConfig] = []
    monkeypatch.setattr(cli, "_execute", configs.append)
    return configs


# --- help ------------------------------------------------------------------------------------


def _default_text(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, tuple):
        return ",".join(value)
    return str(value)


def _option_entries(help_text: str) -> dict[str, str]:
    """``{flag: whitespace-normalised entry}`` of a click ``Options:`` section."""
    entries: dict[str, str] = {}
    section = help_text.split("Options:", 1)[1]
    for chunk in re.split(r"\n(?=  --)", section):
        text = " ".join(chunk.split())
        for flag in re.findall(r"^(--[a-z-]+)(?:\s*/\s*(--[a-z-]+))?", text)[:1]:
            for name in flag:
                if name:
                    entries[name] = text
    return entries


def test_run_help_lists_every_option_with_default_and_envvar(invoke: Callable) -> None:
    result = invoke(["run", "--help"])
    assert result.code == 0, result.err
    entries = _option_entries(result.out)
    for param in PARAMETERS:
        entry = entries.get(param.flag)
        assert entry is not None, f"{param.flag} missing from `autoseg run --help`"
        assert f"[default: {_default_text(param.default)}]" in entry, entry
        assert f"[env var: {param.envvar}]" in entry, entry
    assert entries["--force-refit"] == entries["--no-force-refit"]
    assert "[default: none]" in entries["--params"]
    assert "AUTOSEG_PARAMS" in entries["--params"]


def test_top_level_help_lists_every_option_with_default_and_exit_codes(invoke: Callable) -> None:
    result = invoke(["--help"])
    assert result.code == 0, result.err
    text = " ".join(result.out.split())
    for param in PARAMETERS:
        pattern = re.escape(param.flag) + r"(?:/--[a-z-]+)? \[default: " + re.escape(
            _default_text(param.default)) + r"\]"
        assert re.search(pattern, text), f"{param.flag} with its default missing from --help"
    assert re.search(r"--params FILE \[default: none\]", text)
    for code in ("0 ok", "1 internal error", "2 usage", "3 input data", "4 external service"):
        assert code in text
    for command in ("run", "demo", "version"):
        assert re.search(rf"^\s+{command}\s", result.out, re.MULTILINE)


def test_no_arguments_prints_help(invoke: Callable) -> None:
    result = invoke([])
    assert result.code == 0
    assert "Usage: autoseg" in result.out + result.err


# --- every parameter as a flag and as an environment variable --------------------------------

# A non-default value for every parameter: (raw text, expected config value).
SAMPLES: dict[str, tuple[str, Any]] = {
    "input_table": ("db.other", "db.other"),
    "output_table": ("db.out", "db.out"),
    "model_name": ("m2", "m2"),
    "force_refit": ("false", False),
    "output_mode": ("append", "append"),
    "min_clusters": ("3", 3),
    "max_clusters": ("4", 4),
    "num_clusters": ("3", 3),
    "ignore_columns": ("a,b", ("a", "b")),
    "keep_columns": ("a,b", ("a", "b")),
    "dimension_reduction_threshold": ("7", 7),
    "min_cluster_size": ("0.05", "0.05"),
    "prefer_stable": ("true", True),
    "stability_runs": ("0", 0),
    "export_segment_rules": ("db.rules", "db.rules"),
    "segment_rules": ("true", True),
    "export_feature_importance": ("db.fi", "db.fi"),
    "export_shap_values": ("db.shap", "db.shap"),
    "hide_table_contents": ("true", True),
    "audience_name": ("aud", "aud"),
    "foreign_key": ("fk", "fk"),
    "rowid_column": ("id", "id"),
    "store": ("duckdb:other.duckdb", "duckdb:other.duckdb"),
    "lock_timeout": ("60", 60),
    "td_engine": ("hive", "hive"),
    "cdp_endpoint": ("https://cdp.example.test", "https://cdp.example.test"),
    "output_dir": ("od", Path("od")),
    "model_dir": ("md", Path("md")),
    "seed": ("5", 5),
    "device": ("cpu", "cpu"),
    "kmeans_restarts": ("3", 3),
    "search_sample_size": ("300", 300),
    "silhouette_exact_max_rows": ("100", 100),
    "silhouette_sample_size": ("200", 200),
    "log_format": ("json", "json"),
    "dask": ("local", "local"),
    "dask_scheduler": ("tcp://127.0.0.1:8786", "tcp://127.0.0.1:8786"),
    "dask_workers": ("2", 2),
    "dask_output": ("out-dataset", "out-dataset"),
}
# Parameters that need companions to form a valid configuration.
_TD = {"store": "td", "input_table": "shop.customers", "output_table": "shop.segments"}
COMPANIONS: dict[str, dict[str, str]] = {
    "force_refit": {"model_name": "m"},
    "audience_name": {"foreign_key": "fk", "rowid_column": "id", **_TD},
    "foreign_key": {"audience_name": "aud", "rowid_column": "id", **_TD},
    "rowid_column": {"audience_name": "aud", "foreign_key": "fk", **_TD},
    "segment_rules": {"audience_name": "aud", "foreign_key": "fk", "rowid_column": "id", **_TD},
}


def test_samples_cover_every_parameter() -> None:
    assert set(SAMPLES) == {p.name for p in PARAMETERS}


def _values_for(name: str) -> dict[str, str]:
    values = {"input_table": "db.t", **COMPANIONS.get(name, {})}
    values[name] = SAMPLES[name][0]
    return values


def _flag_args(values: dict[str, str]) -> list[str]:
    argv: list[str] = []
    for name, raw in values.items():
        flag = "--" + name.replace("_", "-")
        if name == "force_refit":
            argv.append("--force-refit" if raw == "true" else "--no-force-refit")
        elif name == "hide_table_contents":
            argv.append("--hide-table-contents" if raw == "true" else "--show-table-contents")
        elif name in ("prefer_stable", "segment_rules"):
            argv.append(flag if raw == "true" else "--no-" + flag[2:])
        else:
            argv += [flag, raw]
    return argv


@pytest.mark.parametrize("name", list(SAMPLES))
def test_every_parameter_is_a_flag(name: str, invoke: Callable, captured: list) -> None:
    result = invoke(["run", *_flag_args(_values_for(name))])
    assert result.code == 0, result.err
    assert getattr(captured[-1], name) == SAMPLES[name][1]


@pytest.mark.parametrize("name", list(SAMPLES))
def test_every_parameter_is_an_environment_variable(
    name: str, invoke: Callable, captured: list, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, raw in _values_for(name).items():
        monkeypatch.setenv("AUTOSEG_" + key.upper(), raw)
    result = invoke(["run"])
    assert result.code == 0, result.err
    assert getattr(captured[-1], name) == SAMPLES[name][1]


@pytest.mark.parametrize("name", list(SAMPLES))
def test_every_parameter_is_a_params_file_key(
    name: str, invoke: Callable, captured: list, tmp_path: Path
) -> None:
    path = tmp_path / "params.yaml"
    path.write_text("".join(f"{k}: '{v}'\n" for k, v in _values_for(name).items()))
    result = invoke(["run", "--params", str(path)])
    assert result.code == 0, result.err
    assert getattr(captured[-1], name) == SAMPLES[name][1]


# --- precedence: flag > environment > params file > default ----------------------------------

PRECEDENCE = [
    # name, params-file value, environment value, flag arguments, expected at each level
    # (default, params file, environment, flag)
    ("max_clusters", 5, "6", ["--max-clusters", "7"], (9, 5, 6, 7)),
    ("force_refit", False, "true", ["--no-force-refit"], (True, False, True, False)),
    ("hide_table_contents", True, "false", ["--hide-table-contents"], (False, True, False, True)),
    ("ignore_columns", ["a", "b"], "c", ["--ignore-columns", "d, e"],
     (("time",), ("a", "b"), ("c",), ("d", "e"))),
    ("output_mode", "append", "replace", ["--output-mode", "append"],
     ("overwrite", "append", "overwrite", "append")),
]


@pytest.mark.parametrize(("name", "file_value", "env_value", "flag", "expected"), PRECEDENCE,
                         ids=[row[0] for row in PRECEDENCE])
@pytest.mark.parametrize("file_kind", ["yaml", "json"])
def test_precedence_flag_env_params_default(
    name: str, file_value: Any, env_value: str, flag: list[str], expected: tuple[Any, ...],
    file_kind: str, invoke: Callable, captured: list, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    base = ["run", "--input-table", "db.t", "--model-name", "m"]
    params = tmp_path / f"params.{file_kind}"
    params.write_text(json.dumps({name: file_value}) if file_kind == "json"
                      else f"{name}: {json.dumps(file_value)}\n")
    envvar = "AUTOSEG_" + name.upper()

    levels = [
        base,                                   # default
        [*base, "--params", str(params)],       # params file
        [*base, "--params", str(params)],       # + environment
        [*base, "--params", str(params), *flag],  # + flag
    ]
    for level, (argv, want) in enumerate(zip(levels, expected, strict=True)):
        if level == 2:
            monkeypatch.setenv(envvar, env_value)
        result = invoke(argv)
        assert result.code == 0, result.err
        assert getattr(captured[-1], name) == want, f"level {level}"


def test_params_file_from_environment(
    invoke: Callable, captured: list, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    params = tmp_path / "p.yml"
    params.write_text("input_table: db.t\nmax_clusters: 4\n")
    monkeypatch.setenv("AUTOSEG_PARAMS", str(params))
    assert invoke(["run"]).code == 0
    assert (captured[-1].input_table, captured[-1].max_clusters) == ("db.t", 4)


def test_precedence_end_to_end_in_the_run_summary(
    ws: Workspace, invoke: Callable, monkeypatch: pytest.MonkeyPatch
) -> None:
    params = ws.root / "params.yaml"
    params.write_text("max_clusters: 4\nmin_clusters: 3\nignore_columns: [time, channel]\n"
                      "hide_table_contents: true\nseed: 3\n")
    monkeypatch.setenv("AUTOSEG_MIN_CLUSTERS", "2")
    monkeypatch.setenv("AUTOSEG_HIDE_TABLE_CONTENTS", "false")
    argv = ["run", "--store", f"duckdb:{ws.db}", "--output-dir", str(ws.out), "--model-dir",
            str(ws.models), "--kmeans-restarts", "2", "--params", str(params),
            "--input-table", "s.t", "--max-clusters", "3"]
    result = invoke(argv)
    assert result.code == 0, result.err
    summary = json.loads((ws.out / "summary.json").read_text())
    parameters = summary["parameters"]
    assert parameters["max_clusters"] == 3  # flag over params file
    assert parameters["min_clusters"] == 2  # environment over params file
    assert parameters["hide_table_contents"] is False  # environment over params file
    assert parameters["ignore_columns"] == ["time", "channel"]  # params file over default
    assert parameters["seed"] == 3
    assert parameters["dimension_reduction_threshold"] == 50  # default
    assert [c["k"] for c in summary["k_search"]] == [2, 3]
    assert "channel" not in summary["columns_used"]


# --- one-line errors with documented exit codes, nothing written -----------------------------


def _params_file(root: Path, name: str, text: str) -> str:
    path = root / name
    path.write_text(text)
    return str(path)


def _csv(root: Path, name: str, text: str) -> str:
    path = root / name
    path.write_text(text)
    return str(path)


# (id, extra arguments given a workspace, exit code, message pattern)
ERROR_CASES: list[tuple[str, Callable[[Workspace], list[str]], int, str]] = [
    ("missing-input-table", lambda w: [], 2,
     r"^autoseg: error: --input-table is required: .*AUTOSEG_INPUT_TABLE"),
    ("table-not-in-duckdb", lambda w: ["--input-table", "s.nope"], 3,
     r"--input-table='s\.nope' does not exist in duckdb:.*x\.duckdb: check the name"),
    ("schema-not-in-duckdb", lambda w: ["--input-table", "nope.t"], 3,
     r"--input-table='nope\.t' does not exist"),
    ("missing-parquet", lambda w: ["--input-table", str(w.root / "nope.parquet")], 3,
     r"--input-table='.*nope\.parquet': file does not exist; check the path"),
    ("missing-csv", lambda w: ["--input-table", str(w.root / "nope.csv")], 3,
     r"--input-table='.*nope\.csv': file does not exist"),
    ("empty-table", lambda w: ["--input-table", "s.empty"], 3,
     r"--input-table='s\.empty' is empty: it has no rows"),
    ("header-only-csv", lambda w: ["--input-table", _csv(w.root, "h.csv", "a,b\n")], 3,
     r"--input-table='.*h\.csv' is empty"),
    ("zero-byte-csv", lambda w: ["--input-table", _csv(w.root, "z.csv", "")], 3,
     r"--input-table='.*z\.csv' is empty"),
    ("one-row-table", lambda w: ["--input-table", "s.one"], 3,
     r"n_rows=1 must be >= max_clusters\+1=4: lower --max-clusters"),
    ("k-not-below-rows", lambda w: ["--input-table", "s.five", "--max-clusters", "9"], 3,
     r"^autoseg: error: n_rows=5 must be >= max_clusters\+1=10: lower --max-clusters"),
    ("fixed-k-not-below-rows", lambda w: ["--input-table", "s.five", "--num-clusters", "5"], 3,
     r"n_rows=5 must be >= num_clusters\+1=6: lower --num-clusters"),
    ("constant-columns", lambda w: ["--input-table", "s.const"], 3,
     r"no column is left to cluster on \(k: single value; label: single value; time: in "
     r"ignore_columns\)"),
    ("all-columns-ignored",
     lambda w: ["--input-table", "s.t", "--ignore-columns", "customer_id,spend,visits,channel"],
     3, r"no column is left to cluster on .*shorten --ignore-columns"),
    ("min-above-max", lambda w: ["--input-table", "s.t", "--min-clusters", "5"], 2,
     r"--min-clusters=5 must be <= --max-clusters=3"),
    ("invalid-yaml-params",
     lambda w: ["--input-table", "s.t", "--params", _params_file(w.root, "p.yaml", "a: [1\n")],
     2, r"--params: '.*p\.yaml' is not valid YAML/JSON at line \d+: fix the syntax"),
    ("invalid-json-params",
     lambda w: ["--input-table", "s.t", "--params", _params_file(w.root, "p.json", "{,}")],
     2, r"--params: '.*p\.json' is not valid YAML/JSON at line 1"),
    ("non-mapping-params",
     lambda w: ["--input-table", "s.t", "--params", _params_file(w.root, "p.yaml", "- 1\n")],
     2, r"--params: '.*p\.yaml' must hold a mapping"),
    ("unknown-params-key",
     lambda w: ["--input-table", "s.t", "--params",
                _params_file(w.root, "p.yaml", "max_cluster: 3\n")],
     2, r"--params: unknown parameter 'max_cluster' in '.*p\.yaml'; known: input_table"),
    ("missing-params-file",
     lambda w: ["--input-table", "s.t", "--params", str(w.root / "nope.yaml")],
     2, r"--params: file '.*nope\.yaml' does not exist"),
    ("unknown-output-mode", lambda w: ["--input-table", "s.t", "--output-mode", "upsert"], 2,
     r"--output-mode='upsert' is not one of: overwrite, replace, append"),
    ("output-dir-under-a-file",
     lambda w: ["--input-table", "s.t", "--output-dir", str(w.root / "afile" / "sub")], 2,
     r"--output-dir='.*afile/sub' cannot be created or written \('.*afile' is not a "
     r"directory\): choose another"),
    ("duplicate-csv-columns",
     lambda w: ["--input-table", _csv(w.root, "dup.csv", "spend,visits,spend\n"
                                      + "".join(f"{i},{i % 7},{i * 2}\n" for i in range(20)))],
     3, r"--input-table='.*dup\.csv' has two columns named 'spend': rename one"),
    ("unknown-keep-column", lambda w: ["--input-table", "s.t", "--keep-columns", "gendr"], 3,
     r"--keep-columns='gendr' is not a column of the input: use one of its columns"),
    ("keep-and-ignore-a-column",
     lambda w: ["--input-table", "s.t", "--keep-columns", "a,b", "--ignore-columns", "time,b"],
     2, r"--keep-columns and --ignore-columns both name 'b': remove it from one"),
    ("keep-the-default-ignored-time", lambda w: ["--input-table", "s.t", "--keep-columns", "time"],
     2, r"--keep-columns and --ignore-columns both name 'time' \(--ignore-columns is `time` "
        r"unless given\): remove it from one"),
    ("existing-cluster-id", lambda w: ["--input-table", "s.cid"], 3,
     r"--input-table already has a 'cluster_id' column: drop or rename it"),
    ("reuse-without-model-name", lambda w: ["--input-table", "s.t", "--no-force-refit"], 2,
     r"--no-force-refit needs --model-name"),
    ("reuse-missing-model",
     lambda w: ["--input-table", "s.t", "--no-force-refit", "--model-name", "ghost"], 2,
     r"--model-name='ghost': no saved model in '.*ghost'; run once with --force-refit"),
    ("device-gpu", lambda w: ["--input-table", "s.t", "--device", "gpu"], 2,
     r"--device=gpu: .*use --device cpu"),
    ("bad-input-name", lambda w: ["--input-table", BAD_TABLE_NAME], 2,
     r"--input-table='db\.t; drop table x' is not a valid table name"),
    ("bad-output-name", lambda w: ["--input-table", "s.t", "--output-table", BAD_TABLE_NAME], 2,
     r"--output-table='db\.t; drop table x' is not a valid table name"),
    ("bad-export-name",
     lambda w: ["--input-table", "s.t", "--export-feature-importance", "x; drop table x"], 2,
     r"--export-feature-importance='x; drop table x' is not a valid table name"),
    ("bad-shap-name",
     lambda w: ["--input-table", "s.t", "--export-shap-values", 'main."x"'], 2,
     r"--export-shap-values=.* is not a valid table name"),
    ("bad-integer", lambda w: ["--input-table", "s.t", "--max-clusters", "many"], 2,
     r"Invalid value for '--max-clusters'"),
    ("unknown-option", lambda w: ["--input-table", "s.t", "--max-cluster", "3"], 2,
     r"No such option: --max-cluster"),
]


@pytest.mark.parametrize(("case", "extra", "code", "pattern"), ERROR_CASES,
                         ids=[c[0] for c in ERROR_CASES])
def test_errors_are_one_line_with_exit_code_and_write_nothing(
    case: str, extra: Callable[[Workspace], list[str]], code: int, pattern: str,
    ws: Workspace, invoke: Callable,
) -> None:
    (ws.root / "afile").write_text("a regular file\n")
    argv = extra(ws)
    args = ws.args("--output-table", "s.out", "--model-name", "fresh", *argv)
    if case == "reuse-without-model-name":
        args = ws.args("--output-table", "s.out", *argv)
    tables_before = db_snapshot(ws.db)
    files_before = file_snapshot(ws.root)

    assert_error(invoke(args), code, pattern)

    assert db_snapshot(ws.db) == tables_before  # no table created, changed or dropped
    assert file_snapshot(ws.root) == files_before  # no summary, model or other file
    assert not ws.models.exists()


@pytest.mark.parametrize(
    "given",
    [
        ["--audience-name", "aud"],
        ["--foreign-key", "fk"],
        ["--rowid-column", "customer_id"],
        ["--audience-name", "aud", "--foreign-key", "fk"],
        ["--audience-name", "aud", "--rowid-column", "customer_id"],
        ["--foreign-key", "fk", "--rowid-column", "customer_id"],
    ],
    ids=lambda g: "+".join(a.lstrip("-") for a in g if a.startswith("--")),
)
def test_partial_audience_options_fail_before_any_work(
    given: list[str], tmp_path: Path, invoke: Callable
) -> None:
    # The input table does not even exist: the usage error is reported first.
    ws = Workspace(tmp_path)
    line = assert_error(invoke(ws.args("--input-table", "s.nope", *given)), 2,
                        r"audience integration needs all of --audience-name, --foreign-key and "
                        r"--rowid-column: also give ")
    flags = {"--audience-name", "--foreign-key", "--rowid-column"}
    missing = sorted(flags - set(given))
    assert line.split("also give ")[1].split(", ") == [f for f in (
        "--audience-name", "--foreign-key", "--rowid-column") if f in missing]
    assert list(tmp_path.iterdir()) == []


def test_missing_duckdb_file_is_an_input_error_and_is_not_created(
    tmp_path: Path, invoke: Callable
) -> None:
    ws = Workspace(tmp_path)
    assert_error(invoke(ws.args("--input-table", "s.t", "--output-table", "s.out")), 3,
                 r"--input-table='s\.t': the store file '.*x\.duckdb' does not exist: check "
                 r"--store")
    assert not ws.db.exists()
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def test_console_main_flushes_and_runs_exit_handlers_before_its_quick_exit(
    tmp_path: Path,
) -> None:
    # console_main ends with os._exit (no interpreter teardown): what is buffered must still
    # reach the pipe, and atexit handlers (logging's among them) must still run.
    script = (
        "import atexit, sys\n"
        "from autoseg.cli import console_main\n"
        "atexit.register(lambda: print('handler ran', file=sys.stderr))\n"
        "sys.stdout.write('buffered ')\n"
        "console_main(sys.argv[1:])\n"
        "print('not reached')\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTOSEG_")}
    env.pop("PYTHONUNBUFFERED", None)
    ok = subprocess.run([sys.executable, "-c", script, "version"], cwd=tmp_path, env=env,
                        capture_output=True, text=True, timeout=60, check=False)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith("buffered ") and "not reached" not in ok.stdout
    assert "handler ran" in ok.stderr
    bad = subprocess.run([sys.executable, "-c", script, "run"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=60, check=False)
    assert bad.returncode == 2
    assert "--input-table is required" in bad.stderr and "handler ran" in bad.stderr


@pytest.mark.parametrize(
    ("extra", "code", "pattern"),
    [
        (["--max-clusters", "9"], 3, r"n_rows=5 must be >= max_clusters\+1=10"),
        (["--device", "gpu"], 2, r"--device=gpu"),
        (["--ignore-columns", "spend,visits,channel,customer_id"], 3, r"no column is left"),
    ],
)
def test_file_input_error_does_not_create_the_store(
    extra: list[str], code: int, pattern: str, tmp_path: Path, invoke: Callable
) -> None:
    ws = Workspace(tmp_path)
    parquet = tmp_path / "five.parquet"
    blobs().iloc[:5].to_parquet(parquet)
    assert_error(invoke(ws.args("--input-table", str(parquet), "--output-table", "s.out",
                                "--model-name", "m", *extra)), code, pattern)
    assert not ws.db.exists()
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["five.parquet"]


def test_injection_attempt_leaves_the_store_alone(ws: Workspace, invoke: Callable) -> None:
    before = db_snapshot(ws.db)
    for option in ("--input-table", "--output-table", "--export-shap-values"):
        args = ["--input-table", "s.t", option, "s.t; drop table x"]
        assert_error(invoke(ws.args(*args)), 2, rf"{option}='s\.t; drop table x' is not a valid")
    assert db_snapshot(ws.db) == before
    assert "main.x" in before


def test_bad_value_from_environment_names_the_option(
    ws: Workspace, invoke: Callable, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AUTOSEG_OUTPUT_MODE", "sideways")
    assert_error(invoke(ws.args("--input-table", "s.t")), 2,
                 r"--output-mode='sideways' is not one of")
    monkeypatch.setenv("AUTOSEG_OUTPUT_MODE", "append")
    monkeypatch.setenv("AUTOSEG_MAX_CLUSTERS", "lots")
    assert_error(invoke(["run", "--input-table", "s.t"]), 2,
                 r"Invalid value for '--max-clusters'.*AUTOSEG_MAX_CLUSTERS")


def test_internal_error_exit_1(
    ws: Workspace, invoke: Callable, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(config: RunConfig, **_: object) -> None:
        raise RuntimeError("unexpected")

    monkeypatch.setattr("autoseg.pipeline.run", boom)
    result = invoke(ws.args("--input-table", "s.t"))
    assert result.code == 1
    assert result.error_lines == [
        "autoseg: error: internal error (a bug); please report it with the log above"
    ]


def test_out_of_memory_exit_6_writes_nothing(
    ws: Workspace, invoke: Callable, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The allocation fails in the middle of the run (the k search), after the pre-flight.
    def no_memory(*_: object, **__: object) -> None:
        raise MemoryError

    monkeypatch.setattr("autoseg.pipeline.search_candidates", no_memory)
    tables_before = db_snapshot(ws.db)
    files_before = file_snapshot(ws.root)
    result = invoke(ws.args("--input-table", "s.t", "--output-table", "s.out",
                            "--model-name", "m"))
    assert result.code == 6
    assert len(result.error_lines) == 1
    assert result.error_lines[0].startswith("autoseg: error: out of memory: ")
    assert "Traceback" not in result.err
    assert db_snapshot(ws.db) == tables_before
    assert file_snapshot(ws.root) == files_before
    assert not ws.models.exists()


def test_sigterm_exit_130(ws: Workspace, invoke: Callable,
                          monkeypatch: pytest.MonkeyPatch) -> None:
    def terminated(config: RunConfig, **_: object) -> None:
        os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr("autoseg.pipeline.run", terminated)
    result = invoke(ws.args("--input-table", "s.t"))
    assert_error(result, 130, r"^autoseg: error: stopped by signal SIGTERM; nothing was written$")


def test_interrupt_exit_130(ws: Workspace, invoke: Callable,
                            monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(config: RunConfig, **_: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr("autoseg.pipeline.run", interrupted)
    result = invoke(ws.args("--input-table", "s.t"))
    assert_error(result, 130, r"^autoseg: error: interrupted; nothing was written$")


# --- errors after a first run: the existing outputs stay as they were -----------------------


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A workspace after one successful run: table ``s.out``, model ``m`` and a summary."""
    from autoseg.pipeline import run

    root = tmp_path_factory.mktemp("fitted")
    ws = Workspace(root)
    write_tables(ws.db, {name: make() for name, make in INPUT_TABLES.items()})
    with duckdb.connect(str(ws.db)) as conn:
        conn.execute("CREATE VIEW s.v AS SELECT 1 AS z")
    run(build_config({
        "input_table": "s.t", "output_table": "s.out", "model_name": "m", "max_clusters": 3,
        "kmeans_restarts": 2, "store": f"duckdb:{ws.db}", "output_dir": str(ws.out),
        "model_dir": str(ws.models),
    }))
    return root


AFTER_CASES: list[tuple[str, list[str], int, str]] = [
    ("append-different-columns",
     ["--input-table", "s.fewer", "--output-table", "s.out", "--output-mode", "append"], 3,
     r"--output-mode=append: 's\.out' has different columns \(missing columns \['visits'\]\): "
     r"use --output-mode overwrite or another --output-table"),
    ("reuse-lacks-model-columns",
     ["--input-table", "s.fewer", "--output-table", "s.out", "--no-force-refit",
      "--model-name", "m"], 3,
     r"column 'visits' used by the saved model is missing from the input"),
    ("k-not-below-rows",
     ["--input-table", "s.five", "--output-table", "s.out", "--model-name", "m",
      "--max-clusters", "9"], 3, r"n_rows=5 must be >= max_clusters\+1=10"),
    ("constant-columns",
     ["--input-table", "s.const", "--output-table", "s.out", "--model-name", "m"], 3,
     r"no column is left to cluster on"),
    ("existing-cluster-id",
     ["--input-table", "s.cid", "--output-table", "s.out", "--model-name", "m"], 3,
     r"already has a 'cluster_id' column"),
    ("empty-input", ["--input-table", "s.empty", "--output-table", "s.out"], 3, r"is empty"),
    ("missing-input", ["--input-table", "s.nope", "--output-table", "s.out"], 3,
     r"'s\.nope' does not exist"),
    ("device-gpu",
     ["--input-table", "s.t", "--output-table", "s.out", "--model-name", "m", "--device", "gpu"],
     2, r"--device=gpu"),
    ("reuse-missing-model",
     ["--input-table", "s.t", "--output-table", "s.out", "--no-force-refit", "--model-name",
      "ghost"], 2, r"--model-name='ghost': no saved model"),
    # Everything is computed, then the table write fails (a view holds the name): exit 4 and
    # neither the model nor the summary is replaced.
    ("write-fails",
     ["--input-table", "s.t", "--output-table", "s.v", "--model-name", "m",
      "--max-clusters", "4"], 4,
     r"^autoseg: error: writing to duckdb:.*x\.duckdb failed, nothing was changed: "),
]


@pytest.mark.parametrize(("case", "extra", "code", "pattern"), AFTER_CASES,
                         ids=[c[0] for c in AFTER_CASES])
def test_failed_run_leaves_existing_outputs_unchanged(
    case: str, extra: list[str], code: int, pattern: str, fitted: Path, tmp_path: Path,
    invoke: Callable,
) -> None:
    root = tmp_path / "ws"
    shutil.copytree(fitted, root)
    ws = Workspace(root)
    tables_before = db_snapshot(ws.db)
    files_before = file_snapshot(root)
    assert len(tables_before["s.out"][1]) == 60
    assert "out/summary.json" in files_before and "models/m/model.json" in files_before

    assert_error(invoke(ws.args(*extra)), code, pattern)

    assert db_snapshot(ws.db) == tables_before
    assert file_snapshot(root) == files_before


# --- NaN and inf -----------------------------------------------------------------------------


def _with_bad_values(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.copy()
    frame["spend"] = frame["spend"].astype("float64")
    frame.loc[0, "spend"] = np.nan
    frame.loc[1, "spend"] = np.inf
    frame.loc[2, "spend"] = -np.inf
    frame.loc[40, "spend"] = np.nan
    frame["visits"] = frame["visits"].astype("Int64")
    frame.loc[3, "visits"] = pd.NA
    return frame


def test_nan_and_inf_are_imputed_from_duckdb(tmp_path: Path, invoke: Callable) -> None:
    ws = Workspace(tmp_path)
    write_tables(ws.db, {"s.bad": _with_bad_values(blobs())})
    result = invoke(ws.args("--input-table", "s.bad", "--output-table", "s.out"))
    assert result.code == 0, result.err
    summary = json.loads((ws.out / "summary.json").read_text())
    assert summary["values_imputed"] == {"spend": 4, "visits": 1}
    assert {"spend", "visits"} <= set(summary["columns_used"])
    with duckdb.connect(str(ws.db), read_only=True) as conn:
        rows, labelled, infinite = conn.execute(
            "SELECT count(*), count(cluster_id), count(*) FILTER (WHERE isinf(spend)) FROM s.out"
        ).fetchone()
    assert (rows, labelled, infinite) == (60, 60, 2)


def test_nan_and_inf_are_imputed_from_parquet_and_csv(tmp_path: Path, invoke: Callable) -> None:
    frame = _with_bad_values(blobs())
    frame.to_parquet(tmp_path / "bad.parquet")
    text = frame.assign(visits=frame["visits"].astype("object").where(frame["visits"].notna(), ""))
    text.to_csv(tmp_path / "bad.csv", index=False, na_rep="")  # inf is written as "inf"
    for name in ("bad.parquet", "bad.csv"):
        ws = Workspace(tmp_path / name.replace(".", "_"))
        ws.root.mkdir()
        result = invoke(ws.args("--input-table", str(tmp_path / name)))
        assert result.code == 0, result.err
        summary = json.loads((ws.out / "summary.json").read_text())
        assert summary["values_imputed"] == {"spend": 4, "visits": 1}, name


def test_nan_tokens_in_a_csv_numeric_column_are_imputed(tmp_path: Path, invoke: Callable) -> None:
    frame = blobs()
    spend = frame["spend"].astype("object")
    spend[0], spend[1], spend[2], spend[3] = "NaN", "nan", "inf", "NULL"
    frame["spend"] = spend
    frame.to_csv(tmp_path / "nan.csv", index=False)
    ws = Workspace(tmp_path)
    result = invoke(ws.args("--input-table", str(tmp_path / "nan.csv")))
    assert result.code == 0, result.err
    summary = json.loads((ws.out / "summary.json").read_text())
    assert "spend" in summary["columns_used"]
    assert summary["values_imputed"].get("spend") == 4


# --- true end-to-end: python -m autoseg ------------------------------------------------------


def _run_module(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTOSEG_")}
    return subprocess.run([sys.executable, "-m", "autoseg", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120, check=False)


def test_module_end_to_end_success(ws: Workspace) -> None:
    proc = _run_module(ws.args("--input-table", "s.t", "--output-table", "s.out",
                               "--model-name", "m", "--log-format", "json"), ws.root)
    assert proc.returncode == 0, proc.stderr
    assert ERROR_PREFIX not in proc.stderr and "Traceback" not in proc.stderr
    for line in proc.stderr.splitlines():  # every log line is one JSON object
        assert json.loads(line)["logger"].startswith("autoseg")
    summary = json.loads((ws.out / "summary.json").read_text())
    assert summary["rows_read"] == 60 and summary["chosen_k"] in (2, 3)
    assert (ws.models / "m" / "model.json").exists()
    assert len(db_snapshot(ws.db)["s.out"][1]) == 60


@pytest.mark.parametrize(
    ("extra", "code", "pattern"),
    [
        ([], 2, r"^autoseg: error: --input-table is required"),
        (["--input-table", "s.nope"], 3, r"^autoseg: error: --input-table='s\.nope' does not "
                                         r"exist in duckdb:"),
        (["--input-table", "s.t", "--output-table", BAD_TABLE_NAME], 2,
         r"^autoseg: error: --output-table='db\.t; drop table x' is not a valid table name"),
    ],
    ids=["usage", "input-data", "bad-name"],
)
def test_module_errors_single_line_no_traceback(
    extra: list[str], code: int, pattern: str, ws: Workspace
) -> None:
    proc = _run_module(ws.args(*extra), ws.root)
    assert proc.returncode == code, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert [line for line in lines if line.startswith(ERROR_PREFIX)] == [lines[-1]]
    assert re.search(pattern, lines[-1]), lines[-1]
    if code == 2:  # usage errors are found before logging starts: stderr is that one line
        assert len(lines) == 1, proc.stderr
    assert not ws.out.exists() or not any(ws.out.iterdir())


def test_hide_table_contents_keeps_row_values_out_of_console_logs_and_files(
    tmp_path: Path, invoke: Callable[[list[str]], Result]
) -> None:
    from autoseg.demo import make_customers

    frame, _ = make_customers(600, seed=3)
    frame.loc[5, "last_feedback"] = "sentinel-7c1d@example.com"
    frame.loc[9, "annual_spend"] = 424242.4242
    frame["email"] = [f"user{i}@example.com" for i in range(600)]
    frame.loc[11, "email"] = "sentinel-7c1d@example.com"
    path = tmp_path / "in.parquet"
    frame.to_parquet(path)
    out_dir = tmp_path / "out"
    result = invoke(["run", "--input-table", str(path), "--hide-table-contents",
                     "--output-dir", str(out_dir), "--model-dir", str(tmp_path / "m"),
                     "--model-name", "m", "--store", f"duckdb:{tmp_path / 's.duckdb'}",
                     "--max-clusters", "4"])
    assert result.code == 0, result.err
    assert "stage explain" in result.err  # the logs were captured
    texts = [result.out, result.err, (out_dir / "summary.json").read_text(),
             (out_dir / "report.html").read_text(),
             (tmp_path / "m" / "m" / "model.json").read_text()]
    for text in texts:
        assert "sentinel-7c1d" not in text
        # with the decimals: a ratio such as 0.9242424242 holds "424242" by chance
        assert "424242.4" not in text and "424,242" not in text


def test_dask_local_run_writes_the_output_table(
    tmp_path: Path, invoke: Callable[[list[str]], Result]
) -> None:
    """``--dask local`` end to end through the CLI: a real LocalCluster (one worker process)
    reads a Parquet dataset and the labelled rows go to the DuckDB table only."""
    pytest.importorskip("distributed")
    import pyarrow.parquet as pq

    from autoseg.demo import make_customers, to_arrow

    folder = tmp_path / "customers"
    folder.mkdir()
    table = to_arrow(make_customers(600)[0])
    for i in range(3):
        pq.write_table(table.slice(i * 200, 200), folder / f"part-{i}.parquet")
    store = tmp_path / "store.duckdb"
    result = invoke(["run", "--input-table", str(folder), "--dask", "local",
                     "--dask-workers", "1", "--store", f"duckdb:{store}",
                     "--output-table", "out.segments", "--output-dir", str(tmp_path / "out"),
                     "--max-clusters", "4", "--kmeans-restarts", "2"])
    assert result.code == 0, result.err
    assert "output table: out.segments in duckdb:" in " ".join(result.out.split())
    with duckdb.connect(str(store), read_only=True) as conn:
        assert conn.sql("SELECT count(*) FROM out.segments").fetchall() == [(600,)]
    assert not (tmp_path / "customers-clustered").exists()  # no dataset unless asked for
