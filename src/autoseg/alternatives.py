"""What another k would change: splits and merges of segments, from the fits the search made.

The mean silhouette chooses k, and where it hesitates (two k within a few standard errors) a
marketer should see what the other k would mean before overriding it with ``--num-clusters``.
For the chosen k, its neighbours k-1 and k+1 and the runner-up by silhouette, this module
compares the labellings the search already made of the same rows (no new fit, no pass over the
table):

* a cluster of the chosen k **splits** when two or more clusters of the other k draw most of
  their rows from it; the parts are described against the cluster they come from, in the words
  of the cluster cards (:func:`autoseg.segments.profile_clusters`: ``age high, channel=app``),
  which are the features that separate them;
* clusters of the chosen k **merge** when most of the rows of each go to the same cluster of
  the other k; the merged cluster is described against all rows, as a card would be.

With each alternative come its silhouette, the gap to the chosen k with a standard error
(``sqrt(se_k^2 + se_alt^2)``, conservative: both are estimated on the same points, whose
errors are positively correlated) and the option that would choose it.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from autoseg.segments import profile_clusters

if TYPE_CHECKING:
    from autoseg.search import SearchResult

# A cluster of the other k belongs to the chosen cluster that gives it most of its rows; a part
# smaller than this share of its parent is noise at the border, not a split.
MIN_PART_SHARE = 0.05


def describe_alternatives(
    search: SearchResult,
    readable: pd.DataFrame,
    *,
    chosen_labels: np.ndarray | None = None,
    hide_table_contents: bool = False,
    kinds: dict[str, str] | None = None,
) -> list[dict[str, Any]]:
    """What k-1, k+1 and the runner-up k would change, compared with the chosen k.

    Parameters
    ----------
    search
        The k search; ``search.fits[k][1]`` are the labels of the searched rows for every k.
    readable
        Readable features of the searched rows, in the order the search saw them:
        ``spec.readable(frame_rows)`` where ``frame_rows`` are the input rows of the search
        (the whole table, or the rows of the search sample).
    chosen_labels
        Cluster ids of the same rows under the final model (after the refit on all rows and
        the stable ids), so that cluster numbers match the cluster cards; default: the
        search's own labels of the chosen k.
    hide_table_contents
        Leave out category levels shared by fewer than 10 rows (as the cluster profiles do)
        and name categories without their levels, as the redacted report does.
    kinds
        ``numeric``, ``date`` or ``binary`` per numeric column (see ``profile_clusters``).

    Returns
    -------
    list of dict
        One JSON-able entry per alternative k, in the order k-1, k+1, runner-up (an entry
        has several ``roles`` when the runner-up is a neighbour). Keys: ``k``, ``roles``,
        ``silhouette``, ``silhouette_stderr``, ``silhouette_gap`` (alternative minus chosen),
        ``gap_stderr``, ``option`` (``--num-clusters N``), ``rejected`` (why the search could
        not choose it, or None), ``splits``, ``merges`` and ``summary`` (one line per change).
        Empty when the search fitted a single k.

    Raises
    ------
    ValueError
        When ``readable`` or ``chosen_labels`` do not have one row per searched row.
    """
    k = search.chosen_k
    base_labels = np.asarray(search.labels if chosen_labels is None else chosen_labels)
    n = int(base_labels.shape[0])
    if len(readable) != n or len(search.labels) != n:
        raise ValueError(
            f"readable has {len(readable)} rows and chosen_labels {n}, but the search labelled "
            f"{len(search.labels)} rows: pass the readable frame of the searched rows"
        )
    readable = readable.reset_index(drop=True)
    roles = _alternative_roles(search)
    chosen = search.candidate(k)
    chosen_sil = chosen.silhouette if chosen is not None else None
    chosen_se = chosen.silhouette_stderr if chosen is not None else 0.0
    out = []
    for alt_k, alt_roles in roles.items():
        candidate = search.candidate(alt_k)
        if candidate is None or alt_k not in search.fits:
            continue
        alt_labels = np.asarray(search.fits[alt_k][1])
        splits, merges = _changes(readable, base_labels, k, alt_labels, alt_k,
                                  hide_table_contents, kinds)
        gap = gap_se = None
        if candidate.silhouette is not None and chosen_sil is not None:
            gap = float(candidate.silhouette - chosen_sil)
            gap_se = float(math.sqrt(chosen_se**2 + candidate.silhouette_stderr**2))
        entry = {
            "k": alt_k,
            "roles": alt_roles,
            "silhouette": candidate.silhouette,
            "silhouette_stderr": candidate.silhouette_stderr,
            "silhouette_gap": gap,
            "gap_stderr": gap_se,
            "option": f"--num-clusters {alt_k}",
            "rejected": candidate.rejected,
            "splits": splits,
            "merges": merges,
        }
        entry["summary"] = _summary_lines(k, entry)
        out.append(entry)
    return out


def _alternative_roles(search: SearchResult) -> dict[int, list[str]]:
    """k-1, k+1 (when fitted) and the runner-up by silhouette, each with its roles."""
    k = search.chosen_k
    fitted = {c.k for c in search.candidates if c.k in search.fits}
    roles: dict[int, list[str]] = {}
    for alt_k, role in ((k - 1, "k-1"), (k + 1, "k+1")):
        if alt_k in fitted:
            roles.setdefault(alt_k, []).append(role)
    others = {kk: s for kk, s in search.choosable().items() if kk != k}
    if others:
        # highest silhouette, ties to the smaller k (the search's own rule)
        runner_up = min(others, key=lambda kk: (-others[kk], kk))
        roles.setdefault(runner_up, []).append("runner-up")
    return dict(sorted(roles.items()))


def _changes(
    readable: pd.DataFrame, base: np.ndarray, k: int, alt: np.ndarray, alt_k: int,
    hide: bool, kinds: dict[str, str] | None,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Splits of chosen clusters into several alternative ones, and merges of chosen ones."""
    n = len(base)
    table = np.zeros((k, alt_k), dtype=np.int64)
    np.add.at(table, (base, alt), 1)
    base_sizes = table.sum(axis=1)
    alt_sizes = table.sum(axis=0)
    # Each alternative cluster's main source, and each chosen cluster's main destination.
    source = table.argmax(axis=0)
    destination = table.argmax(axis=1)
    splits = []
    for a in range(k):
        parts = [b for b in range(alt_k)
                 if source[b] == a and table[a, b] >= MIN_PART_SHARE * max(base_sizes[a], 1)]
        if len(parts) < 2:
            continue
        mask = np.isin(alt, parts) & (base == a)
        part_labels = np.searchsorted(np.array(parts), alt[mask])
        profiles = profile_clusters(readable[mask].reset_index(drop=True), part_labels,
                                    len(parts), None, hide, kinds)
        described = []
        for index, b in enumerate(parts):
            top = _words(profiles[index]["top_features"], hide)
            described.append({
                "other_cluster": int(b),
                "rows": int(table[a, b]),
                "share": float(table[a, b] / n),
                "share_of_cluster": float(table[a, b] / base_sizes[a]),
                "from_cluster_share": float(table[a, b] / max(alt_sizes[b], 1)),
                "description": ", ".join(t["text"] for t in top) or "no distinguishing feature",
                "features": [t["feature"] for t in top],
            })
        described.sort(key=lambda p: -p["rows"])
        splits.append({
            "cluster": int(a),
            "rows": int(base_sizes[a]),
            "share": float(base_sizes[a] / n),
            "into": described,
            "separating_features": sorted({f for p in described for f in p["features"]}),
        })
    merges = []
    alt_profiles: list[dict[str, Any]] | None = None
    for b in range(alt_k):
        members = [a for a in range(k) if destination[a] == b
                   and table[a, b] >= 0.5 * base_sizes[a]]
        if len(members) < 2:
            continue
        if alt_profiles is None:
            alt_profiles = profile_clusters(readable, alt, alt_k, None, hide, kinds)
        top = _words(alt_profiles[b]["top_features"], hide)
        merges.append({
            "other_cluster": int(b),
            "rows": int(alt_sizes[b]),
            "share": float(alt_sizes[b] / n),
            "clusters": [{"cluster": int(a), "rows": int(base_sizes[a]),
                          "share": float(base_sizes[a] / n),
                          "share_moved": float(table[a, b] / base_sizes[a])} for a in members],
            "description": ", ".join(t["text"] for t in top) or "no distinguishing feature",
        })
    return splits, merges


