"""The short human summary printed on the console after a run (one machine or Dask)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from autoseg.pipeline import RunResult


def print_run_summary(result: RunResult, console: Console | None = None) -> None:
    """Print the k search, the chosen k with cluster sizes, and where the outputs are."""
    print_summary(result.summary, console)


def print_summary(summary: Mapping[str, Any], console: Console | None = None) -> None:
    """Print a run summary (``summary.json``'s content) the same way for both engines.

    Parameters
    ----------
    summary
        The run summary of either engine (a :class:`~autoseg.summary.RunSummary` or the
        parsed ``summary.json``).
    console
        Where to print (default: a new stdout console).
    """
    console = console or Console()
    chosen = summary["chosen_k"]
    search = summary.get("k_search") or []
    if search:
        table = Table(title="k search (mean silhouette, higher is better)")
        for column in ("k", "silhouette", "+-", "inertia", "cluster sizes", ""):
            table.add_column(column)
        for cand in search:
            sil = "-" if cand.get("silhouette") is None else f"{cand['silhouette']:.4f}"
            mark = "chosen" if cand["k"] == chosen else (cand.get("rejected") or "")
            table.add_row(str(cand["k"]), sil, f"{cand.get('silhouette_stderr') or 0.0:.4f}",
                          f"{cand['inertia']:.4g}", " ".join(map(str, cand["sizes"])), mark)
        console.print(table)
    all_rows = (summary.get("silhouette") or {}).get("all_rows")
    if all_rows and all_rows.get("score") is not None:
        console.print(f"silhouette of the final clustering against all {all_rows['rows']} rows: "
                      f"{all_rows['score']:.4f} +- {all_rows['stderr'] or 0.0:.4f}")
    console.print(
        f"chosen k = {chosen} ({summary['chosen_reason']}); "
        f"rows: {summary['rows_read']}; sizes: {summary['cluster_sizes']}"
    )
    outputs = summary["outputs"]
    if outputs.get("dataset"):
        console.print(f"labelled dataset: {outputs['dataset']}")
    if outputs.get("output_table"):
        console.print(f"output table: {outputs['output_table']} in {outputs['store']}")
    if outputs.get("model"):
        console.print(f"model: {outputs['model']}")
    console.print(f"summary: {outputs['summary']}")
    if outputs.get("report"):
        console.print(f"report: {outputs['report']}")
