"""Device selection and the CPU<->GPU estimator maps.

These run on any machine: the GPU packages are simulated through ``sys.modules`` (a missing
package is ``None`` there; a present one is a small fake), so the reasons, the error messages
and the translation of every k-means/PCA parameter into cuML's terms are checked without a GPU.
Where the real cuML is installed (CI installs it: ``.ci/run``), the recording stand-ins give way
to it for the part that runs without a GPU: every keyword they receive must bind to the real
``cuml.cluster.KMeans`` / ``cuml.decomposition.PCA`` / ``cuml.dask.cluster.KMeans`` signature
(tests/test_rapids_real.py checks the rest against the real packages). The one test that needs
a real CUDA device is marked ``gpu`` and skipped elsewhere.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import json
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from sklearn.cluster import KMeans
from sklearn.datasets import make_blobs
from sklearn.decomposition import PCA

from autoseg import backend as backend_module
from autoseg.backend import (
    KMEANS_PARAMETERS,
    PCA_PARAMETERS,
    STAGE_COMPONENTS,
    Backend,
    UnsupportedOnGPU,
    probe_gpu,
    select_backend,
)
from autoseg.errors import UsageError
from autoseg.silhouette import silhouette_scores

ROOT = Path(__file__).resolve().parents[1]


def _real_signatures() -> dict[str, inspect.Signature]:
    """The real cuML estimators' signatures, read once before any fake enters sys.modules
    (empty without cuML; cuML imports without a GPU)."""
    found: dict[str, inspect.Signature] = {}
    for module, name in (("cuml.cluster", "KMeans"), ("cuml.decomposition", "PCA"),
                         ("cuml.dask.cluster", "KMeans")):
        try:
            found[f"{module}.{name}"] = inspect.signature(
                getattr(importlib.import_module(module), name))
        except Exception:  # not installed (cuml.dask needs the gpu-dask extra)
            continue
    return found


REAL_SIGNATURES = _real_signatures()


def _bind_to_real(qualified: str, kwargs: dict[str, Any]) -> None:
    """Where the real class is installed, the keywords must bind to its signature."""
    signature = REAL_SIGNATURES.get(qualified)
    if signature is not None:
        signature.bind(**kwargs)  # TypeError names an unexpected keyword


# --------------------------------------------------------------------------- fakes


def _fake_cupy(devices: int | Exception = 1) -> types.ModuleType:
    """A stand-in for CuPy backed by NumPy, seeing ``devices`` CUDA devices (or raising)."""
    fake = types.ModuleType("cupy")
    for name in ("asarray", "empty", "var", "float32", "float64", "int32", "int64"):
        setattr(fake, name, getattr(np, name))
    # Libraries probe isinstance(x, cupy.ndarray) when "cupy" is in sys.modules: a class of
    # its own keeps NumPy arrays from passing for CuPy ones.
    fake.ndarray = type("ndarray", (), {})
    fake.__version__ = "0.0-fake"

    def get_device_count() -> int:
        if isinstance(devices, Exception):
            raise devices
        return devices

    fake.cuda = types.SimpleNamespace(runtime=types.SimpleNamespace(
        getDeviceCount=get_device_count,
        getDeviceProperties=lambda index: {"name": b"Fake GPU"},
    ))
    return fake


class _FakeCumlKMeans:
    """Records the keyword arguments cuML would get; fits with scikit-learn."""

    calls: list[dict[str, Any]] = []

    def __init__(self, **kwargs: Any) -> None:
        _bind_to_real("cuml.cluster.KMeans", kwargs)
        type(self).calls.append(kwargs)
        self.kwargs = kwargs

    def fit(self, x: np.ndarray) -> _FakeCumlKMeans:
        init = self.kwargs["init"]
        model = KMeans(
            n_clusters=self.kwargs["n_clusters"],
            init="k-means++" if isinstance(init, str) else init,
            n_init=self.kwargs["n_init"], random_state=self.kwargs["random_state"],
            max_iter=self.kwargs["max_iter"],
        ).fit(x)
        self.cluster_centers_ = model.cluster_centers_
        self.labels_ = model.labels_
        self.inertia_ = model.inertia_
        self.n_iter_ = model.n_iter_
        return self


class _FakeCumlPCA:
    calls: list[dict[str, Any]] = []

    def __init__(self, **kwargs: Any) -> None:
        _bind_to_real("cuml.decomposition.PCA", kwargs)
        type(self).calls.append(kwargs)
        self.kwargs = kwargs

    def fit(self, x: np.ndarray) -> _FakeCumlPCA:
        model = PCA(n_components=self.kwargs["n_components"], svd_solver="full").fit(x)
        self.mean_ = model.mean_
        self.components_ = model.components_
        self.explained_variance_ratio_ = model.explained_variance_ratio_
        return self


class _FakeCudfFrame:
    @classmethod
    def from_arrow(cls, table: Any) -> tuple[str, Any]:
        return ("cudf", table)


def _fake_cudf() -> types.ModuleType:
    cudf = types.ModuleType("cudf")
    cudf.__version__ = "0.0-fake"
    # classes: libraries probe isinstance(x, cudf.DataFrame / Series / Index)
    cudf.DataFrame = _FakeCudfFrame
    cudf.Series = type("Series", (), {})
    cudf.Index = type("Index", (), {})
    return cudf


def _install(monkeypatch: pytest.MonkeyPatch, **modules: types.ModuleType | None) -> None:
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name.replace("__", "."), module)


def _fake_rapids(monkeypatch: pytest.MonkeyPatch) -> None:
    """CuPy with one device, cuDF and cuML (KMeans and PCA recorded) all 'installed'."""
    _FakeCumlKMeans.calls = []
    _FakeCumlPCA.calls = []
    cudf = _fake_cudf()
    cuml = types.ModuleType("cuml")
    cuml.__version__ = "0.0-fake"
    cluster = types.ModuleType("cuml.cluster")
    cluster.KMeans = _FakeCumlKMeans
    decomposition = types.ModuleType("cuml.decomposition")
    decomposition.PCA = _FakeCumlPCA
    _install(monkeypatch, cupy=_fake_cupy(1), cudf=cudf, cuml=cuml, cuml__cluster=cluster,
             cuml__decomposition=decomposition)


# --------------------------------------------------------------------------- selection


def test_cpu_is_numpy_with_a_reason() -> None:
    backend = select_backend("cpu")
    assert backend.name == "cpu"
    assert backend.xp is np
    assert backend.xdf is pd
    assert backend.xgboost_device == "cpu"
    assert backend.reason == "requested with --device cpu"


def test_auto_gives_a_backend_and_a_reason() -> None:
    backend = select_backend("auto")
    assert backend.name in ("cpu", "gpu")
    assert backend.reason
    if backend.name == "cpu":
        assert backend.xp is np


@pytest.mark.parametrize(
    ("modules", "reason"),
    [
        ({"cupy": None}, "cupy not installed"),
        ({"cupy": "no-device"}, "no CUDA device visible"),
    ],
)
def test_auto_falls_back_to_cpu_naming_what_is_missing(
    monkeypatch: pytest.MonkeyPatch, modules: dict[str, str | None], reason: str
) -> None:
    fakes = {"no-device": _fake_cupy(0), "one-device": _fake_cupy(1),
             "fake": types.ModuleType("fake")}
    _install(monkeypatch, **{name: fakes.get(kind) if kind else None
                             for name, kind in modules.items()})
    assert probe_gpu()[:2] == (False, reason)
    backend = select_backend("auto")
    assert (backend.name, backend.xp, backend.reason) == ("cpu", np, reason)


@pytest.mark.parametrize(
    ("modules", "missing"),
    [
        ({"cudf": None}, "cudf not installed"),
        ({"cudf": "fake", "cuml": None}, "cuml not installed"),
    ],
)
def test_auto_with_cupy_but_no_rapids_runs_cupy_and_xgboost_on_the_gpu(
    monkeypatch: pytest.MonkeyPatch, modules: dict[str, str | None], missing: str
) -> None:
    _install(monkeypatch, cupy=_fake_cupy(1),
             **{name: _fake_cudf() if kind else None for name, kind in modules.items()})
    assert probe_gpu()[:2] == (False, missing)
    backend = select_backend("auto")
    assert (backend.name, backend.xp, backend.xdf) == ("gpu", sys.modules["cupy"], pd)
    assert backend.estimators == "scikit-learn" and not backend.uses_cuml
    assert backend.reason.startswith(
        f"CUDA device visible: Fake GPU; {missing}, so k-means and PCA run on the CPU "
        "(scikit-learn)")
    assert backend.describe()["estimators"] == "scikit-learn"
    stages = backend.stage_devices(explain_device="cuda")
    assert stages["assign"] == stages["explain"] == "gpu"
    assert stages["reduce"] == stages["fit_all_rows"] == stages["features"] == "cpu"
    assert stages["search"] == "gpu+cpu"  # scikit-learn k-means, silhouettes on CuPy
    assert backend.component_devices()["kmeans"] == "cpu"
    assert backend.component_devices()["xp"] == "gpu"
    # the estimators are scikit-learn's, fed from device arrays
    x, _ = make_blobs(300, 4, centers=3, random_state=0)
    model = backend.kmeans(3, seed=0).fit(backend.to_device(x, np.float32))
    assert model.device == "cpu" and "algorithm" in model.params
    assert model.cluster_centers_.shape == (3, 4)
    assert backend.pca(2).fit(x).components_.shape == (2, 4)
    frame = backend.frame_from_arrow(pa.table({"a": [1, 2]}))
    assert isinstance(frame, pd.DataFrame)
    # --device gpu asks for every estimator on the GPU: a usage error naming what is missing
    message = (f"--device=gpu: the GPU is visible (Fake GPU) but {missing}, so k-means and "
               "PCA cannot run on it: install autoseg[gpu], or use --device auto (CuPy and "
               "XGBoost on the GPU, k-means and PCA on the CPU) or --device cpu")
    with pytest.raises(UsageError, match=f"^{_escape(message)}$"):
        select_backend("gpu")


def _numpy_backed_cupy() -> types.ModuleType:
    """A CuPy stand-in with one device whose arrays are NumPy's (every ``xp`` call works).

    ``ndarray`` stays a class of its own: libraries (XGBoost, scikit-learn) probe
    ``isinstance(x, cupy.ndarray)`` when "cupy" is imported, and host arrays must not pass.
    """
    fake = _fake_cupy(1)
    fake.__getattr__ = lambda name: getattr(np, name)  # module-level __getattr__ (PEP 562)
    return fake


# XGBoost is asked for CUDA (its wheel has it) and falls back to the CPU here, with a warning.
@pytest.mark.filterwarnings("ignore:.*(No visible GPU|Device is changed from GPU):UserWarning")
def test_a_whole_run_on_a_cupy_only_backend_matches_the_cpu_run(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The CLI's pipeline end to end with CuPy but no cuDF/cuML (the lent machine's setup):
    the stages take the GPU branches (device arrays, CuPy silhouettes and assignments) with
    scikit-learn's k-means and PCA, and give the CPU run's segmentation."""
    import duckdb

    from autoseg.config import build_config
    from autoseg.demo import make_customers
    from autoseg.pipeline import run

    frame, _ = make_customers(2000, seed=3)
    database = tmp_path / "store.duckdb"
    with duckdb.connect(str(database)) as conn:
        conn.execute("CREATE SCHEMA demo")
        conn.register("frame", frame)
        conn.execute("CREATE TABLE demo.customers AS SELECT * FROM frame")
    results = {}
    for device in ("cpu", "auto"):
        if device == "auto":
            _install(monkeypatch, cupy=_numpy_backed_cupy(), cudf=None)
        config = build_config({
            "store": f"duckdb:{database}", "input_table": "demo.customers",
            "output_table": f"demo.seg_{device}", "model_name": f"m_{device}",
            "output_dir": str(tmp_path / f"out_{device}"),
            "model_dir": str(tmp_path / "models"), "device": device,
        })
        results[device] = run(config)
    cpu, gpu = results["cpu"], results["auto"]
    summary = json.loads(gpu.summary_path.read_text())
    assert summary["device"]["used"] == "gpu"
    assert summary["device"]["estimators"] == "scikit-learn"
    assert summary["device"]["reason"].startswith("CUDA device visible: Fake GPU; cudf not "
                                                  "installed")
    stages = summary["stages_device"]
    assert stages["search"] == "gpu+cpu" and stages["assign"] == "gpu"
    assert stages["fit_all_rows"] == stages["reduce"] == stages["features"] == "cpu"
    assert gpu.chosen_k == cpu.chosen_k
    np.testing.assert_array_equal(np.asarray(gpu.labels), np.asarray(cpu.labels))


