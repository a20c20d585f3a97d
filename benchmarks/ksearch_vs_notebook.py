"""Benchmark: autoseg's k search against the plain "notebook" way of choosing k.

What it measures
----------------
On one synthetic numeric table with a planted number of clusters (default 50,000 x 30), in one
process:

(a) the notebook baseline: ``StandardScaler``, then for every k in 2..9 scikit-learn
    ``KMeans(n_clusters=k, n_init="auto", random_state=seed)`` followed by the exact
    ``sklearn.metrics.silhouette_score(X, labels)`` on all rows; the k with the highest mean
    silhouette wins;
(b) ours: the same standardized matrix (as float32) through :func:`autoseg.search.search_k` with
    the run defaults (10 k-means++ restarts per k, silhouette exact up to 50,000 rows, else a
    20,000-point estimate), which scores all k in one blocked GEMM pass;
(c) a check of the silhouette code alone: :func:`autoseg.silhouette.silhouette_scores` applied
    to the *baseline's* labels (forced exact), compared with sklearn's value for the same labels.

It reports wall time (``time.perf_counter``) and process CPU time of (a) and (b), the chosen k
of each, the silhouette of every k for each method (each on its own labels), the difference at
the chosen k, the speed ratio baseline / ours, the load average around the timed runs (the times
are only meaningful on an otherwise idle machine), the peak RSS of the process, and the
agreement of each method with the planted labels (adjusted Rand index). Targets (from the
issue): same k, silhouette within 1e-3 at the chosen k, at least 10x faster; the silhouette code
check should agree within 1e-4.

The two methods' silhouettes can differ a little even with correct code: our k-means keeps the
best of 10 restarts, the baseline runs k-means++ once (``n_init="auto"`` means one run for
k-means++ init), so the two can land on different optima.

Synthetic table
---------------
``make_blobs`` draws ``--true-k`` (default 6) Gaussian clusters in an 8-dimensional latent
space (centres uniform in [-10, 10]^8, per-cluster standard deviation 2.0 x U(0.8, 1.2), cluster
sizes from a Dirichlet(4) split, so sizes are unequal but none is tiny). The 30 columns are:
the 8 latent columns; ``cols - 12`` correlated columns, each a random linear mix of the latent
columns plus independent N(0, 0.5^2) noise; and 4 pure noise columns (2 normal, 2 log-normal,
i.e. skewed). Every column then gets a random scale in [0.1, 1000] and offset in [-100, 100] so
the standardization matters. Clusters overlap moderately (silhouette of the planted labels about
0.3 - 0.45 on the seeds tried) and the planted k is the silhouette optimum for a good k-means.

How to run
----------
From the repository root, with the project's environment active::

    python benchmarks/ksearch_vs_notebook.py                 # 50,000 x 30, seed 0
    python benchmarks/ksearch_vs_notebook.py --quick         # 10,000 rows smoke run
    python benchmarks/ksearch_vs_notebook.py --rows 50000 --cols 30 --seed 0
    python benchmarks/ksearch_vs_notebook.py --threads 1      # single-threaded comparison

The results are printed and written to ``benchmarks/results/ksearch_vs_notebook.json``
(``--out`` changes the path).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import sklearn
import threadpoolctl
from sklearn.cluster import KMeans
from sklearn.datasets import make_blobs
from sklearn.metrics import adjusted_rand_score, silhouette_score
from sklearn.preprocessing import StandardScaler

from autoseg.search import search_k
from autoseg.silhouette import silhouette_scores

K_VALUES = list(range(2, 10))
RESTARTS = 10
EXACT_MAX_ROWS = 50_000
SAMPLE_SIZE = 20_000
QUICK_ROWS = 10_000

LATENT_DIMS = 8
NOISE_COLUMNS = 4
CLUSTER_STD = 2.0
CENTER_BOX = (-10.0, 10.0)
MIX_NOISE = 0.5

TARGET_SPEEDUP = 10.0
TARGET_SILHOUETTE_DIFF = 1e-3
TARGET_CODE_CHECK_DIFF = 1e-4

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "ksearch_vs_notebook.json"


@dataclass
class MethodResult:
    """Outcome of one way of choosing k."""

    name: str
    seconds: float
    cpu_seconds: float  # process CPU time, all threads; less sensitive to other processes
    chosen_k: int
    silhouette: dict[int, float]
    labels: dict[int, np.ndarray] = field(repr=False)
    detail: dict[str, Any] = field(default_factory=dict)


def make_table(rows: int, cols: int, true_k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Synthetic (rows, cols) table with ``true_k`` planted clusters; see the module docstring."""
    n_mix = cols - LATENT_DIMS - NOISE_COLUMNS
    if n_mix < 0:
        raise SystemExit(f"--cols must be at least {LATENT_DIMS + NOISE_COLUMNS}")
    rng = np.random.default_rng(seed)
    weights = rng.dirichlet(np.full(true_k, 4.0))
    sizes = np.floor(weights * rows).astype(int)
    sizes[0] += rows - int(sizes.sum())
    stds = rng.uniform(0.8, 1.2, true_k) * CLUSTER_STD
    latent, truth = make_blobs(
        n_samples=sizes.tolist(), n_features=LATENT_DIMS, cluster_std=stds,
        center_box=CENTER_BOX, shuffle=True, random_state=seed,
    )
    mixing = rng.normal(size=(LATENT_DIMS, n_mix)) / np.sqrt(LATENT_DIMS)
    mixed = latent @ mixing + rng.normal(scale=MIX_NOISE, size=(rows, n_mix))
    noise = np.column_stack(
        [
            rng.normal(size=rows) if i % 2 == 0 else rng.lognormal(sigma=0.7, size=rows)
            for i in range(NOISE_COLUMNS)
        ]
    )
    table = np.hstack([latent, mixed, noise])
    table = table * rng.uniform(0.1, 1000.0, cols) + rng.uniform(-100.0, 100.0, cols)
    return table, truth.astype(np.int64)


