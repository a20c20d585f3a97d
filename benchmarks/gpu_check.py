"""GPU check: the shared numerics on CuPy and XGBoost on CUDA against the CPU path, then timings.

Meant for a CUDA machine with CuPy and XGBoost installed. cuDF and cuML are optional: without
them the cuML checks are SKIPPED (not failures) and the end-to-end run uses ``--device auto``,
which then runs CuPy and XGBoost on the GPU and scikit-learn's k-means and PCA on the CPU::

    python benchmarks/gpu_check.py            # checks, then timings at 1M rows
    python benchmarks/gpu_check.py --quick    # checks, then timings at 100k rows

Checks (each PASS or FAIL with the reason; any FAIL makes the exit code 1):

* ``cupy_device``: CuPy imports and sees a CUDA device;
* ``silhouette_exact`` / ``silhouette_sampled``: ``silhouette_scores(..., xp=cupy)`` against
  the NumPy result, every score, standard error and per-cluster mean within 1e-4;
* ``nearest_centroid``: labels on CuPy identical to NumPy's, except rows whose two nearest
  centroids are tied within float32 rounding (counted and reported);
* ``xgboost_cuda``: XGBoost trains with ``device="cuda"`` (and does not fall back to the CPU);
* ``explain_cuda_vs_cpu``: ``explain_clusters(device="cuda")`` against ``device="cpu"``:
  fidelity within 0.02, the same top-3 features by importance, the same top feature per cluster;
* ``pred_contribs_cuda_vs_cpu``: TreeSHAP of one booster on CUDA against the CPU, within 1e-3;
* ``cuml_kmeans_vs_sklearn`` (cuML installed): ``Backend.kmeans`` on cuML against
  scikit-learn's ``KMeans`` from the same initial centroids: inertia within 1e-3 relative;
* ``cuml_silhouette_vs_ours`` (cuML installed): ``cuml.metrics.cluster.silhouette_score``
  against ``autoseg.silhouette.silhouette_scores`` (exact) within 1e-4;
* ``end_to_end_run``: ``autoseg run`` on 1M rows (100k with ``--quick``) with ``--device gpu``
  when cuML is installed, else ``--device auto``; passes when it exits 0 on the GPU backend and
  ``stages_device`` says the stages that should run on the GPU did; records the stage timings.
  Not run with ``--skip-timings``.

Timings (GPU against the CPU path, each run in its own process so a run that exceeds the time
budget is stopped; runs that would start after the budget is spent are skipped): the sampled
silhouette (20k points scored against every row, k = 2..9), nearest-centroid assignment
(k = 9), and the explanation, at 1M rows (100k with ``--quick``).

It prints a table and writes JSON to ``$OUT/gpu_check.json`` when ``OUT`` is set, else to
``benchmarks/results/gpu_check.json``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(ROOT / "src") not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(ROOT / "src"))

SEED = 0
DIMENSIONS = 16
K_PLANTED = 9
SILHOUETTE_TOL = 1e-4
FIDELITY_TOL = 0.02
CONTRIBS_TOL = 1e-3
TIMED_SAMPLE_POINTS = 20_000
DEFAULT_ROWS = 1_000_000
QUICK_ROWS = 100_000
DEFAULT_BUDGET_SECONDS = 300.0
KMEANS_INERTIA_RTOL = 1e-3
END_TO_END_TIMEOUT = 420.0


@dataclass
class Check:
    """One correctness check's outcome."""

    name: str
    status: str  # PASS, FAIL or SKIPPED (cuML not installed; not a failure)
    detail: str
    seconds: float
    values: dict[str, Any] = field(default_factory=dict)
    traceback: str | None = None


@dataclass
class Timing:
    """One timed run."""

    case: str
    device: str
    rows: int
    status: str  # OK, ERROR, STOPPED (ran past the budget) or SKIPPED
    seconds: float | None = None
    detail: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


class CheckFailed(Exception):
    """A check ran but its result is out of tolerance."""


# --------------------------------------------------------------------------- environment


def _cupy() -> tuple[ModuleType | None, str]:
    """CuPy when it imports and sees a device, else ``None`` and why not."""
    try:
        cupy = importlib.import_module("cupy")
    except ModuleNotFoundError:
        return None, "cupy not installed"
    except Exception as exc:
        return None, f"cupy failed to import ({_one_line(exc)})"
    try:
        count = int(cupy.cuda.runtime.getDeviceCount())
    except Exception as exc:
        return None, f"no CUDA device visible ({_one_line(exc)})"
    if count < 1:
        return None, "no CUDA device visible"
    return cupy, ""


