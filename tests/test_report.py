"""The HTML report and its plots: self-contained, escaped, aggregates only when asked."""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import to_hex

from autoseg.config import build_config
from autoseg.demo import make_customers
from autoseg.pipeline import RunResult, run
from autoseg.report import plots, write_report
from autoseg.report.plots import cluster_colors, cluster_gid
from autoseg.summary import RunSummary

HOSTILE = "<script>alert(1)</script>"
EMAIL = "sentinel-9f3a@example.com"
BIG = 987654.321
# Every way the report or the summary could print the numeric sentinel.
BIG_RENDERINGS = ("987654.321", "987,654.321", "987654.32", "987,654.32", "987654.3",
                  "987,654.3", "987,654", "987654", "9.88e+05", "9.877e+05")
SECTION_HEADINGS = (
    "Run parameters", "Input data (EDA)", "Choosing k", "Cluster profiles", "Plots",
    "Explanation fidelity", "Feature importance", "Timings and versions",
)
PNG_IMG = '<img src="data:image/png;base64,'


@dataclass
class Runs:
    shown: RunResult
    hidden: RunResult
    tmp: Path


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Runs:
    """The pipeline run twice on the demo table with a hostile column name and sentinels:
    once normally and once with ``hide_table_contents``."""
    tmp = tmp_path_factory.mktemp("report")
    frame, _ = make_customers(800)
    # Related to the spend (a column independent of every other one would be left out).
    frame[HOSTILE] = np.log1p(frame["annual_spend"]) + np.random.default_rng(3).normal(
        0.0, 0.5, size=len(frame))
    # A text column whose only value is the sentinel e-mail, a category level that is the
    # sentinel in one row, and a numeric maximum that exists in one row only.
    frame["contact_email"] = pd.Series([None] * len(frame), dtype="string")
    frame.loc[3, "contact_email"] = EMAIL
    frame.loc[5, "region"] = EMAIL
    frame.loc[7, "annual_spend"] = BIG
    table = tmp / "customers.parquet"
    frame.to_parquet(table)
    results = {}
    for hide in (False, True):
        results[hide] = run(build_config({
            "input_table": str(table),
            "output_dir": str(tmp / f"out-{hide}"),
            "store": f"duckdb:{tmp}/s.duckdb",
            "model_dir": str(tmp / "m"),
            "hide_table_contents": hide,
        }))
    return Runs(shown=results[False], hidden=results[True], tmp=tmp)


def _without_images(document: str) -> str:
    """The page without its base64 images, so a search for digits cannot hit image data."""
    return re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "data:image/png;base64,", document)


def _leaks(document: str) -> list[str]:
    text = _without_images(document)
    return [s for s in (EMAIL, *BIG_RENDERINGS) if s in text]


# ---------------------------------------------------------------------------------------------
# the report of a real run


@pytest.fixture(scope="module")
def report(runs: Runs) -> str:
    path = write_report(runs.tmp / "report.html", runs.shown.summary, runs.shown.projection_2d)
    assert path == runs.tmp / "report.html"
    return path.read_text(encoding="utf-8")


def test_report_file_has_every_section_and_six_inline_png_images(runs: Runs,
                                                                 report: str) -> None:
    assert (runs.tmp / "report.html").is_file()
    assert report.startswith("<!DOCTYPE html>")
    for heading in SECTION_HEADINGS:
        assert f"<h2>{heading}</h2>" in report, heading
    assert report.count(PNG_IMG) == 6
    for data in re.findall(r'src="data:image/png;base64,([^"]+)"', report):
        assert base64.b64decode(data).startswith(b"\x89PNG\r\n\x1a\n")


def test_report_makes_no_external_request(report: str) -> None:
    assert "http://" not in report and "https://" not in report
    assert "//" not in _without_images(report).replace("<!DOCTYPE", "")
    for tag in ("<script", "<link", "<iframe", "<object", "<embed", "@import", "url("):
        assert tag not in report.lower(), tag
    for attribute, value in re.findall(r'\b(src|href|srcset|action)\s*=\s*"([^"]*)"', report):
        if attribute == "src":
            assert value.startswith("data:image/png;base64,"), value[:40]
        else:
            assert attribute == "href" and value.startswith("#"), value