def test_cuda_error_while_counting_devices_is_a_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    _install(monkeypatch, cupy=_fake_cupy(RuntimeError("cudaErrorInsufficientDriver\nmore")))
    backend = select_backend("auto")
    assert backend.name == "cpu"
    assert backend.reason == (
        "no CUDA device visible (RuntimeError: cudaErrorInsufficientDriver)"
    )


@pytest.mark.parametrize(
    ("cupy", "reason"), [(None, "cupy not installed"), ("no-device", "no CUDA device visible")]
)
def test_gpu_without_a_usable_gpu_is_a_usage_error(
    monkeypatch: pytest.MonkeyPatch, cupy: str | None, reason: str
) -> None:
    _install(monkeypatch, cupy=_fake_cupy(0) if cupy else None)
    message = (
        f"--device=gpu: no usable GPU ({reason}): use --device cpu or auto, or install "
        "autoseg[gpu] on a CUDA host"
    )
    with pytest.raises(UsageError, match=f"^{_escape(message)}$"):
        select_backend("gpu")


def test_unknown_device_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match=r"--device='tpu' must be one of auto, cpu, gpu"):
        select_backend("tpu")


@pytest.mark.parametrize("device", ["auto", "gpu"])
def test_gpu_is_chosen_when_cupy_sees_a_device_and_rapids_imports(
    monkeypatch: pytest.MonkeyPatch, device: str
) -> None:
    _fake_rapids(monkeypatch)
    backend = select_backend(device)
    assert backend.name == "gpu"
    assert backend.xp is sys.modules["cupy"]
    assert backend.xdf is sys.modules["cudf"]
    assert backend.reason.startswith("CUDA device visible: Fake GPU")
    assert backend.versions == {"cupy": "0.0-fake", "cudf": "0.0-fake", "cuml": "0.0-fake"}
    assert backend.uses_cuml and backend.describe()["estimators"] == "cuml"
    assert backend.frame_from_arrow("table") == ("cudf", "table")
    stages = backend.stage_devices()
    assert {s for s, d in stages.items() if d == "gpu"} >= {"reduce", "search", "assign",
                                                              "fit_all_rows"}
    assert stages["features"] == stages["read"] == "cpu"
    # XGBoost's own fallback wins over what was planned
    assert backend.stage_devices(explain_device="cpu")["explain"] == "cpu"


