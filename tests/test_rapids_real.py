"""The real RAPIDS packages, on a machine without a GPU: signatures, values, the device probe.

cuDF and cuML import without a GPU or a driver (cuML 26.10 has no CPU execution, so nothing is
fitted here), and ``inspect.signature`` gives their real signatures. This module checks what our
code hands them against those:

* every keyword the backend's parameter maps and factories pass to ``cuml.cluster.KMeans``,
  ``cuml.decomposition.PCA`` and ``cuml.dask.cluster.KMeans`` (the maps in ``autoseg.backend``
  are the single source), the values cuML documents for them, and the defaults we rely on;
* every call in ``src/autoseg`` of something imported from cuML, cuDF, CuPy or dask-cuda
  (found in the source, e.g. ``LocalCUDACluster(n_workers=...)``): its keywords bind to the
  installed signature;
* the device probe against the real CuPy error (no driver here): ``--device auto`` falls back
  to the CPU and records the reason, ``--device gpu`` exits 2 naming it.

The whole module is skipped where cuML is not installed; CI installs it (``.ci/run``:
``pip install ".[gpu-dask]"``). The cuml.dask / dask-cuda parts need that ``gpu-dask`` extra and
skip without it. On a machine where CuPy does see a GPU, the fallback tests skip themselves.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

cuml = pytest.importorskip("cuml", reason="the real-package tier needs autoseg[gpu]")
cudf = pytest.importorskip("cudf", reason="the real-package tier needs autoseg[gpu]")
cupy = pytest.importorskip("cupy", reason="the real-package tier needs autoseg[gpu]")

from autoseg import backend as backend_module  # noqa: E402
from autoseg.backend import (  # noqa: E402
    DASK_KMEANS_KEYWORDS,
    KMEANS_INIT_VALUES,
    KMEANS_PARAMETERS,
    PCA_PARAMETERS,
    Backend,
    probe_devices,
    select_backend,
)

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "autoseg"
# Packages whose calls are checked against the installed signatures.
RAPIDS_ROOTS = ("cuml", "cudf", "cupy", "dask_cuda")
# cuml.dask.cluster.KMeans(client=..., **kwargs) passes its keywords on to this class.
FORWARDS_KWARGS_TO = {"cuml.dask.cluster.KMeans": "cuml.cluster.KMeans"}


def _cuda_device_present() -> bool:
    try:
        return int(cupy.cuda.runtime.getDeviceCount()) > 0
    except Exception:
        return False


NO_GPU = pytest.mark.skipif(_cuda_device_present(), reason="a CUDA device is visible here")


def _resolve(dotted: str) -> Any:
    """The object named ``package.module.Attr`` (the longest importable module prefix)."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            found: Any = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for name in parts[cut:]:
            found = getattr(found, name)
        return found
    raise ImportError(dotted)


def _parameters(dotted: str) -> dict[str, inspect.Parameter]:
    return dict(inspect.signature(_resolve(dotted)).parameters)


def _bind(dotted: str, keywords: dict[str, Any], positional: int = 0,
          partial: bool = False) -> None:
    """The call binds to ``dotted``'s signature (and to the class it forwards **kwargs to).

    ``partial``: required arguments may be missing (they come from a ``**mapping`` or a
    starred argument the source does not spell out); unknown keywords still fail.
    """
    signature = inspect.signature(_resolve(dotted))
    args = [None] * positional
    forwarded = FORWARDS_KWARGS_TO.get(dotted)
    own = {k: v for k, v in keywords.items() if not forwarded or k in signature.parameters}
    (signature.bind_partial if partial else signature.bind)(*args, **own)
    if forwarded:
        target = inspect.signature(_resolve(forwarded))
        rest = {k: v for k, v in keywords.items() if k not in own}
        (target.bind_partial if partial else target.bind)(**rest)


# --------------------------------------------------------------------------- the maps


def _gpu_backend_without_device() -> Backend:
    """A GPU backend whose ``xp`` is NumPy: builds cuML's keyword arguments with no device."""
    return Backend("gpu", np, "test", xdf=cudf, xgboost_device="cuda", estimators="cuml")


