"""The all-rows refit: ``autoseg.lloyd.refit_in_blocks`` against scikit-learn's warm-started KMeans.

Both start from the same centroids (k-means on a 20,000-row sample) on the prepared matrix of
the mixed customer table of ``benchmarks/scale.py`` and stop by the same rule; they run
alternately in one process, so the ratio is of one run. Reported per method: the median
wall time, the iterations, the peak of memory allocated during one more fit (``tracemalloc``,
which NumPy reports to; traced apart from the timed fits), the inertia recomputed in float64
and the largest centroid difference.

    python benchmarks/refit_all_rows.py --rows 1000000 --rows 10000000 --k 2 --k 5
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from sklearn.cluster import KMeans

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import scale  # noqa: E402

from autoseg.features import fit_features  # noqa: E402
from autoseg.lloyd import refit_in_blocks  # noqa: E402
from autoseg.local import prepare_matrix  # noqa: E402


def _inertia64(x: np.ndarray, centroids: np.ndarray) -> float:
    c = centroids.astype(np.float64)
    total = 0.0
    for start in range(0, len(x), 500_000):
        block = x[start:start + 500_000].astype(np.float64)
        total += float(((block[:, None, :] - c[None]) ** 2).sum(axis=2).min(axis=1).sum())
    return total


def _timed(fit) -> tuple[float, int, np.ndarray]:
    started = time.perf_counter()
    centroids, iterations = fit()
    return time.perf_counter() - started, iterations, centroids


def _peak_alloc(fit) -> int:
    """Peak bytes allocated during one more fit (traced apart: tracing slows the allocations)."""
    tracemalloc.start()
    fit()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


def compare(rows: int, k: int, repeat: int) -> dict[str, object]:
    """Time both refits on one table and k; return the figures."""
    frame = pq.read_table(scale.generate(rows)).to_pandas()
    spec = fit_features(frame.sample(20_000, random_state=0))
    x, _ = prepare_matrix(frame, spec, None)
    del frame
    sample = x[np.random.default_rng(0).choice(len(x), 20_000, replace=False)]
    start = KMeans(k, n_init=5, random_state=0).fit(sample).cluster_centers_.astype(np.float32)

    def ours() -> tuple[np.ndarray, int]:
        centroids, facts = refit_in_blocks(x, start)
        return centroids, facts["iterations"]

    def sklearn() -> tuple[np.ndarray, int]:
        model = KMeans(k, init=start, n_init=1, algorithm="lloyd").fit(x)
        return model.cluster_centers_.astype(np.float32), int(model.n_iter_)

    fits = {"ours": ours, "sklearn": sklearn}
    runs: dict[str, list[tuple[float, int, np.ndarray]]] = {"ours": [], "sklearn": []}
    for _ in range(repeat):
        runs["ours"].append(_timed(ours))
        runs["sklearn"].append(_timed(sklearn))
    result: dict[str, object] = {"rows": rows, "k": k, "columns": int(x.shape[1])}
    for name, timings in runs.items():
        centroids = timings[-1][2]
        result[name] = {
            "seconds": round(statistics.median(t[0] for t in timings), 3),
            "iterations": timings[-1][1],
            "peak_alloc_mib": round(_peak_alloc(fits[name]) / 2**20, 1),
            "inertia_float64": _inertia64(x, centroids),
        }
    result["max_centroid_difference"] = float(
        np.abs(runs["ours"][-1][2] - runs["sklearn"][-1][2]).max())
    result["ratio"] = round(result["sklearn"]["seconds"] / result["ours"]["seconds"], 2)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, action="append")
    parser.add_argument("--k", type=int, action="append")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--results", type=Path, default=HERE / "results" / "refit_all_rows.json")
    args = parser.parse_args()
    results = []
    for rows in args.rows or [1_000_000]:
        for k in args.k or [2, 5]:
            result = compare(rows, k, args.repeat)
            print(json.dumps(result), flush=True)
            results.append(result)
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