def _xgboost_on_cuda() -> tuple[bool, str]:
    """Whether XGBoost really trains on CUDA here (it falls back to the CPU with a warning)."""
    try:
        import xgboost as xgb
    except Exception as exc:
        return False, f"xgboost failed to import ({_one_line(exc)})"
    if not xgb.build_info().get("USE_CUDA", False):
        return False, "XGBoost was built without CUDA"
    rng = np.random.default_rng(SEED)
    data = xgb.DMatrix(rng.normal(size=(256, 4)), label=rng.integers(0, 2, 256))
    with xgb.config_context(verbosity=0):
        booster = xgb.train({"device": "cuda", "tree_method": "hist",
                             "objective": "binary:logistic"}, data, num_boost_round=2)
    device = _booster_device(booster)
    if device != "cuda":
        return False, f"XGBoost found no CUDA device (it ran on {device!r})"
    return True, ""


def _booster_device(booster: Any) -> str:
    config = json.loads(booster.save_config())
    return str(config["learner"]["generic_param"].get("device", "cpu")).split(":", 1)[0]


def _environment(cupy: ModuleType | None) -> dict[str, Any]:
    env: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "host": platform.node(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "numpy": np.__version__,
    }
    for name in ("xgboost", "sklearn", "pandas"):
        try:
            env[name] = importlib.import_module(name).__version__
        except Exception as exc:
            env[name] = f"unavailable ({_one_line(exc)})"
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                                capture_output=True, text=True, timeout=10)
        env["git_commit"] = commit.stdout.strip() or None
    except Exception:
        env["git_commit"] = None
    if cupy is not None:
        try:
            props = cupy.cuda.runtime.getDeviceProperties(0)
            name = props["name"]
            env["cupy"] = cupy.__version__
            env["gpu"] = name.decode() if isinstance(name, bytes) else str(name)
            env["gpu_memory_gib"] = round(props["totalGlobalMem"] / 2**30, 1)
            env["cuda_runtime"] = cupy.cuda.runtime.runtimeGetVersion()
            env["cuda_driver"] = cupy.cuda.runtime.driverGetVersion()
        except Exception as exc:
            env["gpu"] = f"unknown ({_one_line(exc)})"
    return env


# --------------------------------------------------------------------------- data


