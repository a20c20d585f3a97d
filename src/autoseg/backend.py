"""Device selection: which array namespace, frames and estimators the stages use.

The device is chosen once per run (``--device auto|cpu|gpu``) and handed to the stages as a
:class:`Backend`. The stages are written once against what it offers:

* ``xp``: the array namespace, NumPy on the CPU, CuPy on the GPU;
* ``to_device`` / ``to_host``: move arrays between host memory and ``xp``;
* ``kmeans`` and ``pca``: scikit-learn estimators on the CPU, cuML on the GPU, built from
  *our* parameter names through the explicit maps :data:`KMEANS_PARAMETERS` and
  :data:`PCA_PARAMETERS` (a combination cuML cannot run raises :class:`UnsupportedOnGPU`);
* ``xgboost_device``: ``"cpu"`` or ``"cuda"`` for the surrogate explanation model;
* ``frame_from_arrow``: a pandas or a cuDF frame of the input table;
* ``stage_devices``: where each pipeline stage runs, for the run summary.

Only this module imports ``cupy``, ``cudf`` and ``cuml``, and only lazily: the CPU path, the
tests and ``import autoseg`` never need them. Decisions (k range, seeds, sampling, tie-breaks)
stay in the shared modules; this module only translates them for each library.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Final

import numpy as np

from autoseg.errors import UsageError

log = logging.getLogger(__name__)

DEVICES: Final = ("auto", "cpu", "gpu")

# The packages the GPU path imports, in the order they are probed; the first one missing is
# the reason ``auto`` falls back to the CPU.
GPU_PACKAGES: Final = ("cupy", "cudf", "cuml")

GPU_INSTALL_HINT: Final = "install autoseg[gpu] on a CUDA host"


class UnsupportedOnGPU(UsageError):
    """A parameter value or combination that the GPU estimators (cuML) cannot run.

    A subclass of :class:`~autoseg.errors.UsageError`: the fix is the user's (run on the
    CPU, or choose a supported value), so the CLI reports it in one line with exit code 2.
    """


# --------------------------------------------------------------------------- parameter maps


@dataclass(frozen=True)
class ParameterMapping:
    """How one of our estimator parameters reaches scikit-learn and cuML.

    Attributes
    ----------
    ours
        The argument name of :meth:`Backend.kmeans` / :meth:`Backend.pca`; ``None`` for a
        GPU-only setting we fix ourselves.
    cpu
        The scikit-learn keyword it is passed as; ``None`` when it is not passed on the CPU.
    gpu
        The cuML keyword it is passed as; ``None`` when it is not passed on the GPU.
    translation
        How the value is carried over (``"as is"`` when unchanged).
    differs
        Where the two libraries give the parameter a different meaning, what differs and how
        we compensate; empty when the meaning is the same.
    """

    ours: str | None
    cpu: str | None
    gpu: str | None
    translation: str
    differs: str = ""


# scikit-learn KMeans(n_clusters, init, n_init, random_state, tol, max_iter, algorithm) versus
# cuml.cluster.KMeans(n_clusters, init, n_init, random_state, tol, max_iter, oversampling_factor,
# max_samples_per_batch, output_type). Sources: scikit-learn 1.9 and cuML 25.x API docs and
# source (cuml/cluster/kmeans.pyx; the convergence test is in cuVS/RAFT kmeans fit_main).
KMEANS_PARAMETERS: Final[tuple[ParameterMapping, ...]] = (
    ParameterMapping("n_clusters", "n_clusters", "n_clusters", "as is"),
    ParameterMapping(
        "init", "init", "init",
        "'k-means++' -> 'scalable-k-means++'; an (k, d) array -> the same array on the device "
        "(float32); 'random' -> 'random'; a callable -> UnsupportedOnGPU",
        "seeding algorithm: scikit-learn runs greedy k-means++ (2 + log k candidate centres per "
        "step); cuML's 'scalable-k-means++' is k-means|| (oversampling_factor 2.0, centres "
        "sampled in rounds, then reclustered). Both are seeded D^2 sampling of similar quality, "
        "but not the same draws",
    ),
    ParameterMapping(
        "n_init", "n_init", "n_init",
        "as is (always an int; with an array init it must be 1)",
        "none for an int (best of n starts by inertia on both); we never pass 'auto', whose "
        "meaning differs (scikit-learn: 1 for k-means++; cuML: 1 for k-means||, else 10)",
    ),
    ParameterMapping(
        "seed", "random_state", "random_state", "as is (an int)",
        "different random generators: the same seed gives different starts, so labels differ "
        "between devices; compare results by score (silhouette, inertia, ARI), never by labels",
    ),
    ParameterMapping(
        "tol", "tol", "tol", "GPU: tol * mean(var(x, axis=0)), computed on the device at fit",
        "scikit-learn's tol is relative: it stops when the summed squared centre shift is <= "
        "tol * mean feature variance; cuML (cuVS) compares the summed squared centre shift "
        "with tol itself. Scaling by the mean variance gives cuML scikit-learn's criterion",
    ),
    ParameterMapping("max_iter", "max_iter", "max_iter", "as is"),
    ParameterMapping(
        "algorithm", "algorithm", None,
        "'lloyd' on the CPU; not passed on the GPU; 'elkan' -> UnsupportedOnGPU",
        "cuML always runs (batched) Lloyd iterations and has no algorithm parameter",
    ),
    ParameterMapping(
        None, None, "output_type", "'cupy'",
        "GPU only: results stay on the device as CuPy arrays (the centres are copied to the "
        "host by the wrapper)",
    ),
    ParameterMapping(
        None, None, "oversampling_factor", "not passed (cuML default 2.0)",
        "GPU only: how many candidate centres k-means|| samples per round",
    ),
    ParameterMapping(
        None, None, "max_samples_per_batch", "not passed (cuML default 32768)",
        "GPU only: rows per batch of the distance computation (memory, not results)",
    ),
)

# scikit-learn PCA(n_components, random_state) versus cuml.decomposition.PCA(n_components,
# svd_solver, output_type).
PCA_PARAMETERS: Final[tuple[ParameterMapping, ...]] = (
    ParameterMapping("n_components", "n_components", "n_components", "as is (an int)"),
    ParameterMapping(
        "seed", "random_state", None, "not passed on the GPU",
        "scikit-learn uses it only for its randomized SVD (chosen by svd_solver='auto' on "
        "large inputs); cuML's PCA eigendecomposes the covariance matrix, which needs no seed. "
        "The components agree up to sign and rounding, not bit for bit",
    ),
    ParameterMapping(
        None, None, "svd_solver", "'full'",
        "GPU only: covariance eigendecomposition (cuML's 'jacobi' is faster but less exact)",
    ),
    ParameterMapping(
        None, None, "output_type", "'numpy'",
        "GPU only: the fitted mean, components and explained variance come back as NumPy "
        "arrays, as scikit-learn gives them (they are small and are saved with the model)",
    ),
)

# ``init`` strings we accept and what each library calls them.
KMEANS_INIT_VALUES: Final[Mapping[str, tuple[str, str]]] = {
    "k-means++": ("k-means++", "scalable-k-means++"),
    "random": ("random", "random"),
}

# Where each pipeline stage runs, by what it uses from the backend: "host" stages (reading,
# profiling, the pandas feature preparation, writing) always run on the CPU; the others follow
# the backend's device (``xgboost`` follows ``xgboost_device``).
STAGE_COMPONENTS: Final[Mapping[str, str]] = {
    "read": "host",
    "profile": "host",
    "features": "host",
    "reduce": "pca",
    "search": "kmeans",
    "fit_all_rows": "kmeans",
    "assign": "xp",
    "explain": "xgboost",
    "write": "host",
    "report": "host",
}


# --------------------------------------------------------------------------- estimators


class KMeansModel:
    """A k-means estimator with one interface on both devices.

    After :meth:`fit`, ``cluster_centers_`` is a host NumPy array (k x d, small, saved with
    the model), ``labels_`` an array of the backend's ``xp`` (it stays where the data is) and
    ``inertia_`` a float. Build it with :meth:`Backend.kmeans`.
    """

    def __init__(self, device: str, params: dict[str, Any], xp: ModuleType) -> None:
        self.device = device
        self.params = params  # keyword arguments of the library's estimator (see fit for tol)
        self._xp = xp
        self.estimator: Any = None
        self.cluster_centers_: np.ndarray | None = None
        self.labels_: Any = None
        self.inertia_: float | None = None
        self.n_iter_: int | None = None

    def fit(self, x: Any) -> KMeansModel:
        """Fit on the (n, d) rows ``x`` (host or device array); returns ``self``."""
        if self.device == "cpu":
            import warnings

            from sklearn.cluster import KMeans
            from sklearn.exceptions import ConvergenceWarning

            with warnings.catch_warnings():
                # Fewer distinct points than k is reported by the caller's own size check.
                warnings.simplefilter("ignore", ConvergenceWarning)
                self.estimator = KMeans(**self.params).fit(x)
            centres = self.estimator.cluster_centers_
        else:
            cuml_cluster = importlib.import_module("cuml.cluster")
            xp = self._xp
            x_dev = xp.asarray(x)
            params = dict(self.params)
            # scikit-learn's relative tolerance, expressed as cuML's absolute one (see the map).
            params["tol"] = float(params["tol"]) * float(xp.var(x_dev, axis=0).mean())
            self.estimator = cuml_cluster.KMeans(**params).fit(x_dev)
            centres = _to_host(self.estimator.cluster_centers_)
        self.cluster_centers_ = np.asarray(centres)
        self.labels_ = self.estimator.labels_
        self.inertia_ = float(self.estimator.inertia_)
        self.n_iter_ = int(getattr(self.estimator, "n_iter_", 0) or 0)
        return self


class PCAModel:
    """A PCA estimator with one interface on both devices.

    After :meth:`fit`, ``mean_``, ``components_`` and ``explained_variance_ratio_`` are host
    NumPy arrays on both devices. Build it with :meth:`Backend.pca`.
    """

    def __init__(self, device: str, params: dict[str, Any], xp: ModuleType) -> None:
        self.device = device
        self.params = params
        self._xp = xp
        self.estimator: Any = None
        self.mean_: np.ndarray | None = None
        self.components_: np.ndarray | None = None
        self.explained_variance_ratio_: np.ndarray | None = None

    def fit(self, x: Any) -> PCAModel:
        """Fit on the (n, d) rows ``x``; returns ``self``."""
        if self.device == "cpu":
            from sklearn.decomposition import PCA

            self.estimator = PCA(**self.params).fit(x)
        else:
            cuml_decomposition = importlib.import_module("cuml.decomposition")
            self.estimator = cuml_decomposition.PCA(**self.params).fit(self._xp.asarray(x))
        self.mean_ = np.asarray(_to_host(self.estimator.mean_))
        self.components_ = np.asarray(_to_host(self.estimator.components_))
        self.explained_variance_ratio_ = np.asarray(
            _to_host(self.estimator.explained_variance_ratio_)
        )
        return self


# --------------------------------------------------------------------------- the backend


@dataclass(frozen=True)
class Backend:
    """The device a run uses, its namespaces and its estimator factories.

    Attributes
    ----------
    name
        ``"cpu"`` or ``"gpu"``.
    xp
        Array namespace: ``numpy`` or ``cupy``.
    reason
        Why this device was chosen (for the log and the run summary).
    xdf
        Frame namespace: ``pandas`` or ``cudf``.
    xgboost_device
        The ``device`` parameter for XGBoost: ``"cuda"`` on the GPU when XGBoost was built
        with CUDA, else ``"cpu"``.
    versions
        Versions of the GPU packages found (empty on the CPU).
    """

    name: str
    xp: ModuleType
    reason: str
    xdf: ModuleType | None = None
    xgboost_device: str = "cpu"
    versions: Mapping[str, str] = field(default_factory=dict)

    @property
    def is_gpu(self) -> bool:
        """Whether this backend runs on the GPU."""
        return self.name == "gpu"

    # --- arrays

    def to_device(self, array: Any, dtype: Any = None) -> Any:
        """``array`` as an array of ``xp`` (a host-to-device copy on the GPU; no copy when it
        is already there with that dtype)."""
        if self.is_gpu:
            return self.xp.asarray(array, dtype=dtype)
        return np.asarray(_to_host(array), dtype=dtype)

    def to_host(self, array: Any) -> np.ndarray:
        """``array`` as a NumPy array (a device-to-host copy for a CuPy array)."""
        return _to_host(array)

    # --- estimators

    def kmeans(
        self,
        n_clusters: int,
        init: str | np.ndarray = "k-means++",
        n_init: int = 1,
        seed: int = 0,
        tol: float = 1e-4,
        max_iter: int = 300,
        algorithm: str = "lloyd",
    ) -> KMeansModel:
        """A k-means estimator for this device, from our parameters (see KMEANS_PARAMETERS).

        Parameters
        ----------
        n_clusters
            Number of clusters k.
        init
            ``"k-means++"`` (or ``"random"``), or a (k, d) array of starting centres.
        n_init
            Starts; the lowest-inertia fit is kept. Must be 1 with an array ``init``.
        seed
            Seed of the starts (an int: runs are reproducible on each device).
        tol
            Convergence tolerance with scikit-learn's (relative) meaning on both devices.
        max_iter
            Most Lloyd iterations per start.
        algorithm
            ``"lloyd"`` (``"elkan"`` runs on the CPU only).

        Returns
        -------
        KMeansModel
            Unfitted; call ``.fit(x)``.

        Raises
        ------
        ValueError
            For values no device accepts (a bad ``init`` string, ``n_init > 1`` with array
            starts, a non-integer seed).
        UnsupportedOnGPU
            For values only scikit-learn accepts (a callable ``init``, ``algorithm="elkan"``).
        """
        array_init = not isinstance(init, str) and not callable(init)
        _check_kmeans_args(n_clusters, init, n_init, seed, tol, max_iter, algorithm, array_init)
        if not self.is_gpu:
            cpu_init: Any = KMEANS_INIT_VALUES[init][0] if isinstance(init, str) else init
            params = {
                "n_clusters": n_clusters, "init": cpu_init, "n_init": n_init,
                "random_state": seed, "tol": tol, "max_iter": max_iter, "algorithm": algorithm,
            }
            return KMeansModel("cpu", params, self.xp)
        if callable(init) and not isinstance(init, str):
            raise UnsupportedOnGPU(
                "k-means init=<callable> is not supported on the GPU (cuML takes "
                "'scalable-k-means++', 'random' or an array): use --device cpu"
            )
        if algorithm != "lloyd":
            raise UnsupportedOnGPU(
                f"k-means algorithm={algorithm!r} is not supported on the GPU (cuML runs Lloyd "
                "only): use algorithm='lloyd' or --device cpu"
            )
        gpu_init: Any = (
            KMEANS_INIT_VALUES[init][1] if isinstance(init, str)
            else self.xp.asarray(init, dtype=self.xp.float32)
        )
        params = {
            "n_clusters": n_clusters, "init": gpu_init, "n_init": n_init,
            "random_state": seed, "tol": tol, "max_iter": max_iter, "output_type": "cupy",
        }
        return KMeansModel("gpu", params, self.xp)

    def pca(self, n_components: int, seed: int = 0) -> PCAModel:
        """A PCA estimator for this device (see PCA_PARAMETERS).

        Parameters
        ----------
        n_components
            Components kept.
        seed
            Seed of scikit-learn's randomized solver; cuML's solver needs none.

        Returns
        -------
        PCAModel
            Unfitted; call ``.fit(x)``.
        """
        if isinstance(n_components, bool) or not isinstance(n_components, (int, np.integer)) \
                or n_components < 1:
            raise ValueError(f"n_components={n_components!r} must be an integer >= 1")
        if not self.is_gpu:
            return PCAModel("cpu", {"n_components": int(n_components), "random_state": seed},
                            self.xp)
        params = {"n_components": int(n_components), "svd_solver": "full",
                  "output_type": "numpy"}
        return PCAModel("gpu", params, self.xp)

    # --- frames

    def frame_from_arrow(self, table: Any) -> Any:
        """A pandas (CPU) or cuDF (GPU) frame of the Arrow ``table``."""
        if self.is_gpu:
            cudf = importlib.import_module("cudf")
            return cudf.DataFrame.from_arrow(table)
        return table.to_pandas()

    # --- reporting

    def stage_devices(self, explain_device: str | None = None) -> dict[str, str]:
        """Where each pipeline stage runs (``"cpu"`` or ``"gpu"``), for the run summary.

        Parameters
        ----------
        explain_device
            The device XGBoost actually used (``Explanation.device``: ``"cpu"``/``"cuda"``);
            it wins over ``xgboost_device`` because XGBoost silently falls back to the CPU.
        """
        xgb_device = explain_device if explain_device is not None else self.xgboost_device
        devices: dict[str, str] = {}
        for stage, component in STAGE_COMPONENTS.items():
            if component == "host":
                devices[stage] = "cpu"
            elif component == "xgboost":
                devices[stage] = "gpu" if xgb_device.startswith("cuda") else "cpu"
            else:
                devices[stage] = self.name
        return devices

    def describe(self) -> dict[str, Any]:
        """JSON-able description for the run summary."""
        return {
            "used": self.name,
            "reason": self.reason,
            "xgboost_device": self.xgboost_device,
            "versions": dict(self.versions),
        }


def _check_kmeans_args(
    n_clusters: int, init: Any, n_init: int, seed: int, tol: float, max_iter: int,
    algorithm: str, array_init: bool,
) -> None:
    """Checks that hold on both devices (decisions are shared, not per backend)."""
    for name, value, minimum in (("n_clusters", n_clusters, 1), ("n_init", n_init, 1),
                                 ("max_iter", max_iter, 1)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
            raise ValueError(f"{name}={value!r} must be an integer >= {minimum}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ValueError(f"seed={seed!r} must be an integer (runs must be reproducible)")
    if not tol >= 0:
        raise ValueError(f"tol={tol!r} must be >= 0")
    if isinstance(init, str) and init not in KMEANS_INIT_VALUES:
        raise ValueError(f"init={init!r} must be one of {sorted(KMEANS_INIT_VALUES)} or an array")
    if algorithm not in ("lloyd", "elkan"):
        raise ValueError(f"algorithm={algorithm!r} must be 'lloyd' or 'elkan'")
    if array_init:
        shape = np.shape(init)
        if len(shape) != 2 or shape[0] != n_clusters:
            raise ValueError(
                f"init array has shape {shape}, expected (n_clusters={n_clusters}, n_features)"
            )
        if n_init != 1:
            # scikit-learn would warn and run once; cuML would repeat the same start.
            raise ValueError(f"n_init={n_init} must be 1 when init is an array of centres")


def _to_host(array: Any) -> np.ndarray:
    """A NumPy array from a NumPy, CuPy, pandas or cuDF array (no copy for NumPy)."""
    if isinstance(array, np.ndarray):
        return array
    if hasattr(array, "to_numpy"):  # pandas / cuDF series and frames
        return np.asarray(array.to_numpy())
    if hasattr(array, "__cuda_array_interface__") and hasattr(array, "get"):
        # CuPy refuses implicit conversion (np.asarray raises); .get() is the explicit copy.
        return array.get()
    return np.asarray(array)


# --------------------------------------------------------------------------- selection


def probe_gpu() -> tuple[bool, str, dict[str, str]]:
    """Whether the GPU path can run here, why (not), and the GPU package versions.

    The GPU is usable when CuPy imports and sees at least one CUDA device and cuDF and cuML
    import. Nothing is raised: every failure becomes the reason string.
    """
    versions: dict[str, str] = {}
    cupy, problem = _import("cupy")
    if cupy is None:
        return False, problem, versions
    versions["cupy"] = str(getattr(cupy, "__version__", "?"))
    try:
        count = int(cupy.cuda.runtime.getDeviceCount())
    except Exception as exc:  # CUDA driver missing or too old, no device nodes, ...
        return False, f"no CUDA device visible ({_one_line(exc)})", versions
    if count < 1:
        return False, "no CUDA device visible", versions
    for name in GPU_PACKAGES[1:]:
        module, problem = _import(name)
        if module is None:
            return False, problem, versions
        versions[name] = str(getattr(module, "__version__", "?"))
    return True, f"CUDA device visible: {_device_name(cupy)}", versions


def select_backend(device: str) -> Backend:
    """Pick the backend for ``--device auto|cpu|gpu``.

    Parameters
    ----------
    device
        ``"cpu"``: always the CPU. ``"gpu"``: the GPU, or an error. ``"auto"``: the GPU when
        CuPy sees a CUDA device and cuDF and cuML import, else the CPU with a logged reason.

    Returns
    -------
    Backend
        The chosen backend, with the reason for the choice.

    Raises
    ------
    UsageError
        For an unknown ``device``, or ``gpu`` without a usable GPU.
    """
    if device not in DEVICES:
        raise UsageError(f"--device={device!r} must be one of {', '.join(DEVICES)}")
    if device == "cpu":
        return _cpu_backend("requested with --device cpu")
    usable, reason, versions = probe_gpu()
    if usable:
        backend = _gpu_backend(reason, versions)
        log.info("device %s: using the GPU (%s; XGBoost on %s)", device, reason,
                 backend.xgboost_device)
        return backend
    if device == "gpu":
        raise UsageError(
            f"--device=gpu: no usable GPU ({reason}): use --device cpu or auto, or "
            f"{GPU_INSTALL_HINT}"
        )
    log.info("device auto: using the CPU (%s)", reason)
    return _cpu_backend(reason)


def _cpu_backend(reason: str) -> Backend:
    import pandas

    return Backend("cpu", np, reason, xdf=pandas, xgboost_device="cpu")


def _gpu_backend(reason: str, versions: dict[str, str]) -> Backend:
    cupy = importlib.import_module("cupy")
    cudf = importlib.import_module("cudf")
    xgb_device = "cuda" if _xgboost_has_cuda() else "cpu"
    if xgb_device == "cpu":
        reason += "; XGBoost was built without CUDA, so the explanation runs on the CPU"
    return Backend("gpu", cupy, reason, xdf=cudf, xgboost_device=xgb_device,
                   versions=versions)


def _xgboost_has_cuda() -> bool:
    try:
        import xgboost

        return bool(xgboost.build_info().get("USE_CUDA", False))
    except Exception:  # an XGBoost without build_info: let it try CUDA and fall back itself
        return True


def _import(name: str) -> tuple[ModuleType | None, str]:
    """Import ``name``; on failure ``None`` and the reason in words."""
    try:
        return importlib.import_module(name), ""
    except ModuleNotFoundError as exc:
        if exc.name is not None and exc.name.split(".")[0] != name:
            # the package is there but one of its own dependencies is not
            return None, f"{name} failed to import ({_one_line(exc)})"
        return None, f"{name} not installed"
    except Exception as exc:  # e.g. a CUDA library missing when the package loads
        return None, f"{name} failed to import ({_one_line(exc)})"


def _device_name(cupy: Any) -> str:
    try:
        name = cupy.cuda.runtime.getDeviceProperties(0)["name"]
        return name.decode() if isinstance(name, bytes) else str(name)
    except Exception:
        return "device 0"


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