def _words(top: list[dict[str, Any]], hide: bool) -> list[dict[str, Any]]:
    """Card words of the top features; under hide_table_contents no category level is named."""
    if not hide:
        return top
    out = []
    for t in top:
        if t.get("direction") in ("high", "low"):
            out.append(t)
        else:
            out.append({**t, "direction": "category", "text": f"{t['feature']} (category)"})
    return out


def _summary_lines(k: int, entry: dict[str, Any]) -> list[str]:
    """One plain sentence per change, and the silhouette gap."""
    alt_k = entry["k"]
    lines = []
    gap, gap_se = entry["silhouette_gap"], entry["gap_stderr"]
    if gap is not None:
        error = f" \u00b1 {gap_se:.4f}" if gap_se else ""
        lines.append(f"k={alt_k}: silhouette {entry['silhouette']:.4f} ({gap:+.4f}{error} "
                     f"against k={k}); choose it with {entry['option']}")
    for split in entry["splits"]:
        parts = " and ".join(f"{100 * p['share']:.1f}% ({p['description']})"
                             for p in split["into"])
        lines.append(f"k={alt_k} splits cluster {split['cluster']} "
                     f"({100 * split['share']:.1f}% of rows) into {parts}")
    for merge in entry["merges"]:
        members = " and ".join(f"{m['cluster']} ({100 * m['share']:.1f}%)"
                               for m in merge["clusters"])
        lines.append(f"k={alt_k} merges clusters {members} into one of "
                     f"{100 * merge['share']:.1f}% ({merge['description']})")
    if entry["rejected"]:
        lines.append(f"k={alt_k} was not choosable: {entry['rejected']}")
    return lines


__all__ = ["describe_alternatives"]
