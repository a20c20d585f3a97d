"""The report's "other k" section: what k-1, k+1 and the runner-up would change.

Renders the list made by :func:`autoseg.alternatives.describe_alternatives` as an HTML
fragment. Every string that reaches the page goes through :func:`html.escape`. With
``hide_table_contents`` no category level is named (``channel (category)``), whatever the list
holds, so a list made without the flag is still safe to render under it.
"""

from __future__ import annotations

import html
import re
from collections.abc import Mapping, Sequence
from typing import Any

_LEVEL = re.compile(r"^(?P<feature>.+?)=(?P<level>.*)$")


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _pct(value: Any) -> str:
    return "\u2014" if value is None else f"{100 * float(value):.1f}%"


def _words(text: str, hide: bool) -> str:
    """A card description; under hide_table_contents ``feature=level`` becomes a category."""
    if not hide:
        return text
    parts = []
    for part in text.split(", "):
        match = _LEVEL.match(part)
        parts.append(f"{match['feature']} (category)" if match else part)
    return ", ".join(parts)


def render_alternatives(
    alternatives: Sequence[Mapping[str, Any]],
    chosen_k: int,
    hide_table_contents: bool = False,
) -> str:
    """HTML fragment describing the alternatives to the chosen k.

    Parameters
    ----------
    alternatives
        The list from :func:`autoseg.alternatives.describe_alternatives` (or the same list
        read back from ``summary.json``).
    chosen_k
        The chosen number of clusters.
    hide_table_contents
        Name no category level.

    Returns
    -------
    str
        A ``<div class="alternatives">`` fragment; a short note when the list is empty.
    """
    if not alternatives:
        return ('<div class="alternatives"><p class="muted">No other k was fitted in this run '
                "(k fixed with --num-clusters or by a saved model).</p></div>")
    parts = [
        '<div class="alternatives">',
        f"<p>What another k would change, compared with the chosen <b>k = {_e(chosen_k)}</b> "
        "(the same rows the k search clustered; shares are of those rows). Cluster numbers "
        "are those of the cluster cards.</p>",
    ]
    for alt in alternatives:
        roles = ", ".join(str(r) for r in alt.get("roles") or [])
        gap = alt.get("silhouette_gap")
        gap_se = alt.get("gap_stderr")
        sil = alt.get("silhouette")
        score = "\u2014" if sil is None else f"{float(sil):.4f}"
        if gap is not None:
            score += f" ({float(gap):+.4f}"
            score += f" \u00b1 {float(gap_se):.4f})" if gap_se else ")"
        parts.append(
            f'<div class="alternative"><h3>k = {_e(alt.get("k"))} '
            f'<span class="muted">{_e(roles)}</span></h3>'
            f"<p>Silhouette {_e(score)} against k = {_e(chosen_k)}. Choose it with "
            f"<code>{_e(alt.get('option'))}</code>.</p>"
        )
        if alt.get("rejected"):
            parts.append(f'<p class="warn-text">Not choosable: {_e(alt["rejected"])}</p>')
        items = []
        for split in alt.get("splits") or []:
            pieces = "".join(
                f"<li>{_e(_pct(p.get('share')))} of rows "
                f"({_e(_pct(p.get('share_of_cluster')))} of the cluster): "
                f"{_e(_words(str(p.get('description') or ''), hide_table_contents))}</li>"
                for p in split.get("into") or []
            )
            items.append(
                f"<li>Cluster {_e(split.get('cluster'))} ({_e(_pct(split.get('share')))} of "
                f"rows) splits into:<ul>{pieces}</ul></li>")
        for merge in alt.get("merges") or []:
            members = " and ".join(
                f"{_e(m.get('cluster'))} ({_e(_pct(m.get('share')))})"
                for m in merge.get("clusters") or [])
            items.append(
                f"<li>Clusters {members} merge into one cluster of "
                f"{_e(_pct(merge.get('share')))}: "
                f"{_e(_words(str(merge.get('description') or ''), hide_table_contents))}</li>")
        if items:
            parts.append(f"<ul>{''.join(items)}</ul>")
        else:
            parts.append('<p class="muted">No cluster splits or merges cleanly: the rows are '
                         "regrouped across several clusters.</p>")
        parts.append("</div>")
    parts.append("</div>")
    return "".join(parts)


__all__ = ["render_alternatives"]
