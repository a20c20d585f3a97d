"""The self-contained HTML report of one run.

The report is one file: CSS inline, plots as base64 ``data:`` URIs, no script, no font, no link
to anything outside the file, so it opens from a laptop's disk, an e-mail attachment or an
air-gapped cluster without making a single request.

Every string that reaches the page goes through :func:`html.escape`: column names and category
levels are user data, and a column called ``<script>...`` must show up as text. Cells are
escaped by default; only markup this module builds itself is wrapped in :class:`_Html`.

With ``hide_table_contents`` the summary is first reduced to aggregates (:func:`_redact`), and
everything after that works from the reduced copy, so no later section can leak a value by
mistake.

The module is one job, rendering the summary as a page, which is why it is longer than the
others (about 800 lines): one small function per section, plus the page's CSS.
"""

from __future__ import annotations

import base64
import copy
import html
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from autoseg.atomic import write_file_atomically
from autoseg.report import plots
from autoseg.report.alternatives import render_alternatives
from autoseg.report.plots import DEGENERATE_SHARE, cluster_colors, format_value
from autoseg.summary import RunSummary

__all__ = ["SECTIONS", "render_report", "write_report"]

# (anchor, heading) of every section, in page order.
SECTIONS: tuple[tuple[str, str], ...] = (
    ("parameters", "Run parameters"),
    ("input", "Input data (EDA)"),
    ("k-search", "Choosing k"),
    ("clusters", "Cluster profiles"),
    ("other-k", "Another k: what it would change"),
    ("changes", "Cluster ids and drift"),
    ("plots", "Plots"),
    ("fidelity", "Explanation fidelity"),
    ("importance", "Feature importance"),
    ("timings", "Timings and versions"),
)
# Under hide_table_contents, statistics of fewer rows than this are withheld: a mean over one
# or two rows is a row's value (same threshold as autoseg.segments for category levels).
MIN_ROWS_FOR_STATS = 10
MAX_CARD_NUMERIC = 10
MAX_CARD_CATEGORIES = 6
MAX_TOP_VALUE_CHARS = 40
_HIDDEN = "hidden (hide_table_contents)"


class _Html(str):
    """Markup built by this module: inserted as is, never escaped again."""


def _e(value: Any) -> str:
    """Escape anything for HTML text or a quoted attribute value."""
    return html.escape("" if value is None else str(value), quote=True)


def _cell(value: Any) -> str:
    return value if isinstance(value, _Html) else _e(value)


def _table(
    headers: Sequence[Any],
    rows: Iterable[Sequence[Any]],
    numeric: Sequence[int] = (),
    row_classes: Sequence[str] | None = None,
    css: str = "",
) -> _Html:
    """An HTML table; ``numeric`` lists the column indexes to right-align."""
    head = "".join(
        f'<th class="num">{_cell(h)}</th>' if i in numeric else f"<th>{_cell(h)}</th>"
        for i, h in enumerate(headers)
    )
    body = []
    for r, row in enumerate(rows):
        cls = row_classes[r] if row_classes and row_classes[r] else ""
        cells = "".join(
            f'<td class="num">{_cell(v)}</td>' if i in numeric else f"<td>{_cell(v)}</td>"
            for i, v in enumerate(row)
        )
        body.append(f'<tr class="{_e(cls)}">{cells}</tr>' if cls else f"<tr>{cells}</tr>")
    return _Html(
        f'<table class="{_e(css)}"><thead><tr>{head}</tr></thead>'
        f'<tbody>{"".join(body)}</tbody></table>'
    )


def _num(value: Any, kind: str = "numeric") -> str:
    return format_value(None if value is None else float(value), kind)


def _pct(value: Any, digits: int = 1) -> str:
    return "\u2014" if value is None else f"{100 * float(value):.{digits}f}%"


def _share(value: Any) -> str:
    """A share as a percentage, with tiny non-zero values shown as such rather than 0.0%."""
    if value is not None and 0 < float(value) < 0.0005:
        return "<0.1%"
    return _pct(value)


def _swatch(color: str) -> _Html:
    return _Html(f'<span class="swatch" style="background:{_e(color)}"></span>')


def _note(text: str, level: str = "warn") -> _Html:
    return _Html(f'<div class="box {_e(level)}">{text}</div>')


# ---------------------------------------------------------------------------------------------
# redaction