def warm_up(x: np.ndarray) -> None:
    """Untimed small runs of both paths, so that starting the thread pools and the first large
    BLAS call of the process (about 1 s slower than later ones on the test machine) are not
    billed to whichever method runs first."""
    head = x[: min(x.shape[0], 10_000)]
    labels = KMeans(n_clusters=2, n_init=1, random_state=0).fit(x[:2000]).predict(head)
    silhouette_score(head, labels)
    silhouette_scores(head.astype(np.float32), {2: labels})


def run_baseline(x: np.ndarray, seed: int) -> MethodResult:
    """The notebook loop: one k-means++ run and the exact sklearn silhouette per k."""
    silhouette: dict[int, float] = {}
    labels: dict[int, np.ndarray] = {}
    fit_s: dict[int, float] = {}
    score_s: dict[int, float] = {}
    inertia: dict[int, float] = {}
    cpu_started = time.process_time()
    started = time.perf_counter()
    for k in K_VALUES:
        t0 = time.perf_counter()
        model = KMeans(n_clusters=k, n_init="auto", random_state=seed).fit(x)
        labels[k], inertia[k] = model.labels_, float(model.inertia_)
        t1 = time.perf_counter()
        silhouette[k] = float(silhouette_score(x, labels[k]))
        t2 = time.perf_counter()
        fit_s[k], score_s[k] = t1 - t0, t2 - t1
        print(f"  baseline k={k}: silhouette {silhouette[k]:.5f}  "
              f"(kmeans {fit_s[k]:.2f}s, silhouette {score_s[k]:.2f}s)", flush=True)
    chosen = max(K_VALUES, key=lambda k: (silhouette[k], -k))
    seconds = time.perf_counter() - started
    cpu_seconds = time.process_time() - cpu_started
    return MethodResult(
        "baseline", seconds, cpu_seconds, chosen, silhouette, labels,
        {"kmeans_seconds": fit_s, "silhouette_seconds": score_s, "inertia": inertia},
    )


