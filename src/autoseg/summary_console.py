"""The short human summary printed on the console after a run."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from autoseg.pipeline import RunResult


def print_run_summary(result: RunResult, console: Console | None = None) -> None:
    """Print the k search, the chosen k with cluster sizes, and where the outputs are."""
    console = console or Console()
    summary = result.summary
    if result.search is not None:
        table = Table(title="k search (mean silhouette, higher is better)")
        for column in ("k", "silhouette", "+-", "inertia", "cluster sizes", ""):
            table.add_column(column)
        for cand in result.search.candidates:
            sil = "-" if cand.silhouette is None else f"{cand.silhouette:.4f}"
            mark = "chosen" if cand.k == result.chosen_k else (cand.rejected or "")
            table.add_row(str(cand.k), sil, f"{cand.silhouette_stderr:.4f}",
                          f"{cand.inertia:.4g}", " ".join(map(str, cand.sizes)), mark)
        console.print(table)
    console.print(
        f"chosen k = {result.chosen_k} ({summary['chosen_reason']}); "
        f"rows: {summary['rows_read']}; sizes: {summary['cluster_sizes']}"
    )
    outputs = summary["outputs"]
    if outputs["output_table"]:
        console.print(f"output table: {outputs['output_table']} in {outputs['store']}")
    if outputs["model"]:
        console.print(f"model: {outputs['model']}")
    console.print(f"summary: {outputs['summary']}")
    if outputs.get("report"):
        console.print(f"report: {outputs['report']}")
