"""Benchmark: the Dask run (``autoseg.pipeline.run_on_dask``) against the number of workers.

Usage::

    python benchmarks/dask_workers.py                          # 1M rows, 1 and 2 workers
    python benchmarks/dask_workers.py --rows 100000 --workers 1 --workers 2 --restarts 3
    python benchmarks/dask_workers.py --sink dataset --sink duckdb   # also streamed to DuckDB
    python benchmarks/dask_workers.py --rows 10000000 --workers 2 --partitions 40 \
        --results benchmarks/results/dask_workers_10m.json

The table is ``benchmarks/scale.py``'s synthetic customer table (generated once, cached under
``benchmarks/data/``), split into ``--partitions`` Parquet files. Each worker count gets a fresh
``LocalCluster`` of single-threaded worker *processes* (threads would share the GIL in the
pandas parts), and the k search runs on a sample as in production (``search_sample_size``), so
the distributed stages are the feature transform, the Lloyd refit on all rows, the size and
all-rows silhouette pass, the assignment and the write (a dataset, or rows streamed to DuckDB
with ``--sink duckdb``). Recorded per run: wall time, the summary's stage timings, the chosen k,
the Lloyd iterations and the adjusted Rand index against the planted segments. Results go to
``benchmarks/results/dask_workers.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from scale import generate  # noqa: E402  (benchmarks/ is not a package)

RESULTS = HERE / "results" / "dask_workers.json"  # --results names another file


def partition(source: Path, parts: int, folder: Path) -> Path:
    """Split one Parquet file into ``parts`` files of consecutive rows (same global order)."""
    table = pq.read_table(source)
    folder.mkdir(parents=True, exist_ok=True)
    step = -(-table.num_rows // parts)
    for i in range(parts):
        pq.write_table(table.slice(i * step, step), folder / f"part-{i:03d}.parquet")
    return folder


def run_once(dataset: Path, workers: int, restarts: int, work: Path,
             sink: str = "dataset") -> dict[str, object]:
    """One timed Dask run on a fresh LocalCluster of ``workers`` single-thread processes.

    ``sink`` is ``dataset`` (a partitioned Parquet dataset, ``--dask-output``) or ``duckdb``
    (the rows streamed into a DuckDB table, ``--output-table``, and no dataset).
    """
    from distributed import Client, LocalCluster
    from sklearn.metrics import adjusted_rand_score

    from autoseg.config import build_config
    from autoseg.pipeline import run_on_dask

    out = work / f"labelled-{workers}"
    config = build_config({
        "input_table": str(next(dataset.glob("*.parquet"))),  # validated only; not read
        "output_dir": str(work / f"out-{workers}"),
        "model_dir": str(work / "models"),
        "kmeans_restarts": restarts,
        "store": f"duckdb:{work / 'store.duckdb'}",
        **({"output_table": "bench.segments"} if sink == "duckdb" else {}),
    })
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        started = time.perf_counter()
        summary = run_on_dask(config, client, input_path=str(dataset),
                              output_path=str(out) if sink == "dataset" else None).summary
        wall = time.perf_counter() - started
    truth_file = dataset.parent / "truth.npy"
    ari = None
    if truth_file.exists():
        if sink == "dataset":
            written = pq.read_table(out, columns=["customer_id", "cluster_id"])
        else:
            import duckdb

            with duckdb.connect(str(work / "store.duckdb"), read_only=True) as conn:
                written = conn.sql("SELECT customer_id, cluster_id FROM bench.segments"
                                   ).to_arrow_table()
        # align with the source order of the planted labels through the customer id
        source_ids = pq.read_table(dataset, columns=["customer_id"]).column(0).to_numpy()
        order = np.argsort(written.column("customer_id").to_numpy())
        labels = written.column("cluster_id").to_numpy()[order][np.argsort(np.argsort(
            source_ids))]
        ari = round(float(adjusted_rand_score(np.load(truth_file), labels)), 4)
    shutil.rmtree(out, ignore_errors=True)
    (work / "store.duckdb").unlink(missing_ok=True)
    return {
        "workers": workers,
        "sink": sink,
        "wall_seconds": round(wall, 2),
        "stages_seconds": summary["timings_seconds"],
        "chosen_k": summary["chosen_k"],
        "lloyd": summary["fit_all_rows"],
        "all_rows_silhouette": {key: value for key, value in
                                (summary.get("silhouette") or {}).get("all_rows", {}).items()
                                if key != "per_cluster"},
        "ari_vs_planted": ari,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--workers", type=int, action="append")
    parser.add_argument("--restarts", type=int, default=10, help="k-means++ restarts per k")
    parser.add_argument("--sink", choices=("dataset", "duckdb"), action="append",
                        help="where the labelled rows go (repeatable; default: dataset)")
    parser.add_argument("--results", type=Path, default=RESULTS,
                        help="JSON file for the results (default: %(default)s)")
    args = parser.parse_args(argv)
    source = generate(args.rows)
    runs = []
    with tempfile.TemporaryDirectory(prefix="autoseg-dask-bench-") as tmp:
        work = Path(tmp)
        dataset = partition(source, args.partitions, work / "data" / "customers")
        truth = source.with_name(source.name.replace(".parquet", ".truth.npy"))
        if truth.exists():
            shutil.copy(truth, dataset.parent / "truth.npy")
        for sink in args.sink or ["dataset"]:
            for workers in args.workers or [1, 2]:
                result = run_once(dataset, workers, args.restarts, work, sink)
                print(json.dumps(result), flush=True)
                runs.append(result)
    record = {
        "benchmark": "dask_workers",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "python": platform.python_version()},
        "rows": args.rows,
        "partitions": args.partitions,
        "kmeans_restarts": args.restarts,
        "cluster": "LocalCluster, 1 thread per worker process",
        "runs": runs,
    }
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(record, indent=2) + "\n")
    print(f"written {args.results}")


if __name__ == "__main__":
    main()