def test_only_the_backend_imports_the_gpu_packages() -> None:
    for path in (ROOT / "src" / "autoseg").rglob("*.py"):
        if path.name == "backend.py":
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            for name in names:
                assert name.split(".")[0] not in ("cupy", "cudf", "cuml"), (path, name)


# --------------------------------------------------------------------------- parameter maps


def _keywords_of_calls(name: str) -> set[str]:
    """Keyword names of every ``name(...)`` call in the package, outside backend.py."""
    found: set[str] = set()
    for path in (ROOT / "src" / "autoseg").rglob("*.py"):
        if path.name == "backend.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call):
                func = node.func
                called = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
                if called == name:
                    found |= {kw.arg for kw in node.keywords if kw.arg is not None}
    return found


@pytest.mark.parametrize(
    ("estimator", "table", "factory"),
    [("KMeans", KMEANS_PARAMETERS, "kmeans"), ("PCA", PCA_PARAMETERS, "pca")],
)
def test_parameter_map_covers_every_parameter_our_code_passes(
    estimator: str, table: tuple[Any, ...], factory: str
) -> None:
    # Direct library calls (the code before it goes through the backend) pass library names;
    # calls of the backend's factories pass ours. Both must be in the map.
    direct = _keywords_of_calls(estimator)
    through_backend = _keywords_of_calls(factory)
    assert direct or through_backend, f"no {estimator}(...) or .{factory}(...) call found"
    cpu_names = {m.cpu for m in table if m.cpu}
    assert direct <= cpu_names, f"not in the {estimator} map: {sorted(direct - cpu_names)}"
    our_names = {m.ours for m in table if m.ours}
    assert through_backend <= our_names, sorted(through_backend - our_names)
    # every argument of the factory has a row, and every row's argument exists
    arguments = set(inspect.signature(getattr(Backend, factory)).parameters) - {"self"}
    assert arguments == our_names