def test_every_mapped_kmeans_keyword_is_in_the_real_cuml_signature() -> None:
    real = _parameters("cuml.cluster.KMeans")
    for mapping in KMEANS_PARAMETERS:
        if mapping.gpu:
            assert mapping.gpu in real, f"cuml.cluster.KMeans has no {mapping.gpu!r}"
            assert real[mapping.gpu].kind is inspect.Parameter.KEYWORD_ONLY or \
                real[mapping.gpu].kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
        # the defaults we rely on by not passing a setting are the installed ones
        default = re.search(r"not passed \(cuML default ([^)]+)\)", mapping.translation)
        if default and mapping.gpu:
            assert str(real[mapping.gpu].default) == default.group(1), mapping.gpu


def test_gpu_kmeans_keywords_bind_to_the_real_cuml_kmeans() -> None:
    backend = _gpu_backend_without_device()
    for init in (*KMEANS_INIT_VALUES, np.zeros((3, 2))):
        model = backend.kmeans(3, init=init, n_init=1, seed=1, tol=1e-3, max_iter=10)
        _bind("cuml.cluster.KMeans", model.params)
        # and the real class accepts them (construction needs no GPU)
        estimator = cuml.cluster.KMeans(**model.params)
        assert estimator.get_params()["n_clusters"] == 3


def test_gpu_kmeans_values_are_ones_cuml_documents() -> None:
    doc = cuml.cluster.KMeans.__doc__ or ""
    for _ours, (_cpu, gpu) in KMEANS_INIT_VALUES.items():
        assert f"'{gpu}'" in doc, f"cuML's KMeans does not document init={gpu!r}"
    outputs = importlib.import_module("cuml.internals.outputs").OUTPUT_TYPES
    params = _gpu_backend_without_device().kmeans(3).params
    assert params["output_type"] in outputs
    # cuML's own n_init default is 'auto' (1 or 10 by init); we always pass an int
    assert isinstance(params["n_init"], int)
    assert _parameters("cuml.cluster.KMeans")["n_init"].default == "auto"


def test_every_mapped_pca_keyword_is_in_the_real_cuml_signature() -> None:
    real = _parameters("cuml.decomposition.PCA")
    for mapping in PCA_PARAMETERS:
        if mapping.gpu:
            assert mapping.gpu in real, f"cuml.decomposition.PCA has no {mapping.gpu!r}"
    params = _gpu_backend_without_device().pca(4, seed=3).params
    _bind("cuml.decomposition.PCA", params)
    assert cuml.decomposition.PCA(**params).get_params()["svd_solver"] == "full"
    doc = cuml.decomposition.PCA.__doc__ or ""
    assert f"'{params['svd_solver']}'" in doc
    outputs = importlib.import_module("cuml.internals.outputs").OUTPUT_TYPES
    assert params["output_type"] in outputs


def test_dask_kmeans_keywords_bind_to_the_real_cuml_dask_kmeans() -> None:
    pytest.importorskip("cuml.dask.cluster", reason="cuml.dask needs autoseg[gpu-dask]")
    keywords = {name: None for name in DASK_KMEANS_KEYWORDS}
    _bind("cuml.dask.cluster.KMeans", keywords)
    assert "client" in _parameters("cuml.dask.cluster.KMeans")
    # and dask_kmeans_refit passes exactly these
    assert _call_keywords(SRC / "backend.py", "cuml.dask.cluster.KMeans") == \
        set(DASK_KMEANS_KEYWORDS)


# --------------------------------------------------------------------------- every call


