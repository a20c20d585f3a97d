"""The whole run: read, profile, prepare, reduce, choose k, assign, explain, write.

``run(config) -> RunResult`` is the library's entry point; the CLI is a thin shell over it.
Everything is computed before anything is written, and the writes are ordered so a failure
leaves existing outputs as they were: tables in one transaction first, then the model and the
run summary, each swapped into place by a rename.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa

from autoseg import __version__
from autoseg.audience import CDPClient, cdp_client_from_environment, sync_audience
from autoseg.backend import Backend, select_backend
from autoseg.config import RunConfig
from autoseg.drift import drift_report, reference_profile
from autoseg.errors import InputDataError, UsageError
from autoseg.explain import Explanation, explain_clusters
from autoseg.features import FeatureSpec, fit_features
from autoseg.io import TableStore, TableWrite, open_store
from autoseg.io.files import read_file
from autoseg.matching import match_clusters
from autoseg.model import SegmentationModel, StagedModel, data_fingerprint
from autoseg.names import TableName, parse_table_name
from autoseg.profile import profile_table
from autoseg.reduce import Projection, fit_projection
from autoseg.report import write_report
from autoseg.rules import ClusterRule, cluster_rules, rules_to_cdp
from autoseg.search import (
    SearchResult,
    nearest_centroid_with_distance,
    refit_on_all_rows,
    search_k,
)
from autoseg.segments import profile_clusters
from autoseg.stability import choose_stable_k, stability_by_k

if TYPE_CHECKING:
    from autoseg.io import RowChunks

log = logging.getLogger(__name__)

CLUSTER_COLUMN = "cluster_id"
STABILITY_ROWS = 8_000  # evaluation sample of the stability refits
STABILITY_RESTARTS = 2
LOW_FIDELITY = 0.8  # below this hold-out accuracy the explanations carry a warning
PROJECTION_ROWS = 5000
DESCRIBE_ROWS = 200_000  # rows read by explanations, profiles, rules and drift
SUMMARY_FILE = "summary.json"
REPORT_FILE = "report.html"
_VERSIONED_PACKAGES = ("numpy", "pandas", "scikit-learn", "duckdb", "pyarrow", "xgboost")


@dataclass
class RunResult:
    """What a run produced."""

    labels: np.ndarray
    chosen_k: int
    search: SearchResult | None
    summary: dict[str, Any]
    summary_path: Path
    output_table: str | None
    model_path: Path | None
    timings: dict[str, float] = field(default_factory=dict)
    explanation: Explanation | None = None
    projection_2d: dict[str, Any] | None = None


class _Timer:
    """Wall time per stage, for the summary."""

    def __init__(self, on_stage: Callable[[str], None] | None = None) -> None:
        self.seconds: dict[str, float] = {}
        self.on_stage = on_stage

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        log.info("stage %s started", name)
        if self.on_stage is not None:
            self.on_stage(name)
        try:
            yield
        finally:
            self.seconds[name] = round(time.perf_counter() - started, 4)
            log.info("stage %s took %.2fs", name, self.seconds[name])


def run(
    config: RunConfig,
    on_stage: Callable[[str], None] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
) -> RunResult:
    """Segment ``config.input_table`` and write every requested output.

    Parameters
    ----------
    config
        The validated run configuration.
    on_stage
        Called with a stage's name when it starts (the CLI shows it as progress).
    environ
        Environment holding ``TD_API_KEY`` / ``TD_API_SERVER`` for ``--store td`` and the
        audience integration (the CLI passes ``os.environ``; the library never reads it).

    Returns
    -------
    RunResult
        Labels, scores, the summary and where outputs went.

    Raises
    ------
    AutosegError
        Subclasses for user-fixable problems, each with a one-line message.
    """
    timer = _Timer(on_stage)
    backend = select_backend(config.device)
    _check_output_dir(config.output_dir)
    store = open_store(config.store, environ, config.td_engine)
    try:
        # Credentials and the CDP endpoint are checked before any work starts.
        cdp = (cdp_client_from_environment(environ or {}, config.cdp_endpoint)
               if config.audience_enabled else None)
        return _run(config, store, cdp, backend, timer)
    finally:
        store.close()


def _run(
    config: RunConfig, store: TableStore, cdp: CDPClient | None, backend: Backend,
    timer: _Timer,
) -> RunResult:
    output_name = parse_table_name(config.output_table, "--output-table") if config.output_table \
        else None
    saved_model: SegmentationModel | None = None
    if not config.force_refit:
        assert config.model_name is not None  # checked in config
        saved_model = SegmentationModel.load(config.model_dir / config.model_name,
                                             config.model_name)

    with timer.stage("read"):
        source = _read_input(config, store)
        _check_column_names(source.column_names)
        # pandas for the numerics; the Arrow table is what gets written back, so every input
        # column keeps its exact type and values in the output.
        frame = source.to_pandas()
    _check_input(frame, config, saved_model)
    if output_name is not None:
        store.check_columns(output_name, [*source.column_names, CLUSTER_COLUMN])
        _check_output_table(store, output_name, frame, config.output_mode)

    with timer.stage("profile"):
        profile = profile_table(frame, config.hide_table_contents, config.seed)

    search: SearchResult | None = None
    projection = None
    if saved_model is None:
        with timer.stage("features"):
            spec = fit_features(frame, config.ignore_columns, config.seed)
            matrix, imputed = spec.transform(frame)
        with timer.stage("reduce"):
            projection = fit_projection(matrix, config.dimension_reduction_threshold,
                                        config.seed, backend)
            if projection is not None:
                log.info("reduced %d prepared columns to %d PCA components (%.0f%% variance)",
                         matrix.shape[1], projection.components.shape[0],
                         100 * projection.explained_variance_ratio)
                matrix = projection.transform(matrix)
        n_rows = matrix.shape[0]
        sampled = search_is_sampled(config, n_rows)
        with timer.stage("search"):
            # Restarts and silhouettes are affordable on a sample; the chosen k is then fitted
            # on every row below. Small tables are searched whole.
            search_rows = (_sample_rows(n_rows, config.search_sample_size, config.seed)
                           if sampled else None)
            search_x = matrix if search_rows is None else matrix[search_rows]
            search = search_candidates(search_x, n_rows, config, backend)
        _stability_stage(search, search_x, config, timer)
        centroids = search.centroids
        if sampled:
            with timer.stage("fit_all_rows"):
                centroids, inertia = refit_on_all_rows(matrix, centroids, config.seed, backend)
                log.info("k=%d refitted on all %d rows (inertia %.6g)", search.chosen_k,
                         n_rows, inertia)
        centroids, id_matching = _stable_ids(config, spec, projection, centroids)
        model = SegmentationModel(
            spec=spec, centroids=centroids, projection=projection, k=search.chosen_k,
            fingerprint=data_fingerprint(frame),
        )
        with timer.stage("assign"):
            labels, distances = _assign(matrix, model.centroids, backend)
    else:
        model = saved_model
        spec = model.spec
        id_matching = None
        with timer.stage("features"):
            matrix, imputed = model.prepare(frame)
        with timer.stage("assign"):
            labels, distances = _assign(matrix, model.centroids, backend)
        log.info("reused saved model %r (k=%d); no fitting", config.model_name, model.k)

    with timer.stage("explain"):
        # Explanations, profiles, rules and drift read a uniform sample of at most
        # DESCRIBE_ROWS rows: means and shares from 200,000 rows are within about 0.01
        # standard deviations of the whole table's, and at 1M rows this halves the stage
        # (measured: 5.6 s -> under 3 s); a readable copy of a 10M-row table would also cost
        # 800 MB. Cluster sizes stay exact (counted from all labels).
        rows = _sample_rows(len(frame), DESCRIBE_ROWS, config.seed)
        exact_sizes = np.bincount(labels, minlength=model.k)
        described = describe_clusters(
            frame if rows is None else frame.iloc[rows],
            labels if rows is None else labels[rows],
            distances if rows is None else distances[rows],
            exact_sizes, model, config, reused=saved_model is not None,
            xgboost_device=backend.xgboost_device,
        )
        explanation = described.explanation
        profiles = described.profiles
        projection_2d = _projection_sample(matrix, labels, config.seed)

    sizes = exact_sizes.tolist()
    summary = _summary(config, frame, spec, profile, imputed, search, model, sizes, labels,
                       backend, timer,
                       _explanation_summary(explanation, described.explanation_note))
    summary["clusters"] = profiles
    if id_matching is not None:
        summary["cluster_ids"] = id_matching
    if described.drift is not None:
        summary["drift"] = described.drift

    with timer.stage("write"):
        labelled = (source.append_column(CLUSTER_COLUMN, pa.array(labels, type=pa.int32()))
                    if output_name is not None else None)
        writes = table_writes(config, output_name, labelled, described)
        # The model's files are written first (what can fail for ordinary reasons); after the
        # tables only its renames are left.
        staged_model = (stage_model(model, config, explanation)
                        if config.model_name and saved_model is None else None)
        try:
            if writes:
                store.write_tables(writes)
        except BaseException:
            if staged_model is not None:
                staged_model.discard()
            raise
        model_path = staged_model.commit() if staged_model is not None else None
    if cdp is not None and output_name is not None:
        summary.update(sync_audiences(cdp, config, output_name, described, timer))
    summary["timings_seconds"] = timer.seconds
    summary["outputs"] = {
        "output_table": str(output_name) if output_name else None,
        "store": store.description,
        "model": str(model_path) if model_path else None,
        "summary": str(config.output_dir / SUMMARY_FILE),
    }
    summary["finished_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    summary["outputs"]["report"] = str(config.output_dir / REPORT_FILE)
    summary_path = _write_json_atomically(config.output_dir / SUMMARY_FILE, summary)
    with timer.stage("report"):
        write_report(config.output_dir / REPORT_FILE, summary, projection_2d,
                     config.hide_table_contents)
    return RunResult(
        labels=labels, chosen_k=model.k, search=search, summary=summary,
        summary_path=summary_path, output_table=str(output_name) if output_name else None,
        model_path=model_path, timings=timer.seconds, explanation=explanation,
        projection_2d=projection_2d,
    )


@dataclass
class Description:
    """What the describe stage found: explanation, per-cluster profiles and rules, drift."""

    explanation: Explanation | None
    explanation_note: str | None
    profiles: list[dict[str, Any]]
    rules: list[ClusterRule]
    drift: dict[str, Any] | None


def describe_clusters(
    sample: pd.DataFrame, labels: np.ndarray, distances: np.ndarray, sizes: np.ndarray,
    model: SegmentationModel, config: RunConfig, *, reused: bool, xgboost_device: str = "cpu",
) -> Description:
    """Explain, profile and describe every cluster from a bounded sample of labelled rows.

    Shared by the single-machine run and the Dask run, so both describe clusters the same way.

    Parameters
    ----------
    sample
        Input rows (at most ``DESCRIBE_ROWS``), as read.
    labels, distances
        Their cluster ids and distances to the assigned centroid.
    sizes
        Exact cluster sizes of the whole table (profiles report them, not the sample's).
    model
        The fitted or reused model; a new model gets the drift reference of this sample in
        ``model.extra["reference"]``.
    config
        The run configuration.
    reused
        Whether ``model`` is a saved model applied without refitting (then drift is reported
        against its reference, when it has one).
    xgboost_device
        ``"cpu"`` or ``"cuda"`` for the surrogate explanation.

    Returns
    -------
    Description
        Explanation (``None`` with a note when there is nothing to explain), profiles with
        sizes, shares and rules, the rules, and the drift report of a reused model.
    """
    readable = model.spec.readable(sample)
    explanation, note = _explain_stage(readable, labels, model.k, config, xgboost_device)
    kinds = {f.column: f.kind for f in model.spec.numeric}
    profiles = profile_clusters(
        readable, labels, model.k,
        explanation.shap_by_cluster if explanation is not None else None,
        config.hide_table_contents, kinds,
    )
    total = float(np.sum(sizes))
    for cluster in profiles:
        cluster["size"] = int(sizes[cluster["cluster_id"]])
        cluster["share"] = float(sizes[cluster["cluster_id"]] / total)
    rules = cluster_rules(readable, labels, model.k, seed=config.seed, kinds=kinds)
    for rule in rules:
        profiles[rule.cluster_id]["rule"] = _rule_summary(rule, config.hide_table_contents)
    drift = None
    if reused and "reference" in model.extra:
        drift = drift_report(model.extra["reference"], readable, labels, distances)
        for warning in drift.get("warnings", []):
            log.warning("drift: %s", warning.get("message"))
    else:
        model.extra["reference"] = reference_profile(readable, labels, distances, model.k)
    return Description(explanation, note, profiles, rules, drift)


def table_writes(
    config: RunConfig, output_name: TableName | None,
    labelled: pa.Table | RowChunks | None, described: Description,
) -> list[TableWrite]:
    """Every table the run writes: the labelled rows (when an output table is named), the
    requested exports and the segment-rules table, written together, all or nothing."""
    writes: list[TableWrite] = []
    if output_name is not None and labelled is not None:
        writes.append(TableWrite(output_name, labelled, config.output_mode))
    writes.extend(_export_writes(config, output_name, described.explanation))
    if config.export_segment_rules:
        writes.append(_rules_write(config, output_name, described.rules))
    return writes


def stage_model(model: SegmentationModel, config: RunConfig,
                explanation: Explanation | None) -> StagedModel:
    """Write a newly fitted model (with its surrogate) beside its ``--model-name`` folder;
    the caller commits it once the tables are written, or discards it."""
    assert config.model_name is not None
    surrogate = (explanation.booster.save_raw(raw_format="json")
                 if explanation is not None else None)
    return model.stage(config.model_dir / config.model_name, surrogate)


def sync_audiences(cdp: CDPClient, config: RunConfig, output_name: TableName,
                   described: Description, timer: _Timer) -> dict[str, Any]:
    """Create or update the CDP audience (one segment per cluster; with ``--segment-rules``
    also the rule segments); returns the summary entries ``audience`` (``audience_rules``)."""
    found: dict[str, Any] = {}
    with timer.stage("audience"):
        audience = sync_audience(
            cdp, audience_name=str(config.audience_name),
            output_database=str(output_name.database), output_table=output_name.table,
            rowid_column=str(config.rowid_column), foreign_key=str(config.foreign_key),
            clusters=described.profiles,
        )
    found["audience"] = audience
    if config.segment_rules:
        with timer.stage("audience_rules"):
            found["audience_rules"] = sync_audience(
                cdp, audience_name=str(config.audience_name),
                output_database=str(output_name.database), output_table=output_name.table,
                rowid_column=str(config.rowid_column), foreign_key=str(config.foreign_key),
                clusters=described.profiles, folder_name=f"autoseg rules: {output_name.table}",
                rules={r.cluster_id: rules_to_cdp(r) for r in described.rules if r.conditions},
                rule_attributes=_rule_attributes(described.rules),
            )
    log.info("audience %r: %d segments created, %d updated, %d removed",
             config.audience_name, audience.get("created", 0), audience.get("updated", 0),
             audience.get("deleted", 0))
    return found


def search_is_sampled(config: RunConfig, n_rows: int) -> bool:
    """Whether the k search runs on a sample: tables up to ``silhouette_exact_max_rows`` (and
    ``search_sample_size``) are searched whole with exact silhouettes, larger ones on a uniform
    sample of ``search_sample_size`` rows."""
    return n_rows > max(config.silhouette_exact_max_rows, config.search_sample_size)


def search_candidates(search_x: np.ndarray, n_rows: int, config: RunConfig,
                      backend: Backend | None = None) -> SearchResult:
    """The k search on ``search_x``: the whole table's prepared rows, or a uniform sample of a
    table of ``n_rows`` rows (then the standard errors count that sampling too)."""
    # --min-cluster-size counts rows of the whole table; the search may see a sample
    min_rows = config.min_cluster_rows(n_rows)
    return search_k(
        search_x, _k_values(config, n_rows),
        restarts=config.kmeans_restarts, seed=config.seed,
        exact_max_rows=config.silhouette_exact_max_rows,
        sample_size=config.silhouette_sample_size,
        population_rows=n_rows if len(search_x) < n_rows else None,
        min_cluster_size=int(np.ceil(min_rows * len(search_x) / n_rows)),
        backend=backend,
    )


def search_summary(search: SearchResult) -> dict[str, Any]:
    """The k search in the summary: every candidate, the choice and its reason, silhouettes."""
    return {
        "k_search": [c.as_dict() for c in search.candidates],
        "chosen_reason": search.reason,
        "silhouette": {
            "exact": search.silhouette_exact,
            "search_rows": len(search.labels),
            "points_scored": search.silhouette_points,
            "per_cluster": search.per_cluster_silhouette,
        },
    }


def _explain_stage(
    readable: pd.DataFrame, labels: np.ndarray, k: int, config: RunConfig,
    device: str = "cpu",
) -> tuple[Explanation | None, str | None]:
    """Surrogate XGBoost, Gini importance and per-cluster SHAP; ``None`` with a reason when
    the clustering cannot be explained (fewer than two non-empty clusters)."""
    present = np.unique(labels)
    if present.size < 2:
        note = "only one non-empty cluster: nothing to explain"
        log.warning("explanation skipped: %s", note)
        return None, note
    if present.size < k:
        # A reused model may leave clusters empty; explain the clusters that exist.
        remap = np.full(k, -1)
        remap[present] = np.arange(present.size)
        explanation = explain_clusters(readable, remap[labels], seed=config.seed, device=device)
        table = explanation.shap_by_cluster.copy()
        table["cluster_id"] = present[table["cluster_id"].to_numpy()]
        explanation = dataclasses.replace(explanation, shap_by_cluster=table)
    else:
        explanation = explain_clusters(readable, labels, seed=config.seed, device=device)
    if not np.isnan(explanation.fidelity) and explanation.fidelity < LOW_FIDELITY:
        log.warning(
            "explanation fidelity %.2f is low: the surrogate model reproduces the clusters "
            "poorly, so read the explanations with care", explanation.fidelity,
        )
    return explanation, None


def _explanation_summary(explanation: Explanation | None, note: str | None) -> dict[str, Any]:
    if explanation is None:
        return {"available": False, "note": note}
    fidelity = None if np.isnan(explanation.fidelity) else float(explanation.fidelity)
    return {
        "available": True,
        "fidelity": fidelity,
        "low_fidelity_warning": fidelity is not None and fidelity < LOW_FIDELITY,
        "n_train": explanation.n_train,
        "n_holdout": explanation.n_holdout,
        "n_shap_rows": explanation.n_shap_rows,
        "rounds": explanation.n_rounds,
        "device": explanation.device,
        "feature_importance": explanation.feature_importance.to_dict(orient="records"),
        "shap_by_cluster": explanation.shap_by_cluster.to_dict(orient="records"),
    }


def _export_writes(
    config: RunConfig, output_name: TableName | None, explanation: Explanation | None
) -> list[TableWrite]:
    """Feature-importance and SHAP tables, named ``[dbname.]table`` (default: the output's db)."""
    database = output_name.database if output_name else None
    writes = []
    for option, attribute in (("export_feature_importance", "feature_importance"),
                              ("export_shap_values", "shap_by_cluster")):
        target = getattr(config, option)
        if not target:
            continue
        if explanation is None:
            log.warning("--%s: no explanation to export; table not written",
                        option.replace("_", "-"))
            continue
        name = parse_table_name(target, "--" + option.replace("_", "-"), database)
        frame = getattr(explanation, attribute).reset_index(drop=True)
        writes.append(TableWrite(name, frame, config.output_mode))
    return writes


def _sample_rows(n: int, limit: int, seed: int) -> np.ndarray | None:
    """Sorted positions of a uniform sample of ``limit`` rows, or None when ``n <= limit``."""
    if n <= limit:
        return None
    return np.sort(np.random.default_rng(seed).choice(n, size=limit, replace=False))


def _projection_sample(matrix: np.ndarray, labels: np.ndarray, seed: int) -> dict[str, Any]:
    """A 2-D PCA view of a sample of rows, for the report's scatter plot."""
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(len(matrix), size=min(len(matrix), PROJECTION_ROWS),
                              replace=False))
    sample = matrix[rows].astype(np.float64)
    centred = sample - sample.mean(axis=0)
    if centred.shape[1] >= 2:
        _, _, vt = np.linalg.svd(centred, full_matrices=False)
        xy = centred @ vt[:2].T
    else:
        xy = np.column_stack([centred[:, 0], np.zeros(len(centred))])
    return {"xy": xy.astype(np.float32), "labels": labels[rows]}


def _assign(matrix: np.ndarray, centroids: np.ndarray,
            backend: Backend) -> tuple[np.ndarray, np.ndarray]:
    """Nearest centroid and distance of every row, on the backend's device."""
    if backend.is_gpu:
        return nearest_centroid_with_distance(backend.to_device(matrix, np.float32), centroids,
                                              xp=backend.xp)
    return nearest_centroid_with_distance(matrix, centroids)


def _stability_stage(search: SearchResult, x: np.ndarray, config: RunConfig,
                     timer: _Timer) -> None:
    """Stability of every choosable k beside its silhouette; with --prefer-stable, choose by it."""
    ks = sorted(search.choosable())
    if config.stability_runs < 2 or len(ks) < 2:
        return
    with timer.stage("stability"):
        scores = stability_by_k(x, ks, runs=config.stability_runs, max_rows=STABILITY_ROWS,
                                restarts=STABILITY_RESTARTS, seed=config.seed)
    for cand in search.candidates:
        if cand.k in scores:
            cand.stability = scores[cand.k].mean_ari
    if config.prefer_stable:
        # tie_break="silhouette": several practically perfectly stable k (0.999 vs 0.998)
        # should not merge real segments just because the smaller one is a hair more stable.
        k, reason = choose_stable_k(search.choosable(), scores, tie_break="silhouette")
        if k != search.chosen_k:
            search.choose(k, reason)
        else:
            search.reason += "; also the most stable"


def _prepared_centroids(centroids: np.ndarray, projection: Projection | None) -> np.ndarray:
    """Centroids in the prepared (pre-PCA) space, where two fits can be compared."""
    if projection is None:
        return centroids
    return centroids @ projection.components + projection.mean


def _stable_ids(
    config: RunConfig, spec: FeatureSpec, projection: Projection | None, centroids: np.ndarray
) -> tuple[np.ndarray, dict[str, Any] | None]:
    """Order the new centroids so each cluster keeps the id of the saved model's closest match.

    Ids stay 0..k-1: a matched cluster keeps its old id when that id still exists; the others
    take the free ids and are reported as new, so a CDP segment never silently changes meaning
    without the summary saying so.
    """
    if not config.model_name:
        return centroids, None
    try:
        previous = SegmentationModel.load(config.model_dir / config.model_name,
                                          config.model_name)
    except UsageError:
        return centroids, None  # first fit under this name
    if previous.spec.matrix_columns != spec.matrix_columns:
        note = "the prepared columns changed since the saved model: ids not matched"
        log.warning("cluster ids: %s", note)
        return centroids, {"matched": False, "note": note}
    k = centroids.shape[0]
    matching = match_clusters(_prepared_centroids(previous.centroids, previous.projection),
                              _prepared_centroids(centroids, projection))
    ids = np.full(k, -1)
    for new, old in matching.mapping.items():
        if old < k:
            ids[new] = old
    free = [i for i in range(k) if i not in set(ids.tolist())]
    renumbered = []
    for new in range(k):
        if ids[new] < 0:
            ids[new] = free.pop(0)
            renumbered.append(int(ids[new]))
    order = np.argsort(ids)
    kept = sorted(int(ids[n]) for n in matching.mapping if ids[n] == matching.mapping[n])
    info = {
        "matched": True,
        "kept": kept,
        "new": sorted(renumbered),
        "vanished": sorted(int(v) for v in matching.vanished_old if v not in kept),
    }
    log.info("cluster ids matched to the saved model: kept %s, new %s, vanished %s",
             info["kept"], info["new"], info["vanished"])
    return centroids[order], info


def _rule_summary(rule: ClusterRule, hide_table_contents: bool) -> dict[str, Any]:
    data = rule.as_dict()
    if hide_table_contents:
        # Thresholds are cut points between rows, not row values; category levels are hidden
        # like everywhere else under hide_table_contents.
        kept = [c for c in rule.conditions if c.operator not in ("in", "not in")]
        data["conditions"] = [c for c in data["conditions"]
                              if c["operator"] not in ("in", "not in")]
        if len(kept) < len(rule.conditions):
            data["text"] = " AND ".join([c.text for c in kept] + ["(category conditions hidden)"])
    return data


def _rule_attributes(rules: list[ClusterRule]) -> dict[str, tuple[str, str]]:
    """CDP attributes the rule segments test: the output column and its CDP type."""
    types = {"numeric": "number", "binary": "number", "date": "timestamp"}
    found: dict[str, tuple[str, str]] = {}
    for rule in rules:
        for condition in rule.conditions:
            kind = ("string" if condition.operator in ("in", "not in")
                    else types.get(condition.kind, "number"))
            found[condition.feature] = (condition.feature, kind)
    return found


def _rules_write(config: RunConfig, output_name: TableName | None,
                 rules: list[ClusterRule]) -> TableWrite:
    name = parse_table_name(str(config.export_segment_rules), "--export-segment-rules",
                            output_name.database if output_name else None)
    frame = pd.DataFrame({
        "cluster_id": [r.cluster_id for r in rules],
        "rule": [r.text for r in rules],
        "precision": [r.precision for r in rules],
        "recall": [r.recall for r in rules],
        "support": [r.support for r in rules],
    })
    return TableWrite(name, frame, config.output_mode)


def _read_input(config: RunConfig, store: TableStore) -> pa.Table:
    if config.input_is_file:
        _check_csv_header(config.input_table)
        return read_file(config.input_table)
    return store.read_table(parse_table_name(config.input_table, "--input-table"))


def _check_csv_header(path: str) -> None:
    """Refuse duplicate CSV header names before pandas silently renames them."""
    if not path.lower().endswith((".csv", ".tsv")) or not Path(path).exists():
        return
    with open(path, newline="", encoding="utf-8", errors="replace") as handle:
        header = next(csv.reader(handle, delimiter="\t" if path.endswith(".tsv") else ","), [])
    _check_column_names([h.strip() for h in header], f"--input-table={path!r}")


def _check_column_names(names: list[str], where: str = "--input-table") -> None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise InputDataError(f"{where} has two columns named {name!r}: rename one")
        seen.add(name)


def _check_input(frame: pd.DataFrame, config: RunConfig,
                 saved_model: SegmentationModel | None) -> None:
    """Data checks that must pass before any work starts."""
    if len(frame) == 0:
        raise InputDataError(
            f"--input-table={config.input_table!r} is empty: it has no rows to cluster"
        )
    if CLUSTER_COLUMN in frame.columns:
        raise InputDataError(
            f"--input-table already has a {CLUSTER_COLUMN!r} column: drop or rename it first "
            "(it would be overwritten)"
        )
    # `time` is ignored by default (TD adds it to every table); its absence is no news
    unknown = [c for c in config.ignore_columns if c not in frame.columns and c != "time"]
    if unknown:
        log.warning("--ignore-columns: %s not in the input; ignored", ", ".join(map(repr, unknown)))
    if config.rowid_column:
        if config.rowid_column not in frame.columns:
            raise InputDataError(
                f"--rowid-column={config.rowid_column!r} is not a column of the input: use one "
                "of its columns"
            )
        if not frame[config.rowid_column].is_unique:
            raise InputDataError(
                f"--rowid-column={config.rowid_column!r} is not unique: give the table's "
                "primary key"
            )
    if saved_model is not None:
        saved_model.spec.check_columns(frame)
        return
    needed = config.num_clusters or config.max_clusters
    if len(frame) < needed + 1:
        option = "--num-clusters" if config.num_clusters else "--max-clusters"
        raise InputDataError(
            f"n_rows={len(frame)} must be >= {option.lstrip('-').replace('-', '_')}+1="
            f"{needed + 1}: lower {option} or give more rows"
        )


def _check_output_table(store: TableStore, name: TableName, frame: pd.DataFrame,
                        mode: str) -> None:
    """An append must match the existing table's columns; checked before any work."""
    if mode != "append":
        return
    existing = store.table_columns(name)
    if existing is None:
        return
    expected = [str(c) for c in frame.columns] + [CLUSTER_COLUMN]
    if [c.lower() for c in existing] != [c.lower() for c in expected]:
        extra = sorted(set(expected) - set(existing))
        missing = sorted(set(existing) - set(expected))
        detail = f"new columns {extra}" if extra else f"missing columns {missing}"
        if not extra and not missing:
            detail = "columns in a different order"
        raise InputDataError(
            f"--output-mode=append: {str(name)!r} has different columns ({detail}): use "
            "--output-mode overwrite or another --output-table"
        )


def _k_values(config: RunConfig, n_rows: int) -> list[int]:
    if config.num_clusters:
        return [config.num_clusters]
    return list(range(config.min_clusters, config.max_clusters + 1))


def _check_output_dir(path: Path) -> None:
    """Fail early (before any work) when the output directory cannot be written.

    Nothing is created here: a run that fails later leaves no empty directory behind.
    """
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    problem = None
    if not existing.is_dir():
        problem = f"{str(existing)!r} is not a directory"
    elif not os.access(existing, os.W_OK | os.X_OK):
        problem = f"{str(existing)!r} is not writable"
    if problem:
        raise UsageError(
            f"--output-dir={str(path)!r} cannot be created or written ({problem}): choose "
            "another directory"
        )


def _write_json_atomically(path: Path, data: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            # Strict JSON: NaN (a cluster without a sampled point, say) is written as null.
            json.dump(_without_nan(data), handle, indent=2, default=_json_default,
                      allow_nan=False)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _without_nan(value: Any) -> Any:
    """``value`` with every NaN or infinite float (NumPy's too) replaced by ``None``."""
    if isinstance(value, dict):
        return {k: _without_nan(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_without_nan(v) for v in value]
    if isinstance(value, (float, np.floating)) and not np.isfinite(value):
        return None
    return value


def _json_default(value: Any) -> Any:
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _versions() -> dict[str, str]:
    versions = {"autoseg": __version__}
    for package in _VERSIONED_PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            # the CPU image installs XGBoost as the xgboost-cpu distribution
            try:
                versions[package] = metadata.version(f"{package}-cpu")
            except metadata.PackageNotFoundError:
                versions[package] = "not installed"
    return versions


def _summary(
    config: RunConfig, frame: pd.DataFrame, spec: FeatureSpec, profile: dict[str, Any],
    imputed: dict[str, int], search: SearchResult | None, model: SegmentationModel,
    sizes: list[int], labels: np.ndarray, backend: Backend, timer: _Timer,
    explanation: dict[str, Any] | None,
) -> dict[str, Any]:
    n = len(frame)
    summary: dict[str, Any] = {
        "autoseg_version": __version__,
        "parameters": config.public_dict(),
        "rows_read": n,
        "device": backend.describe(),
        "stages_device": backend.stage_devices(
            explain_device=(explanation or {}).get("device")),
        "columns_used": spec.used_columns,
        "columns_dropped": [{"column": d.column, "reason": d.reason} for d in spec.dropped],
        "prepared_columns": len(spec.matrix_columns),
        "values_imputed": imputed,
        "pca_components": (
            int(model.projection.components.shape[0]) if model.projection is not None else None
        ),
        "profile": profile,
        "refit": search is not None,
        "chosen_k": model.k,
        "cluster_sizes": sizes,
        "cluster_shares": [round(s / n, 6) for s in sizes],
        "explanation": explanation,
        "versions": _versions(),
    }
    if search is not None:
        summary.update(search_summary(search))
    else:
        summary["chosen_reason"] = f"reused saved model {config.model_name!r}"
    return summary