def test_cpu_kmeans_passes_exactly_the_mapped_keywords() -> None:
    model = select_backend("cpu").kmeans(4, seed=3)
    assert set(model.params) == {m.cpu for m in KMEANS_PARAMETERS if m.cpu}
    assert model.params["algorithm"] == "lloyd"


def test_gpu_kmeans_translates_every_parameter(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_rapids(monkeypatch)
    backend = select_backend("gpu")
    x, _ = make_blobs(600, 5, centers=3, random_state=0)
    x = x.astype(np.float32)
    model = backend.kmeans(3, n_init=4, seed=7, tol=1e-3, max_iter=50).fit(x)
    (kwargs,) = _FakeCumlKMeans.calls
    passed_on_gpu = {m.gpu for m in KMEANS_PARAMETERS
                     if m.gpu and not m.translation.startswith("not passed")}
    assert set(kwargs) == passed_on_gpu
    assert kwargs["init"] == "scalable-k-means++"
    assert (kwargs["n_clusters"], kwargs["n_init"], kwargs["random_state"]) == (3, 4, 7)
    assert kwargs["max_iter"] == 50
    assert kwargs["output_type"] == "cupy"
    # scikit-learn's relative tolerance becomes cuML's absolute one
    assert kwargs["tol"] == pytest.approx(1e-3 * float(np.var(x, axis=0).mean()))
    assert model.cluster_centers_.shape == (3, 5)
    assert isinstance(model.inertia_, float)


def test_gpu_kmeans_array_init_goes_to_the_device_as_float32(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _fake_rapids(monkeypatch)
    start = np.array([[0.0, 0.0], [5.0, 5.0]])
    select_backend("gpu").kmeans(2, init=start, n_init=1).fit(
        np.array([[0, 0], [0, 1], [5, 5], [5, 6]], dtype=np.float32))
    init = _FakeCumlKMeans.calls[0]["init"]
    assert init.dtype == np.float32
    np.testing.assert_array_equal(init, start)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"algorithm": "elkan"}, r"algorithm='elkan' is not supported on the GPU .*--device cpu"),
        ({"init": lambda x, k, rs: x[:k]}, r"init=<callable> is not supported on the GPU"),
    ],
)
def test_unsupported_on_gpu_is_named(
    monkeypatch: pytest.MonkeyPatch, kwargs: dict[str, Any], match: str
) -> None:
    _fake_rapids(monkeypatch)
    backend = select_backend("gpu")
    with pytest.raises(UnsupportedOnGPU, match=match) as caught:
        backend.kmeans(3, **kwargs)
    assert isinstance(caught.value, UsageError)  # one-line message, exit code 2
    # the same values are fine on the CPU
    select_backend("cpu").kmeans(3, **kwargs)