def _rapids_aliases(tree: ast.Module) -> dict[str, str]:
    """Local names bound to RAPIDS modules or objects: imports and importlib.import_module."""
    aliases: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in RAPIDS_ROOTS:
                    if alias.asname:
                        aliases[alias.asname] = alias.name
                    else:
                        root = alias.name.split(".")[0]
                        aliases[root] = root
        elif isinstance(node, ast.ImportFrom) and node.module \
                and node.module.split(".")[0] in RAPIDS_ROOTS:
            for alias in node.names:
                aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"
        elif isinstance(node, ast.Assign) and isinstance(node.value, ast.Call):
            call = node.value
            if (isinstance(call.func, ast.Attribute) and call.func.attr == "import_module"
                    and call.args and isinstance(call.args[0], ast.Constant)
                    and str(call.args[0].value).split(".")[0] in RAPIDS_ROOTS):
                for target in node.targets:
                    if isinstance(target, ast.Name):
                        aliases[target.id] = str(call.args[0].value)
    return aliases


def _dotted(node: ast.expr, aliases: dict[str, str]) -> str | None:
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name) and node.id in aliases:
        return ".".join([aliases[node.id], *reversed(parts)])
    return None


def _rapids_calls(path: Path) -> list[tuple[str, set[str], int, int | None]]:
    """(callee, keyword names, line, positional arguments or None when starred) of every call
    of a RAPIDS object in ``path``; calls with ``**mapping`` are the parameter maps' (checked
    above), their literal keywords are checked here."""
    tree = ast.parse(path.read_text())
    aliases = _rapids_aliases(tree)
    calls = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            callee = _dotted(node.func, aliases)
            if callee:
                starred = any(isinstance(a, ast.Starred) for a in node.args)
                calls.append((callee, {k.arg for k in node.keywords if k.arg}, node.lineno,
                              None if starred else len(node.args)))
    return calls


def _call_keywords(path: Path, callee: str) -> set[str]:
    found: set[str] = set()
    for name, keywords, _line, _positional in _rapids_calls(path):
        if name == callee:
            found |= keywords
    return found


def test_every_call_of_a_rapids_object_binds_to_the_installed_signature() -> None:
    checked, unavailable = [], []
    for path in sorted(SRC.rglob("*.py")):
        for callee, keywords, line, positional in _rapids_calls(path):
            where = f"{path.relative_to(ROOT)}:{line}"
            try:
                target = _resolve(callee)
            except (ImportError, AttributeError) as exc:
                if callee.split(".")[0] == "dask_cuda" or callee.startswith("cuml.dask"):
                    unavailable.append(f"{where} {callee} ({type(exc).__name__})")
                    continue  # the gpu-dask extra is not installed here
                raise AssertionError(f"{where}: {callee} does not exist in the installed "
                                     f"package ({exc})") from exc
            try:
                signature = inspect.signature(target)
            except (TypeError, ValueError):
                continue  # a C function without a signature (e.g. cupy.cuda.runtime.*)
            try:
                _bind(callee, dict.fromkeys(keywords), positional or 0, partial=True)
            except TypeError as exc:
                raise AssertionError(f"{where}: {callee}({', '.join(sorted(keywords))}): "
                                     f"{exc}; installed: {signature}") from exc
            checked.append(f"{where} {callee}")
    assert any("cupy" in c for c in checked), checked
    if importlib.util.find_spec("dask_cuda") is not None:
        assert not unavailable, unavailable
        assert any("LocalCUDACluster" in c for c in checked), checked
    print("\nchecked:", *checked, "\nnot importable here:", *unavailable, sep="\n  ")


# --------------------------------------------------------------------------- the probe


@NO_GPU
def test_auto_falls_back_with_the_real_cupy_error(caplog: pytest.LogCaptureFixture) -> None:
    found = probe_devices()
    assert not found.cupy_ok and not found.rapids_ok
    assert found.reason.startswith("no CUDA device visible (CUDARuntimeError: cudaError"), \
        found.reason
    assert found.versions["cupy"] == cupy.__version__
    with caplog.at_level("INFO", logger="autoseg.backend"):
        backend = select_backend("auto")
    assert (backend.name, backend.reason) == ("cpu", found.reason)
    assert f"device auto: using the CPU ({found.reason})" in caplog.text


