"""Benchmark: whole runs on 100k / 1M / 10M-row customer tables, ours against the notebook way.

Usage::

    python benchmarks/scale.py --rows 1000000            # generate (cached) + both runs
    python benchmarks/scale.py --rows 10000000 --skip-baseline
    python benchmarks/scale.py --rows 100000 --rows 1000000 --write-results

For each size it generates (once, cached under ``benchmarks/data/``) a realistic synthetic
customer table as Parquet: 12 mixed columns (an id, a ``time`` column, skewed spend, counts,
recency, age with missing values, three categories one of them with a rare level, a boolean, a
date) with five planted segments. Each run is a separate process so its peak memory (max RSS)
is its own:

* **ours**: ``autoseg run`` on the Parquet file, writing the labelled table to DuckDB, with the
  explanation, the report and the summary (every default);
* **notebook baseline**: pandas ``get_dummies`` + ``StandardScaler`` on the same columns (the id
  and ``time`` left out), then for k = 2..9 scikit-learn ``KMeans(n_init="auto")`` on all rows and
  ``silhouette_score(sample_size=10000)`` (exact silhouette on a million rows is hopeless), best
  k wins; labels written to DuckDB too. No explanation, no report.

Recorded: wall time, peak RSS, chosen k, silhouette (with standard error for ours) and the
adjusted Rand index against the planted segments; with ``--check-4x`` also the k a search on a
4x larger sample (80,000 rows) chooses. Results go to ``benchmarks/results/scale.json``;
``benchmarks/RESULTS.md`` quotes them with the machine, the commands and the date.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

HERE = Path(__file__).resolve().parent
DATA = HERE / "data"
RESULTS = HERE / "results"
CHUNK_ROWS = 1_000_000
K_PLANTED = 5
# Noise of the planted segments: tight enough that the planted k is the silhouette optimum of a
# good clustering (with 0.45 / 4 / 8 the coarse "lapsed vs the rest" split won at k=2, with
# 0.3 / 9 / 5 k=3 and k=5 were within 0.004).
SPEND_SIGMA = 0.25
RECENCY_SHAPE = 16.0
AGE_SD = 4.0

# segment: share, spend median, orders mean, recency mean, app share, member share, age mean
SEGMENTS = [
    (0.15, 2500.0, 14.0, 6.0, 0.4, 0.9, 46.0),
    (0.30, 400.0, 7.0, 15.0, 0.3, 0.4, 42.0),
    (0.25, 150.0, 0.5, 150.0, 0.1, 0.2, 50.0),
    (0.20, 220.0, 3.0, 9.0, 0.9, 0.3, 27.0),
    (0.10, 900.0, 2.0, 40.0, 0.2, 0.6, 63.0),
]


def _chunk(rows: int, start: int, rng: np.random.Generator) -> tuple[pa.Table, np.ndarray]:
    shares = np.array([s[0] for s in SEGMENTS])
    seg = rng.choice(len(SEGMENTS), size=rows, p=shares / shares.sum())
    col = lambda i: np.array([s[i] for s in SEGMENTS])[seg]  # noqa: E731
    spend = np.round(col(1) * rng.lognormal(0.0, SPEND_SIGMA, rows), 2)
    orders = rng.poisson(col(2))
    recency = np.round(rng.gamma(RECENCY_SHAPE, col(3) / RECENCY_SHAPE))
    age = np.clip(np.round(rng.normal(col(6), AGE_SD)), 18, 95)
    age_missing = rng.random(rows) < 0.02
    channel = np.where(rng.random(rows) < col(4), "app",
                       np.where(rng.random(rows) < 0.5, "web", "store"))
    region = rng.choice(["north", "south", "east", "west", "central", "islands"], rows,
                        p=[0.24, 0.24, 0.2, 0.2, 0.115, 0.005])
    tier = np.where(seg == 0, "gold", np.where(seg == 1, "silver", "bronze"))
    tier = np.where(rng.random(rows) < 0.15, rng.choice(["bronze", "silver", "gold"], rows), tier)
    member = rng.random(rows) < col(5)
    signup = (np.datetime64("2026-06-30") - rng.integers(5, 2500, rows).astype("timedelta64[D]"))
    table = pa.table({
        "customer_id": pa.array(np.arange(start, start + rows, dtype=np.int64)),
        "age": pa.array(age, mask=age_missing),
        "region": pa.array(region).dictionary_encode(),
        "channel": pa.array(channel).dictionary_encode(),
        "loyalty_tier": pa.array(tier).dictionary_encode(),
        "is_member": pa.array(member),
        "signup_date": pa.array(signup.astype("datetime64[D]")),
        "annual_spend": pa.array(spend),
        "orders_90d": pa.array(orders.astype(np.int64)),
        "days_since_last_order": pa.array(recency.astype(np.int64)),
        "avg_basket": pa.array(np.round(spend / np.maximum(orders * 4, 1), 2)),
        "time": pa.array(np.int64(1_782_777_600) + np.arange(start, start + rows)),
    })
    return table, seg


def generate(rows: int, seed: int = 0) -> Path:
    """Write the table (and its planted segments) once; return the Parquet path."""
    DATA.mkdir(parents=True, exist_ok=True)
    path = DATA / f"customers_{rows}.parquet"
    truth = DATA / f"customers_{rows}.truth.npy"
    if path.exists() and truth.exists():
        return path
    rng = np.random.default_rng(seed)
    segments = []
    writer = None
    try:
        for start in range(0, rows, CHUNK_ROWS):
            table, seg = _chunk(min(CHUNK_ROWS, rows - start), start, rng)
            if writer is None:
                writer = pq.ParquetWriter(path, table.schema)
            writer.write_table(table)
            segments.append(seg.astype(np.int8))
    finally:
        if writer is not None:
            writer.close()
    np.save(truth, np.concatenate(segments))
    return path


BASELINE = r'''
import sys, time, json
import numpy as np, pandas as pd, duckdb
from sklearn.cluster import KMeans
from sklearn.metrics import silhouette_score
from sklearn.preprocessing import StandardScaler
path, db, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
t0 = time.perf_counter()
df = pd.read_parquet(path)
features = pd.get_dummies(df.drop(columns=["customer_id", "time", "signup_date"]), dtype=float)
features["signup_date"] = (pd.to_datetime(df["signup_date"]) - pd.Timestamp("1970-01-01")).dt.days
features = features.fillna(features.median())
x = StandardScaler().fit_transform(features)
scores = {}
labels = {}
for k in range(2, 10):
    labels[k] = KMeans(n_clusters=k, n_init="auto", random_state=seed).fit_predict(x)
    scores[k] = float(silhouette_score(x, labels[k], sample_size=10000, random_state=seed))
best = max(scores, key=lambda k: (scores[k], -k))
df["cluster_id"] = labels[best]
with duckdb.connect(db) as conn:
    conn.register("df", df)
    conn.execute("CREATE OR REPLACE TABLE out AS SELECT * FROM df")
np.save(db + ".labels.npy", labels[best])
print(json.dumps({"chosen_k": best, "silhouettes": scores, "seconds": time.perf_counter() - t0}))
'''


def _measure(argv: list[str]) -> tuple[float, float, str]:
    """Wall time and peak RSS of one child, via a wrapper that reports its own child's RSS."""
    wrapper = (
        "import resource, subprocess, sys, time, json;"
        "t=time.perf_counter();"
        "p=subprocess.run(sys.argv[1:], capture_output=True, text=True);"
        "w=time.perf_counter()-t;"
        "r=resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss;"
        "print(json.dumps({'rc': p.returncode, 'wall': w, 'rss_kib': r, 'out': p.stdout,"
        " 'err': p.stderr[-3000:]}))"
    )
    done = subprocess.run([sys.executable, "-c", wrapper, *argv], capture_output=True,
                          text=True, check=True)
    info = json.loads(done.stdout)
    if info["rc"] != 0:
        raise RuntimeError(f"{' '.join(argv[:6])} failed ({info['rc']}): {info['err']}")
    return info["wall"], info["rss_kib"] / 1024.0, info["out"]


