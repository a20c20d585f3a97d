"""The cluster -> segment sync: a CDP parent segment shows autoseg's clusters as segments.

:func:`sync_audience` makes a parent segment show the clusters:

1. finds the parent segment by name (``GET /entities/parent_segments``);
2. adds or updates the ``cluster_id`` attribute (type ``number``) joining
   ``output_database.output_table`` on ``rowid_column`` to the master table's ``foreign_key``,
   with ``PUT /audiences/{id}`` carrying the full audience so every other attribute is kept;
3. finds or creates the folder ``autoseg: <output_table>`` under the parent segment's root
   folder;
4. keeps one segment per cluster in that folder, named ``Cluster <k>: <profile description>``
   with the rule ``cluster_id = k``. The ``Cluster <k>`` prefix inside the folder is the stable
   key: reruns update those segments, delete the ones of clusters that no longer exist, and never
   create duplicates. Segments a user adds to the folder under other names are left alone.

Every request goes through :class:`autoseg.audience.client.CDPClient`; a rerun is the safe
retry of a request that is never re-sent (creating a folder or a segment).
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Mapping, Sequence
from typing import Any

from autoseg.audience.client import CDPClient
from autoseg.errors import ServiceError, UsageError
from autoseg.names import TableName, validate_td_table_name
from autoseg.secrets import scrubbed_logger

logger = scrubbed_logger(__name__)

_SEGMENT_NAME_MAX = 120
_SEGMENT_KEY_RE = re.compile(r"^(?:Rule of )?Cluster (\d+)(?::|$)")


def cluster_rule(attribute_name: str, cluster_id: int) -> dict[str, Any]:
    """The segment rule ``<attribute_name> = cluster_id`` in the CDP rule JSON.

    Parameters
    ----------
    attribute_name
        The parent-segment attribute holding the cluster id.
    cluster_id
        The cluster.

    Returns
    -------
    dict
        An ``And`` group holding one ``And`` group holding one ``Value``/``Equal`` condition,
        the shape the segment editor saves.
    """
    condition = {
        "type": "Value",
        "leftValue": {"name": attribute_name},
        "operator": {"type": "Equal", "rightValue": str(cluster_id), "not": False},
        "arrayMatching": None,
        "exclude": False,
    }
    return {"type": "And", "conditions": [{"type": "And", "conditions": [condition]}],
            "expr": ""}


def _segment_name(cluster_id: int, profile: Mapping[str, Any], rule: bool = False) -> str:
    description = " ".join(str(profile.get("description") or "").split())
    if rule:
        # segment names are unique per parent segment: rule segments get their own prefix
        description = str((profile.get("rule") or {}).get("text") or description)
    prefix = f"Rule of Cluster {cluster_id}" if rule else f"Cluster {cluster_id}"
    name = f"{prefix}: {description}" if description else prefix
    if len(name) > _SEGMENT_NAME_MAX:
        name = name[: _SEGMENT_NAME_MAX - 3].rstrip(" ,") + "..."
    return name


def _segment_description(cluster_id: int, profile: Mapping[str, Any], source: str,
                         attribute_name: str) -> str:
    parts = []
    if profile.get("description"):
        parts.append(str(profile["description"]) + ".")
    size, share = profile.get("size"), profile.get("share")
    if isinstance(size, int | float) and isinstance(share, int | float):
        parts.append(f"{int(size):,} rows ({share:.1%}) of {source}.")
    parts.append(f"Managed by autoseg ({attribute_name} = {cluster_id}): reruns update or remove "
                 "this segment; copy it to refine it.")
    return " ".join(parts)


def _id_order(value: Any) -> tuple[int, str]:
    text = str(value)
    return (int(text), text) if text.isdigit() else (1 << 62, text)


def _parent_folder_id(resource: Mapping[str, Any]) -> str | None:
    rel = ((resource.get("relationships") or {}).get("parentFolder") or {}).get("data")
    if isinstance(rel, dict) and rel.get("id") is not None:
        return str(rel["id"])
    return None


def _check_clusters(clusters: Sequence[Mapping[str, Any]]) -> dict[int, Mapping[str, Any]]:
    if not clusters:
        raise UsageError("audience integration: there are no clusters to create segments for")
    by_id: dict[int, Mapping[str, Any]] = {}
    for profile in clusters:
        value = profile.get("cluster_id")
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise UsageError(f"audience integration: cluster_id {value!r} is not a non-negative "
                             "integer")
        if value in by_id:
            raise UsageError(f"audience integration: cluster_id {value} is given twice")
        by_id[value] = profile
    return by_id


def _find_parent_segment(client: CDPClient, audience_name: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = []
    seen = 0
    path: str | None = "/entities/parent_segments"
    pages = 0
    while path and pages < 100:
        payload = client.get(path, action="listing parent segments") or {}
        data = payload.get("data") if isinstance(payload, dict) else payload
        for resource in data or []:
            seen += 1
            attrs = resource.get("attributes") or {}
            if attrs.get("name", resource.get("name")) == audience_name:
                found.append(resource)
        # Follow JSON:API pagination when the service uses it (same host only).
        nxt = ((payload.get("links") or {}).get("next") if isinstance(payload, dict) else None)
        path = None
        if isinstance(nxt, str) and nxt:
            parts = urllib.parse.urlsplit(nxt)
            if not parts.netloc or parts.hostname == client.host:
                path = parts.path + (f"?{parts.query}" if parts.query else "")
        pages += 1
    if not found:
        raise ServiceError(
            f"--audience-name={audience_name!r}: no parent segment of that name is visible to "
            f"this API key at {client.host} ({seen} visible): check the name in Audience Studio "
            "> Parent Segments, the key's permissions, and --cdp-endpoint"
        )
    if len(found) > 1:
        ids = ", ".join(str(r.get("id")) for r in found)
        raise ServiceError(
            f"--audience-name={audience_name!r}: {len(found)} parent segments have that name "
            f"(ids {ids}): rename one of them in Audience Studio"
        )
    return found[0]


def sync_audience(
    client: CDPClient,
    *,
    audience_name: str,
    output_database: str,
    output_table: str,
    rowid_column: str,
    foreign_key: str,
    clusters: list[dict[str, Any]],
    grouping_name: str = "autoseg",
    folder_name: str | None = None,
    attribute_name: str = "cluster_id",
    cluster_column: str = "cluster_id",
    run_parent_segment: bool = False,
    rules: Mapping[int, dict[str, Any]] | None = None,
    rule_attributes: Mapping[str, tuple[str, str]] | None = None,
) -> dict[str, Any]:
    """Attach the clusters to a parent segment: one attribute, one folder, one segment each.

    Idempotent: a rerun updates the attribute and the segments in place, deletes the segments
    of clusters that no longer exist, and creates no duplicates.

    Parameters
    ----------
    client
        The CDP API client.
    audience_name
        Name of the parent (master) segment (``--audience-name``).
    output_database, output_table
        The Treasure Data table written by the run; it must exist (the CDP checks it).
    rowid_column
        Key column of the output table (``--rowid-column``).
    foreign_key
        Column of the parent segment's master table it joins to (``--foreign-key``).
    clusters
        Cluster profiles (:func:`autoseg.segments.profile_clusters`): ``cluster_id``, and
        ``description``, ``size``, ``share`` when known.
    grouping_name
        Attribute group shown in the segment editor.
    folder_name
        Folder for the segments; default ``"autoseg: <output_table>"``.
    attribute_name
        Name of the attribute (and of the field the segment rules test).
    cluster_column
        Column of the output table holding the cluster id.
    run_parent_segment
        Start a parent segment build afterwards (``POST /audiences/{id}/run``) so the segments
        get members now rather than at the next scheduled build.
    rules
        Optional CDP rule JSON per cluster id (from :func:`autoseg.rules.rules_to_cdp`) used
        instead of ``cluster_id = k``, for segments marketers can edit on the attributes.
    rule_attributes
        Attributes those rules test: ``{attribute name: (output column, CDP type)}``; each is
        added to the parent segment, joined like ``cluster_id``.

    Returns
    -------
    dict
        ``parent_segment_id``, ``parent_segment_name``, ``attribute``, ``attribute_changed``,
        ``folder_id``, ``folder_name``, ``folder_created``, ``segments`` (cluster id -> segment
        id), ``created``, ``updated``, ``unchanged``, ``deleted``, ``run_started``.

    Raises
    ------
    UsageError
        When a name or the clusters are invalid.
    ServiceError
        When the parent segment is not found or the CDP API fails.
    """
    if not audience_name or not audience_name.strip():
        raise UsageError("--audience-name is empty: give the parent segment's name")
    validate_td_table_name(TableName(output_database, output_table), "--output-table")
    for option, value in (("--rowid-column", rowid_column), ("--foreign-key", foreign_key)):
        if not value or not str(value).strip():
            raise UsageError(f"{option} is empty: the audience integration needs it")
    profiles = _check_clusters(clusters)
    folder_name = folder_name or f"autoseg: {output_table}"
    source = f"{output_database}.{output_table}"

    parent = _find_parent_segment(client, audience_name)
    parent_id = str(parent.get("id"))
    label = f"parent segment {audience_name!r}"

    # 1. The attribute: PUT the whole audience back so nothing else is lost.
    audience = client.get(f"/audiences/{parent_id}", action=f"reading {label}") or {}
    attributes = [dict(a) for a in audience.get("attributes") or []]
    wanted = {
        "name": attribute_name,
        "type": "number",
        "parentDatabaseName": output_database,
        "parentTableName": output_table,
        "parentColumn": cluster_column,
        "parentKey": rowid_column,
        "foreignKey": foreign_key,
        "groupingName": grouping_name,
    }
    changed = False
    # With rule segments, every column a rule tests becomes an attribute of the parent segment
    # too (joined the same way): segment rules can only name the parent segment's attributes.
    extra = [
        wanted | {"name": name, "type": kind, "parentColumn": column}
        for name, (column, kind) in sorted((rule_attributes or {}).items())
    ]
    for spec in [wanted, *extra]:
        mine = [i for i, a in enumerate(attributes) if a.get("name") == spec["name"]]
        if mine:
            current = attributes[mine[0]]
            changed |= any(current.get(k) != v for k, v in spec.items()) or len(mine) > 1
            attributes[mine[0]] = current | spec
            attributes = [a for i, a in enumerate(attributes) if i not in mine[1:]]
        else:
            attributes.append(spec)
            changed = True
    if changed:
        body = dict(audience)
        body["attributes"] = attributes
        client.put(f"/audiences/{parent_id}", body,
                   action=f"adding the {attribute_name!r} attribute to {label}")
        logger.info("parent segment %r: attribute %r joins %s.%s on %s = %s", audience_name,
                    attribute_name, source, cluster_column, rowid_column, foreign_key)

    # 2. The folder, under the parent segment's root folder.
    root = _parent_folder_id(parent) or (
        str(audience["rootFolderId"]) if audience.get("rootFolderId") is not None else None)
    if root is None:
        raise ServiceError(f"the CDP API did not report the root folder of {label}: rerun later")
    tree = client.get(f"/entities/by-folder/{root}", params={"depth": 1, "with_rule": "false"},
                      action=f"listing the folders of {label}") or {}
    folder_id = None
    for entry in tree.get("data") or []:
        if (entry.get("type") == "folder-segment" and str(entry.get("id")) != root
                and (entry.get("attributes") or {}).get("name") == folder_name
                and _parent_folder_id(entry) == root):
            folder_id = str(entry["id"])
            break
    folder_created = folder_id is None
    if folder_id is None:
        created = client.post(
            "/entities/folders",
            {
                "type": "folder-segment",
                "attributes": {"name": folder_name,
                               "description": f"Segments of the clusters in {source} (autoseg)"},
                "relationships": {"parentFolder": {"data": {"id": root,
                                                            "type": "folder-segment"}}},
            },
            action=f"creating the folder {folder_name!r} in {label}",
        )
        folder_id = str(((created or {}).get("data") or {}).get("id"))

    # 3. The segments, keyed by the "Cluster <k>" prefix inside our folder.
    listing = client.get(f"/entities/by-folder/{folder_id}",
                         params={"depth": 1, "with_rule": "true"},
                         action=f"listing the segments in folder {folder_name!r}") or {}
    existing: dict[int, list[dict[str, Any]]] = {}
    for entry in listing.get("data") or []:
        if not str(entry.get("type", "")).startswith("segment") or \
                _parent_folder_id(entry) != folder_id:
            continue
        match = _SEGMENT_KEY_RE.match(str((entry.get("attributes") or {}).get("name") or ""))
        if match:
            existing.setdefault(int(match.group(1)), []).append(entry)
    for entries in existing.values():
        entries.sort(key=lambda e: _id_order(e.get("id")))

    counts = {"created": 0, "updated": 0, "unchanged": 0, "deleted": 0}
    # Stale clusters and duplicates go first, so no name is still taken when we rename.
    doomed = [e for k, entries in existing.items() for e in
              (entries if k not in profiles else entries[1:])]
    for entry in doomed:
        name = (entry.get("attributes") or {}).get("name")
        client.delete(f"/entities/segments/{entry['id']}",
                      action=f"deleting the segment {name!r} of a cluster that no longer exists")
        counts["deleted"] += 1

    segment_ids: dict[int, str] = {}
    for cluster_id in sorted(profiles):
        profile = profiles[cluster_id]
        attrs = {
            "name": _segment_name(cluster_id, profile, rule=rules is not None),
            "description": _segment_description(cluster_id, profile, source, attribute_name),
            # With ``rules`` the segment is the cluster's readable rule on the original
            # attributes (editable in the segment builder) instead of `cluster_id = k`.
            "rule": (rules[cluster_id] if rules is not None and cluster_id in rules
                     else cluster_rule(attribute_name, cluster_id)),
        }
        if cluster_id in existing:
            entry = existing[cluster_id][0]
            current = entry.get("attributes") or {}
            segment_ids[cluster_id] = str(entry["id"])
            if all(current.get(k) == v for k, v in attrs.items()):
                counts["unchanged"] += 1
                continue
            client.patch(f"/entities/segments/{entry['id']}",
                         {"id": str(entry["id"]), "type": "segment-batch", "attributes": attrs},
                         action=f"updating the segment {attrs['name']!r}")
            counts["updated"] += 1
            continue
        try:
            created = client.post(
                "/entities/segments",
                {
                    "type": "segment-batch",
                    "attributes": attrs,
                    "relationships": {"parentFolder": {"data": {"id": folder_id,
                                                                "type": "folder-segment"}}},
                },
                action=f"creating the segment {attrs['name']!r}",
            )
        except ServiceError as exc:
            if "already been taken" in str(exc):
                raise ServiceError(
                    f"segment name {attrs['name']!r} is already used in {label} outside the "
                    f"folder {folder_name!r}: rename or delete that segment, then rerun"
                ) from None
            raise
        segment_ids[cluster_id] = str(((created or {}).get("data") or {}).get("id"))
        counts["created"] += 1

    run_started = False
    if run_parent_segment:
        client.post(f"/audiences/{parent_id}/run", {}, action=f"starting a build of {label}")
        run_started = True
    logger.info("parent segment %r: folder %r holds %d cluster segments (%d created, %d updated, "
                "%d deleted)", audience_name, folder_name, len(segment_ids), counts["created"],
                counts["updated"], counts["deleted"])
    return {
        "parent_segment_id": parent_id,
        "parent_segment_name": audience_name,
        "attribute": attribute_name,
        "attribute_changed": changed,
        "folder_id": folder_id,
        "folder_name": folder_name,
        "folder_created": folder_created,
        "segments": segment_ids,
        **counts,
        "run_started": run_started,
    }