@NO_GPU
def test_device_gpu_is_exit_2_naming_the_real_cupy_error(tmp_path: Path) -> None:
    import pandas as pd

    table = tmp_path / "t.parquet"
    rng = np.random.default_rng(0)
    pd.DataFrame(rng.normal(size=(200, 3)), columns=["a", "b", "c"]).to_parquet(table)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    done = subprocess.run(
        [sys.executable, "-c", "from autoseg.cli import main; main()", "run",
         "--input-table", str(table), "--output-table", "seg.t", "--model-name", "t",
         "--store", f"duckdb:{tmp_path / 'x.duckdb'}", "--output-dir", str(tmp_path / "out"),
         "--model-dir", str(tmp_path / "models"), "--device", "gpu"],
        capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert done.returncode == 2, done.stderr[-2000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert re.fullmatch(
        r"autoseg: error: --device=gpu: no usable GPU \(no CUDA device visible "
        r"\(CUDARuntimeError: cudaError\w+: [^)]*\)\): use --device cpu or auto, or install "
        r"autoseg\[gpu\] on a CUDA host", lines[0]), lines[0]
    assert not (tmp_path / "out").exists() and not (tmp_path / "models").exists()


@NO_GPU
def test_demo_with_device_auto_records_the_real_reason(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "AUTOSEG_DEVICE": "auto"}
    done = subprocess.run(
        [sys.executable, "-c", "from autoseg.cli import main; main()", "demo", "--rows", "600",
         "--store", f"duckdb:{tmp_path / 'd.duckdb'}", "--output-dir", str(tmp_path / "out"),
         "--model-dir", str(tmp_path / "models")],
        capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["device"]["used"] == "cpu"
    assert summary["device"]["reason"].startswith(
        "no CUDA device visible (CUDARuntimeError: cudaError")
    assert set(summary["stages_device"].values()) == {"cpu"}
    assert "device auto: using the CPU (no CUDA device visible (CUDARuntimeError:" in \
        done.stderr + done.stdout


def test_the_backend_never_imports_rapids_at_import_time() -> None:
    # (tests/test_backend.py checks the source; here: a fresh interpreter with them installed)
    code = ("import sys, autoseg.backend, autoseg.pipeline; "
            "print(sorted(m for m in ('cupy', 'cudf', 'cuml') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
    assert backend_module.GPU_PACKAGES == ("cupy", "cudf", "cuml")


# The frame calls of the feature preparation (features._column_values and _level_codes,
# listed in docs/gpu.md): each must exist on the real cudf.Series and take these arguments.
PREPARATION_FRAME_CALLS = [
    ("astype", ("float64",)), ("astype", ("str",)), ("fillna", (0.0,)), ("fillna", (False,)),
    ("isin", (["app", "web"],)), ("isna", ()), ("sum", ()), ("to_pandas", ()),
    ("__eq__", ("app",)), ("__and__", (None,)), ("__or__", (None,)), ("__invert__", ()),
]


def test_every_frame_call_of_the_preparation_binds_to_the_real_cudf_series() -> None:
    for name, args in PREPARATION_FRAME_CALLS:
        inspect.signature(getattr(cudf.Series, name)).bind(None, *args)
    assert isinstance(inspect.getattr_static(cudf.Series, "values"), property)
    # a device array: "cp.ndarray" (CuPy), from cp.asarray for numbers and flags without nulls
    # (which is what the preparation hands it: isna() and fillna() results)
    assert str(inspect.signature(cudf.Series.values.fget).return_annotation) == "cp.ndarray"
    assert "cp.asarray(col)" in inspect.getsource(cudf.Series.values.fget)
    inspect.signature(cudf.DataFrame.from_arrow).bind(None)
    # category columns: their codes and their (short) list of labels, read on the host
    from cudf.core.accessors.categorical import CategoricalAccessor

    assert isinstance(inspect.getattr_static(cudf.Series, "cat"), property)
    assert isinstance(inspect.getattr_static(cudf.Series, "iloc"), property)  # row blocks
    for name in ("codes", "categories"):
        assert isinstance(inspect.getattr_static(CategoricalAccessor, name), property)
    inspect.signature(cudf.Index.to_pandas).bind(None)