def _ari(truth: np.ndarray, labels: np.ndarray) -> float:
    from sklearn.metrics import adjusted_rand_score

    rows = np.random.default_rng(0).choice(len(truth), size=min(len(truth), 500_000),
                                           replace=False)
    return float(adjusted_rand_score(truth[rows], labels[rows]))


def run_ours(path: Path, work: Path, seed: int, extra: list[str] | None = None
             ) -> dict[str, object]:
    import duckdb

    work.mkdir(parents=True, exist_ok=True)
    db = work / "ours.duckdb"
    out = work / "ours-output"
    wall, rss, _ = _measure([
        sys.executable, "-m", "autoseg", "run", "--input-table", str(path),
        "--output-table", "bench.segments", "--store", f"duckdb:{db}", "--output-dir", str(out),
        "--model-dir", str(work / "models"), "--seed", str(seed), "--log-format", "json",
        *(extra or []),
    ])
    summary = json.loads((out / "summary.json").read_text())
    with duckdb.connect(str(db)) as conn:
        labels = conn.sql("SELECT cluster_id FROM bench.segments").fetchnumpy()["cluster_id"]
    chosen = summary["chosen_k"]
    cand = next(c for c in summary["k_search"] if c["k"] == chosen)
    return {
        "wall_seconds": round(wall, 2), "peak_rss_mib": round(rss, 1), "chosen_k": chosen,
        "silhouette": cand["silhouette"], "silhouette_stderr": cand["silhouette_stderr"],
        "silhouettes": {c["k"]: c["silhouette"] for c in summary["k_search"]},
        "timings_seconds": summary["timings_seconds"],
        "search_rows": summary["silhouette"]["search_rows"],
        "fidelity": summary["explanation"].get("fidelity"),
        "labels": labels,
    }