def _blobs(rows: int, seed: int = SEED) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rows, DIMENSIONS) float32 points around K_PLANTED centres, their labels, the centres."""
    rng = np.random.default_rng(seed)
    centres = (rng.normal(size=(K_PLANTED, DIMENSIONS)) * 4.0).astype(np.float32)
    labels = rng.integers(0, K_PLANTED, size=rows)
    x = centres[labels] + rng.normal(size=(rows, DIMENSIONS)).astype(np.float32) * 1.5
    return x.astype(np.float32), labels.astype(np.int64), centres


def _labelings(x: np.ndarray, centres: np.ndarray, ks: range) -> dict[int, np.ndarray]:
    """One labelling per k: nearest of the first k centres (cheap stand-ins for k-means fits)."""
    return {k: _nearest_numpy(x, centres[:k]).astype(np.int64) for k in ks}


def _nearest_numpy(x: np.ndarray, centres: np.ndarray) -> np.ndarray:
    from autoseg.search import nearest_centroid

    return nearest_centroid(x, centres)


def _nearest_centroid_function(xp: Any) -> tuple[Callable[[Any, Any], Any], str]:
    """The pipeline's assignment, ``autoseg.search.nearest_centroid_with_distance`` on ``xp``.

    It returns host labels (and distances) whatever ``xp`` is, as the pipeline's ``_assign``
    uses it; the labels are what is compared and timed.
    """
    from autoseg import search

    return ((lambda x, c: search.nearest_centroid_with_distance(x, c, xp=xp)[0]),
            "autoseg.search.nearest_centroid_with_distance")


def _explain_frame(rows: int, seed: int = SEED) -> tuple[Any, np.ndarray]:
    """Readable features (numbers, a category, missing values) and 5 planted clusters."""
    import pandas as pd

    rng = np.random.default_rng(seed + 1)
    k = 5
    labels = rng.integers(0, k, size=rows)
    means = rng.normal(size=(k, 6)) * 2.0
    numbers = means[labels] + rng.normal(size=(rows, 6))
    frame = pd.DataFrame(numbers, columns=[f"num_{i}" for i in range(6)])
    frame.loc[rng.random(rows) < 0.05, "num_5"] = np.nan
    channel = np.where(rng.random(rows) < 0.7, labels % 3, rng.integers(0, 3, size=rows))
    frame["channel"] = pd.Categorical(np.array(["web", "app", "store"])[channel])
    frame["noise"] = rng.normal(size=rows)
    return frame, labels.astype(np.int64)


# --------------------------------------------------------------------------- checks


def _check_silhouette(cupy: ModuleType, exact: bool) -> dict[str, Any]:
    from autoseg.silhouette import silhouette_scores

    rows = 4_000 if exact else 60_000
    x, _, centres = _blobs(rows, seed=1)
    labelings = _labelings(x, centres, range(2, 8))
    settings: dict[str, Any] = (
        {} if exact else {"exact_max_rows": 5_000, "sample_size": 3_000, "seed": 3}
    )
    on_cpu = silhouette_scores(x, labelings, **settings)
    on_gpu = silhouette_scores(cupy.asarray(x), labelings, xp=cupy, **settings)
    worst = 0.0
    per_k = {}
    for k in labelings:
        cpu, gpu = on_cpu[k], on_gpu[k]
        if gpu.exact != cpu.exact or gpu.n_points != cpu.n_points:
            raise CheckFailed(f"k={k}: exact/n_points differ ({gpu.exact}/{gpu.n_points} on "
                              f"GPU vs {cpu.exact}/{cpu.n_points} on CPU)")
        diffs = [abs(gpu.score - cpu.score), abs(gpu.stderr - cpu.stderr)]
        diffs += [abs(a - b) for a, b in zip(gpu.per_cluster, cpu.per_cluster, strict=True)]
        per_k[k] = {"cpu": cpu.score, "gpu": gpu.score, "max_abs_diff": max(diffs)}
        worst = max(worst, max(diffs))
    values = {"rows": rows, "max_abs_diff": worst, "per_k": per_k}
    if worst > SILHOUETTE_TOL:
        raise CheckFailed(f"max |GPU - CPU| = {worst:.2e} > {SILHOUETTE_TOL:g}", values)
    return {"detail": f"{rows} rows, k=2..7: max |GPU - CPU| = {worst:.1e}", **values}


def _check_nearest_centroid(cupy: ModuleType) -> dict[str, Any]:
    rows = 200_000
    x, _, centres = _blobs(rows, seed=2)
    # centres of a real fit are means of points, not the planted ones: move them a little
    centres = centres + np.random.default_rng(5).normal(size=centres.shape).astype(np.float32)
    gpu_assign, source = _nearest_centroid_function(cupy)
    on_cpu = np.asarray(_nearest_numpy(x, centres))
    on_gpu = cupy.asnumpy(gpu_assign(cupy.asarray(x), cupy.asarray(centres)))
    differ = np.flatnonzero(on_cpu != on_gpu)
    ties = 0
    if differ.size:
        # exact squared distances in float64: a mismatch is a tie when both picks are equally
        # near within float32 rounding of the GEMM form
        xd = x[differ].astype(np.float64)
        cd = centres.astype(np.float64)
        d_cpu = ((xd - cd[on_cpu[differ]]) ** 2).sum(axis=1)
        d_gpu = ((xd - cd[on_gpu[differ]]) ** 2).sum(axis=1)
        scale = (xd * xd).sum(axis=1) + (cd * cd).sum(axis=1).max()
        ties = int((np.abs(d_cpu - d_gpu) <= 1e-5 * scale).sum())
    values = {"rows": rows, "k": K_PLANTED, "source": source,
              "mismatches": int(differ.size), "ties": ties}
    if differ.size - ties:
        raise CheckFailed(f"{differ.size - ties} of {rows} labels differ (not ties)", values)
    note = f", {ties} float32 ties" if ties else ""
    return {"detail": f"{rows} rows, k={K_PLANTED}: identical labels{note} ({source})", **values}


def _check_explain() -> tuple[dict[str, Any], Any, Any]:
    from autoseg.explain import explain_clusters

    frame, labels = _explain_frame(50_000)
    on_cpu = explain_clusters(frame, labels, seed=SEED, device="cpu")
    on_gpu = explain_clusters(frame, labels, seed=SEED, device="cuda")
    if on_gpu.device != "cuda":
        raise CheckFailed(f"device='cuda' was asked for but XGBoost ran on {on_gpu.device!r}")
    top_cpu = on_cpu.feature_importance["feature"].head(3).tolist()
    top_gpu = on_gpu.feature_importance["feature"].head(3).tolist()
    firsts = {}
    for explanation, key in ((on_cpu, "cpu"), (on_gpu, "gpu")):
        table = explanation.shap_by_cluster
        firsts[key] = table[table["rank"] == 1].set_index("cluster_id")["feature"].to_dict()
    values = {
        "rows": len(frame), "fidelity_cpu": on_cpu.fidelity, "fidelity_gpu": on_gpu.fidelity,
        "top3_cpu": top_cpu, "top3_gpu": top_gpu,
        "top_shap_feature_per_cluster_cpu": firsts["cpu"],
        "top_shap_feature_per_cluster_gpu": firsts["gpu"],
        "rounds_cpu": on_cpu.n_rounds, "rounds_gpu": on_gpu.n_rounds,
    }
    problems = []
    if abs(on_cpu.fidelity - on_gpu.fidelity) > FIDELITY_TOL:
        problems.append(f"fidelity {on_gpu.fidelity:.4f} on GPU vs {on_cpu.fidelity:.4f} on CPU")
    if set(top_cpu) != set(top_gpu):
        problems.append(f"top-3 features {top_gpu} on GPU vs {top_cpu} on CPU")
    if firsts["cpu"] != firsts["gpu"]:
        problems.append("top SHAP feature of some cluster differs")
    if problems:
        raise CheckFailed("; ".join(problems), values)
    detail = (f"{len(frame)} rows: fidelity {on_gpu.fidelity:.4f} (GPU) vs "
              f"{on_cpu.fidelity:.4f} (CPU); top-3 {top_gpu}")
    return {"detail": detail, **values}, on_cpu, frame


def _check_pred_contribs(explanation: Any, frame: Any) -> dict[str, Any]:
    import xgboost as xgb

    booster = explanation.booster.copy()
    rows = frame.iloc[explanation.shap_rows]
    data = xgb.DMatrix(rows, enable_categorical=True, feature_names=booster.feature_names)
    with xgb.config_context(verbosity=0):  # host data on a CUDA booster warns; it is intended
        booster.set_param({"device": "cuda"})
        on_gpu = booster.predict(data, pred_contribs=True)
        ran_on = _booster_device(booster)
        booster.set_param({"device": "cpu"})
        on_cpu = booster.predict(data, pred_contribs=True)
    if ran_on != "cuda":
        raise CheckFailed(f"the booster ran on {ran_on!r}, not cuda")
    worst = float(np.abs(on_gpu - on_cpu).max())
    values = {"rows": len(rows), "shape": list(on_cpu.shape), "max_abs_diff": worst}
    if worst > CONTRIBS_TOL:
        raise CheckFailed(f"max |GPU - CPU| = {worst:.2e} > {CONTRIBS_TOL:g}", values)
    return {"detail": f"{len(rows)} rows, shape {on_cpu.shape}: max |GPU - CPU| = {worst:.1e}",
            **values}


def _cuml() -> tuple[ModuleType | None, str]:
    """cuML when it imports (it needs cuDF's libraries too), else ``None`` and why not."""
    try:
        importlib.import_module("cudf")
        return importlib.import_module("cuml"), ""
    except ModuleNotFoundError as exc:
        return None, f"{exc.name} not installed"
    except Exception as exc:
        return None, f"cuml failed to import ({_one_line(exc)})"


def _check_cuml_kmeans() -> dict[str, Any]:
    """Our cuML k-means (Backend.kmeans: scaled tol, array init) against scikit-learn's."""
    from sklearn.cluster import KMeans

    from autoseg.backend import select_backend

    x, _, centres = _blobs(200_000, seed=6)
    start = (centres + np.random.default_rng(7).normal(size=centres.shape)).astype(np.float32)
    backend = select_backend("gpu")
    ours = backend.kmeans(K_PLANTED, init=start, n_init=1, seed=SEED).fit(backend.to_device(x))
    theirs = KMeans(n_clusters=K_PLANTED, init=start, n_init=1, random_state=SEED,
                    algorithm="lloyd").fit(x)

    def inertia(c: np.ndarray) -> float:  # the same float64 host formula for both
        labels = _nearest_numpy(x, c.astype(np.float32))
        return float(((x.astype(np.float64) - c[labels].astype(np.float64)) ** 2).sum())

    gpu, cpu = inertia(ours.cluster_centers_), inertia(theirs.cluster_centers_)
    relative = abs(gpu - cpu) / cpu
    values = {"rows": len(x), "k": K_PLANTED, "inertia_cuml": gpu, "inertia_sklearn": cpu,
              "inertia_cuml_reported": ours.inertia_, "relative_diff": relative,
              "iterations_cuml": ours.n_iter_, "iterations_sklearn": int(theirs.n_iter_)}
    if relative > KMEANS_INERTIA_RTOL:
        raise CheckFailed(f"inertia differs by {relative:.2e} relative > {KMEANS_INERTIA_RTOL:g}",
                          values)
    return {"detail": f"{len(x)} rows, k={K_PLANTED}, same start: inertia relative diff "
                      f"{relative:.1e}", **values}


def _check_cuml_silhouette(cupy: ModuleType) -> dict[str, Any]:
    """cuML's silhouette_score against ours (exact) on the same labels."""
    from cuml.metrics.cluster import silhouette_score

    from autoseg.silhouette import silhouette_scores

    x, _, centres = _blobs(4_000, seed=8)
    labelings = _labelings(x, centres, range(2, 7))
    ours = silhouette_scores(x, labelings)
    worst, per_k = 0.0, {}
    for k, labels in labelings.items():
        theirs = float(silhouette_score(cupy.asarray(x), cupy.asarray(labels)))
        per_k[k] = {"ours": ours[k].score, "cuml": theirs}
        worst = max(worst, abs(ours[k].score - theirs))
    values = {"rows": len(x), "per_k": per_k, "max_abs_diff": worst}
    if worst > SILHOUETTE_TOL:
        raise CheckFailed(f"max |cuML - ours| = {worst:.2e} > {SILHOUETTE_TOL:g}", values)
    return {"detail": f"{len(x)} rows, k=2..6: max |cuML - ours| = {worst:.1e}", **values}


# Stages that must run on the GPU in the end-to-end run, by estimators.
E2E_GPU_STAGES = {"cuml": ("reduce", "search", "fit_all_rows", "assign", "explain"),
                  "scikit-learn": ("assign", "explain")}


def _check_end_to_end(rows: int, with_cuml: bool, timeout: float) -> dict[str, Any]:
    """``autoseg run`` on ``rows`` rows in a child process; the summary's stage timings."""
    import tempfile

    import pandas as pd

    device = "gpu" if with_cuml else "auto"
    with tempfile.TemporaryDirectory(prefix="autoseg-e2e-") as tmp:
        work = Path(tmp)
        x, _, _ = _blobs(rows, seed=10)
        frame = pd.DataFrame(x, columns=[f"x{i}" for i in range(DIMENSIONS)])
        frame["channel"] = np.array(["web", "app", "store"])[np.arange(rows) % 3]
        frame.to_parquet(work / "blobs.parquet")
        command = [sys.executable, "-c", "from autoseg.cli import main; main()", "run",
                   "--input-table", str(work / "blobs.parquet"), "--output-table", "seg.blobs",
                   "--model-name", "blobs", "--store", f"duckdb:{work / 'e2e.duckdb'}",
                   "--output-dir", str(work / "out"), "--model-dir", str(work / "models"),
                   "--device", device]
        env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "PYTHONWARNINGS": "ignore"}
        started = time.monotonic()
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                                  env=env, cwd=work)
        except subprocess.TimeoutExpired as exc:
            raise CheckFailed(f"autoseg run --device {device} still running after "
                              f"{timeout:.0f}s", {"rows": rows}) from exc
        wall = time.monotonic() - started
        if done.returncode != 0:
            tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise CheckFailed(f"autoseg run --device {device} exited {done.returncode}: {tail}",
                              {"rows": rows, "stderr_tail": done.stderr[-3000:]})
        summary = json.loads((work / "out" / "summary.json").read_text())
    stages = summary.get("stages_device", {})
    estimators = summary["device"].get("estimators", "cuml" if with_cuml else "scikit-learn")
    values = {"rows": rows, "device_flag": device, "wall_seconds": round(wall, 2),
              "device": summary["device"], "stages_device": stages,
              "timings_seconds": summary.get("timings_seconds"),
              "chosen_k": summary.get("chosen_k")}
    if summary["device"]["used"] != "gpu":
        raise CheckFailed(f"ran on {summary['device']['used']!r}: "
                          f"{summary['device']['reason']}", values)
    off_gpu = [s for s in E2E_GPU_STAGES[estimators] if stages.get(s) not in ("gpu", "gpu+cpu")]
    if off_gpu:
        raise CheckFailed(f"stages not on the GPU: {off_gpu} ({stages})", values)
    timings = summary.get("timings_seconds") or {}
    slowest = ", ".join(f"{name} {seconds:.1f}s" for name, seconds in
                        sorted(timings.items(), key=lambda item: -item[1])[:4])
    return {"detail": f"--device {device}, {rows} rows, k={summary.get('chosen_k')}: "
                      f"{wall:.1f}s wall ({slowest})", **values}


