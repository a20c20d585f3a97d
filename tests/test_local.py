"""The single-machine engine: on a cuDF backend the all-rows matrix is built from a device frame.

No GPU here: the backend below is a GPU backend in every respect the engine asks about
(``frames_on_device``), with NumPy standing in for CuPy and a frame that exposes only the calls
cuDF shares with pandas standing in for the cuDF frame (tests/test_features.py).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from autoseg.backend import Backend, select_backend
from autoseg.config import build_config
from autoseg.features import fit_features
from autoseg.local import LocalEngine
from tests.test_features import _mixed_frame, _SharedFrame, _SharedSeries


def _engine(tmp_path: Path, backend: Backend) -> LocalEngine:
    path = tmp_path / "input.parquet"
    pq.write_table(pa.Table.from_pandas(_mixed_frame(2000, seed=3), preserve_index=False), path)
    engine = LocalEngine(build_config({"input_table": str(path)}), backend)
    engine.read(None)
    return engine


class _StandInGpu(Backend):
    """A RAPIDS backend whose cuDF frame is the shared-API stand-in."""

    converted: list[int] = []

    def frame_from_arrow(self, table: pa.Table) -> _SharedFrame:  # type: ignore[override]
        type(self).converted.append(table.num_rows)
        return _SharedFrame(table.to_pandas())


def test_a_cudf_backend_prepares_every_row_from_the_device_frame(tmp_path: Path) -> None:
    device = _StandInGpu("gpu", np, "stand-in", estimators="cuml")
    assert device.frames_on_device and not select_backend("cpu").frames_on_device
    _StandInGpu.converted = []
    on_device = _engine(tmp_path, device)
    on_host = _engine(tmp_path, select_backend("cpu"))
    spec = fit_features(on_host.frame)
    _SharedSeries.host_conversions = []
    matrix, imputed = on_device.prepare_all(spec, None)
    expected, expected_imputed = on_host.prepare_all(spec, None)
    assert _StandInGpu.converted == [2000]  # the whole input, once, as a device frame
    assert np.array_equal(matrix, expected) and imputed == expected_imputed
    assert _SharedSeries.host_conversions == ["signup"]
    # the bounded row sets (search, describe) come back to the host
    rows = np.array([5, 0, 17])
    sample = on_device.prepared_rows(matrix, rows, spec, None)
    assert isinstance(sample, np.ndarray) and np.array_equal(sample, expected[rows])
