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
* ``stage_devices``: where each pipeline stage runs, for the run summary;
* ``dask_kmeans_refit`` / ``every_worker_has_gpu``: cuML's multi-GPU k-means refit on a Dask
  cluster of GPU workers, or :class:`DaskGPURefitUnavailable` for the caller's fallback.

The GPU backend comes in two kinds: with RAPIDS (CuPy, cuDF and cuML: every estimator on the
GPU) and with CuPy alone (``estimators == "scikit-learn"``: the ``xp`` numerics and XGBoost on
the GPU, k-means and PCA by scikit-learn on the host), chosen by ``--device auto`` when CuPy
sees a device but cuDF or cuML does not import.

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
# profiling, the pandas feature preparation, writing) always run on the CPU; "pca" and
# "kmeans" run where the estimators do (cuML on the GPU, scikit-learn on the host), "xp" where
# the arrays are, "xgboost" on ``xgboost_device``. The search fits k-means and scores the
# silhouettes and assignments on ``xp``.
STAGE_COMPONENTS: Final[Mapping[str, tuple[str, ...]]] = {
    "read": ("host",),
    "profile": ("host",),
    "features": ("host",),
    "reduce": ("pca",),
    "search": ("kmeans", "xp"),
    "stability": ("kmeans",),
    "fit_all_rows": ("kmeans",),
    "assign": ("xp",),
    "explain": ("xgboost",),
    "write": ("host",),
    "report": ("host",),
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
                # _to_host: on a CuPy-only GPU backend the caller's rows are on the device.
                self.estimator = KMeans(**self.params).fit(_to_host(x))
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
        # labels_ is an xp array on both devices (a host-to-device copy on a CuPy-only backend)
        self.labels_ = (self.estimator.labels_ if self.device == "gpu" or self._xp is np
                        else self._xp.asarray(self.estimator.labels_))
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

            self.estimator = PCA(**self.params).fit(_to_host(x))
        else:
            cuml_decomposition = importlib.import_module("cuml.decomposition")
            self.estimator = cuml_decomposition.PCA(**self.params).fit(self._xp.asarray(x))
        self.mean_ = np.asarray(_to_host(self.estimator.mean_))
        self.components_ = np.asarray(_to_host(self.estimator.components_))
        self.explained_variance_ratio_ = np.asarray(
            _to_host(self.estimator.explained_variance_ratio_)
        )
        return self


# --------------------------------------------------------------------------- Dask refit


class DaskGPURefitUnavailable(RuntimeError):
    """cuML's multi-GPU k-means refit cannot run (or failed) on this Dask cluster.

    Raised by :func:`dask_kmeans_refit` with the reason in one line; the caller logs it and
    refits with its Dask Lloyd reduction instead. Not a user error: the run goes on.
    """


# cuml.dask.cluster.KMeans(client=..., **kwargs) passes its keyword arguments on to
# cuml.cluster.KMeans on every worker; ours are the same keywords as the single-GPU refit
# (KMEANS_PARAMETERS, array init) plus the client. tol is absolute there too (cuVS), so the
# caller passes it already scaled by the mean column variance, as the Lloyd reduction uses it.
DASK_KMEANS_KEYWORDS: Final = ("n_clusters", "init", "n_init", "random_state", "tol",
                               "max_iter", "output_type", "client")


def _worker_has_gpu() -> bool:
    """On a Dask worker: CuPy sees a CUDA device and cuML imports (never raises)."""
    try:
        cupy = importlib.import_module("cupy")
        if int(cupy.cuda.runtime.getDeviceCount()) < 1:
            return False
        importlib.import_module("cuml")
    except Exception:
        return False
    return True


def every_worker_has_gpu(client: Any) -> bool:
    """Whether every worker of the Dask ``client``'s cluster has a CUDA device and cuML.

    Asks each worker (``client.run``); ``False`` for a cluster without workers and when a
    worker cannot be asked. A CPU worker among GPU ones makes it ``False``: cuML's multi-GPU
    k-means puts a partition on every worker.
    """
    try:
        answers = client.run(_worker_has_gpu)
    except Exception:
        return False
    return bool(answers) and all(bool(answer) for answer in answers.values())


def dask_kmeans_refit(
    x: Any, centroids: np.ndarray, *, tol: float, seed: int, client: Any, max_iter: int = 300,
) -> tuple[np.ndarray, dict[str, Any]]:
    """cuML's multi-GPU k-means (``cuml.dask.cluster.KMeans``) on every row, warm-started.

    The multi-GPU counterpart of the Dask Lloyd refit: one start from ``centroids``, the same
    stopping rule (summed squared centre shift <= ``tol``, at most ``max_iter`` iterations).

    Parameters
    ----------
    x
        (n, d) Dask array of the prepared rows (host blocks; they are moved to CuPy on the
        workers).
    centroids
        (k, d) starting centres (from the k search on a sample).
    tol
        Absolute tolerance on the summed squared centre shift: ``1e-4`` x the mean column
        variance, as the caller computes it for its Lloyd refit (cuML's ``tol`` is absolute).
    seed
        ``random_state`` (unused by a warm start, passed for reproducibility).
    client
        The run's ``distributed.Client``.
    max_iter
        Most Lloyd iterations.

    Returns
    -------
    tuple
        The centres (float32, k x d, host) and facts for the summary: ``engine``
        (``"cuml.dask"``), ``iterations``, ``inertia`` (``None`` where cuML does not say),
        ``tolerance``.

    Raises
    ------
    DaskGPURefitUnavailable
        When a worker has no GPU or no cuML, ``cuml.dask`` does not import here, or the fit
        fails; the message is one line.
    """
    if not every_worker_has_gpu(client):
        raise DaskGPURefitUnavailable("not every Dask worker has a CUDA device and cuML")
    try:
        cupy = importlib.import_module("cupy")
        dask_cluster = importlib.import_module("cuml.dask.cluster")
    except Exception as exc:
        raise DaskGPURefitUnavailable(f"cuml.dask failed to import ({_one_line(exc)})") from exc
    try:
        start = cupy.asarray(np.asarray(centroids, dtype=np.float32))
        gpu_x = x.astype(np.float32).map_blocks(cupy.asarray, dtype=np.float32,
                                                 meta=cupy.empty((0, 0), dtype=np.float32))
        model = dask_cluster.KMeans(
            n_clusters=int(centroids.shape[0]), init=start, n_init=1, random_state=int(seed),
            tol=float(tol), max_iter=int(max_iter), output_type="cupy", client=client,
        ).fit(gpu_x)
        found = _to_host(model.cluster_centers_).astype(np.float32)
    except Exception as exc:  # a worker error, out of memory, a version mismatch, ...
        raise DaskGPURefitUnavailable(f"cuml.dask KMeans failed ({_one_line(exc)})") from exc
    iterations = getattr(model, "n_iter_", None)
    inertia = getattr(model, "inertia_", None)
    return found, {
        "done": True, "engine": "cuml.dask",
        "iterations": int(iterations) if iterations is not None else None,
        "inertia": float(inertia) if inertia is not None else None,
        "tolerance": float(tol),
    }


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
    estimators
        Who fits k-means and PCA: ``"cuml"`` (the GPU with RAPIDS) or ``"scikit-learn"`` (the
        CPU, and a GPU backend with CuPy but without cuDF/cuML).
    """

    name: str
    xp: ModuleType
    reason: str
    xdf: ModuleType | None = None
    xgboost_device: str = "cpu"
    versions: Mapping[str, str] = field(default_factory=dict)
    estimators: str = "scikit-learn"

    @property
    def is_gpu(self) -> bool:
        """Whether this backend runs on the GPU (its ``xp`` is CuPy)."""
        return self.name == "gpu"

    @property
    def uses_cuml(self) -> bool:
        """Whether k-means and PCA run on cuML (a GPU backend with RAPIDS)."""
        return self.estimators == "cuml"

    @property
    def frames_on_device(self) -> bool:
        """Whether input frames live on the GPU (cuDF, with RAPIDS): the feature preparation
        then builds the matrix there (:meth:`frame_from_arrow`)."""
        return self.uses_cuml

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
        if not self.uses_cuml:
            cpu_init: Any = (KMEANS_INIT_VALUES[init][0] if isinstance(init, str)
                             else _to_host(init) if array_init else init)
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
        if not self.uses_cuml:
            return PCAModel("cpu", {"n_components": int(n_components), "random_state": seed},
                            self.xp)
        params = {"n_components": int(n_components), "svd_solver": "full",
                  "output_type": "numpy"}
        return PCAModel("gpu", params, self.xp)

    # --- frames

    def frame_from_arrow(self, table: Any) -> Any:
        """A pandas frame (CPU, CuPy-only GPU) or a cuDF frame (GPU with RAPIDS) of ``table``."""
        if self.frames_on_device:
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
        components = self.component_devices(explain_device)
        devices: dict[str, str] = {}
        for stage, used in STAGE_COMPONENTS.items():
            found = {components[name] for name in used}
            # A stage that uses both (the search on a CuPy-only backend: scikit-learn k-means,
            # silhouettes on CuPy) is "gpu+cpu"; component_devices() says which part is where.
            devices[stage] = found.pop() if len(found) == 1 else "gpu+cpu"
        return devices

    def component_devices(self, explain_device: str | None = None) -> dict[str, str]:
        """Where each part of the backend runs: ``host``, ``pca``, ``kmeans``, ``xp`` and
        ``xgboost`` (``"cpu"`` or ``"gpu"``); see :meth:`stage_devices`."""
        xgb_device = explain_device if explain_device is not None else self.xgboost_device
        estimators = "gpu" if self.uses_cuml else "cpu"
        return {"host": "cpu", "pca": estimators, "kmeans": estimators, "xp": self.name,
                "xgboost": "gpu" if xgb_device.startswith("cuda") else "cpu"}

    def describe(self) -> dict[str, Any]:
        """JSON-able description for the run summary."""
        return {
            "used": self.name,
            "reason": self.reason,
            "xgboost_device": self.xgboost_device,
            "estimators": self.estimators,
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


@dataclass(frozen=True)
class GpuProbe:
    """What the device probe found (nothing is raised: every failure becomes a reason).

    Attributes
    ----------
    cupy_ok
        CuPy imports and sees at least one CUDA device.
    rapids_ok
        ``cupy_ok``, and cuDF and cuML import too: every estimator can run on the GPU.
    reason
        Why the GPU is (not) usable: ``CUDA device visible: <name>`` when ``rapids_ok``, else
        the first problem (``cupy not installed``, ``no CUDA device visible (...)``,
        ``cudf not installed``, ...).
    device
        The CUDA device's name (empty without one).
    versions
        Versions of the GPU packages found.
    """

    cupy_ok: bool
    rapids_ok: bool
    reason: str
    device: str = ""
    versions: Mapping[str, str] = field(default_factory=dict)


def probe_devices() -> GpuProbe:
    """Probe CuPy and its CUDA device, then cuDF and cuML (in :data:`GPU_PACKAGES` order)."""
    versions: dict[str, str] = {}
    cupy, problem = _import("cupy")
    if cupy is None:
        return GpuProbe(False, False, problem, versions=versions)
    versions["cupy"] = str(getattr(cupy, "__version__", "?"))
    try:
        count = int(cupy.cuda.runtime.getDeviceCount())
    except Exception as exc:  # CUDA driver missing or too old, no device nodes, ...
        return GpuProbe(False, False, f"no CUDA device visible ({_one_line(exc)})",
                        versions=versions)
    if count < 1:
        return GpuProbe(False, False, "no CUDA device visible", versions=versions)
    device = _device_name(cupy)
    for name in GPU_PACKAGES[1:]:
        module, problem = _import(name)
        if module is None:
            return GpuProbe(True, False, problem, device, versions)
        versions[name] = str(getattr(module, "__version__", "?"))
    return GpuProbe(True, True, f"CUDA device visible: {device}", device, versions)


def probe_gpu() -> tuple[bool, str, dict[str, str]]:
    """Whether the whole GPU path (CuPy with a device, cuDF, cuML) can run here, why (not),
    and the GPU package versions. Nothing is raised: every failure becomes the reason."""
    found = probe_devices()
    return found.rapids_ok, found.reason, dict(found.versions)


def select_backend(device: str) -> Backend:
    """Pick the backend for ``--device auto|cpu|gpu``.

    Parameters
    ----------
    device
        ``"cpu"``: always the CPU. ``"gpu"``: the GPU with RAPIDS (CuPy, cuDF, cuML), or an
        error. ``"auto"``: the GPU with RAPIDS when it is usable; else, when CuPy sees a CUDA
        device, the GPU for the ``xp`` numerics and XGBoost with scikit-learn's k-means and
        PCA (``estimators="scikit-learn"``); else the CPU. The reason is logged.

    Returns
    -------
    Backend
        The chosen backend, with the reason for the choice.

    Raises
    ------
    UsageError
        For an unknown ``device``, or ``gpu`` without a usable GPU and RAPIDS.
    """
    if device not in DEVICES:
        raise UsageError(f"--device={device!r} must be one of {', '.join(DEVICES)}")
    if device == "cpu":
        return _cpu_backend("requested with --device cpu")
    found = probe_devices()
    if found.rapids_ok:
        backend = _gpu_backend(found.reason, dict(found.versions), "cuml")
        log.info("device %s: using the GPU (%s; XGBoost on %s)", device, backend.reason,
                 backend.xgboost_device)
        return backend
    if device == "gpu" and found.cupy_ok:
        raise UsageError(
            f"--device=gpu: the GPU is visible ({found.device}) but {found.reason}, so k-means "
            "and PCA cannot run on it: install autoseg[gpu], or use --device auto (CuPy and "
            "XGBoost on the GPU, k-means and PCA on the CPU) or --device cpu"
        )
    if device == "gpu":
        raise UsageError(
            f"--device=gpu: no usable GPU ({found.reason}): use --device cpu or auto, or "
            f"{GPU_INSTALL_HINT}"
        )
    if found.cupy_ok:
        reason = (f"CUDA device visible: {found.device}; {found.reason}, so k-means and PCA "
                  "run on the CPU (scikit-learn)")
        backend = _gpu_backend(reason, dict(found.versions), "scikit-learn")
        log.info("device auto: using the GPU for CuPy and XGBoost (%s; XGBoost on %s)",
                 backend.reason, backend.xgboost_device)
        return backend
    log.info("device auto: using the CPU (%s)", found.reason)
    return _cpu_backend(found.reason)


def _cpu_backend(reason: str) -> Backend:
    import pandas

    return Backend("cpu", np, reason, xdf=pandas, xgboost_device="cpu")


def _gpu_backend(reason: str, versions: dict[str, str], estimators: str) -> Backend:
    cupy = importlib.import_module("cupy")
    # cuDF frames come with cuML; a CuPy-only backend reads into pandas.
    xdf = importlib.import_module("cudf" if estimators == "cuml" else "pandas")
    xgb_device = "cuda" if _xgboost_has_cuda() else "cpu"
    if xgb_device == "cpu":
        reason += "; XGBoost was built without CUDA, so the explanation runs on the CPU"
    return Backend("gpu", cupy, reason, xdf=xdf, xgboost_device=xgb_device,
                   versions=versions, estimators=estimators)


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