def run_ours(x: np.ndarray, seed: int) -> MethodResult:
    """autoseg's search_k with the run defaults, on the float32 copy of the same matrix."""
    cpu_started = time.process_time()
    started = time.perf_counter()
    result = search_k(
        x.astype(np.float32), K_VALUES, restarts=RESTARTS, seed=seed,
        exact_max_rows=EXACT_MAX_ROWS, sample_size=SAMPLE_SIZE,
    )
    seconds = time.perf_counter() - started
    cpu_seconds = time.process_time() - cpu_started
    silhouette = {
        c.k: float(c.silhouette) for c in result.candidates if c.silhouette is not None
    }
    fit_s = {c.k: c.fit_seconds for c in result.candidates}
    detail = {
        "kmeans_seconds": fit_s,
        "inertia": {c.k: c.inertia for c in result.candidates},
        # search_k times each fit (k-means + relabel); the rest is the Calinski-Harabasz and
        # Davies-Bouldin scores plus the one-pass silhouette of all k.
        "other_seconds": seconds - sum(fit_s.values()),
        "silhouette_exact": result.silhouette_exact,
        "silhouette_points": result.silhouette_points,
        "silhouette_stderr": {c.k: c.silhouette_stderr for c in result.candidates},
        "rejected": {c.k: c.rejected for c in result.candidates if c.rejected},
    }
    return MethodResult(
        "ours", seconds, cpu_seconds, result.chosen_k, silhouette,
        {result.chosen_k: result.labels}, detail,
    )


def check_silhouette_code(x: np.ndarray, baseline: MethodResult) -> dict[str, Any]:
    """Our silhouette (forced exact) on the baseline's labels against sklearn's values."""
    started = time.perf_counter()
    ours = silhouette_scores(
        x.astype(np.float32), baseline.labels, exact_max_rows=x.shape[0],
        sample_size=SAMPLE_SIZE, seed=0,
    )
    seconds = time.perf_counter() - started
    diffs = {k: abs(ours[k].score - baseline.silhouette[k]) for k in K_VALUES}
    return {
        "seconds": seconds,
        "ours_on_baseline_labels": {k: ours[k].score for k in K_VALUES},
        "abs_diff_vs_sklearn": diffs,
        "max_abs_diff": max(diffs.values()),
        "within_target": max(diffs.values()) <= TARGET_CODE_CHECK_DIFF,
    }


def peak_rss_mib() -> float:
    """Peak resident set size of this process (ru_maxrss is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def load_average() -> list[float]:
    """1, 5 and 15-minute load averages (empty where the platform has none)."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        return []