def test_report_escapes_a_hostile_column_name(runs: Runs, report: str) -> None:
    assert HOSTILE in runs.shown.summary["columns_used"]  # it reached the report's input
    assert HOSTILE not in report
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in report


def test_report_shows_the_run_facts(runs: Runs, report: str) -> None:
    summary = runs.shown.summary
    assert f"k = {summary['chosen_k']}</b>" in report
    assert '<span class="badge">chosen</span>' in report
    assert "normalised total gain" in report and "Gini" in report
    # one card per cluster, in the cluster's own colour
    colors = cluster_colors(summary["chosen_k"])
    for cluster in summary["clusters"]:
        assert f"<h3>Cluster {cluster['cluster_id']}</h3>" in report
        assert f"border-top-color:{colors[cluster['cluster_id']]}" in report


def test_report_without_projection_still_renders_the_other_plots(runs: Runs) -> None:
    document = write_report(runs.tmp / "no-projection.html", runs.shown.summary).read_text()
    assert document.count(PNG_IMG) == 5
    assert "no projection was passed to the report" in document


def test_control_the_sentinels_are_in_a_report_that_shows_contents(report: str) -> None:
    # Shows the hide tests below would notice a leak.
    assert EMAIL in report
    assert "987,654" in _without_images(report)


def test_hide_table_contents_keeps_sentinels_out_of_report_and_summary(runs: Runs) -> None:
    summary_text = runs.hidden.summary_path.read_text(encoding="utf-8")
    # "987654.3", not "987654": a mean such as 157.65432098765433 holds the digits by chance.
    assert [s for s in (EMAIL, "987654.3") if s in summary_text] == []
    document = write_report(runs.tmp / "hidden.html", runs.hidden.summary,
                            runs.hidden.projection_2d, hide_table_contents=True).read_text()
    assert _leaks(document) == []
    assert document.count(PNG_IMG) == 6
    assert "hide_table_contents" in document


def test_hide_table_contents_redacts_a_summary_that_holds_row_values(runs: Runs) -> None:
    # The report hides on its own, even when handed a summary written without hiding.
    summary = runs.shown.summary
    assert any("top_values" in c for c in summary["profile"]["column_profiles"])
    document = write_report(runs.tmp / "redacted.html", summary, runs.shown.projection_2d,
                            hide_table_contents=True).read_text()
    assert _leaks(document) == []
    levels = {lvl["level"] for c in summary["clusters"] for cat in c["categories"]
              for lvl in cat["levels"]}
    assert levels, "the shown run should have category levels to hide"
    text = _without_images(document)
    assert "<th>level</th>" not in text  # no table of category levels at all
    for level in levels:
        assert f"={level}" not in text and f"= {level}" not in text, level
    # aggregates are still there
    assert "Numeric columns" in text and "rows" in text


def test_summary_hide_parameter_switches_hiding_on(runs: Runs) -> None:
    summary = runs.shown.summary.to_dict()
    summary["parameters"]["hide_table_contents"] = True
    document = write_report(runs.tmp / "param.html", summary).read_text()
    assert _leaks(document) == []


def test_write_report_is_atomic_and_replaces_the_old_file(runs: Runs, tmp_path: Path) -> None:
    target = tmp_path / "sub" / "report.html"
    write_report(target, runs.shown.summary)
    first = target.stat().st_ino
    write_report(target, runs.shown.summary)
    assert target.stat().st_ino != first  # a new file renamed into place, not rewritten
    assert sorted(p.name for p in target.parent.iterdir()) == ["report.html"]


def test_write_report_leaves_the_old_report_when_rendering_fails(tmp_path: Path) -> None:
    target = tmp_path / "report.html"
    target.write_text("old")
    with pytest.raises(Exception):  # noqa: B017 - any error from a broken summary
        write_report(target, {"clusters": [{"cluster_id": "x"}]})
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"]


