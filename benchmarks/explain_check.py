"""Benchmark: the explanation stage, before (a git revision) against now, on the benchmark tables.

For each table it builds what the describe stage hands :func:`autoseg.explain.explain_clusters`
(the readable features of the describe sample and the k-means labels of the chosen k), then
runs the explanation of ``--against`` (default ``main``, loaded from git) and of the working
tree in the same process, alternating, and reports for each: wall time (median of
``--repeat``), boosting rounds, fidelity, the top three features by importance and the top
feature of each cluster by mean |SHAP|. The issue asks: fidelity within 0.01 of the revision's
and the same top features.

Tables: ``50k`` (the 50,000 x 30 numeric table of ``ksearch_vs_notebook.py``, k = 6) and ``1m``
(the describe sample, 200,000 rows, of the mixed customer table of ``scale.py``, k = 5).

Usage::

    PYTHONPATH=src python benchmarks/explain_check.py --table 50k --table 1m --repeat 3
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import ksearch_vs_notebook as ksearch  # noqa: E402
import scale  # noqa: E402

from autoseg import explain as explain_now  # noqa: E402
from autoseg.features import fit_features  # noqa: E402
from autoseg.sampling import DESCRIBE_ROWS  # noqa: E402


def explain_at(revision: str) -> ModuleType:
    """``autoseg/explain.py`` as it is at ``revision``, imported under another name."""
    source = subprocess.run(["git", "-C", str(HERE.parent), "show",
                             f"{revision}:src/autoseg/explain.py"],
                            capture_output=True, text=True, check=True).stdout
    path = Path(tempfile.mkdtemp()) / "explain_before.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("explain_before", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["explain_before"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def table(name: str) -> tuple[pd.DataFrame, np.ndarray]:
    """Readable features and k-means labels of one benchmark table."""
    from sklearn.cluster import KMeans

    if name == "50k":
        values, _ = ksearch.make_table(50_000, 30, 6, 0)
        frame = pd.DataFrame({f"x{i:02d}": values[:, i] for i in range(values.shape[1])})
        k = 6
    else:
        frame = pd.read_parquet(scale.generate(1_000_000, 0))
        rows = np.sort(np.random.default_rng(0).choice(len(frame), DESCRIBE_ROWS, replace=False))
        frame = frame.iloc[rows].reset_index(drop=True)
        k = 5
    spec = fit_features(frame, ("time",))
    matrix, _ = spec.transform(frame)
    labels = KMeans(n_clusters=k, n_init=3, random_state=0).fit_predict(matrix)
    return spec.readable(frame), labels


def facts(result: Any) -> dict[str, Any]:
    shap = result.shap_by_cluster
    return {
        "rounds": result.n_rounds, "fidelity": round(float(result.fidelity), 5),
        "n_train": result.n_train, "n_shap_rows": result.n_shap_rows,
        "top_features": result.feature_importance["feature"].head(3).tolist(),
        "top_shap_feature_per_cluster": shap[shap["rank"] == 1]["feature"].tolist(),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table", action="append", choices=["50k", "1m"])
    parser.add_argument("--against", default="main", help="git revision of the 'before'")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "explain_check.json")
    args = parser.parse_args()
    before = explain_at(args.against)
    record: dict[str, Any] = {"against": args.against, "load_before": os.getloadavg()}
    for name in args.table or ["50k"]:
        features, labels = table(name)
        times: dict[str, list[float]] = {"before": [], "now": []}
        found: dict[str, dict[str, Any]] = {}
        for _ in range(args.repeat):
            for label, module in (("before", before), ("now", explain_now)):
                started = time.perf_counter()
                result = module.explain_clusters(features, labels, seed=0)
                times[label].append(time.perf_counter() - started)
                found[label] = facts(result)
        entry = {label: {"seconds": round(statistics.median(times[label]), 3), **found[label]}
                 for label in times}
        entry["ratio"] = round(entry["before"]["seconds"] / entry["now"]["seconds"], 2)
        entry["fidelity_diff"] = round(entry["now"]["fidelity"] - entry["before"]["fidelity"], 5)
        entry["same_top_features"] = (found["now"]["top_features"]
                                      == found["before"]["top_features"])
        record[name] = entry
        print(f"{name}: {json.dumps(entry)}", flush=True)
    record["load_after"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