def _run_check(name: str, run: Callable[[], dict[str, Any]], checks: list[Check]) -> None:
    started = time.perf_counter()
    try:
        result = run()
        detail = str(result.pop("detail", ""))
        checks.append(Check(name, "PASS", detail, time.perf_counter() - started, result))
    except CheckFailed as exc:
        values = exc.args[1] if len(exc.args) > 1 else {}
        checks.append(Check(name, "FAIL", str(exc.args[0]), time.perf_counter() - started,
                            values))
    except Exception as exc:
        checks.append(Check(name, "FAIL", _where(exc), time.perf_counter() - started,
                            traceback=traceback.format_exc()))


def _fail(name: str, reason: str, checks: list[Check]) -> None:
    checks.append(Check(name, "FAIL", reason, 0.0))


def run_checks(cupy: ModuleType | None, cupy_problem: str,
               cuml_problem: str = "cuml not installed") -> list[Check]:
    """Every correctness check, each recorded PASS, FAIL or SKIPPED (never raising).

    ``cuml_problem`` is empty when cuML imports; else the cuML checks are SKIPPED with it.
    """
    checks: list[Check] = []
    if cuml_problem:
        for name in ("cuml_kmeans_vs_sklearn", "cuml_silhouette_vs_ours"):
            checks.append(Check(name, "SKIPPED", cuml_problem, 0.0))
    elif cupy is None:
        for name in ("cuml_kmeans_vs_sklearn", "cuml_silhouette_vs_ours"):
            _fail(name, f"not run: {cupy_problem}", checks)
    else:
        _run_check("cuml_kmeans_vs_sklearn", _check_cuml_kmeans, checks)
        _run_check("cuml_silhouette_vs_ours", lambda: _check_cuml_silhouette(cupy), checks)
    if cupy is None:
        _fail("cupy_device", cupy_problem, checks)
        for name in ("silhouette_exact", "silhouette_sampled", "nearest_centroid"):
            _fail(name, f"not run: {cupy_problem}", checks)
    else:
        checks.append(Check("cupy_device", "PASS", "CuPy sees a CUDA device", 0.0))
        _run_check("silhouette_exact", lambda: _check_silhouette(cupy, exact=True), checks)
        _run_check("silhouette_sampled", lambda: _check_silhouette(cupy, exact=False), checks)
        _run_check("nearest_centroid", lambda: _check_nearest_centroid(cupy), checks)

    try:
        xgb_ok, xgb_problem = _xgboost_on_cuda()
    except Exception as exc:
        xgb_ok, xgb_problem = False, _where(exc)
    if not xgb_ok:
        _fail("xgboost_cuda", xgb_problem, checks)
        _fail("explain_cuda_vs_cpu", f"not run: {xgb_problem}", checks)
        _fail("pred_contribs_cuda_vs_cpu", f"not run: {xgb_problem}", checks)
        return checks
    checks.append(Check("xgboost_cuda", "PASS", "XGBoost trains on CUDA", 0.0))
    explained: dict[str, Any] = {}

    def explain() -> dict[str, Any]:
        result, explained["cpu"], explained["frame"] = _check_explain()
        return result

    _run_check("explain_cuda_vs_cpu", explain, checks)
    if "cpu" in explained:
        _run_check("pred_contribs_cuda_vs_cpu",
                   lambda: _check_pred_contribs(explained["cpu"], explained["frame"]), checks)
    else:
        _fail("pred_contribs_cuda_vs_cpu", "not run: the explanation check did not finish",
              checks)
    return checks