def _tweaked(summary: RunSummary, **changes: Any) -> dict[str, Any]:
    copy = summary.to_dict()
    copy.update(changes)
    return copy


def test_low_fidelity_and_missing_explanation_show_a_warning_box(runs: Runs) -> None:
    low = _tweaked(runs.shown.summary)
    low["explanation"].update(fidelity=0.55, low_fidelity_warning=True)
    document = write_report(runs.tmp / "low.html", low).read_text()
    assert '<div class="box warn"><b>Low fidelity (55.0%)' in document
    gone = _tweaked(runs.shown.summary,
                    explanation={"available": False, "note": "only one non-empty cluster"})
    document = write_report(runs.tmp / "gone.html", gone).read_text()
    assert '<div class="box warn"><b>No explanation available:</b>' in document
    assert document.count(PNG_IMG) == 3  # no SHAP plots, no projection


def test_degenerate_split_is_noted(runs: Runs) -> None:
    summary = _tweaked(runs.shown.summary)
    chosen = next(c for c in summary["k_search"] if c["k"] == summary["chosen_k"])
    chosen["sizes"] = [5] + chosen["sizes"][1:]
    document = write_report(runs.tmp / "degenerate.html", summary).read_text()
    assert "degenerate split" in document
    assert f"The chosen k = {summary['chosen_k']} has a cluster holding under 2%" in document


# ---------------------------------------------------------------------------------------------
# plots


def _synthetic(k: int) -> dict[str, Any]:
    """Plot inputs for ``k`` clusters, with awkward feature names."""
    rng = np.random.default_rng(k)
    features = ["annual_spend", "signup_date", "is_member", "price $x$ usd", "region",
                "a_very_long_feature_name_that_goes_on_and_on"]
    kinds = {"annual_spend": "numeric", "signup_date": "date", "is_member": "binary",
             "price $x$ usd": "numeric",
             "a_very_long_feature_name_that_goes_on_and_on": "numeric"}
    sizes = [int(s) for s in rng.integers(5, 500, k)]
    total = sum(sizes)
    shap_rows, clusters = [], []
    for c in range(k):
        values = rng.random(len(features)) * 2
        for rank, j in enumerate(np.argsort(-values), start=1):
            shap_rows.append({"cluster_id": c, "feature": features[j],
                              "mean_abs_shap": float(values[j]),
                              "mean_shap": float(values[j] * rng.choice([-1, 1])),
                              "rank": rank})
        clusters.append({
            "cluster_id": c, "size": sizes[c], "share": sizes[c] / total,
            "numeric": [{"feature": f, "kind": kind, "mean": 1.0, "median": 1.0,
                         "overall_mean": 0.5, "overall_median": 0.5,
                         "z": float(rng.normal())} for f, kind in kinds.items()],
            "categories": [{"feature": "region", "levels": [
                {"level": "north", "share": 0.5, "overall_share": 0.25, "lift": 2.0}]}],
        })
    k_search = [{"k": kk, "silhouette": 0.3 - 0.01 * kk, "silhouette_stderr": 0.004,
                 "inertia": 1000.0 / kk, "rejected": None} for kk in range(2, k + 2)]
    labels = rng.integers(0, k, 600)
    projection = {"xy": rng.normal(size=(600, 2)).astype(np.float32) + labels[:, None],
                  "labels": labels}
    return {"k": k, "shap": shap_rows, "clusters": clusters, "sizes": sizes,
            "k_search": k_search, "projection": projection}


@pytest.mark.parametrize("k", [2, 12])
def test_every_plot_returns_png_bytes(k: int) -> None:
    data = _synthetic(k)
    images = [
        plots.plot_top_features(data["shap"], data["clusters"]),
        plots.plot_shap_stacked(data["shap"], k),
        plots.plot_k_search(data["k_search"], k),
        plots.plot_cluster_sizes(data["sizes"]),
        plots.plot_profile_heatmap(data["clusters"]),
        plots.plot_projection(data["projection"], k),
    ]
    for image in images:
        assert isinstance(image, bytes) and image.startswith(b"\x89PNG")


