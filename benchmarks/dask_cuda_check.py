"""GPU host check: ``--dask local`` starts a LocalCUDACluster and its run matches one machine.

Meant for a CUDA machine with dask-cuda installed (cuDF/cuML are optional: without them the
run's device is the CPU and the all-rows refit uses autoseg's Dask Lloyd reductions, with them
``cuml.dask``)::

    python benchmarks/dask_cuda_check.py

It writes the demo table (20,000 rows) as a 4-file Parquet dataset, starts the cluster through
``autoseg.dask.cluster.client_from_options(None, local=True)``, runs the sampled search plus the
all-rows refit on it, runs the single-machine pipeline on the same table, and prints one JSON
line (cluster class, the workers' CUDA_VISIBLE_DEVICES, k of both runs, ARI, refit engine,
device) and OK or FAILED (exit code 1): OK needs a LocalCUDACluster, the same k and ARI >= 0.99.
"""
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from sklearn.metrics import adjusted_rand_score  # noqa: E402

from autoseg.config import build_config  # noqa: E402
from autoseg.dask.cluster import client_from_options  # noqa: E402
from autoseg.demo import make_customers, to_arrow  # noqa: E402
from autoseg.pipeline import run, run_on_dask  # noqa: E402


def main() -> int:
    work = Path(tempfile.mkdtemp())
    table = to_arrow(make_customers(20000)[0])
    folder = work / "customers"
    folder.mkdir()
    for i in range(4):
        pq.write_table(table.slice(i * 5000, 5000), folder / f"part-{i}.parquet")
    single = work / "customers.parquet"
    pq.write_table(table, single)
    values = {"store": f"duckdb:{work / 's.duckdb'}", "search_sample_size": 5000,
              "silhouette_exact_max_rows": 5000, "kmeans_restarts": 3, "max_clusters": 6}
    info = {}
    started = time.perf_counter()
    client = client_from_options(None, local=True)
    info["cluster"] = type(client.cluster).__name__
    info["start_seconds"] = round(time.perf_counter() - started, 1)
    info["workers_cuda_visible_devices"] = list(
        client.run(lambda: os.environ.get("CUDA_VISIBLE_DEVICES")).values())
    started = time.perf_counter()
    summary = run_on_dask(build_config({**values, "input_table": str(folder), "dask": "local",
                                        "output_dir": str(work / "dask")}), client,
                          input_path=str(folder), output_path=str(work / "labelled")).summary
    info["dask_run_seconds"] = round(time.perf_counter() - started, 1)
    client.close()
    client.cluster.close()
    reference = run(build_config({**values, "input_table": str(single),
                                  "output_dir": str(work / "single")}))
    written = pq.read_table(work / "labelled").sort_by("customer_id")
    ours = written.column("cluster_id").to_numpy()
    theirs = reference.labels[table.column("customer_id").to_numpy().argsort()]
    info.update({
        "rows": written.num_rows, "k_dask": summary["chosen_k"], "k_single": reference.chosen_k,
        "ari": round(float(adjusted_rand_score(theirs, ours)), 6),
        "refit": summary["fit_all_rows"], "device": summary["device"]["used"],
        "device_reason": summary["device"]["reason"],
        "all_rows_silhouette": summary["silhouette"].get("all_rows", {}).get("score"),
    })
    print(json.dumps(info, default=str))
    ok = (info["cluster"] == "LocalCUDACluster" and info["k_dask"] == info["k_single"]
          and info["ari"] >= 0.99 and info["rows"] == 20000)
    print("OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
