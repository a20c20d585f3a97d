"""The report's plots, each rendered to PNG bytes.

Every plot is drawn on a :class:`matplotlib.figure.Figure` attached to an Agg canvas directly,
never through ``pyplot``: pyplot keeps a global registry of figures and a process-wide backend,
and this module must not change either for other code in the same process (a notebook, a web
server). Nothing here touches ``matplotlib.rcParams``.

Each plot has two functions: ``*_figure`` builds the :class:`~matplotlib.figure.Figure` (useful
to inspect in tests) and ``plot_*`` renders it to PNG. Every artist that stands for one cluster
carries ``gid="cluster-<id>"`` and the colour ``cluster_colors(k)[id]``, so a cluster has the
same colour in every plot of a report.

Rendering is the slow part of the report (about 0.2 s a plot on 2 cores), and a run renders
the report twice (staged before the tables are written, then again with the write stage's
timing), with the same data for every plot. So each ``plot_*`` keeps the PNG of its last few
inputs (:data:`PNG_CACHE_SIZE`), keyed by a SHA-256 of the input's values: the same input
gives the very same bytes without drawing again, and any change to the input draws anew.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from datetime import date, timedelta
from typing import Any

import matplotlib
import matplotlib.colors
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_hex
from matplotlib.figure import Figure
from matplotlib.patches import Patch, Rectangle
from matplotlib.ticker import StrMethodFormatter

__all__ = [
    "DEGENERATE_SHARE",
    "cluster_colors",
    "format_value",
    "cluster_gid",
    "cluster_sizes_figure",
    "k_search_figure",
    "plot_cluster_sizes",
    "plot_k_search",
    "plot_profile_heatmap",
    "plot_projection",
    "plot_shap_stacked",
    "plot_top_features",
    "profile_heatmap_figure",
    "projection_figure",
    "shap_stacked_figure",
    "top_features_figure",
]

DPI = 100
# A cluster holding less than this share of the rows is called degenerate in the report.
DEGENERATE_SHARE = 0.02
MAX_STACKED_FEATURES = 25
MAX_HEATMAP_FEATURES = 20
LABEL_CHARS = 28
_INK = "#222222"
_MUTED = "#777777"
_CHOSEN = "#d62728"  # only in the k-search plot, which has no per-cluster colours


def cluster_colors(k: int) -> list[str]:
    """One colour per cluster, the same for a given ``k`` in every plot and in the HTML.

    Parameters
    ----------
    k
        Number of clusters.

    Returns
    -------
    list of str
        ``k`` hex colours: ``tab10`` for k <= 10, ``tab20`` for k <= 20, then ``tab20``,
        ``tab20b`` and ``tab20c`` in turn (repeating after 60 clusters).
    """
    if k <= 0:
        return []
    if k <= 10:
        names = ["tab10"]
    elif k <= 20:
        names = ["tab20"]
    else:
        names = ["tab20", "tab20b", "tab20c"]
    # Read-only access to the colormap registry: no global state is changed.
    palette = [to_hex(c) for name in names for c in matplotlib.colormaps[name].colors]
    return [palette[i % len(palette)] for i in range(k)]


def cluster_gid(cluster_id: int) -> str:
    """The ``gid`` set on every artist that stands for ``cluster_id``."""
    return f"cluster-{cluster_id}"


# ---------------------------------------------------------------------------------------------
# shared helpers


def _new_figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


# zlib level of the PNGs: 3 encodes a report's six plots in 0.07 s instead of 0.12 s (level 6,
# PIL's default) for 7% more bytes.
PNG_COMPRESS_LEVEL = 3


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI, facecolor="white",
                   pil_kwargs={"compress_level": PNG_COMPRESS_LEVEL})
    return buffer.getvalue()


# Most PNGs kept (six plots of a report, twice over); about 60 KiB each.
PNG_CACHE_SIZE = 12
_png_cache: OrderedDict[str, bytes] = OrderedDict()


def _json_default(value: Any) -> Any:
    if isinstance(value, np.ndarray | np.generic):
        return value.tolist()
    return repr(value)


def _cached_png(name: str, key: Sequence[Any], draw: Callable[[], Figure]) -> bytes:
    """The PNG of ``draw()``, drawn once per distinct ``key`` (the plot's inputs).

    Arrays in ``key`` are hashed by dtype, shape and bytes, everything else by its JSON text.
    """
    digest = hashlib.sha256(name.encode())
    for part in key:
        if isinstance(part, np.ndarray):
            array = np.ascontiguousarray(part)
            digest.update(f"{array.dtype.str}{array.shape}".encode())
            digest.update(array.tobytes())
        else:
            digest.update(json.dumps(part, sort_keys=True, default=_json_default).encode())
        digest.update(b"\x00")
    hexdigest = digest.hexdigest()
    png = _png_cache.get(hexdigest)
    if png is None:
        png = _png(draw())
        _png_cache[hexdigest] = png
        while len(_png_cache) > PNG_CACHE_SIZE:
            _png_cache.popitem(last=False)
    else:
        _png_cache.move_to_end(hexdigest)
    return png


def _label(text: Any, limit: int = LABEL_CHARS) -> str:
    """A user string made safe for matplotlib: shortened, and ``$`` escaped so a column name
    such as ``price $ usd $`` is not parsed as mathtext (which can fail to render)."""
    value = str(text)
    if len(value) > limit:
        value = value[: limit - 1] + "\u2026"
    return value.replace("$", r"\$")


def _k_of(
    clusters: Sequence[Mapping[str, Any]], shap_rows: Sequence[Mapping[str, Any]] = ()
) -> int:
    ids = [int(c["cluster_id"]) for c in clusters] + [int(r["cluster_id"]) for r in shap_rows]
    return max(ids) + 1 if ids else 0


def _empty(figure: Figure, message: str) -> Figure:
    ax = figure.add_subplot()
    ax.axis("off")
    ax.text(0.5, 0.5, message, ha="center", va="center", color=_MUTED, fontsize=12)
    return figure


def format_value(value: float | None, kind: str = "numeric") -> str:
    """A number as a reader wants it: dates as ``YYYY-MM-DD``, binary shares as ``%``.

    Parameters
    ----------
    value
        The value; ``None`` or NaN is shown as an em dash.
    kind
        ``numeric``, ``date`` (days since 1970-01-01) or ``binary`` (a 0/1 mean).

    Returns
    -------
    str
    """
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "\u2014"
    value = float(value)
    if kind == "date":
        try:
            return (date(1970, 1, 1) + timedelta(days=round(value))).isoformat()
        except OverflowError:
            return f"{value:,.0f} days"
    if kind == "binary":
        return f"{100 * value:.1f}%"
    magnitude = abs(value)
    if magnitude >= 1e12:
        return f"{value:.3g}"
    if value == round(value) or magnitude >= 1e5:
        return f"{value:,.0f}"
    if magnitude >= 1000:
        return f"{value:,.1f}"
    if magnitude >= 1:
        return f"{value:,.2f}"
    return f"{value:.3g}"


def _direction(cluster: Mapping[str, Any] | None, feature: str) -> str:
    """How the cluster differs on ``feature``: high/low (earlier/later for dates) for numbers,
    the most over-represented level for categories, ``category`` when levels are hidden."""
    if cluster is None:
        return ""
    for row in cluster.get("numeric", []):
        if row["feature"] == feature:
            z = row.get("z") or 0.0
            if abs(z) < 0.05:
                return "\u2248 overall"
            if row.get("kind") == "date":
                return "later" if z > 0 else "earlier"
            return "high" if z > 0 else "low"
    for row in cluster.get("categories", []):
        if row["feature"] == feature:
            levels = row.get("levels") or []
            return f"= {levels[0]['level']}" if levels else "category"
    return ""


# ---------------------------------------------------------------------------------------------
# (1) top three features of each cluster


def top_features_figure(
    shap_by_cluster: Sequence[Mapping[str, Any]],
    clusters: Sequence[Mapping[str, Any]],
    top: int = 3,
) -> Figure:
    """Small multiples: the mean |SHAP| of each cluster's top features, with their direction.

    Parameters
    ----------
    shap_by_cluster
        Rows ``cluster_id, feature, mean_abs_shap, mean_shap, rank`` (the summary's
        ``explanation.shap_by_cluster``).
    clusters
        The summary's ``clusters`` profiles; they give each feature's direction.
    top
        Features per cluster.

    Returns
    -------
    Figure
    """
    k = _k_of(clusters, shap_by_cluster)
    colors = cluster_colors(k)
    ncols = min(max(k, 1), 4)
    nrows = max(math.ceil(k / ncols), 1)
    figure = _new_figure(3.2 * ncols + 0.4, 1.9 * nrows + 0.9)
    if k == 0 or not shap_by_cluster:
        return _empty(figure, "no SHAP values")
    by_id = {int(c["cluster_id"]): c for c in clusters}
    axes = figure.subplots(nrows, ncols, sharex=True, squeeze=False)
    largest = max(float(r["mean_abs_shap"]) for r in shap_by_cluster) or 1.0
    for cluster_id in range(nrows * ncols):
        ax = axes[cluster_id // ncols][cluster_id % ncols]
        if cluster_id >= k:
            ax.axis("off")
            continue
        rows = sorted((r for r in shap_by_cluster if int(r["cluster_id"]) == cluster_id),
                      key=lambda r: -float(r["mean_abs_shap"]))[:top]
        profile = by_id.get(cluster_id)
        # Short: a long title overflows a narrow panel (sizes have their own plot).
        title = f"cluster {cluster_id}"
        if profile is not None:
            title += f" ({100 * float(profile['share']):.1f}%)"
        ax.set_title(title, fontsize=11, loc="left", color=_INK)
        ax.tick_params(labelsize=10)
        if not rows:
            ax.set_yticks([])
            ax.text(0.5, 0.5, "no SHAP values", transform=ax.transAxes, ha="center",
                    va="center", color=_MUTED)
            continue
        # Top feature on the top row: reverse so barh draws it last (highest y).
        rows = rows[::-1]
        values = [float(r["mean_abs_shap"]) for r in rows]
        positions = np.arange(len(rows))
        ax.barh(positions, values, color=colors[cluster_id], height=0.65,
                gid=cluster_gid(cluster_id))
        ax.set_yticks(positions, [_label(r["feature"], 22) for r in rows])
        for y, value, row in zip(positions, values, rows, strict=True):
            ax.text(value + largest * 0.02, y, _label(_direction(profile, str(row["feature"])),
                                                      18),
                    va="center", ha="left", fontsize=10, color=_INK)
        ax.set_ylim(-0.6, top - 0.4)
        ax.spines[["top", "right"]].set_visible(False)
    # Room right of the longest bar for its direction label.
    axes[0][0].set_xlim(0, largest * 1.75)
    figure.supxlabel("mean |SHAP| (log-odds) over the cluster's rows", fontsize=11)
    figure.suptitle("Top three features per cluster", fontsize=13, fontweight="bold")
    return figure


def plot_top_features(
    shap_by_cluster: Sequence[Mapping[str, Any]],
    clusters: Sequence[Mapping[str, Any]],
    top: int = 3,
) -> bytes:
    """PNG of :func:`top_features_figure`.

    Parameters
    ----------
    shap_by_cluster, clusters, top
        As for :func:`top_features_figure`.

    Returns
    -------
    bytes
        The PNG image.
    """
    return _cached_png("top_features", (list(shap_by_cluster), list(clusters), top),
                       lambda: top_features_figure(shap_by_cluster, clusters, top))


# ---------------------------------------------------------------------------------------------
# (2) mean |SHAP| per feature, stacked by cluster


def shap_stacked_figure(
    shap_by_cluster: Sequence[Mapping[str, Any]],
    k: int | None = None,
    max_features: int = MAX_STACKED_FEATURES,
) -> Figure:
    """Horizontal bars of mean |SHAP| per feature, one stacked segment per cluster.

    Parameters
    ----------
    shap_by_cluster
        Rows ``cluster_id, feature, mean_abs_shap, ...``.
    k
        Number of clusters (default: the largest cluster id + 1).
    max_features
        Show at most this many features, those with the largest total.

    Returns
    -------
    Figure
    """
    k = k if k is not None else _k_of([], shap_by_cluster)
    features: dict[str, np.ndarray] = {}
    for row in shap_by_cluster:
        values = features.setdefault(str(row["feature"]), np.zeros(k))
        values[int(row["cluster_id"])] += float(row["mean_abs_shap"])
    ranked = sorted(features, key=lambda f: -features[f].sum())
    shown = ranked[:max_features]
    figure = _new_figure(10.5, 0.34 * len(shown) + 1.6)
    if not shown:
        return _empty(figure, "no SHAP values")
    ax = figure.add_subplot()
    colors = cluster_colors(k)
    # Largest total at the top.
    positions = np.arange(len(shown))[::-1]
    left = np.zeros(len(shown))
    for cluster_id in range(k):
        values = np.array([features[f][cluster_id] for f in shown])
        ax.barh(positions, values, left=left, color=colors[cluster_id], height=0.72,
                label=f"cluster {cluster_id}", gid=cluster_gid(cluster_id),
                edgecolor="white", linewidth=0.4)
        left += values
    ax.set_yticks(positions, [_label(f) for f in shown])
    ax.set_ylim(-0.6, len(shown) - 0.4)
    ax.set_xlabel("mean |SHAP| (log-odds), summed over clusters")
    title = "Mean |SHAP| per feature, stacked by cluster"
    if len(ranked) > len(shown):
        title += f" (top {len(shown)} of {len(ranked)} features)"
    ax.set_title(title, fontsize=13, fontweight="bold")
    ax.spines[["top", "right"]].set_visible(False)
    ax.grid(axis="x", alpha=0.3)
    ax.set_axisbelow(True)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, fontsize=9,
              ncols=1 if k <= 14 else 2, title="cluster colour")
    return figure


def plot_shap_stacked(
    shap_by_cluster: Sequence[Mapping[str, Any]],
    k: int | None = None,
    max_features: int = MAX_STACKED_FEATURES,
) -> bytes:
    """PNG of :func:`shap_stacked_figure`.

    Parameters
    ----------
    shap_by_cluster, k, max_features
        As for :func:`shap_stacked_figure`.

    Returns
    -------
    bytes
        The PNG image.
    """
    return _cached_png("shap_stacked", (list(shap_by_cluster), k, max_features),
                       lambda: shap_stacked_figure(shap_by_cluster, k, max_features))


# ---------------------------------------------------------------------------------------------
# (3) the k search


def k_search_figure(k_search: Sequence[Mapping[str, Any]], chosen_k: int | None) -> Figure:
    """Silhouette (with its standard error) and inertia against k, the chosen k marked.

    Parameters
    ----------
    k_search
        The summary's ``k_search`` rows (``k, silhouette, silhouette_stderr, inertia,
        rejected``).
    chosen_k
        The k that was kept.

    Returns
    -------
    Figure
    """
    figure = _new_figure(11.0, 3.9)
    if not k_search:
        return _empty(figure, "no k search (k was fixed or a saved model was reused)")
    left, right = figure.subplots(1, 2)
    ks = np.array([int(c["k"]) for c in k_search])
    scored = [c for c in k_search if c.get("silhouette") is not None]
    if scored:
        sk = np.array([int(c["k"]) for c in scored])
        sil = np.array([float(c["silhouette"]) for c in scored])
        err = np.array([float(c.get("silhouette_stderr") or 0.0) for c in scored])
        sampled = bool(err.any())
        left.errorbar(sk, sil, yerr=err if sampled else None, color=_INK, marker="o",
                      markersize=5, capsize=4, linewidth=1.5,
                      label="mean silhouette \u00b1 std. error" if sampled
                      else "mean silhouette (exact)")
    for candidate in k_search:
        if candidate.get("rejected"):
            left.axvline(int(candidate["k"]), color=_MUTED, linestyle=":", linewidth=1)
            left.text(int(candidate["k"]), 0.02, " rejected", transform=left.get_xaxis_transform(),
                      rotation=90, color=_MUTED, fontsize=8, va="bottom")
    inertia = np.array([float(c["inertia"]) for c in k_search])
    right.plot(ks, inertia, color=_INK, marker="o", markersize=5, linewidth=1.5,
               label="inertia")
    for ax in (left, right):
        if chosen_k is not None:
            ax.axvline(chosen_k, color=_CHOSEN, linestyle="--", linewidth=1.2, alpha=0.8)
        ax.set_xticks(ks)
        ax.set_xlabel("number of clusters k")
        ax.grid(alpha=0.3)
        ax.spines[["top", "right"]].set_visible(False)
    if chosen_k is not None:
        chosen = next((c for c in k_search if int(c["k"]) == chosen_k), None)
        if chosen is not None and chosen.get("silhouette") is not None:
            left.plot([chosen_k], [float(chosen["silhouette"])], marker="o", markersize=13,
                      markerfacecolor="none", markeredgecolor=_CHOSEN, markeredgewidth=2,
                      linestyle="none", label=f"chosen k = {chosen_k}")
        if chosen is not None:
            right.plot([chosen_k], [float(chosen["inertia"])], marker="o", markersize=13,
                       markerfacecolor="none", markeredgecolor=_CHOSEN, markeredgewidth=2,
                       linestyle="none", label=f"chosen k = {chosen_k}")
    left.set_ylabel("mean silhouette (higher is better)")
    single = " (only this k was tried)" if len(k_search) == 1 else ""
    left.set_title("Silhouette by k" + single, fontsize=12, fontweight="bold")
    right.set_ylabel("inertia (within-cluster sum of squares)")
    right.set_title("Inertia by k" + single, fontsize=12, fontweight="bold")
    right.ticklabel_format(axis="y", style="sci", scilimits=(-3, 5))
    left.legend(frameon=False, fontsize=9, loc="best")
    right.legend(frameon=False, fontsize=9, loc="upper right")
    return figure


def plot_k_search(k_search: Sequence[Mapping[str, Any]], chosen_k: int | None) -> bytes:
    """PNG of :func:`k_search_figure`.

    Parameters
    ----------
    k_search, chosen_k
        As for :func:`k_search_figure`.

    Returns
    -------
    bytes
        The PNG image.
    """
    return _cached_png("k_search", (list(k_search), chosen_k),
                       lambda: k_search_figure(k_search, chosen_k))


# ---------------------------------------------------------------------------------------------
# (4) cluster sizes


def cluster_sizes_figure(sizes: Sequence[int]) -> Figure:
    """Bars of the number of rows per cluster, labelled with counts and shares.

    Parameters
    ----------
    sizes
        Rows per cluster, indexed by cluster id.

    Returns
    -------
    Figure
    """
    k = len(sizes)
    figure = _new_figure(max(6.0, 0.75 * k + 3.0), 3.9)
    if k == 0:
        return _empty(figure, "no clusters")
    ax = figure.add_subplot()
    colors = cluster_colors(k)
    total = float(sum(sizes)) or 1.0
    positions = np.arange(k)
    fontsize = 9.5 if k <= 10 else 8.5
    for cluster_id, size in enumerate(sizes):
        degenerate = size / total < DEGENERATE_SHARE
        ax.bar(cluster_id, size, color=colors[cluster_id], width=0.7,
               gid=cluster_gid(cluster_id), hatch="//" if degenerate else None,
               edgecolor=_INK if degenerate else colors[cluster_id])
        ax.annotate(f"{int(size):,}\n{100 * size / total:.1f}%", (cluster_id, size),
                    xytext=(0, 3), textcoords="offset points", ha="center", va="bottom",
                    fontsize=fontsize, color=_INK)
    ax.set_xticks(positions, [str(i) for i in positions])
    ax.set_xlabel("cluster")
    ax.set_ylabel("rows")
    # Head room for the two-line labels above the tallest bar.
    ax.set_ylim(0, max(sizes) * 1.22 or 1)
    ax.yaxis.set_major_formatter(StrMethodFormatter("{x:,.0f}"))
    ax.spines[["top", "right"]].set_visible(False)
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    title = "Cluster sizes"
    if any(s / total < DEGENERATE_SHARE for s in sizes):
        title += f" (hatched: under {100 * DEGENERATE_SHARE:.0f}% of rows)"
    ax.set_title(title, fontsize=13, fontweight="bold")
    return figure


def plot_cluster_sizes(sizes: Sequence[int]) -> bytes:
    """PNG of :func:`cluster_sizes_figure`.

    Parameters
    ----------
    sizes
        Rows per cluster, indexed by cluster id.

    Returns
    -------
    bytes
        The PNG image.
    """
    return _cached_png("cluster_sizes", (list(sizes),), lambda: cluster_sizes_figure(sizes))


# ---------------------------------------------------------------------------------------------
# (5) profile heatmap


def profile_heatmap_figure(
    clusters: Sequence[Mapping[str, Any]], max_features: int = MAX_HEATMAP_FEATURES
) -> Figure:
    """Standardised means (``z``) of the numeric features per cluster, centred at 0.

    Parameters
    ----------
    clusters
        The summary's ``clusters`` profiles (their ``numeric`` rows carry ``z``).
    max_features
        Show at most this many features, those with the largest |z| in any cluster.

    Returns
    -------
    Figure
    """
    k = _k_of(clusters)
    ordered = sorted(clusters, key=lambda c: int(c["cluster_id"]))
    names: list[str] = []
    for cluster in ordered:
        for row in cluster.get("numeric", []):
            if row["feature"] not in names:
                names.append(str(row["feature"]))
    z = np.zeros((len(ordered), len(names)))
    for i, cluster in enumerate(ordered):
        for row in cluster.get("numeric", []):
            z[i, names.index(str(row["feature"]))] = float(row.get("z") or 0.0)
    if len(names) > max_features:
        keep = np.sort(np.argsort(-np.abs(z).max(axis=0))[:max_features])
        total = len(names)
        names = [names[j] for j in keep]
        z = z[:, keep]
    else:
        total = len(names)
    width = min(max(0.78 * len(names) + 3.4, 6.5), 18.0)
    figure = _new_figure(width, 0.42 * len(ordered) + 2.9)
    if not names or not ordered:
        return _empty(figure, "no numeric features to profile")
    swatch_ax, ax = figure.subplots(
        1, 2, sharey=True, gridspec_kw={"width_ratios": [0.35, max(len(names), 1)]}
    )
    limit = float(max(1.0, min(3.0, np.abs(z).max())))
    image = ax.imshow(z, cmap="RdBu_r", vmin=-limit, vmax=limit, aspect="auto")
    fontsize = 8.5 if len(names) <= 12 and len(ordered) <= 12 else 7
    for i in range(z.shape[0]):
        for j in range(z.shape[1]):
            # Inside its cell: the layout need not measure it (measuring up to 20 x k texts
            # took 0.1 s of the plot's 0.4 s).
            ax.text(j, i, f"{z[i, j]:+.2f}", ha="center", va="center", fontsize=fontsize,
                    color="white" if abs(z[i, j]) > 0.55 * limit else _INK, in_layout=False)
    ax.set_xticks(np.arange(len(names)), [_label(n, 24) for n in names], rotation=35,
                  ha="right", rotation_mode="anchor", fontsize=9)
    ax.tick_params(axis="y", left=False, labelleft=False)
    colors = cluster_colors(k)
    for i, cluster in enumerate(ordered):
        cluster_id = int(cluster["cluster_id"])
        swatch_ax.add_patch(Rectangle((-0.5, i - 0.42), 1.0, 0.84, color=colors[cluster_id],
                                      gid=cluster_gid(cluster_id)))
    swatch_ax.set_xlim(-0.5, 0.5)
    swatch_ax.set_ylim(len(ordered) - 0.5, -0.5)
    swatch_ax.set_yticks(np.arange(len(ordered)),
                         [f"cluster {int(c['cluster_id'])}" for c in ordered], fontsize=9)
    swatch_ax.set_xticks([])
    swatch_ax.spines[:].set_visible(False)
    colorbar = figure.colorbar(image, ax=ax, shrink=0.9, pad=0.01)
    # Two lines: one line is taller than the colour bar when there are few clusters.
    colorbar.set_label("z = (cluster mean \u2212 overall mean)\n\u00f7 overall std", fontsize=9)
    title = "Cluster profiles: standardised feature means"
    if total > len(names):
        title += f" (top {len(names)} of {total} by |z|)"
    figure.suptitle(title, fontsize=13, fontweight="bold")
    return figure


def plot_profile_heatmap(
    clusters: Sequence[Mapping[str, Any]], max_features: int = MAX_HEATMAP_FEATURES
) -> bytes:
    """PNG of :func:`profile_heatmap_figure`.

    Parameters
    ----------
    clusters, max_features
        As for :func:`profile_heatmap_figure`.

    Returns
    -------
    bytes
        The PNG image.
    """
    return _cached_png("profile_heatmap", (list(clusters), max_features),
                       lambda: profile_heatmap_figure(clusters, max_features))


# ---------------------------------------------------------------------------------------------
# (6) 2-D projection


def projection_figure(projection_2d: Mapping[str, Any], k: int | None = None) -> Figure:
    """A sample of rows in two dimensions, coloured by cluster, centres numbered.

    Parameters
    ----------
    projection_2d
        ``{"xy": (m, 2) float array, "labels": (m,) int array}``.
    k
        Number of clusters (default: the largest label + 1).

    Returns
    -------
    Figure
    """
    xy = np.asarray(projection_2d["xy"], dtype=np.float64).reshape(-1, 2)
    labels = np.asarray(projection_2d["labels"]).astype(np.int64).reshape(-1)
    k = k if k is not None else (int(labels.max()) + 1 if labels.size else 0)
    figure = _new_figure(9.5, 6.4)
    if labels.size == 0:
        return _empty(figure, "no rows to project")
    ax = figure.add_subplot()
    colors = cluster_colors(k)
    counts = np.bincount(labels, minlength=k)
    # Largest clusters first, so small ones are drawn on top and stay visible.
    size = 10 if labels.size <= 2000 else 5
    for cluster_id in np.argsort(-counts, kind="stable"):
        mask = labels == cluster_id
        if not mask.any():
            continue
        ax.scatter(xy[mask, 0], xy[mask, 1], s=size, color=colors[cluster_id], alpha=0.55,
                   linewidths=0, gid=cluster_gid(int(cluster_id)), rasterized=True)
    centres = {c: xy[labels == c].mean(axis=0) for c in range(k) if counts[c]}
    placed = _place_labels(centres, xy)
    for cluster_id, (cx, cy) in centres.items():
        lx, ly = placed[cluster_id]
        if (lx, ly) != (cx, cy):
            # Centres that overlap in this view get their number moved aside, with a leader.
            ax.plot([cx, lx], [cy, ly], color=_INK, linewidth=0.8, zorder=3)
        ax.scatter([cx], [cy], s=36, color=colors[cluster_id], edgecolors=_INK,
                   linewidths=1.0, zorder=4, gid=cluster_gid(cluster_id))
        ax.text(lx, ly, str(cluster_id), ha="center", va="center", fontsize=9,
                fontweight="bold", color=_text_on(colors[cluster_id]), zorder=5,
                bbox={"boxstyle": "round,pad=0.25", "facecolor": colors[cluster_id],
                      "edgecolor": _INK, "linewidth": 0.8})
    handles = [Patch(color=colors[i], label=f"cluster {i} ({counts[i]:,})")
               for i in range(k) if counts[i]]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False,
              fontsize=9, ncols=1 if k <= 16 else 2, title="points in sample")
    ax.set_xlabel("component 1")
    ax.set_ylabel("component 2")
    ax.set_title(f"2-D projection of {labels.size:,} sampled rows (PCA of the clustering "
                 "features)", fontsize=12, fontweight="bold")
    ax.grid(alpha=0.25)
    ax.set_axisbelow(True)
    ax.spines[["top", "right"]].set_visible(False)
    return figure


def _text_on(color: str) -> str:
    """Black or white, whichever reads better on ``color`` (pale tab20 shades need black)."""
    r, g, b = matplotlib.colors.to_rgb(color)
    return _INK if 0.299 * r + 0.587 * g + 0.114 * b > 0.6 else "white"


def _place_labels(
    centres: Mapping[int, np.ndarray], xy: np.ndarray, gap: float = 0.055
) -> dict[int, tuple[float, float]]:
    """Label positions for the cluster centres, moved aside (greedily, in axes-fraction units)
    where two labels would overlap."""
    low = np.nanmin(xy, axis=0)
    span = np.where(np.ptp(xy, axis=0) > 0, np.ptp(xy, axis=0), 1.0)
    steps = [(0.0, 0.0)] + [
        (radius * dx, radius * dy)
        for radius in (1.2, 2.2, 3.2)
        for dx, dy in ((0, 1), (0, -1), (1, 0), (-1, 0), (1, 1), (-1, 1), (1, -1), (-1, -1))
    ]
    taken: list[np.ndarray] = []
    placed: dict[int, tuple[float, float]] = {}
    for cluster_id, centre in centres.items():
        unit = (np.asarray(centre) - low) / span
        choice = unit
        for dx, dy in steps:
            candidate = unit + np.array([dx, dy]) * gap
            if all(np.abs(candidate - other).max() >= gap for other in taken):
                choice = candidate
                break
        taken.append(choice)
        if choice is unit:
            placed[cluster_id] = (float(centre[0]), float(centre[1]))
        else:
            x, y = low + choice * span
            placed[cluster_id] = (float(x), float(y))
    return placed


def plot_projection(projection_2d: Mapping[str, Any], k: int | None = None) -> bytes:
    """PNG of :func:`projection_figure`.

    Parameters
    ----------
    projection_2d, k
        As for :func:`projection_figure`.

    Returns
    -------
    bytes
        The PNG image.
    """
    xy = np.asarray(projection_2d["xy"])
    labels = np.asarray(projection_2d["labels"])
    return _cached_png("projection", (xy, labels, k), lambda: projection_figure(projection_2d, k))
