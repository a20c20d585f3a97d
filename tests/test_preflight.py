"""Pre-flight checks: directories created and proven writable, the store, the saved model."""

from __future__ import annotations

import os
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest

from autoseg.config import build_config
from autoseg.errors import ServiceError, UsageError
from autoseg.features import fit_features
from autoseg.io import open_store
from autoseg.model import ModelNotFound, ModelUnreadable, SegmentationModel
from autoseg.preflight import (
    check_directory_writable,
    check_store_writable,
    load_previous_model,
    run_preflight,
)


def test_directory_is_created_and_the_probe_removed(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b"
    assert check_directory_writable(target, "--output-dir") == target
    assert target.is_dir() and list(target.iterdir()) == []


def test_directory_under_proc_names_the_option_and_the_fix() -> None:
    with pytest.raises(UsageError, match=r"^--output-dir='/proc/autoseg-x': cannot create the "
                       r"directory '/proc/autoseg-x': .*\(ENOENT\): choose a directory"):
        check_directory_writable(Path("/proc/autoseg-x"), "--output-dir")


def test_a_file_where_the_directory_should_be(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    with pytest.raises(UsageError, match=r"^--model-dir='.*f' is a file, not a directory"):
        check_directory_writable(tmp_path / "f", "--model-dir")
    with pytest.raises(UsageError, match=r"^--model-dir='.*f/m' cannot be created or written "
                                         r"\('.*f' is not a directory\)"):
        check_directory_writable(tmp_path / "f" / "m", "--model-dir")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes to read-only directories")
def test_read_only_directory_is_not_writable(tmp_path: Path) -> None:
    tmp_path.chmod(0o555)
    try:
        with pytest.raises(UsageError, match=r"^--output-dir='.*' is not writable: .*EACCES"):
            check_directory_writable(tmp_path, "--output-dir")
    finally:
        tmp_path.chmod(0o755)


def test_store_directory_missing_is_a_usage_error(tmp_path: Path) -> None:
    store = open_store(f"duckdb:{tmp_path}/nowhere/x.duckdb")
    with pytest.raises(UsageError, match=r"^--store='duckdb:.*nowhere/x.duckdb': directory "
                       r"'.*nowhere' does not exist: create it"):
        check_store_writable(store)


def test_store_that_is_not_a_duckdb_file(tmp_path: Path) -> None:
    (tmp_path / "x.duckdb").write_bytes(b"hello, not a database" * 300)
    with pytest.raises(ServiceError, match=r"^--store='duckdb:.*x.duckdb': cannot open the "
                       r"DuckDB file"):
        check_store_writable(open_store(f"duckdb:{tmp_path}/x.duckdb"))


def test_store_that_is_a_directory(tmp_path: Path) -> None:
    (tmp_path / "x.duckdb").mkdir()
    with pytest.raises(ServiceError, match=r"is a directory, not a DuckDB file"):
        check_store_writable(open_store(f"duckdb:{tmp_path}/x.duckdb"))


def test_a_good_store_passes_and_is_not_created(tmp_path: Path) -> None:
    check_store_writable(open_store(f"duckdb:{tmp_path}/new.duckdb"))
    assert list(tmp_path.iterdir()) == []
    with duckdb.connect(str(tmp_path / "old.duckdb")) as conn:
        conn.execute("CREATE TABLE t AS SELECT 1 AS a")
    check_store_writable(open_store(f"duckdb:{tmp_path}/old.duckdb"))
    # no lock is kept: a writer can open it at once
    duckdb.connect(str(tmp_path / "old.duckdb")).close()


def _save(directory: Path) -> None:
    frame = pd.DataFrame({"a": np.arange(30.0), "b": np.arange(30.0) % 4})
    spec = fit_features(frame, ())
    SegmentationModel(spec=spec, centroids=np.zeros((2, len(spec.matrix_columns))),
                      projection=None, k=2, fingerprint={}).save(directory)


def test_previous_model(tmp_path: Path) -> None:
    def config(**extra: object) -> object:
        return build_config({"input_table": "s.t", "model_dir": str(tmp_path), **extra})

    assert load_previous_model(config()) is None
    assert load_previous_model(config(model_name="m")) is None  # first fit
    with pytest.raises(ModelNotFound, match=r"no saved model"):
        load_previous_model(config(model_name="m", force_refit=False))
    _save(tmp_path / "m")
    assert load_previous_model(config(model_name="m")).k == 2
    (tmp_path / "m" / "model.json").write_text("{ truncated")
    with pytest.raises(ModelUnreadable, match=r"model.json' cannot be read"):
        load_previous_model(config(model_name="m"))


def test_run_preflight_checks_everything_in_order(tmp_path: Path) -> None:
    config = build_config({
        "input_table": "s.t", "output_table": "s.out", "model_name": "m",
        "store": f"duckdb:{tmp_path}/db/x.duckdb", "output_dir": str(tmp_path / "out"),
        "model_dir": str(tmp_path / "models"),
    })
    store = open_store(config.store)
    with pytest.raises(UsageError, match=r"^--store=.*does not exist"):
        run_preflight(config, store)
    assert (tmp_path / "out").is_dir() and (tmp_path / "models").is_dir()
    (tmp_path / "db").mkdir()
    assert run_preflight(config, store) is None