def _redact(summary: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``summary`` holding aggregates only.

    Removed: the minimum, maximum and most frequent values of every column, every category
    level (from cluster profiles, top features and descriptions), and statistics computed
    over fewer than ``MIN_ROWS_FOR_STATS`` rows.
    """
    view = copy.deepcopy(dict(summary))
    profile = view.get("profile") or {}
    for column in profile.get("column_profiles", []):
        for key in ("min", "max", "top_values"):
            column.pop(key, None)
        present = (profile.get("rows") or 0) - (column.get("missing") or 0)
        if present < MIN_ROWS_FOR_STATS:
            for key in ("mean", "std", "p25", "median", "p75"):
                column.pop(key, None)
    for cluster in view.get("clusters") or []:
        categorical = {c["feature"] for c in cluster.get("categories", [])}
        for category in cluster.get("categories", []):
            category["levels"] = []
        small = (cluster.get("size") or 0) < MIN_ROWS_FOR_STATS
        for row in cluster.get("numeric", []):
            if small:
                row["mean"] = row["median"] = None
        for top in cluster.get("top_features", []):
            if top.get("feature") in categorical or top.get("direction") not in ("high", "low"):
                top["direction"] = "category"
                top["text"] = f"{top['feature']} (category)"
        if cluster.get("top_features") is not None:
            cluster["description"] = (", ".join(t["text"] for t in cluster["top_features"])
                                      or "no distinguishing feature")
    return view


# ---------------------------------------------------------------------------------------------
# sections


def _header(view: Mapping[str, Any], hide: bool) -> str:
    params = view.get("parameters") or {}
    when = view.get("finished_at") or view.get("started_at")
    when_text = (f"{when}" if when else
                 datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC") + " (report written)")
    facts = [
        ("input", params.get("input_table", "\u2014")),
        ("rows", f"{int(view.get('rows_read') or 0):,}"),
        ("chosen k", view.get("chosen_k", "\u2014")),
        ("when", when_text),
        ("autoseg", view.get("autoseg_version") or (view.get("versions") or {}).get("autoseg")),
        ("device", (view.get("device") or {}).get("used", "\u2014")),
    ]
    items = "".join(f"<div><dt>{_e(k)}</dt><dd>{_e(v)}</dd></div>" for k, v in facts)
    nav = " ".join(f'<a href="#{a}">{_e(t)}</a>' for a, t in SECTIONS)
    banner = ""
    if hide:
        banner = _note("Row-level table contents are hidden (<code>hide_table_contents</code>): "
                       "this report shows counts, means, medians and shares only.", "info")
    return (f"<header><h1>autoseg segmentation report</h1><dl class=\"facts\">{items}</dl>"
            f"<nav>{nav}</nav>{banner}</header>")


def _section(anchor: str, body: str) -> str:
    title = dict(SECTIONS)[anchor]
    return f'<section id="{_e(anchor)}"><h2>{_e(title)}</h2>{body}</section>'


def _parameters(view: Mapping[str, Any]) -> str:
    params = view.get("parameters") or {}
    items = []
    for name, value in params.items():
        if isinstance(value, list | tuple):
            value = ", ".join(str(v) for v in value) or "\u2014"
        shown = "\u2014" if value is None else value
        items.append(f"<div><dt>{_e(name)}</dt><dd>{_e(shown)}</dd></div>")
    # A grid of name/value pairs: a one-column table of 25 parameters wastes the page.
    return f'<dl class="kv">{"".join(items)}</dl>'


def _input(view: Mapping[str, Any], hide: bool) -> str:
    profile = view.get("profile") or {}
    columns = profile.get("column_profiles") or []
    used = list(view.get("columns_used") or [])
    dropped = {d["column"]: d["reason"] for d in view.get("columns_dropped") or []}
    imputed = view.get("values_imputed") or {}
    n_rows = int(profile.get("rows") or view.get("rows_read") or 0)
    parts = [
        f"<p><b>{n_rows:,}</b> rows, <b>{int(profile.get('columns') or len(columns)):,}</b> "
        f"columns. <b>{len(used)}</b> columns used for clustering"
        + (f" ({int(view['prepared_columns']):,} prepared features)"
           if view.get("prepared_columns") is not None else "")
        + f", <b>{len(dropped)}</b> dropped. "
        + ("PCA: reduced to <b>{}</b> components.".format(int(view["pca_components"]))
           if view.get("pca_components") else "No dimension reduction (PCA) needed.")
        + "</p>"
    ]
    # Two tables: numeric columns get distribution statistics, the others (text, categories,
    # booleans, dates) their most frequent values; one table with both would be too wide.
    numeric_rows, numeric_classes, other_rows, other_classes = [], [], [], []
    for column in columns:
        name = column.get("name")
        missing = int(column.get("missing") or 0)
        if name in dropped:
            role, cls = f"dropped: {dropped[name]}", "muted"
        elif name in used:
            role, cls = "used", ""
        else:
            role, cls = "not used", "muted"
        row: list[Any] = [
            name, column.get("dtype"), _Html(f'<span class="role">{_e(role)}</span>'),
            f"{missing:,} ({_pct(missing / n_rows if n_rows else 0)})" if missing else "0",
            "\u2014" if column.get("distinct") is None else f"{int(column['distinct']):,}",
        ]
        if "infinite" in column or "mean" in column:
            stats = ("mean", "std", "p25", "median", "p75") if hide else \
                ("mean", "std", "min", "p25", "median", "p75", "max")
            row += [_num(column[key]) if key in column else "" for key in stats]
            numeric_rows.append(row)
            numeric_classes.append(cls)
        else:
            if not hide:
                row.append(_Html(f'<span class="tv">'
                                 f'{_e(_top_values(column.get("top_values")))}</span>'))
            other_rows.append(row)
            other_classes.append(cls)
    base = ["column", "type", "role", "missing", "distinct"]
    if numeric_rows:
        stats_headers = ["mean", "std", "p25", "median", "p75"] if hide else \
            ["mean", "std", "min", "p25", "median", "p75", "max"]
        parts.append("<h3>Numeric columns</h3>")
        parts.append(_Html('<div class="scroll">')
                     + _table(base + stats_headers, numeric_rows,
                              numeric=tuple(range(3, 5 + len(stats_headers))),
                              row_classes=numeric_classes, css="eda")
                     + "</div>")
    if other_rows:
        parts.append("<h3>Text, category, boolean and date columns</h3>")
        parts.append(_Html('<div class="scroll">')
                     + _table(base + ([] if hide else ["most frequent values (count)"]),
                              other_rows, numeric=(3, 4), row_classes=other_classes,
                              css="eda")
                     + "</div>")
    if hide:
        parts.append('<p class="muted">Minimum, maximum and most frequent values: '
                     f"{_e(_HIDDEN)}.</p>")
    side = []
    if dropped:
        side.append("<div><h3>Columns left out of clustering</h3>"
                    + _table(["column", "reason"], list(dropped.items())) + "</div>")
    if imputed:
        side.append("<div><h3>Missing values imputed</h3>"
                    + _table(["column", "values imputed"],
                             [(c, f"{int(n):,}") for c, n in imputed.items()], numeric=(1,))
                    + "</div>")
    if side:
        parts.append(f'<div class="row">{"".join(side)}</div>')
    return "".join(parts)


def _top_values(values: Sequence[Mapping[str, Any]] | None) -> str:
    if not values:
        return ""
    shown = []
    for item in values:
        text = str(item.get("value"))
        if len(text) > MAX_TOP_VALUE_CHARS:
            text = text[: MAX_TOP_VALUE_CHARS - 1] + "\u2026"
        shown.append(f"{text} ({int(item.get('count') or 0):,})")
    return " \u00b7 ".join(shown)


def _k_search(view: Mapping[str, Any]) -> str:
    search = view.get("k_search") or []
    chosen = view.get("chosen_k")
    reason = view.get("chosen_reason") or ""
    parts = [f"<p>Chosen <b>k = {_e(chosen)}</b>: {_e(reason)}.</p>"]
    silhouette = view.get("silhouette") or {}
    if silhouette:
        if silhouette.get("exact"):
            parts.append(f"<p>Silhouette computed exactly over "
                         f"{int(silhouette.get('points_scored') or 0):,} rows.</p>")
        else:
            parts.append(f"<p>Silhouette estimated from a sample of "
                         f"{int(silhouette.get('points_scored') or 0):,} rows; "
                         "\u00b1 is its standard error.</p>")
        all_rows = silhouette.get("all_rows")
        if all_rows and all_rows.get("score") is not None:
            # Dask runs: the chosen clustering, refitted on every row, checked against all rows
            parts.append(
                f"<p>After the refit on all {int(all_rows.get('rows') or 0):,} rows, the chosen "
                f"clustering's silhouette against every row is "
                f"<b>{float(all_rows['score']):.3f}</b> \u00b1 "
                f"{float(all_rows.get('stderr') or 0.0):.3f} "
                f"({int(all_rows.get('points_scored') or 0):,} sampled points).</p>")
    if not search:
        parts.append('<p class="muted">No k search in this run (k fixed by a saved model).</p>')
        return "".join(parts)
    rows, classes = [], []
    degenerate_chosen = False
    for candidate in search:
        sizes = [int(s) for s in candidate.get("sizes") or []]
        total = sum(sizes) or 1
        notes = []
        if candidate.get("rejected"):
            notes.append(f"rejected: {candidate['rejected']}")
        small = [i for i, s in enumerate(sizes) if s / total < DEGENERATE_SHARE]
        if small and not candidate.get("rejected"):
            notes.append(
                f"degenerate split: {len(small)} cluster(s) under "
                f"{100 * DEGENERATE_SHARE:.0f}% of rows (smallest {min(sizes):,} rows, "
                f"{_pct(min(sizes) / total)})"
            )
            degenerate_chosen |= candidate.get("k") == chosen
        sil = candidate.get("silhouette")
        err = candidate.get("silhouette_stderr") or 0.0
        sil_text = "\u2014" if sil is None else (f"{sil:.4f} \u00b1 {err:.4f}" if err
                                                 else f"{sil:.4f}")
        is_chosen = candidate.get("k") == chosen
        stability = candidate.get("stability")
        rows.append([
            _Html(f"{_e(candidate.get('k'))}"
                  + (' <span class="badge">chosen</span>' if is_chosen else "")),
            sil_text,
            "\u2014" if stability is None else f"{stability:.3f}",
            _num(candidate.get("inertia")),
            _num(candidate.get("calinski_harabasz")),
            "\u2014" if candidate.get("davies_bouldin") is None
            else f"{candidate['davies_bouldin']:.3f}",
            " \u00b7 ".join(f"{s:,}" for s in sizes),
            _Html(f'<span class="warn-text">{_e("; ".join(notes))}</span>') if notes else "",
        ])
        classes.append("chosen" if is_chosen else ("muted" if candidate.get("rejected") else ""))
    if degenerate_chosen:
        parts.append(_note(
            f"The chosen k = {_e(chosen)} has a cluster holding under "
            f"{100 * DEGENERATE_SHARE:.0f}% of the rows: it may be a handful of outliers rather "
            "than a segment. Consider <code>--num-clusters</code> or cleaning the input."))
    parts.append(_table(
        ["k", "silhouette", "stability (ARI)", "inertia", "Calinski\u2013Harabasz",
         "Davies\u2013Bouldin", "cluster sizes", "note"],
        rows, numeric=(1, 2, 3, 4, 5), row_classes=classes, css="ksearch",
    ))
    parts.append('<p class="muted">Stability: mean adjusted Rand index between k-means refits '
                 "on random subsamples (1 = the same clusters every time).</p>")
    parts.append('<p class="muted">Silhouette and Calinski\u2013Harabasz: higher is better; '
                 "Davies\u2013Bouldin and inertia: lower is better."
                 + (" k is chosen by the highest mean silhouette." if len(search) > 1 else "")
                 + "</p>")
    return "".join(parts)


def _clusters(view: Mapping[str, Any], hide: bool) -> str:
    clusters = sorted(view.get("clusters") or [], key=lambda c: int(c["cluster_id"]))
    if not clusters:
        return '<p class="muted">No cluster profiles in this summary.</p>'
    k = max(int(view.get("chosen_k") or 0), max(int(c["cluster_id"]) for c in clusters) + 1)
    colors = cluster_colors(k)
    per_cluster_sil = (view.get("silhouette") or {}).get("per_cluster") or []
    cards = []
    for cluster in clusters:
        cluster_id = int(cluster["cluster_id"])
        color = colors[cluster_id]
        facts = [f"{int(cluster.get('size') or 0):,} rows", _pct(cluster.get("share"))]
        if cluster_id < len(per_cluster_sil) and per_cluster_sil[cluster_id] is not None:
            facts.append(f"silhouette {float(per_cluster_sil[cluster_id]):.3f}")
        degenerate = float(cluster.get("share") or 0.0) < DEGENERATE_SHARE
        body = [
            f'<div class="card" style="border-top-color:{_e(color)}">',
            f'<div class="card-head">{_swatch(color)}<h3>Cluster {cluster_id}</h3>'
            f'<span class="muted">{_e(" · ".join(facts))}</span></div>',
            f'<p class="desc">{_e(cluster.get("description") or "")}</p>',
        ]
        rule = cluster.get("rule") or {}
        if rule.get("text"):
            body.append(
                f'<p class="small"><b>Rule</b> <code>{_e(rule["text"])}</code> '
                f'<span class="muted">precision {_pct(rule.get("precision"))}, recall '
                f'{_pct(rule.get("recall"))}</span></p>')
        if degenerate:
            body.append(_note(f"Under {100 * DEGENERATE_SHARE:.0f}% of rows: possibly "
                              "outliers rather than a segment."))
        numeric = sorted(cluster.get("numeric") or [], key=lambda r: -abs(r.get("z") or 0.0))
        if numeric:
            rows = []
            for row in numeric[:MAX_CARD_NUMERIC]:
                kind = row.get("kind") or "numeric"
                # The median of a yes/no feature is 0 or 1, not a share: leave it out.
                median = "\u2014" if kind == "binary" else _num(row.get("median"), kind)
                rows.append([row["feature"], _num(row.get("mean"), kind),
                             _num(row.get("overall_mean"), kind), median,
                             _z_bar(row.get("z"))])
            body.append(_table(["feature", "mean", "overall mean", "median", "z"], rows,
                               numeric=(1, 2, 3), css="card-table"))
            if len(numeric) > MAX_CARD_NUMERIC:
                body.append(f'<p class="muted small">{len(numeric) - MAX_CARD_NUMERIC} more '
                            "numeric features with smaller differences.</p>")
            if hide and (cluster.get("size") or 0) < MIN_ROWS_FOR_STATS:
                body.append(f'<p class="muted small">Means and medians of fewer than '
                            f"{MIN_ROWS_FOR_STATS} rows: {_e(_HIDDEN)}.</p>")
        categories = cluster.get("categories") or []
        if hide:
            if categories:
                body.append(f'<p class="muted small">Category levels of '
                            f'{_e(", ".join(c["feature"] for c in categories))}: '
                            f"{_e(_HIDDEN)}.</p>")
        else:
            rows = []
            ranked = sorted(categories, key=lambda c: -max(
                [lvl.get("lift") or 0.0 for lvl in c.get("levels") or []] or [0.0]))
            for category in ranked[:MAX_CARD_CATEGORIES]:
                for i, level in enumerate(category.get("levels") or []):
                    rows.append([category["feature"] if i == 0 else "", level.get("level"),
                                 _pct(level.get("share")), _pct(level.get("overall_share")),
                                 _lift(level.get("lift"))])
            if rows:
                body.append(_table(["category", "level", "share", "overall", "lift"], rows,
                                   numeric=(2, 3, 4), css="card-table"))
        body.append("</div>")
        cards.append("".join(body))
    intro = ('<p>Each card compares the cluster with all rows. <b>z</b> is the difference of '
             "means in overall standard deviations; <b>lift</b> is the level's share in the "
             "cluster divided by its share overall. Dates are shown as dates and yes/no "
             "features as the share of yes.</p>")
    return intro + f'<div class="cards">{"".join(cards)}</div>'


def _other_k(view: Mapping[str, Any], hide: bool) -> str:
    """The chosen k's neighbours and runner-up: which segments split or merge, and how to ask
    for that k (``--num-clusters``)."""
    alternatives = view.get("alternatives") or []
    if not alternatives:
        return '<p class="muted">No other k to compare (k was fixed or reused).</p>'
    return render_alternatives(alternatives, int(view.get("chosen_k") or 0), hide)


def _changes(view: Mapping[str, Any], hide: bool) -> str:
    """Cluster ids matched to the saved model, and the drift report of a reused model."""
    parts = []
    ids = view.get("cluster_ids")
    if ids:
        if ids.get("matched"):
            parts.append(
                f"<p>Cluster ids were matched to the saved model's clusters (optimal assignment "
                f"of centroids): kept {_e(ids.get('kept'))}, new {_e(ids.get('new'))}, "
                f"vanished {_e(ids.get('vanished'))}.</p>")
        else:
            parts.append(_note(f"Cluster ids not matched: {_e(ids.get('note'))}."))
    drift = view.get("drift")
    if drift:
        warnings = drift.get("warnings") or []
        if warnings:
            parts.append(_note("Drift since the model was fitted: "
                               + "; ".join(_e(w.get("message")) for w in warnings) + "."))
        else:
            parts.append("<p>No drift above the thresholds since the model was fitted.</p>")
        clusters = drift.get("clusters") or {}
        then, now = clusters.get("shares_reference") or [], clusters.get("shares_current") or []
        if then:
            parts.append(_table(["cluster", "share when fitted", "share now"],
                                [[i, _pct(a), _pct(b)] for i, (a, b) in
                                 enumerate(zip(then, now, strict=False))], numeric=(1, 2)))
        numeric = drift.get("numeric") or {}
        rows = sorted(numeric.items(),
                      key=lambda kv: -abs(kv[1].get("standardized_mean_shift") or 0.0))
        if rows:
            parts.append(_table(
                ["feature", "mean shift (std)", "PSI"],
                [[name, f"{(v.get('standardized_mean_shift') or 0.0):+.2f}",
                  f"{(v.get('psi') or 0.0):.3f}"] for name, v in rows[:12]],
                numeric=(1, 2)))
        categorical = drift.get("categorical") or {}
        if categorical:
            parts.append(_table(
                ["category", "PSI", "unseen share"] + ([] if hide else ["unseen levels"]),
                [[name, f"{(v.get('psi') or 0.0):.3f}", _pct(v.get("unseen_share"))]
                 + ([] if hide else [", ".join(str(x) for x in (v.get("unseen_levels") or [])[:5])])
                 for name, v in categorical.items()],
                numeric=(1, 2)))
    if not parts:
        return ('<p class="muted">No saved model to compare with in this run: ids are new and '
                "there is no drift report (reuse a model with --no-force-refit for one).</p>")
    return "".join(parts)


def _z_bar(z: Any) -> _Html:
    """The z value with a small bar centred at 0 (red high, blue low)."""
    if z is None:
        return _Html("\u2014")
    value = float(z)
    width = min(abs(value), 2.0) / 2.0 * 50.0
    side = f"left:50%;width:{width:.1f}%" if value >= 0 else \
        f"left:{50 - width:.1f}%;width:{width:.1f}%"
    color = "#c0392b" if value >= 0 else "#2e6fb0"
    return _Html(f'<span class="zbar"><span style="{side};background:{color}"></span></span>'
                 f'<span class="znum">{value:+.2f}</span>')


def _lift(value: Any) -> _Html:
    if value is None:
        return _Html("\u2014")
    lift = float(value)
    cls = "hi" if lift >= 1.25 else ("lo" if lift <= 0.8 else "")
    return _Html(f'<span class="{cls}">\u00d7{lift:.2f}</span>')


def _image(png: bytes, alt: str, caption: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return (f'<figure><img src="data:image/png;base64,{data}" alt="{_e(alt)}">'
            f"<figcaption>{caption}</figcaption></figure>")


def _plots(view: Mapping[str, Any], projection_2d: Mapping[str, Any] | None) -> str:
    explanation = view.get("explanation") or {}
    shap_rows = (explanation.get("shap_by_cluster") or []) if explanation.get("available") else []
    clusters = view.get("clusters") or []
    sizes = view.get("cluster_sizes") or [c.get("size", 0) for c in clusters]
    k = int(view.get("chosen_k") or len(sizes))
    items: list[tuple[str, Callable[[], bytes] | None, str, str]] = [
        ("Top three features per cluster",
         (lambda: plots.plot_top_features(shap_rows, clusters)) if shap_rows else None,
         "Mean |SHAP| of each cluster's three most telling features, with the direction in "
         "which the cluster differs (high/low, or the over-represented category level).",
         "no explanation available"),
        ("Mean |SHAP| per feature, stacked by cluster",
         (lambda: plots.plot_shap_stacked(shap_rows, k)) if shap_rows else None,
         "How much each feature moves the surrogate model's prediction of each cluster; "
         "features sorted by their total.", "no explanation available"),
        ("Silhouette and inertia by k",
         (lambda: plots.plot_k_search(view.get("k_search") or [], view.get("chosen_k")))
         if view.get("k_search") else None,
         "Mean silhouette (error bars: standard error when sampled) and inertia for every k "
         "tried; the dashed line marks the chosen k.", "no k search in this run"),
        ("Cluster sizes", (lambda: plots.plot_cluster_sizes(sizes)) if sizes else None,
         "Rows per cluster with their share of all rows.", "no clusters"),
        ("Profile heatmap", (lambda: plots.plot_profile_heatmap(clusters)) if clusters else None,
         "Standardised mean of every numeric feature per cluster: red above the overall mean, "
         "blue below.", "no cluster profiles"),
        ("2-D projection",
         (lambda: plots.plot_projection(projection_2d, k)) if projection_2d is not None
         else None,
         "A sample of rows projected on the first two principal components of the clustering "
         "features; numbered discs are the cluster centres in this view.",
         "no projection was passed to the report"),
    ]
    figures = []
    for title, draw, caption, missing in items:
        if draw is None:
            figures.append(f'<figure class="missing"><p>{_e(title)}: {_e(missing)}.</p>'
                           "</figure>")
        else:
            figures.append(_image(draw(), title, _e(caption)))
    return f'<div class="figures">{"".join(figures)}</div>'


def _fidelity(view: Mapping[str, Any]) -> str:
    explanation = view.get("explanation") or {}
    if not explanation.get("available"):
        note = explanation.get("note") or "the explanation stage did not run"
        return _note(f"<b>No explanation available:</b> {_e(note)}. The clusters are still "
                     "valid, but the SHAP plots and feature importance are missing.")
    fidelity = explanation.get("fidelity")
    text = (
        "A surrogate XGBoost classifier is trained to predict <code>cluster_id</code> from the "
        "readable features; its SHAP values explain the clusters. <b>Fidelity</b> is its "
        "accuracy on rows held out from training: how faithfully the explanation describes the "
        "clusters."
    )
    facts = [
        ("fidelity (hold-out accuracy)", _pct(fidelity) if fidelity is not None
         else "not measured"),
        ("training rows", f"{int(explanation.get('n_train') or 0):,}"),
        ("hold-out rows", f"{int(explanation.get('n_holdout') or 0):,}"),
        ("rows explained with SHAP", f"{int(explanation.get('n_shap_rows') or 0):,}"),
    ]
    if explanation.get("rounds") is not None:
        facts.append(("boosting rounds", f"{int(explanation['rounds']):,}"))
    if explanation.get("device"):
        facts.append(("device", explanation["device"]))
    parts = [f"<p>{text}</p>", _table(["", "value"], facts, numeric=(1,), css="narrow")]
    if explanation.get("low_fidelity_warning"):
        parts.insert(0, _note(
            f"<b>Low fidelity ({_e(_pct(fidelity))}):</b> the surrogate model reproduces the "
            "clusters poorly, so the feature importance, SHAP plots and cluster descriptions "
            "may not reflect how the clusters really differ. Read them with care."))
    elif fidelity is None:
        parts.insert(0, _note("Fidelity could not be measured (no hold-out rows).", "info"))
    return "".join(parts)


def _importance(view: Mapping[str, Any], k: int) -> str:
    explanation = view.get("explanation") or {}
    if not explanation.get("available"):
        return '<p class="muted">No explanation available.</p>'
    parts = ['<p>Importance is the <b>normalised total gain</b> of each feature over all trees '
             "of the surrogate classifier (the values sum to 100%); for classification trees it "
             "plays the role of Gini (impurity-decrease) importance.</p>"]
    importance = sorted(explanation.get("feature_importance") or [],
                        key=lambda r: r.get("rank") or 0)
    top = max((float(r.get("importance") or 0.0) for r in importance), default=0.0) or 1.0
    rows = [[r.get("rank"), r.get("feature"),
             _Html(f'<span class="bar"><span style="width:'
                   f'{100 * float(r.get("importance") or 0.0) / top:.1f}%"></span></span>'
                   f'{_e(_share(r.get("importance")))}')]
            for r in importance]
    parts.append(_table(["rank", "feature", "importance"], rows, numeric=(0,), css="narrow"))
    shap_rows = explanation.get("shap_by_cluster") or []
    if shap_rows:
        colors = cluster_colors(k)
        features = [r.get("feature") for r in importance] or sorted(
            {r["feature"] for r in shap_rows})
        cell = {(r["feature"], int(r["cluster_id"])): float(r["mean_abs_shap"])
                for r in shap_rows}
        headers = ["feature"] + [
            _Html(f"{_swatch(colors[i])}{i}") for i in range(k)
        ]
        table_rows = [[f] + [f"{cell[(f, i)]:.3f}" if (f, i) in cell else "\u2014"
                             for i in range(k)] for f in features]
        parts.append("<h3>Mean |SHAP| by cluster</h3>")
        parts.append(_Html('<div class="scroll">')
                     + _table(headers, table_rows, numeric=tuple(range(1, k + 1)),
                              css="shap")
                     + "</div>")
    return "".join(parts)


def _timings(view: Mapping[str, Any]) -> str:
    timings = view.get("timings_seconds") or {}
    blocks = []
    if timings:
        total = sum(float(v or 0.0) for v in timings.values())
        rows = [(stage, f"{float(sec or 0.0):.2f}") for stage, sec in timings.items()]
        rows.append((_Html("<b>total</b>"), _Html(f"<b>{total:.2f}</b>")))
        blocks.append("<div><h3>Time per stage (seconds)</h3>"
                      + _table(["stage", "seconds"], rows, numeric=(1,)) + "</div>")
    versions = view.get("versions") or {}
    if versions:
        blocks.append("<div><h3>Versions</h3>"
                      + _table(["package", "version"], list(versions.items())) + "</div>")
    outputs = {k: v for k, v in (view.get("outputs") or {}).items() if v}
    if outputs:
        blocks.append("<div><h3>Outputs</h3>"
                      + _table(["output", "where"], list(outputs.items())) + "</div>")
    parts = []
    device = view.get("device") or {}
    if device:
        parts.append(f"<p>Device: <b>{_e(device.get('used'))}</b>"
                     + (f" ({_e(device.get('reason'))})" if device.get("reason") else "")
                     + "</p>")
    if blocks:
        parts.append(f'<div class="row">{"".join(blocks)}</div>')
    return "".join(parts) or '<p class="muted">No timings recorded.</p>'


_CSS = """
:root{--ink:#222;--muted:#6b6b6b;--line:#e3e3e3;--bg:#fafafa;--accent:#1f5f9f}
*{box-sizing:border-box}
body{margin:0;background:#fff;color:var(--ink);
 font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif}
main{max-width:1280px;margin:0 auto;padding:24px 28px 60px}
h1{font-size:26px;margin:0 0 12px}
h2{font-size:20px;margin:36px 0 12px;padding-bottom:6px;border-bottom:2px solid var(--line)}
h3{font-size:15px;margin:18px 0 8px}
code{background:#f1f1f1;padding:0 4px;border-radius:3px;font-size:90%}
.facts{display:flex;flex-wrap:wrap;gap:10px 28px;margin:0 0 14px}
.facts div{min-width:90px}.facts dt{font-size:11px;text-transform:uppercase;
 letter-spacing:.05em;color:var(--muted)}
.facts dd{margin:0;font-size:16px;font-weight:600;overflow-wrap:anywhere}
nav{display:flex;flex-wrap:wrap;gap:6px 16px;padding:8px 0;border-top:1px solid var(--line);
 border-bottom:1px solid var(--line);font-size:13px}
nav a{color:var(--accent);text-decoration:none}
table{border-collapse:collapse;margin:6px 0 10px;font-size:13px}
th,td{padding:4px 9px;border-bottom:1px solid var(--line);text-align:left;vertical-align:top}
th{background:var(--bg);font-weight:600;white-space:nowrap}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
tbody tr:nth-child(even){background:#fcfcfc}
table.eda td,table.eda th{font-size:12px;padding:3px 7px}
table.eda td:first-child{font-weight:600;overflow-wrap:break-word}
.role{display:block;min-width:140px;max-width:230px}
.tv{display:block;min-width:300px;font-size:12px;color:#444}
.kv{display:grid;grid-template-columns:repeat(auto-fill,minmax(290px,1fr));gap:0 24px;
 margin:0}
.kv div{display:flex;justify-content:space-between;gap:12px;padding:4px 2px;
 border-bottom:1px solid var(--line);font-size:13px}
.kv dt{color:var(--muted)}.kv dd{margin:0;font-weight:600;text-align:right;
 overflow-wrap:anywhere}
.row{display:flex;flex-wrap:wrap;gap:8px 48px;align-items:flex-start}
tr.muted td{color:var(--muted)}
tr.chosen td{background:#fff6d6;font-weight:600}
table.ksearch td:first-child{white-space:nowrap}
.scroll{overflow-x:auto}
.badge{display:inline-block;background:#d62728;color:#fff;border-radius:8px;
 padding:0 7px;font-size:11px;font-weight:600;margin-left:4px}
.warn-text{color:#a04000}
.box{border-radius:6px;padding:10px 14px;margin:10px 0}
.box.warn{background:#fff3e0;border:1px solid #f0a050;border-left:6px solid #e67e22}
.box.info{background:#eef5fc;border:1px solid #b7d2ee;border-left:6px solid var(--accent)}
.muted{color:var(--muted)}.small{font-size:12px}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(540px,1fr));gap:16px}
.card{border:1px solid var(--line);border-top:6px solid #999;border-radius:8px;
 padding:10px 14px;background:#fff;min-width:0}
.card-head{display:flex;align-items:center;gap:8px;flex-wrap:wrap}
.card-head h3{margin:0}
.swatch{display:inline-block;width:14px;height:14px;border-radius:3px;margin-right:4px;
 vertical-align:-2px;border:1px solid rgba(0,0,0,.15)}
.desc{font-weight:600;margin:6px 0 8px;overflow-wrap:anywhere}
table.card-table{width:100%;font-size:12.5px}
table.card-table td:first-child{overflow-wrap:break-word}
table.card-table td{white-space:nowrap}table.card-table td:first-child{white-space:normal}
.zbar{display:inline-block;position:relative;width:60px;height:9px;background:#f0f0f0;
 margin-right:6px;vertical-align:middle;border-radius:2px}
.zbar::after{content:"";position:absolute;left:50%;top:-2px;height:13px;border-left:1px solid
 #999}
.zbar span{position:absolute;top:0;height:9px;border-radius:2px}
.znum{font-variant-numeric:tabular-nums}
.hi{color:#b03a2e;font-weight:600}.lo{color:#2e6fb0}
.bar{display:inline-block;width:120px;height:9px;background:#f0f0f0;margin-right:8px;
 vertical-align:middle;border-radius:2px}
.bar span{display:block;height:9px;background:var(--accent);border-radius:2px}
.figures{display:flex;flex-direction:column;gap:26px}
figure{margin:0}
figure img{max-width:100%;height:auto;display:block;border:1px solid var(--line);
 border-radius:6px}
figcaption{color:var(--muted);font-size:12.5px;margin-top:4px;max-width:900px}
figure.missing{border:1px dashed var(--line);border-radius:6px;padding:8px 14px;
 color:var(--muted)}
table.shap td,table.shap th{font-size:12px;padding:3px 8px}
footer{margin-top:40px;color:var(--muted);font-size:12px}
"""


def render_report(
    summary: RunSummary | Mapping[str, Any],
    projection_2d: Mapping[str, Any] | None = None,
    hide_table_contents: bool = False,
) -> str:
    """The report as one HTML string.

    Parameters
    ----------
    summary
        The run summary (a :class:`~autoseg.summary.RunSummary`, or its JSON form as
        written to ``summary.json``).
    projection_2d
        Optional ``{"xy": (m, 2) array, "labels": (m,) ints}`` for the scatter plot.
    hide_table_contents
        Render aggregates only. Also switched on when the summary's own
        ``parameters.hide_table_contents`` is true.

    Returns
    -------
    str
        A complete, self-contained HTML document.
    """
    if isinstance(summary, RunSummary):
        summary = summary.to_dict()
    hide = bool(hide_table_contents
                or (summary.get("parameters") or {}).get("hide_table_contents"))
    view = _redact(summary) if hide else copy.deepcopy(dict(summary))
    k = int(view.get("chosen_k") or len(view.get("cluster_sizes") or []))
    sections = [
        _section("parameters", _parameters(view)),
        _section("input", _input(view, hide)),
        _section("k-search", _k_search(view)),
        _section("clusters", _clusters(view, hide)),
        _section("other-k", _other_k(view, hide)),
        _section("changes", _changes(view, hide)),
        _section("plots", _plots(view, projection_2d)),
        _section("fidelity", _fidelity(view)),
        _section("importance", _importance(view, k)),
        _section("timings", _timings(view)),
    ]
    title = f"autoseg report \u2014 {(view.get('parameters') or {}).get('input_table', '')}"
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        # No request of any kind may leave the page, even if a value slipped through escaping.
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
        "img-src data:; style-src 'unsafe-inline'\">"
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body><main>"
        + _header(view, hide)
        + "".join(sections)
        + f"<footer>Generated by autoseg {_e(view.get('autoseg_version') or '')}.</footer>"
        + "</main></body></html>\n"
    )


def write_report(
    path: Path,
    summary: RunSummary | Mapping[str, Any],
    projection_2d: dict[str, Any] | None = None,
    hide_table_contents: bool = False,
) -> Path:
    """Write the self-contained HTML report of a run, atomically.

    Parameters
    ----------
    path
        Where to write the report (e.g. ``output_dir / "report.html"``). Its directory is
        created if needed. The file is replaced in one rename, so a reader never sees half a
        report and a failure leaves any previous report in place.
    summary
        The run summary (``RunResult.summary`` or the parsed ``summary.json``).
    projection_2d
        Optional ``{"xy": (m, 2) float array, "labels": (m,) int array}``
        (``RunResult.projection_2d``); without it the scatter plot is left out.
    hide_table_contents
        Render no row-level values: no minimum, maximum or most frequent values and no
        category levels, only counts, means, medians and shares. Also switched on when the
        summary's ``parameters.hide_table_contents`` is true.

    Returns
    -------
    Path
        ``path``.
    """
    path = Path(path)
    document = render_report(summary, projection_2d, hide_table_contents)
    write_file_atomically(path, document)
    return path