# --------------------------------------------------------------------------- timings

TIMING_CASES = ("silhouette_sampled", "nearest_centroid", "explain")


def _time_case(case: str, device: str, rows: int) -> dict[str, Any]:
    """Run one timed case in this process (the child side of --_time-case)."""
    cupy = importlib.import_module("cupy") if device == "gpu" and case != "explain" else None
    xp: Any = cupy if cupy is not None else np
    out: dict[str, Any] = {}

    def sync() -> None:
        if cupy is not None:
            cupy.cuda.Device().synchronize()

    if case == "explain":
        from autoseg.explain import explain_clusters

        frame, labels = _explain_frame(rows)
        xgb_device = "cuda" if device == "gpu" else "cpu"
        if xgb_device == "cuda":  # CUDA context and kernels load outside the timed run
            started = time.perf_counter()
            small, small_labels = _explain_frame(5_000, seed=9)
            explain_clusters(small, small_labels, device="cuda", max_train_rows=2_000,
                             max_shap_rows=500)
            out["warmup_seconds"] = time.perf_counter() - started
        started = time.perf_counter()
        result = explain_clusters(frame, labels, seed=SEED, device=xgb_device)
        out["seconds"] = time.perf_counter() - started
        out["ran_on"] = result.device
        out["fidelity"] = result.fidelity
        return out

    x, _, centres = _blobs(rows)
    if case == "silhouette_sampled":
        from autoseg.silhouette import silhouette_scores

        labelings = _labelings(x, centres, range(2, K_PLANTED + 1))
        settings = {"exact_max_rows": 1, "sample_size": TIMED_SAMPLE_POINTS, "seed": SEED}
        started = time.perf_counter()
        x_dev = xp.asarray(x)
        sync()
        out["h2d_seconds"] = time.perf_counter() - started
        if cupy is not None:  # cuBLAS handles and kernel compilation outside the timed run
            started = time.perf_counter()
            silhouette_scores(x_dev[:50_000], {k: v[:50_000] for k, v in labelings.items()},
                              exact_max_rows=1, sample_size=1_000, seed=SEED, xp=cupy)
            sync()
            out["warmup_seconds"] = time.perf_counter() - started
        started = time.perf_counter()
        scores = silhouette_scores(x_dev, labelings, xp=xp, **settings)
        sync()
        out["seconds"] = time.perf_counter() - started
        out["scores"] = {k: round(s.score, 6) for k, s in scores.items()}
        out["points"] = next(iter(scores.values())).n_points
        return out

    if case == "nearest_centroid":
        assign, source = _nearest_centroid_function(xp)
        started = time.perf_counter()
        x_dev = xp.asarray(x)
        sync()
        out["h2d_seconds"] = time.perf_counter() - started
        if cupy is not None:
            started = time.perf_counter()
            assign(x_dev[:100_000], centres)
            sync()
            out["warmup_seconds"] = time.perf_counter() - started
        started = time.perf_counter()
        labels = assign(x_dev, centres)
        host_labels = cupy.asnumpy(labels) if cupy is not None else np.asarray(labels)
        out["seconds"] = time.perf_counter() - started  # labels back on the host included
        out["source"] = source
        out["sizes"] = np.bincount(host_labels, minlength=K_PLANTED).tolist()
        return out
    raise ValueError(f"unknown timing case {case!r}")


