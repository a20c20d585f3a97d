"""The run skeleton: the order of a run, written once for both engines.

``run(config) -> RunResult`` is the library's entry point (the CLI is a thin shell over it). It
picks the row engine (:class:`autoseg.local.LocalEngine` on one machine,
:class:`autoseg.dask.engine.DaskEngine` on a Dask cluster) and drives it through one order:

1. pre-flight: every output location checked, the saved model loaded, credentials checked;
2. read the input and check it (:mod:`autoseg.checks`);
3. draw every row set once (:mod:`autoseg.sampling`);
4. profile; fit (features, PCA, k search, stability, all-rows refit, stable ids) or reuse;
5. count the clusters over every row; describe them from the describe sample;
6. build the summary; stage the model, the summary and the report beside their targets;
7. write the tables (one all-or-nothing transaction), then only renames are left;
8. the CDP audience, and the summary and report again with its result.

A failure before step 7 leaves every existing output as it was.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from autoseg.alternatives import describe_alternatives
from autoseg.atomic import StagedFile, signals_deferred, stage_file
from autoseg.backend import Backend, select_backend
from autoseg.checks import check_input, check_output_table
from autoseg.config import RunConfig
from autoseg.describe import Description, describe_clusters, explanation_summary
from autoseg.engine import Engine, InputInfo
from autoseg.errors import FileSystemError, UsageError
from autoseg.explain import Explanation
from autoseg.features import FeatureSpec, fit_features
from autoseg.fitting import search_candidates, search_summary, stability_stage, stable_ids
from autoseg.io import TableStore, open_store
from autoseg.local import LocalEngine
from autoseg.model import SegmentationModel, StagedModel
from autoseg.names import TableName, parse_table_name
from autoseg.outputs import stage_model, sync_audiences, table_writes
from autoseg.preflight import remove_created_directories, run_preflight, writes_tables
from autoseg.profile import profile_table
from autoseg.reduce import Projection, fit_projection
from autoseg.sampling import (
    RowSets,
    all_rows_silhouette_points,
    plan_rows,
    projection_positions,
    sample_positions,
)
from autoseg.search import SearchResult, assign_rows
from autoseg.silhouette import SilhouetteScore
from autoseg.summary import RunSummary
from autoseg.timing import Timer

if TYPE_CHECKING:
    from distributed import Client

    from autoseg.audience import CDPClient

log = logging.getLogger(__name__)

SUMMARY_FILE = "summary.json"
REPORT_FILE = "report.html"


@dataclass
class RunResult:
    """What a run produced."""

    chosen_k: int
    search: SearchResult | None
    summary: RunSummary
    summary_path: Path
    output_table: str | None
    model_path: Path | None
    labels: np.ndarray | None = None  # every row's cluster id (one machine only)
    timings: dict[str, float] = field(default_factory=dict)
    explanation: Explanation | None = None
    projection_2d: dict[str, Any] | None = None


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
        The validated run configuration; ``--dask``/``--dask-scheduler`` run it on Dask.
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
    backend = select_backend(config.device)
    if config.on_dask:
        try:
            from autoseg.dask.engine import engine_from_config
        except ImportError as exc:
            raise UsageError(
                f"--dask/--dask-scheduler need Dask ({exc.name} is not installed): "
                "pip install 'autoseg[dask]'"
            ) from None
        engine: Engine = engine_from_config(config, backend)
    else:
        engine = LocalEngine(config, backend)
    return run_with_engine(config, engine, backend, on_stage=on_stage, environ=environ)


def run_on_dask(
    config: RunConfig, client: Client, *, input_path: str, output_path: str | None,
    environ: Mapping[str, str] | None = None, on_stage: Callable[[str], None] | None = None,
) -> RunResult:
    """Segment a partitioned Parquet dataset on the Dask cluster of ``client`` (not closed).

    Parameters
    ----------
    config
        The validated run configuration (``input_path`` is read, not ``input_table``).
    client
        A connected ``distributed.Client``.
    input_path
        Partitioned Parquet dataset: a local folder or an fsspec URL (``s3://bucket/path/``).
    output_path
        Dataset for the labelled rows, or ``None`` when they go only to ``--output-table``.
    environ, on_stage
        As for :func:`run`.

    Returns
    -------
    RunResult
        As for :func:`run` (``labels`` is ``None``: they stay on the workers).
    """
    from autoseg.dask.engine import DaskEngine

    backend = select_backend(config.device)
    engine = DaskEngine(config, client, input_path=input_path, output_path=output_path,
                        backend=backend)
    return run_with_engine(config, engine, backend, on_stage=on_stage, environ=environ)


def run_with_engine(
    config: RunConfig, engine: Engine, backend: Backend, *,
    on_stage: Callable[[str], None] | None = None, environ: Mapping[str, str] | None = None,
) -> RunResult:
    """The run on ``engine``: pre-flight, then the stages, then the writes (see the module).

    The engine is closed when the run ends, also on failure.
    """
    try:
        return _Run(config, engine, backend, Timer(on_stage), environ).execute()
    finally:
        engine.close()


def _store_needed(config: RunConfig) -> bool:
    """Whether the run reads from or writes to ``--store``."""
    reads = not config.on_dask and not config.input_is_file
    return reads or writes_tables(config)


@dataclass
class _Fit:
    """What the fit (or reuse) stage produced."""

    model: SegmentationModel
    search: SearchResult | None
    refit: dict[str, Any] | None  # the all-rows refit's facts; None for a reused model
    id_matching: dict[str, Any] | None
    search_frame: pd.DataFrame | None  # the searched rows, for what another k would change
    search_x: np.ndarray | None


class _Run:
    """One run's state while the skeleton drives the engine through the stages."""

    def __init__(self, config: RunConfig, engine: Engine, backend: Backend, timer: Timer,
                 environ: Mapping[str, str] | None) -> None:
        self.config = config
        self.engine = engine
        self.backend = backend
        self.timer = timer
        self.environ = environ
        self.started_at = datetime.now(UTC).isoformat(timespec="seconds")
        self.output_name: TableName | None = (
            parse_table_name(config.output_table, "--output-table")
            if config.output_table else None)
        self.store: TableStore | None = None
        self.cdp: CDPClient | None = None
        self._prepared: Any = None  # the engine's prepared matrix of every row, while needed

    # ------------------------------------------------------------------ the order of a run

    def execute(self) -> RunResult:
        config, engine, timer = self.config, self.engine, self.timer
        created: list[Path] = []
        try:
            previous = self._preflight(created)
            with timer.stage("read"):
                info = engine.read(self.store)
            saved = previous if not config.force_refit else None
            check_input(info, engine, config, saved)
            if self.output_name is not None:
                assert self.store is not None
                self.store.check_columns(self.output_name, [*info.columns, "cluster_id"])
                check_output_table(self.store, self.output_name, info, config.output_mode)
            rows = plan_rows(info.n_rows, config.seed,
                             search_sample_size=config.search_sample_size,
                             silhouette_exact_max_rows=config.silhouette_exact_max_rows)
            return self._segment(info, rows, previous, saved)
        except BaseException:
            # A failed run leaves nothing behind, not even the directories it created.
            remove_created_directories(created)
            raise
        finally:
            if self.store is not None:
                self.store.close()

    def _preflight(self, created: list[Path]) -> SegmentationModel | None:
        """Every output location and credential checked, before anything is read
        (:mod:`autoseg.preflight`); returns the model saved under ``--model-name``."""
        config = self.config
        self.engine.preflight()
        if _store_needed(config):
            self.store = open_store(config.store, self.environ, config.td_engine,
                                    config.lock_timeout)
        previous = run_preflight(config, self.store, created)
        if config.audience_enabled:
            from autoseg.audience import cdp_client_from_environment

            self.cdp = cdp_client_from_environment(self.environ or {}, config.cdp_endpoint)
        return previous

    def _segment(self, info: InputInfo, rows: RowSets, previous: SegmentationModel | None,
                 saved: SegmentationModel | None) -> RunResult:
        config, engine, timer = self.config, self.engine, self.timer
        try:
            if saved is None:
                fit, imputed = self._fit(info, rows, previous)
            else:
                with timer.stage("prepare_all"):
                    self._prepared, imputed = engine.prepare_all(saved.spec, saved.projection)
                log.info("reused saved model %r (k=%d); no fitting", config.model_name, saved.k)
                fit = _Fit(saved, None, None, None, None, None)
            model = fit.model
            with timer.stage("describe_sample"):
                sample = engine.take(rows.describe)
                sample_x = engine.prepared_rows(self._prepared, rows.describe, model.spec,
                                                model.projection)
                labels, distances = assign_rows(sample_x, model.centroids, self.backend)
            with timer.stage("assign"):
                points = None
                if fit.search is not None and rows.search_sampled and engine.all_rows_silhouette:
                    chosen = sample_positions(len(sample_x),
                                              all_rows_silhouette_points(info.n_rows),
                                              config.seed)
                    points = sample_x if chosen is None else sample_x[chosen]
                sizes, all_rows = engine.count(self._prepared, model.centroids, points)
        finally:
            # Also after a failure: a Dask run's persisted matrix lives on the workers.
            engine.release(self._prepared)
            self._prepared = None
        with timer.stage("profile"):
            profile = profile_table(sample, config.hide_table_contents, rows=info.n_rows,
                                    missing=engine.missing_counts())
        with timer.stage("explain"):
            described = describe_clusters(sample, labels, distances, np.asarray(sizes), model,
                                          config, reused=saved is not None,
                                          xgboost_device=self.backend.xgboost_device)
            projection_2d = _projection_sample(sample_x, labels, config.seed)
            alternatives = self._alternatives(fit)
        summary = self._summary(info, model, fit, imputed, profile, sizes, all_rows,
                                described, len(sample))
        summary.alternatives = alternatives
        return self._write(summary, model, fit, described, projection_2d)

    def _fit(self, info: InputInfo, rows: RowSets, previous: SegmentationModel | None
             ) -> tuple[_Fit, dict[str, int]]:
        """Features, PCA, every row prepared once, the k search on the search rows of that
        matrix, then the refit on every row."""
        config, engine, timer = self.config, self.engine, self.timer
        with timer.stage("features"):
            spec = fit_features(engine.take(rows.features), config.ignore_columns,
                                config.keep_columns)
        with timer.stage("reduce"):
            projection = self._fit_projection(spec, rows)
        with timer.stage("prepare_all"):
            self._prepared, imputed = engine.prepare_all(spec, projection)
        with timer.stage("search"):
            # Restarts and silhouettes are affordable on a sample; the chosen k is then fitted
            # on every row below. Small tables are searched whole.
            search_frame = engine.take(rows.search)
            search_x = engine.prepared_rows(self._prepared, rows.search, spec, projection)
            search = search_candidates(search_x, info.n_rows, config, self.backend)
        stability_stage(search, search_x, config, timer, self.backend)
        centroids = search.centroids
        refit: dict[str, Any] = {"done": False}
        if rows.search_sampled:
            with timer.stage("fit_all_rows"):
                centroids, refit = engine.fit_all_rows(self._prepared, centroids)
            log.info("k=%d refitted on all %d rows (%s)", search.chosen_k, info.n_rows,
                     refit.get("engine"))
        centroids, id_matching = stable_ids(previous, spec, projection, centroids)
        model = SegmentationModel(spec=spec, centroids=centroids, projection=projection,
                                  k=search.chosen_k, fingerprint=engine.fingerprint())
        return _Fit(model, search, refit, id_matching, search_frame, search_x), imputed

    def _alternatives(self, fit: _Fit) -> list[dict[str, Any]] | None:
        """What k-1, k+1 and the runner-up would change, from the search's own fits (no pass
        over the data): the searched rows, labelled by the final model so ids match the
        cluster cards."""
        if fit.search is None or fit.search_frame is None or fit.search_x is None:
            return None
        spec = fit.model.spec
        chosen_labels, _ = assign_rows(fit.search_x, fit.model.centroids, self.backend)
        return describe_alternatives(
            fit.search, spec.readable(fit.search_frame), chosen_labels=chosen_labels,
            hide_table_contents=self.config.hide_table_contents,
            kinds={f.column: f.kind for f in spec.numeric})

    def _fit_projection(self, spec: FeatureSpec, rows: RowSets) -> Projection | None:
        config = self.config
        if len(spec.matrix_columns) <= config.dimension_reduction_threshold:
            return None
        matrix, _ = spec.transform(self.engine.take(rows.pca))
        projection = fit_projection(matrix, config.dimension_reduction_threshold, config.seed,
                                    self.backend)
        if projection is not None:
            log.info("reduced %d prepared columns to %d PCA components (%.0f%% variance)",
                     matrix.shape[1], projection.components.shape[0],
                     100 * projection.explained_variance_ratio)
        return projection

    # ------------------------------------------------------------------ summary and writes

    def _summary(self, info: InputInfo, model: SegmentationModel, fit: _Fit,
                 imputed: dict[str, int], profile: dict[str, Any], sizes: list[int],
                 all_rows: SilhouetteScore | None, described: Description,
                 described_rows: int) -> RunSummary:
        config, spec, n = self.config, model.spec, info.n_rows
        explanation = explanation_summary(described.explanation, described.explanation_note)
        facts = self.engine.facts()
        summary = RunSummary(
            parameters=config.public_dict(),
            engine=self.engine.name,
            input=info.description,
            rows_read=n,
            device=self.backend.describe(),
            stages_device=self.backend.stage_devices(explain_device=explanation.get("device")),
            columns_used=spec.used_columns,
            columns_dropped=[{"column": d.column, "reason": d.reason} for d in spec.dropped],
            prepared_columns=len(spec.matrix_columns),
            values_imputed=imputed,
            pca_components=(int(model.projection.components.shape[0])
                            if model.projection is not None else None),
            profile=profile,
            refit=fit.search is not None,
            chosen_k=model.k,
            chosen_reason=(fit.search.reason if fit.search is not None
                           else f"reused saved model {config.model_name!r}"),
            cluster_sizes=list(sizes),
            cluster_shares=[round(s / n, 6) for s in sizes],
            explanation=explanation,
            explanation_rows=described_rows,
            clusters=described.profiles,
            started_at=self.started_at,
            fit_all_rows=fit.refit,
            cluster_ids=fit.id_matching,
            drift=described.drift,
            partitions=facts.get("partitions"),
            workers=facts.get("workers"),
        )
        if fit.search is not None:
            found = search_summary(fit.search)
            summary.k_search = found["k_search"]
            summary.silhouette = found["silhouette"]
            if all_rows is not None:
                summary.silhouette["all_rows"] = {
                    "score": all_rows.score, "stderr": all_rows.stderr,
                    "points_scored": all_rows.n_points, "rows": n,
                    "per_cluster": list(all_rows.per_cluster),
                }
        dataset = getattr(self.engine, "output_path", None)
        summary.outputs = {
            "output_table": str(self.output_name) if self.output_name else None,
            "store": self.store.description if self.store is not None else None,
            "dataset": dataset,
            "model": (str(config.model_dir / config.model_name)
                      if config.model_name and fit.search is not None else None),
            "summary": str(config.output_dir / SUMMARY_FILE),
            "report": str(config.output_dir / REPORT_FILE),
        }
        return summary

    def _write(self, summary: RunSummary, model: SegmentationModel, fit: _Fit,
               described: Description, projection_2d: dict[str, Any]) -> RunResult:
        """Stage everything, write the tables, then rename; then the audience.

        The report is drawn on a second thread while the store writes the tables: drawing is
        Python (one core, holding the GIL), while DuckDB and the Treasure Data uploads work
        outside it (1M rows: 0.7 s of drawing beside 0.7 s of writing). The store commits
        the tables only once the summary and the report are staged (``before_commit``), so
        they still fail together.
        """
        config, timer = self.config, self.timer
        staged_files: list[StagedFile] = []
        staged_model: StagedModel | None = None
        committed = False
        with timer.stage("write"), ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="autoseg-report"
        ) as drawing:
            staged_rows = self.engine.stage_rows(model, self.output_name is not None)
            report: Future[list[StagedFile]] | None = None
            try:
                summary.timings_seconds = dict(timer.seconds)
                summary.finished_at = datetime.now(UTC).isoformat(timespec="seconds")
                drawn = drawing.submit(self._stage_summary_files, summary, projection_2d)
                report = drawn
                if config.model_name and fit.search is not None:
                    # Beside the drawing: the model (its drift reference computed now) is
                    # not part of the summary or the report.
                    staged_model = stage_model(model, config, described)

                def report_staged() -> None:
                    staged_files.extend(drawn.result())

                # From here a signal is held until the block ends: a store may still give up
                # before its commit (then everything is rolled back); once the tables are
                # committed, the renames finish and the run stops with everything written.
                with signals_deferred():
                    staged_rows.swap_in()
                    writes = table_writes(config, self.output_name, staged_rows.table_rows(),
                                          described)
                    if writes:
                        assert self.store is not None
                        self.store.write_tables(writes, before_commit=report_staged)
                    else:
                        report_staged()
                    committed = True
                    # The tables are committed: only renames are left.
                    staged_rows.commit()
                    model_path = staged_model.commit() if staged_model is not None else None
                    for staged in staged_files:
                        staged.commit()
            except BaseException:
                if not committed:
                    if report is not None and not staged_files:
                        staged_files = _staged_anyway(report)
                    for staged in staged_files:
                        staged.discard()
                    if staged_model is not None:
                        staged_model.discard()
                    staged_rows.roll_back()
                raise
        if self.cdp is not None and self.output_name is not None:
            found = sync_audiences(self.cdp, config, self.output_name, described, timer)
            summary.audience = found.get("audience")
            summary.audience_rules = found.get("audience_rules")
        self._refresh_summary_files(summary, projection_2d)
        local_labels = getattr(self.engine, "labels", None)
        return RunResult(
            chosen_k=model.k, search=fit.search, summary=summary,
            summary_path=config.output_dir / SUMMARY_FILE,
            output_table=str(self.output_name) if self.output_name else None,
            model_path=model_path, labels=local_labels, timings=timer.seconds,
            explanation=described.explanation, projection_2d=projection_2d,
        )

    def _refresh_summary_files(self, summary: RunSummary,
                               projection_2d: dict[str, Any]) -> None:
        """Rewrite the committed summary and report with what happened after the commit: the
        write stage's timing and the audience's result.

        The committed files are already complete and consistent with the tables; a failure
        here (a full disk, say) keeps them and is logged, except for an audience result,
        which the summary must record: then it is an error.
        """
        summary.timings_seconds = dict(self.timer.seconds)
        try:
            for staged in self._stage_summary_files(summary, projection_2d, timed=False):
                staged.commit()
        except (OSError, FileSystemError) as exc:
            if summary.audience is not None:
                raise
            log.warning("summary and report keep the timings up to the write (%s: %s)",
                        type(exc).__name__, exc)

    def _stage_summary_files(self, summary: RunSummary,
                             projection_2d: dict[str, Any], *,
                             timed: bool = True) -> list[StagedFile]:
        """``summary.json`` and ``report.html`` written beside their targets, not renamed."""
        from autoseg.report.html import render_report  # matplotlib: loaded when needed

        config = self.config
        with self.timer.stage("report") if timed else contextlib.nullcontext():
            document = render_report(summary.to_dict(), projection_2d,
                                     config.hide_table_contents)
        staged = [stage_file(config.output_dir / SUMMARY_FILE, summary.to_json())]
        try:
            staged.append(stage_file(config.output_dir / REPORT_FILE, document))
        except BaseException:
            staged[0].discard()
            raise
        return staged


def _staged_anyway(report: Future[list[StagedFile]]) -> list[StagedFile]:
    """The files a report thread staged, once it has finished (none when it failed)."""
    wait([report])
    return report.result() if report.exception() is None else []


def _projection_sample(matrix: np.ndarray, labels: np.ndarray, seed: int) -> dict[str, Any]:
    """A 2-D PCA view of the describe sample's rows, for the report's scatter plot."""
    rows = projection_positions(len(matrix), seed)
    sample = (matrix if rows is None else matrix[rows]).astype(np.float64)
    centred = sample - sample.mean(axis=0)
    if centred.shape[1] >= 2:
        _, _, vt = np.linalg.svd(centred, full_matrices=False)
        xy = centred @ vt[:2].T
    else:
        xy = np.column_stack([centred[:, 0], np.zeros(len(centred))])
    return {"xy": xy.astype(np.float32), "labels": labels if rows is None else labels[rows]}