def machine_info() -> dict[str, Any]:
    """Platform, CPU count, library versions and BLAS / OpenMP thread pools."""
    pools = [
        {key: info.get(key) for key in ("user_api", "internal_api", "version", "num_threads",
                                         "threading_layer", "architecture", "prefix")}
        for info in threadpoolctl.threadpool_info()
    ]
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "numpy": np.__version__,
        "sklearn": sklearn.__version__,
        "threadpools": pools,
    }


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def print_report(
    baseline: MethodResult, ours: MethodResult, check: dict[str, Any], summary: dict[str, Any]
) -> None:
    """Readable table of the per-k silhouettes and the headline figures."""
    print()
    print(f"{'k':>3} {'baseline sil':>13} {'ours sil':>10} {'ours-base':>10} "
          f"{'ours on base labels':>20} {'|diff| vs sklearn':>18} {'inertia ours/base':>18}")
    for k in K_VALUES:
        base = baseline.silhouette[k]
        own = ours.silhouette.get(k, float("nan"))
        mark = "".join(
            ["  <- baseline" if k == baseline.chosen_k else "",
             "  <- ours" if k == ours.chosen_k else ""]
        )
        print(f"{k:>3} {base:>13.5f} {own:>10.5f} {own - base:>+10.5f} "
              f"{check['ours_on_baseline_labels'][k]:>20.5f} "
              f"{check['abs_diff_vs_sklearn'][k]:>18.2e} "
              f"{ours.detail['inertia'][k] / baseline.detail['inertia'][k]:>18.4f}{mark}")
    print()
    lines = [
        ("chosen k (baseline / ours / planted)",
         f"{baseline.chosen_k} / {ours.chosen_k} / {summary['true_k']}"),
        ("same k", f"{summary['same_k']}"),
        ("|silhouette diff| at chosen k", f"{summary['silhouette_abs_diff_at_chosen_k']:.2e} "
                                          f"(target <= {TARGET_SILHOUETTE_DIFF:g})"),
        ("ARI vs planted (baseline / ours)",
         f"{summary['ari_vs_truth']['baseline']:.4f} / {summary['ari_vs_truth']['ours']:.4f}"),
        ("baseline wall time", f"{baseline.seconds:.2f} s (kmeans "
                               f"{sum(baseline.detail['kmeans_seconds'].values()):.2f} s, "
                               f"silhouette "
                               f"{sum(baseline.detail['silhouette_seconds'].values()):.2f} s)"),
        ("ours wall time", f"{ours.seconds:.2f} s (kmeans "
                           f"{sum(ours.detail['kmeans_seconds'].values()):.2f} s, scores "
                           f"{ours.detail['other_seconds']:.2f} s)"),
        ("speed ratio baseline / ours", f"{summary['speed_ratio']:.2f}x "
                                        f"(target >= {TARGET_SPEEDUP:g}x)"),
        ("CPU time baseline / ours (ratio)",
         f"{baseline.cpu_seconds:.2f} s / {ours.cpu_seconds:.2f} s "
         f"({summary['cpu_time_ratio']:.2f}x)"),
        ("load average before (a) / (b) / after (b)",
         " / ".join(f"{v[0]:.2f}" if v else "n/a" for v in summary["load_average_1min"])),
        ("silhouette code check (max |diff|)", f"{check['max_abs_diff']:.2e} "
                                               f"(target <= {TARGET_CODE_CHECK_DIFF:g}, "
                                               f"{check['seconds']:.2f} s)"),
        ("peak RSS", f"{summary['peak_rss_mib']:.0f} MiB"),
    ]
    width = max(len(label) for label, _ in lines)
    for label, value in lines:
        print(f"{label:<{width}}  {value}")
    print(f"targets met: {summary['targets_met']}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=50_000, help="rows of the table")
    parser.add_argument("--cols", type=int, default=30, help="columns of the table")
    parser.add_argument("--seed", type=int, default=0, help="seed of data and k-means")
    parser.add_argument("--true-k", type=int, default=6, help="planted number of clusters")
    parser.add_argument("--quick", action="store_true", help=f"smoke run on {QUICK_ROWS} rows")
    parser.add_argument(
        "--threads", type=int, default=None,
        help="limit BLAS and OpenMP threads (threadpoolctl) for the whole run; default: the "
        "libraries' own choice (all cores)",
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON result file")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads is None:
        return run(args)
    with threadpoolctl.threadpool_limits(limits=args.threads):
        return run(args)


def run(args: argparse.Namespace) -> int:
    """Generate the table, time both methods, print and write the results."""
    rows = QUICK_ROWS if args.quick else args.rows
    print(f"table: {rows} x {args.cols}, planted k={args.true_k}, seed={args.seed}", flush=True)
    table, truth = make_table(rows, args.cols, args.true_k, args.seed)
    x = StandardScaler().fit_transform(table)

    warm_up(x)

    load: dict[str, list[float]] = {"before_baseline": load_average()}
    if load["before_baseline"] and load["before_baseline"][0] > 0.5:
        print(f"WARNING: load average {load['before_baseline'][0]:.2f} before the timed runs; "
              "other processes share the CPUs and the times are noisy", flush=True)
    print("(a) notebook baseline", flush=True)
    baseline = run_baseline(x, args.seed)
    print(f"  -> k={baseline.chosen_k} in {baseline.seconds:.2f}s", flush=True)
    load["before_ours"] = load_average()
    print("(b) autoseg search_k", flush=True)
    ours = run_ours(x, args.seed)
    print(f"  -> k={ours.chosen_k} in {ours.seconds:.2f}s", flush=True)
    load["after_ours"] = load_average()
    print("(c) silhouette code check on the baseline's labels", flush=True)
    check = check_silhouette_code(x, baseline)

    k = ours.chosen_k
    own_at_k = ours.silhouette[k]
    base_at_k = baseline.silhouette[k]
    ours_labels = ours.labels[k]
    summary: dict[str, Any] = {
        "true_k": args.true_k,
        "chosen_k": {"baseline": baseline.chosen_k, "ours": ours.chosen_k},
        "same_k": baseline.chosen_k == ours.chosen_k,
        # at our chosen k (= the baseline's when they agree), each method on its own labels
        "silhouette_at_chosen_k": {"baseline": base_at_k, "ours": own_at_k},
        "silhouette_abs_diff_at_chosen_k": abs(own_at_k - base_at_k),
        "speed_ratio": baseline.seconds / ours.seconds,
        "cpu_time_ratio": baseline.cpu_seconds / ours.cpu_seconds,
        "load_average_1min": [load[key][:1] for key in load],
        "ari_vs_truth": {
            "baseline": adjusted_rand_score(truth, baseline.labels[baseline.chosen_k]),
            "ours": adjusted_rand_score(truth, ours_labels),
        },
        "ari_ours_vs_baseline_at_chosen_k": adjusted_rand_score(baseline.labels[k], ours_labels),
        "peak_rss_mib": peak_rss_mib(),
    }
    summary["targets_met"] = {
        "same_k": summary["same_k"],
        "silhouette_within_1e-3": summary["silhouette_abs_diff_at_chosen_k"]
        <= TARGET_SILHOUETTE_DIFF,
        "speedup_at_least_10x": summary["speed_ratio"] >= TARGET_SPEEDUP,
        "silhouette_code_within_1e-4": check["within_target"],
    }
    print_report(baseline, ours, check, summary)

    record = {
        "benchmark": "ksearch_vs_notebook",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": machine_info(),
        # 1/5/15-minute load averages; a 1-minute value well above 0 means other processes
        # competed for the CPUs during the timed runs.
        "load_average": load,
        "data": {
            "rows": rows, "cols": args.cols, "seed": args.seed, "true_k": args.true_k,
            "generator": {
                "kind": "sklearn make_blobs in a latent space + correlated mixes + noise",
                "latent_dims": LATENT_DIMS, "noise_columns": NOISE_COLUMNS,
                "cluster_std": CLUSTER_STD, "center_box": CENTER_BOX, "mix_noise": MIX_NOISE,
            },
            "planted_cluster_sizes": np.bincount(truth).tolist(),
        },
        "settings": {
            "k_values": K_VALUES, "restarts": RESTARTS, "exact_max_rows": EXACT_MAX_ROWS,
            "sample_size": SAMPLE_SIZE, "baseline_kmeans": 'KMeans(n_init="auto")',
            "thread_limit": args.threads,
        },
        "baseline": {
            "seconds": baseline.seconds, "cpu_seconds": baseline.cpu_seconds,
            "chosen_k": baseline.chosen_k,
            "silhouette": baseline.silhouette, **baseline.detail,
        },
        "ours": {
            "seconds": ours.seconds, "cpu_seconds": ours.cpu_seconds, "chosen_k": ours.chosen_k,
            "silhouette": ours.silhouette, **ours.detail,
        },
        "silhouette_code_check": check,
        "summary": summary,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(_jsonable(record), indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