def run_timings(
    rows: int, budget: float, gpu_ready: dict[str, str | None]
) -> list[Timing]:
    """Every case on the GPU, then on the CPU, each in a child process, within ``budget``.

    The GPU runs go first: they are short, and they are what only a GPU machine can measure.
    """
    timings: list[Timing] = []
    deadline = time.monotonic() + budget
    for device in ("gpu", "cpu"):
        for case in TIMING_CASES:
            not_ready = gpu_ready["xgboost" if case == "explain" else "cupy"]
            if not_ready:
                timings.append(Timing(case, device, rows, "SKIPPED",
                                      detail=f"no GPU side to compare: {not_ready}"))
                continue
            left = deadline - time.monotonic()
            if left < 5:
                timings.append(Timing(case, device, rows, "SKIPPED",
                                      detail=f"time budget of {budget:.0f}s spent"))
                continue
            timings.append(_time_in_child(case, device, rows, left))
    return timings


def _time_in_child(case: str, device: str, rows: int, timeout: float) -> Timing:
    command = [sys.executable, str(Path(__file__).resolve()), "--_time-case", case,
               "--_device", device, "--rows", str(rows)]
    started = time.monotonic()
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, "PYTHONWARNINGS": "ignore"})
    except subprocess.TimeoutExpired:
        return Timing(case, device, rows, "STOPPED", seconds=None,
                      detail=f"still running after {time.monotonic() - started:.0f}s "
                             "(time budget): longer than that")
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return Timing(case, device, rows, "ERROR", detail=f"exit {done.returncode}: {tail}")
    result = json.loads(lines[-1])
    if "error" in result:
        return Timing(case, device, rows, "ERROR", detail=result["error"],
                      extra={"traceback": result.get("traceback")})
    seconds = result.pop("seconds")
    if device == "gpu" and result.get("ran_on", "cuda") != "cuda":
        # XGBoost fell back to the CPU: the time is real but it is not a GPU time
        return Timing(case, device, rows, "ERROR", seconds=seconds, extra=result,
                      detail=f"XGBoost ran on {result['ran_on']!r}, not cuda")
    return Timing(case, device, rows, "OK", seconds=seconds, extra=result)


