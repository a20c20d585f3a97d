"""Benchmark: the WHOLE ``autoseg run`` process against the notebook baseline's k search alone.

What it measures
----------------
Each case runs, in one script run (so the ratio is measured under the same machine load):

* **ours**: ``python -m autoseg run`` as a child process on an input written beforehand as
  Parquet (not timed): start-up and imports, read, profile, features, search, stability,
  explanation, rules, report, summary and the labelled table written to DuckDB. Wall time of
  the child, its peak RSS (``ru_maxrss`` of a wrapper's child, so it is the run's own), the
  per-stage timings of its ``summary.json`` (``timings_seconds``; "unstaged" is the wall time
  no stage accounts for: interpreter start-up, imports, pre-flight, summary building), the
  chosen k and the adjusted Rand index against the planted labels.
* **baseline**, in this process, k search alone (reading and scaling excluded):

  - ``50k``: the table of ``benchmarks/ksearch_vs_notebook.py`` (50,000 x 30 numeric, 6 planted
    clusters), ``StandardScaler`` then for k = 2..9 ``KMeans(n_init="auto")`` and the exact
    ``silhouette_score`` (``run_baseline`` of that script);
  - ``1m`` / ``10m``: the mixed customer table of ``benchmarks/scale.py`` (5 planted segments),
    ``get_dummies`` + ``StandardScaler`` as there, then for k = 2..9 ``KMeans(n_init="auto")`` on
    all rows and ``silhouette_score(sample_size=10000)`` (the sampled variant).

Ratio = baseline seconds / ours seconds (whole process). The load average is recorded before
and after; the machine is shared, so compare ratios of one script run, not absolute seconds.

How to run
----------
From the repository root with the project's environment and ``PYTHONPATH=src``::

    python benchmarks/whole_run.py --case 50k                # ours + baseline (about 2.5 min)
    python benchmarks/whole_run.py --case 1m --repeat 2
    python benchmarks/whole_run.py --case 10m --skip-baseline
    python benchmarks/whole_run.py --quick                   # smoke run, under a minute

Results go to ``benchmarks/results/whole_run_<case>.json`` (``--out`` changes the path).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import ksearch_vs_notebook as ksearch  # noqa: E402
import scale  # noqa: E402

RESULTS = HERE / "results"
CASES = {"50k": 50_000, "1m": 1_000_000, "10m": 10_000_000}
QUICK_ROWS = 5_000
K_VALUES = list(range(2, 10))
SILHOUETTE_SAMPLE = 10_000


def numeric_input(rows: int, work: Path, seed: int) -> tuple[Path, np.ndarray]:
    """The 50k x 30 numeric table of ``ksearch_vs_notebook`` as Parquet, and its planted labels."""
    table, truth = ksearch.make_table(rows, 30, 6, seed)
    path = work / f"numeric_{rows}.parquet"
    pq.write_table(pa.table({f"x{i:02d}": table[:, i] for i in range(table.shape[1])}), path)
    return path, truth


def baseline_numeric(rows: int, seed: int) -> dict[str, Any]:
    """The notebook k search (exact silhouette) on the standardized numeric table."""
    from sklearn.preprocessing import StandardScaler

    table, truth = ksearch.make_table(rows, 30, 6, seed)
    x = StandardScaler().fit_transform(table)
    ksearch.warm_up(x)
    result = ksearch.run_baseline(x, seed)
    return {"seconds": round(result.seconds, 2), "cpu_seconds": round(result.cpu_seconds, 2),
            "chosen_k": result.chosen_k,
            "ari_planted": scale_ari(truth, result.labels[result.chosen_k])}


def baseline_mixed(path: Path, truth: np.ndarray, seed: int) -> dict[str, Any]:
    """The notebook's sampled k search on the mixed table (features built untimed, as in
    ``scale.BASELINE``): KMeans on all rows, silhouette on a 10,000-row sample per k."""
    import pandas as pd
    from sklearn.cluster import KMeans
    from sklearn.metrics import silhouette_score
    from sklearn.preprocessing import StandardScaler

    df = pd.read_parquet(path)
    features = pd.get_dummies(df.drop(columns=["customer_id", "time", "signup_date"]),
                              dtype=float)
    features["signup_date"] = (pd.to_datetime(df["signup_date"])
                               - pd.Timestamp("1970-01-01")).dt.days
    features = features.fillna(features.median())
    x = StandardScaler().fit_transform(features)
    del df, features
    scores: dict[int, float] = {}
    labels: dict[int, np.ndarray] = {}
    cpu = time.process_time()
    started = time.perf_counter()
    for k in K_VALUES:
        labels[k] = KMeans(n_clusters=k, n_init="auto", random_state=seed).fit_predict(x)
        scores[k] = float(silhouette_score(x, labels[k], sample_size=SILHOUETTE_SAMPLE,
                                           random_state=seed))
    seconds = time.perf_counter() - started
    best = max(scores, key=lambda k: (scores[k], -k))
    return {"seconds": round(seconds, 2), "cpu_seconds": round(time.process_time() - cpu, 2),
            "chosen_k": best, "silhouettes": scores,
            "ari_planted": scale_ari(truth, labels[best])}


def scale_ari(truth: np.ndarray, labels: np.ndarray) -> float:
    """ARI against the planted labels (on at most 500,000 rows, as ``scale.py``)."""
    return round(scale._ari(np.asarray(truth), np.asarray(labels)), 4)


def compile_package(src: Path | None) -> None:
    """Byte-compile the autoseg package that will run (under ``src``, else the importable one).

    An installed wheel runs from bytecode (pip compiles it; the images install one). A source
    tree where Python may not write bytecode (``PYTHONDONTWRITEBYTECODE=1``, as on the
    project's machines) is compiled anew by every run (about 0.1 s for the package), which
    an installed run never pays: so both variants are compiled first, untimed.
    """
    import compileall
    import importlib.util

    if src is None:
        spec = importlib.util.find_spec("autoseg")
        assert spec is not None and spec.submodule_search_locations is not None
        package = Path(list(spec.submodule_search_locations)[0])
    else:
        package = src / "autoseg"
    compileall.compile_dir(str(package), quiet=1)


def run_ours(path: Path, truth: np.ndarray, work: Path, seed: int,
             src: Path | None = None) -> dict[str, Any]:
    """One ``autoseg run`` child on ``path``: wall, peak RSS, stage timings, k, ARI.

    ``src`` runs the package found there (e.g. an exported older revision) instead of the one
    on ``PYTHONPATH``.
    """
    import duckdb

    work.mkdir(parents=True, exist_ok=True)
    db, out = work / "ours.duckdb", work / "out"
    prefix = ["env", f"PYTHONPATH={src}"] if src is not None else []
    wall, rss, _ = scale._measure([
        *prefix, sys.executable, "-m", "autoseg", "run", "--input-table", str(path),
        "--output-table", "bench.segments", "--store", f"duckdb:{db}", "--output-dir", str(out),
        "--model-dir", str(work / "models"), "--seed", str(seed), "--log-format", "json",
    ])
    summary = json.loads((out / "summary.json").read_text())
    with duckdb.connect(str(db)) as conn:
        labels = conn.sql("SELECT cluster_id FROM bench.segments").fetchnumpy()["cluster_id"]
    stages = {name: round(float(s), 3) for name, s in summary["timings_seconds"].items()}
    # "report" is timed inside "write" (the report is drawn on its own thread while the tables
    # are written, and staged before they are committed): show the write without it, so the
    # stages add up to the wall time with "unstaged". "write" is then the part of the write
    # stage the drawing did not cover (matplotlib's import, the commit, the renames; at 10M
    # rows the rest of the table write).
    if "report" in stages and "write" in stages:
        stages["write"] = round(stages["write"] - stages["report"], 3)
    stages["unstaged"] = round(wall - sum(stages.values()), 3)
    return {
        "wall_seconds": round(wall, 2), "peak_rss_mib": round(rss, 1),
        "chosen_k": summary["chosen_k"], "ari_planted": scale_ari(truth, labels),
        "fidelity": summary["explanation"].get("fidelity"),
        "top_features": [f["feature"] for f in summary["explanation"].get(
            "feature_importance", [])[:3]],
        "timings_seconds": stages,
    }


def print_stages(runs: dict[str, list[dict[str, Any]]]) -> None:
    """Per-stage median seconds over the repeats, one column per variant."""
    variants = list(runs)
    names = list(dict.fromkeys(n for v in variants for r in runs[v] for n in r["timings_seconds"]))
    repeats = len(runs[variants[0]])
    print(f"  seconds, median of {repeats}")
    print(f"  {'stage':<18}" + "".join(f"{v:>10}" for v in variants))
    for name in [*names, "wall"]:
        cells = []
        for v in variants:
            values = [r["wall_seconds"] if name == "wall" else r["timings_seconds"].get(name, 0.0)
                      for r in runs[v]]
            cells.append(f"{statistics.median(values):>10.3f}")
        print(f"  {name:<18}" + "".join(cells))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--case", choices=sorted(CASES), default="50k")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=1, help="runs of ours (median reported)")
    parser.add_argument("--skip-baseline", action="store_true")
    parser.add_argument("--quick", action="store_true",
                        help=f"smoke run: {QUICK_ROWS:,}-row numeric table, both methods")
    parser.add_argument("--src", type=Path, default=None,
                        help="run the autoseg package under this folder (e.g. a `git archive` "
                        "of the revision before) instead of the one on PYTHONPATH")
    parser.add_argument("--compare-src", type=Path, default=None,
                        help="also run the package under this folder (the 'before'), "
                        "alternating with the current one, so both see the same load")
    parser.add_argument("--out", type=Path, default=None, help="JSON result file")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    case = "quick" if args.quick else args.case
    rows = QUICK_ROWS if args.quick else CASES[args.case]
    entry: dict[str, Any] = {
        "case": case, "rows": rows, "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(["python", *sys.argv]),
        "src": str(args.src) if args.src else None, "load_before": ksearch.load_average(),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                    "python": platform.python_version()},
    }
    print(f"case {case}: {rows:,} rows, load average {entry['load_before']}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if case in ("50k", "quick"):
            path, truth = numeric_input(rows, work, args.seed)
        else:
            path = scale.generate(rows, args.seed)
            truth = np.load(scale.DATA / f"customers_{rows}.truth.npy")
        variants = {"ours": args.src}
        if args.compare_src is not None:
            variants = {"before": args.compare_src, "ours": args.src}
        for src in variants.values():
            compile_package(src)
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in variants}
        for i in range(args.repeat):
            for name, src in variants.items():
                run = run_ours(path, truth, work / f"{name}{i}", args.seed, src)
                print(f"  {name} run {i + 1}: {run['wall_seconds']:.2f} s, "
                      f"{run['peak_rss_mib']:.0f} MiB, k={run['chosen_k']}, ARI "
                      f"{run['ari_planted']:.3f}, fidelity {run['fidelity']}", flush=True)
                runs[name].append(run)
        entry["ours_runs"] = runs["ours"]
        ours_wall = statistics.median(r["wall_seconds"] for r in runs["ours"])
        entry["ours_wall_seconds"] = ours_wall
        if "before" in runs:
            entry["before_src"] = str(args.compare_src)
            entry["before_runs"] = runs["before"]
            entry["before_wall_seconds"] = statistics.median(
                r["wall_seconds"] for r in runs["before"])
        print_stages(runs)
        if not args.skip_baseline:
            print("  baseline (k search alone) ...", flush=True)
            base = (baseline_numeric(rows, args.seed) if case in ("50k", "quick")
                    else baseline_mixed(path, truth, args.seed))
            entry["baseline"] = base
            entry["ratio"] = round(base["seconds"] / ours_wall, 2)
            print(f"  baseline: {base['seconds']:.2f} s, k={base['chosen_k']}, ARI "
                  f"{base['ari_planted']:.3f}")
            print(f"  ratio baseline / ours whole process: {entry['ratio']:.2f}x")
            if "before_wall_seconds" in entry:
                entry["ratio_before"] = round(base["seconds"] / entry["before_wall_seconds"], 2)
                print(f"  ratio baseline / before whole process: {entry['ratio_before']:.2f}x")
    entry["load_after"] = ksearch.load_average()
    print(f"  load average after {entry['load_after']}")
    out = args.out or RESULTS / f"whole_run_{case}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(ksearch._jsonable(entry), indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