def test_gpu_pca_drops_the_seed_and_returns_host_arrays(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_rapids(monkeypatch)
    x = np.random.default_rng(0).normal(size=(200, 6)).astype(np.float32)
    model = select_backend("gpu").pca(3, seed=5).fit(x)
    (kwargs,) = _FakeCumlPCA.calls
    assert kwargs == {"n_components": 3, "svd_solver": "full", "output_type": "numpy"}
    assert isinstance(model.components_, np.ndarray)
    assert model.components_.shape == (3, 6)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"init": "k-means||"}, r"init='k-means\|\|' must be one of"),
        ({"init": np.zeros((3, 2)), "n_init": 4}, r"n_init=4 must be 1 when init is an array"),
        ({"init": np.zeros((2, 2))}, r"init array has shape \(2, 2\), expected \(n_clusters=3"),
        ({"seed": None}, r"seed=None must be an integer"),
        ({"n_init": 0}, r"n_init=0 must be an integer >= 1"),
        ({"algorithm": "auto"}, r"algorithm='auto' must be 'lloyd' or 'elkan'"),
    ],
)
def test_kmeans_arguments_are_checked_on_every_device(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        select_backend("cpu").kmeans(3, **kwargs)


# --------------------------------------------------------------------------- Dask refit


class _FakeDaskKMeans:
    """Records what cuml.dask.cluster.KMeans would get; fits with scikit-learn on the host."""

    calls: list[dict[str, Any]] = []
    fail: Exception | None = None

    def __init__(self, **kwargs: Any) -> None:
        # cuml.dask's KMeans takes client= and passes the rest on to cuml.cluster.KMeans
        _bind_to_real("cuml.dask.cluster.KMeans", kwargs)
        _bind_to_real("cuml.cluster.KMeans", {k: v for k, v in kwargs.items() if k != "client"})
        type(self).calls.append(kwargs)
        self.kwargs = kwargs

    def fit(self, x: Any) -> _FakeDaskKMeans:
        if type(self).fail is not None:
            raise type(self).fail
        model = KMeans(n_clusters=self.kwargs["n_clusters"], init=self.kwargs["init"],
                       n_init=1, max_iter=self.kwargs["max_iter"]).fit(x.compute())
        self.cluster_centers_ = model.cluster_centers_
        self.n_iter_ = model.n_iter_
        return self


@pytest.fixture
def dask_client() -> Any:
    """A real in-process Dask cluster (its workers share this process's sys.modules)."""
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                  dashboard_address=":0") as cluster, \
            distributed.Client(cluster) as client:
        yield client