# --------------------------------------------------------------------------- output


def _print_report(checks: list[Check], timings: list[Timing], env: dict[str, Any]) -> None:
    print(f"GPU: {env.get('gpu', 'none')}   CuPy: {env.get('cupy', 'none')}   "
          f"cuML: {env.get('cuml', 'none')}   "
          f"XGBoost: {env.get('xgboost')}   NumPy: {env['numpy']}   CPUs: {env['cpu_count']}")
    print()
    print(f"{'check':<28}{'result':<8}detail")
    for check in checks:
        print(f"{check.name:<28}{check.status:<8}{check.detail}")
    if not timings:
        return
    print()
    print(f"{'timing':<20}{'rows':>10}{'GPU s':>10}{'CPU s':>10}{'speed-up':>10}  note")
    for case in TIMING_CASES:
        runs = {t.device: t for t in timings if t.case == case}
        if not runs:
            continue
        gpu, cpu = runs.get("gpu"), runs.get("cpu")
        rows = (gpu or cpu).rows  # type: ignore[union-attr]
        cells = [_seconds_cell(t) for t in (gpu, cpu)]
        speedup = (f"{cpu.seconds / gpu.seconds:.1f}x" if gpu and cpu and gpu.seconds
                   and cpu.seconds else "-")
        notes = "; ".join(f"{t.device}: {t.detail}" for t in (gpu, cpu) if t and t.detail)
        print(f"{case:<20}{rows:>10}{cells[0]:>10}{cells[1]:>10}{speedup:>10}  {notes}")