def run_baseline(path: Path, work: Path, seed: int) -> dict[str, object]:
    db = work / "baseline.duckdb"
    wall, rss, out = _measure([sys.executable, "-c", BASELINE, str(path), str(db), str(seed)])
    info = json.loads(out.strip().splitlines()[-1])
    labels = np.load(str(db) + ".labels.npy")
    return {
        "wall_seconds": round(wall, 2), "peak_rss_mib": round(rss, 1),
        "chosen_k": info["chosen_k"], "silhouette": info["silhouettes"][str(info["chosen_k"])],
        "silhouettes": info["silhouettes"], "labels": labels,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, action="append", help="table size (repeatable)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-baseline", action="store_true")
    parser.add_argument("--check-4x", action="store_true",
                        help="also search on a 4x larger sample and record the k it chooses")
    args = parser.parse_args()
    sizes = args.rows or [100_000]
    RESULTS.mkdir(parents=True, exist_ok=True)
    results_path = RESULTS / "scale.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    for rows in sizes:
        started = time.perf_counter()
        path = generate(rows, args.seed)
        print(f"{rows:,} rows: table ready ({time.perf_counter() - started:.1f}s) {path}")
        truth = np.load(DATA / f"customers_{rows}.truth.npy")
        entry: dict[str, object] = {"rows": rows, "date": datetime.now(UTC).isoformat(
            timespec="seconds"), "load_before": os.getloadavg()}
        with tempfile.TemporaryDirectory() as tmp:
            ours = run_ours(path, Path(tmp), args.seed)
            ours["ari_planted"] = _ari(truth, ours.pop("labels"))
            entry["ours"] = ours
            print(f"  ours:     {ours['wall_seconds']:8.1f}s {ours['peak_rss_mib']:8.0f} MiB "
                  f"k={ours['chosen_k']} silhouette={ours['silhouette']:.4f}"
                  f"+-{ours['silhouette_stderr']:.4f} ARI={ours['ari_planted']:.3f}")
            if args.check_4x:
                larger = 4 * 20_000
                check = run_ours(path, Path(tmp) / "x4", args.seed,
                                 ["--search-sample-size", str(larger)])
                check.pop("labels")
                entry["ours_4x_sample"] = {key: check[key] for key in (
                    "chosen_k", "silhouette", "silhouette_stderr", "wall_seconds", "search_rows")}
                print(f"  4x sample ({larger:,} rows): k={check['chosen_k']} "
                      f"silhouette={check['silhouette']:.4f}+-{check['silhouette_stderr']:.4f}")
            if not args.skip_baseline:
                base = run_baseline(path, Path(tmp), args.seed)
                base["ari_planted"] = _ari(truth, base.pop("labels"))
                entry["baseline"] = base
                print(f"  baseline: {base['wall_seconds']:8.1f}s {base['peak_rss_mib']:8.0f} MiB"
                      f" k={base['chosen_k']} silhouette={base['silhouette']:.4f} "
                      f"ARI={base['ari_planted']:.3f}")
                entry["speedup"] = round(base["wall_seconds"] / ours["wall_seconds"], 2)
        entry["load_after"] = os.getloadavg()
        results[str(rows)] = entry
    results["machine"] = {"platform": platform.platform(), "cpus": os.cpu_count(),
                          "python": platform.python_version()}
    results_path.write_text(json.dumps(results, indent=2, default=str))
    print(f"results: {results_path}")


if __name__ == "__main__":
    main()