def _fake_cuml_dask(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_rapids(monkeypatch)
    _FakeDaskKMeans.calls = []
    _FakeDaskKMeans.fail = None
    dask_module = types.ModuleType("cuml.dask")
    dask_cluster = types.ModuleType("cuml.dask.cluster")
    dask_cluster.KMeans = _FakeDaskKMeans
    _install(monkeypatch, cuml__dask=dask_module, cuml__dask__cluster=dask_cluster)


def test_dask_refit_is_refused_on_cpu_workers(dask_client: Any) -> None:
    da = pytest.importorskip("dask.array")
    assert backend_module.every_worker_has_gpu(dask_client) is False
    x = da.from_array(np.zeros((100, 3), dtype=np.float32), chunks=50)
    with pytest.raises(backend_module.DaskGPURefitUnavailable,
                       match=r"^not every Dask worker has a CUDA device and cuML$"):
        backend_module.dask_kmeans_refit(x, np.zeros((2, 3), np.float32), tol=1e-3, seed=0,
                                         client=dask_client)


def test_dask_refit_passes_the_scaled_tol_and_the_warm_start(
    monkeypatch: pytest.MonkeyPatch, dask_client: Any
) -> None:
    da = pytest.importorskip("dask.array")
    _fake_cuml_dask(monkeypatch)
    assert backend_module.every_worker_has_gpu(dask_client) is True
    points, _ = make_blobs(2000, 4, centers=3, random_state=5)
    start = points[:3].astype(np.float32)
    x = da.from_array(points.astype(np.float32), chunks=500)
    centres, facts = backend_module.dask_kmeans_refit(x, start, tol=0.0123, seed=4,
                                                      client=dask_client, max_iter=40)
    (kwargs,) = _FakeDaskKMeans.calls
    assert set(kwargs) == set(backend_module.DASK_KMEANS_KEYWORDS)
    assert kwargs["tol"] == 0.0123  # already scaled by the caller: passed as is
    assert (kwargs["n_clusters"], kwargs["n_init"], kwargs["random_state"],
            kwargs["max_iter"]) == (3, 1, 4, 40)
    assert kwargs["client"] is dask_client
    np.testing.assert_array_equal(kwargs["init"], start)
    assert centres.dtype == np.float32 and centres.shape == (3, 4)
    assert facts["engine"] == "cuml.dask" and facts["tolerance"] == 0.0123


def test_dask_refit_failure_is_one_line_for_the_fallback(
    monkeypatch: pytest.MonkeyPatch, dask_client: Any
) -> None:
    da = pytest.importorskip("dask.array")
    _fake_cuml_dask(monkeypatch)
    _FakeDaskKMeans.fail = RuntimeError("NCCL error: unhandled system error\ndetails")
    x = da.from_array(np.ones((60, 2), dtype=np.float32), chunks=30)
    with pytest.raises(backend_module.DaskGPURefitUnavailable,
                       match=r"^cuml\.dask KMeans failed \(RuntimeError: NCCL error: "
                             r"unhandled system error\)$"):
        backend_module.dask_kmeans_refit(x, np.ones((2, 2), np.float32), tol=1e-3, seed=0,
                                         client=dask_client)


def test_dask_refit_without_cuml_dask_names_the_import_error(
    monkeypatch: pytest.MonkeyPatch, dask_client: Any
) -> None:
    da = pytest.importorskip("dask.array")
    _fake_rapids(monkeypatch)  # workers have CuPy with a device and cuML, but no cuml.dask
    _install(monkeypatch, cuml__dask=None, cuml__dask__cluster=None)
    x = da.from_array(np.ones((10, 2), dtype=np.float32), chunks=5)
    with pytest.raises(backend_module.DaskGPURefitUnavailable,
                       match=r"^cuml\.dask failed to import \(ModuleNotFoundError: "):
        backend_module.dask_kmeans_refit(x, np.ones((2, 2), np.float32), tol=1e-3, seed=0,
                                         client=dask_client)


# --------------------------------------------------------------------------- CPU estimators


def test_cpu_kmeans_matches_scikit_learn() -> None:
    x, _ = make_blobs(2000, 6, centers=5, random_state=1)
    x = x.astype(np.float32)
    ours = select_backend("cpu").kmeans(5, n_init=3, seed=11).fit(x)
    theirs = KMeans(n_clusters=5, init="k-means++", n_init=3, random_state=11,
                    algorithm="lloyd").fit(x)
    np.testing.assert_array_equal(ours.cluster_centers_, theirs.cluster_centers_)
    np.testing.assert_array_equal(ours.labels_, theirs.labels_)
    assert ours.inertia_ == pytest.approx(theirs.inertia_)


def test_cpu_kmeans_warm_start_matches_refit_on_all_rows() -> None:
    from autoseg.search import refit_on_all_rows

    x, _ = make_blobs(3000, 4, centers=4, random_state=2)
    x = x.astype(np.float32)
    start = x[:4].copy()
    ours = select_backend("cpu").kmeans(4, init=start, n_init=1, seed=0).fit(x)
    centroids, facts = refit_on_all_rows(x, start, seed=0)
    np.testing.assert_allclose(ours.cluster_centers_, centroids, rtol=1e-5, atol=1e-5)
    assert facts["iterations"] == ours.n_iter_
    assert ours.inertia_ == pytest.approx(facts["inertia"], rel=1e-4)


def test_cpu_pca_matches_scikit_learn() -> None:
    x = np.random.default_rng(3).normal(size=(500, 12)).astype(np.float32)
    ours = select_backend("cpu").pca(4, seed=9).fit(x)
    theirs = PCA(n_components=4, random_state=9).fit(x)
    np.testing.assert_array_equal(ours.components_, theirs.components_)
    np.testing.assert_array_equal(ours.mean_, theirs.mean_)


def test_to_host_to_device_round_trip_on_cpu() -> None:
    backend = select_backend("cpu")
    x = np.arange(12, dtype=np.float64).reshape(3, 4)
    on_device = backend.to_device(x)
    assert on_device is x  # no copy on the CPU
    assert backend.to_device(x, dtype=np.float32).dtype == np.float32
    np.testing.assert_array_equal(backend.to_host(backend.to_device(x)), x)
    np.testing.assert_array_equal(backend.to_host(pd.Series([1, 2, 3])), [1, 2, 3])
    np.testing.assert_array_equal(backend.to_device([1.5, 2.5]), np.array([1.5, 2.5]))


def test_frame_from_arrow_on_cpu_is_pandas() -> None:
    table = pa.table({"a": [1, 2], "b": ["x", "y"]})
    frame = select_backend("cpu").frame_from_arrow(table)
    pd.testing.assert_frame_equal(frame, table.to_pandas())


def test_stage_devices_on_cpu() -> None:
    backend = select_backend("cpu")
    assert set(backend.stage_devices()) == set(STAGE_COMPONENTS)
    assert set(backend.stage_devices().values()) == {"cpu"}
    assert backend.describe()["used"] == "cpu"


def test_docs_list_every_mapped_parameter() -> None:
    doc = (ROOT / "docs" / "gpu.md").read_text()
    for mapping in (*KMEANS_PARAMETERS, *PCA_PARAMETERS):
        for name in (mapping.ours, mapping.cpu, mapping.gpu):
            if name:
                assert f"`{name}`" in doc, name


def _escape(text: str) -> str:
    import re

    return re.escape(text)


# --------------------------------------------------------------------------- real GPU


def _cuda_device_present() -> bool:
    try:
        cupy = importlib.import_module("cupy")
        return int(cupy.cuda.runtime.getDeviceCount()) > 0
    except Exception:
        return False


@pytest.mark.gpu
@pytest.mark.skipif(not _cuda_device_present(), reason="needs CuPy and a CUDA device")
@pytest.mark.parametrize("exact", [True, False])
def test_silhouette_on_cupy_matches_numpy(exact: bool) -> None:
    cupy = importlib.import_module("cupy")
    x, _ = make_blobs(6000, 8, centers=5, cluster_std=2.0, random_state=4)
    labelings = {k: KMeans(k, n_init=1, random_state=0).fit_predict(x) for k in range(2, 6)}
    settings = ({} if exact else {"exact_max_rows": 1000, "sample_size": 1500, "seed": 2})
    on_cpu = silhouette_scores(x, labelings, **settings)
    on_gpu = silhouette_scores(cupy.asarray(x), labelings, xp=cupy, **settings)
    for k in labelings:
        assert on_gpu[k].exact is on_cpu[k].exact is exact
        assert on_gpu[k].n_points == on_cpu[k].n_points
        assert on_gpu[k].score == pytest.approx(on_cpu[k].score, abs=1e-4)
        assert on_gpu[k].stderr == pytest.approx(on_cpu[k].stderr, abs=1e-4)


def test_backend_module_imports_no_gpu_package_at_import_time() -> None:
    source = Path(backend_module.__file__).read_text()
    top_level = [n for n in ast.parse(source).body if isinstance(n, (ast.Import, ast.ImportFrom))]
    for node in top_level:
        names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                 else [node.module or ""])
        assert not any(n.split(".")[0] in ("cupy", "cudf", "cuml") for n in names)