def _seconds_cell(timing: Timing | None) -> str:
    if timing is None:
        return "-"
    if timing.status == "OK" and timing.seconds is not None:
        return f"{timing.seconds:.3f}"
    return timing.status.lower()


def _results_path() -> Path:
    out = os.environ.get("OUT")
    return Path(out) / "gpu_check.json" if out else HERE / "results" / "gpu_check.json"


def main(argv: list[str] | None = None) -> int:
    """Run the checks and the timings; returns the exit code (0 only when every check passes)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help=f"time at {QUICK_ROWS:,} rows instead of {DEFAULT_ROWS:,}")
    parser.add_argument("--rows", type=int, default=None, help="rows of the timed runs")
    parser.add_argument("--budget-seconds", type=float, default=DEFAULT_BUDGET_SECONDS,
                        help="stop timing runs after this many seconds (default %(default)s)")
    parser.add_argument("--skip-timings", action="store_true", help="correctness checks only")
    parser.add_argument("--_time-case", dest="time_case", choices=TIMING_CASES,
                        help=argparse.SUPPRESS)
    parser.add_argument("--_device", dest="device", choices=("gpu", "cpu"), default="cpu",
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    rows = args.rows or (QUICK_ROWS if args.quick else DEFAULT_ROWS)

    if args.time_case:  # child process of one timed run: one JSON line on stdout
        try:
            print(json.dumps(_time_case(args.time_case, args.device, rows), default=str))
        except Exception as exc:
            print(json.dumps({"error": _where(exc), "traceback": traceback.format_exc()}))
        return 0

    started = time.perf_counter()
    cupy, cupy_problem = _cupy()
    cuml, cuml_problem = _cuml()
    env = _environment(cupy)
    env["cuml"] = cuml.__version__ if cuml is not None else cuml_problem
    checks = run_checks(cupy, cupy_problem, cuml_problem)
    if args.skip_timings:
        checks.append(Check("end_to_end_run", "SKIPPED", "--skip-timings", 0.0))
    elif cupy is None:
        _fail("end_to_end_run", f"not run: {cupy_problem}", checks)
    else:
        e2e_rows = args.rows or (QUICK_ROWS if args.quick else DEFAULT_ROWS)
        _run_check("end_to_end_run",
                   lambda: _check_end_to_end(e2e_rows, cuml is not None, END_TO_END_TIMEOUT),
                   checks)
    gpu_ready = {
        "cupy": cupy_problem or None,
        "xgboost": next((c.detail for c in checks
                         if c.name == "xgboost_cuda" and c.status == "FAIL"), None),
    }
    timings = [] if args.skip_timings else run_timings(rows, args.budget_seconds, gpu_ready)
    failed = [c.name for c in checks if c.status == "FAIL"]
    failed += [f"timing {t.case}/{t.device}" for t in timings if t.status == "ERROR"]

    _print_report(checks, timings, env)
    path = _results_path()
    report = {
        "environment": env,
        "arguments": {"quick": args.quick, "rows": rows, "budget_seconds": args.budget_seconds},
        "tolerances": {"silhouette": SILHOUETTE_TOL, "fidelity": FIDELITY_TOL,
                       "pred_contribs": CONTRIBS_TOL, "kmeans_inertia": KMEANS_INERTIA_RTOL},
        "checks": [asdict(c) for c in checks],
        "timings": [asdict(t) for t in timings],
        "failed": failed,
        "ok": not failed,
        "seconds": round(time.perf_counter() - started, 1),
    }
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=2, default=str) + "\n")
        print(f"\nwrote {path}")
    except OSError as exc:
        print(f"\ncould not write {path}: {_one_line(exc)}")
        failed.append("write results")
    print("OK: every check passed" if not failed else f"FAILED: {', '.join(failed)}")
    return 0 if not failed else 1


def _where(exc: BaseException) -> str:
    """The error in one line with the innermost frame, instead of a traceback."""
    frames = traceback.extract_tb(exc.__traceback__)
    at = f" (at {Path(frames[-1].filename).name}:{frames[-1].lineno})" if frames else ""
    return f"{_one_line(exc)}{at}"


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted")
        sys.exit(130)