def test_plots_are_drawn_once_per_input(monkeypatch: pytest.MonkeyPatch) -> None:
    # The report is rendered twice per run with the same data: the second render must reuse
    # the PNGs, and any change in a plot's input must draw it again.
    drawn: list[str] = []
    real_png = plots._png

    def counting_png(figure: Any) -> bytes:
        drawn.append("png")
        return real_png(figure)

    monkeypatch.setattr(plots, "_png", counting_png)
    monkeypatch.setattr(plots, "_png_cache", plots.OrderedDict())
    data = _synthetic(4)
    first = plots.plot_cluster_sizes(data["sizes"])
    again = plots.plot_cluster_sizes(list(data["sizes"]))
    assert again is first and len(drawn) == 1
    other = plots.plot_cluster_sizes([*data["sizes"][:-1], data["sizes"][-1] + 1])
    assert other != first and len(drawn) == 2
    projection = plots.plot_projection(data["projection"], 4)
    moved = dict(data["projection"], xy=data["projection"]["xy"] + 1.0)
    assert plots.plot_projection(data["projection"], 4) is projection
    assert plots.plot_projection(moved, 4) != projection
    assert len(drawn) == 4
    for _ in range(plots.PNG_CACHE_SIZE + 3):
        plots.plot_cluster_sizes([len(drawn), 5, 7])
    assert len(plots._png_cache) == plots.PNG_CACHE_SIZE


def test_plots_leave_matplotlib_global_state_alone() -> None:
    before = dict(matplotlib.rcParams)
    backend = matplotlib.get_backend()
    data = _synthetic(3)
    plots.plot_projection(data["projection"])
    plots.plot_cluster_sizes(data["sizes"])
    assert dict(matplotlib.rcParams) == before
    assert matplotlib.get_backend() == backend


def test_cluster_palette() -> None:
    tab10 = [to_hex(c) for c in matplotlib.colormaps["tab10"].colors]
    tab20 = [to_hex(c) for c in matplotlib.colormaps["tab20"].colors]
    assert cluster_colors(2) == tab10[:2]
    assert cluster_colors(10) == tab10
    assert cluster_colors(12) == tab20[:12]
    for k in (2, 10, 12, 20, 45):
        colors = cluster_colors(k)
        assert len(colors) == k and len(set(colors)) == k
        assert cluster_colors(k) == colors  # stable
    assert cluster_colors(0) == []


@pytest.mark.parametrize("k", [2, 12])
def test_cluster_i_has_the_same_colour_in_every_plot(k: int) -> None:
    data = _synthetic(k)
    figures = {
        "top features": plots.top_features_figure(data["shap"], data["clusters"]),
        "stacked": plots.shap_stacked_figure(data["shap"], k),
        "sizes": plots.cluster_sizes_figure(data["sizes"]),
        "heatmap": plots.profile_heatmap_figure(data["clusters"]),
        "projection": plots.projection_figure(data["projection"], k),
    }
    expected = cluster_colors(k)
    for name, figure in figures.items():
        seen: dict[int, set[str]] = {}
        for artist in figure.findobj(lambda a: str(a.get_gid() or "").startswith("cluster-")):
            cluster_id = int(artist.get_gid().split("-")[1])
            face = np.atleast_2d(artist.get_facecolor())[0]
            seen.setdefault(cluster_id, set()).add(to_hex(face, keep_alpha=False))
        assert sorted(seen) == list(range(k)), name
        for cluster_id, colors in seen.items():
            assert colors == {expected[cluster_id]}, (name, cluster_id, colors)
    assert cluster_gid(3) == "cluster-3"


def test_format_value_by_kind() -> None:
    assert plots.format_value(19191.0, "date") == "2022-07-18"
    assert plots.format_value(0.891, "binary") == "89.1%"
    assert plots.format_value(None) == "\u2014"
    assert plots.format_value(2617.713) == "2,617.7"
    assert plots.format_value(0.0123) == "0.0123"
