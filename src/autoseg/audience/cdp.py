"""A small Treasure Data CDP (Audience) API client and the cluster -> segment sync.

The client speaks plain HTTPS with ``Authorization: TD1 <apikey>`` through the standard
library (no extra dependency; ``HTTPS_PROXY`` is honoured). GET, PUT and DELETE requests are
retried on HTTP 429/5xx, time-outs and connection errors with exponential back-off, a bounded
number of times; POST and PATCH (creating folders and segments) are never re-sent -- a rerun of
:func:`sync_audience` is the safe retry, since it finds what an earlier run created. Redirects
are refused, so the key is never sent to another host. Every failure becomes a one-line
:class:`~autoseg.errors.ServiceError` without the key.

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
"""

from __future__ import annotations

import contextlib
import http.client
import json
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from autoseg.errors import ServiceError, UsageError
from autoseg.io.td.client import DEFAULT_TD_API_SERVER
from autoseg.names import TableName, validate_td_table_name
from autoseg.retry import RetryPolicy, Transient, error_name
from autoseg.secrets import one_line, register_secret, scrub, scrubbed_logger

logger = scrubbed_logger(__name__)

_RETRYABLE_METHODS = ("GET", "HEAD", "PUT", "DELETE")
_MAX_DETAIL = 200
_SEGMENT_NAME_MAX = 120
_SEGMENT_KEY_RE = re.compile(r"^(?:Rule of )?Cluster (\d+)(?::|$)")
# api.treasuredata.com -> api-cdp.treasuredata.com, api.eu01.treasuredata.com ->
# api-cdp.eu01.treasuredata.com, api.treasuredata.co.jp -> api-cdp.treasuredata.co.jp ...
_TD_HOST_RE = re.compile(r"^api\.((?:[a-z0-9-]+\.)?treasuredata\.(?:com|co\.jp))$")
_LOOPBACK = ("127.0.0.1", "localhost", "::1")


@dataclass(frozen=True)
class _Reply:
    """One try of a request: the HTTP status and body, or the transport error's name."""

    status: int | None
    raw: bytes
    retry_after: str | None
    error: str | None
    retries: int


def _transient(reply: _Reply) -> Transient | None:
    if reply.error is not None:
        return Transient(f"failed ({reply.error})")
    if reply.status == 429 or (reply.status or 0) >= 500:
        return Transient(f"failed (HTTP {reply.status})", reply.retry_after)
    return None


def cdp_endpoint_from_td_server(td_api_server: str) -> str:
    """The CDP API endpoint of the region ``TD_API_SERVER`` points at.

    Parameters
    ----------
    td_api_server
        ``TD_API_SERVER``, e.g. ``https://api.treasuredata.com`` or ``api.eu01.treasuredata.com``.

    Returns
    -------
    str
        E.g. ``https://api-cdp.treasuredata.com`` (``api-cdp.treasuredata.co.jp``,
        ``api-cdp.eu01.treasuredata.com``, ``api-cdp.ap02.treasuredata.com``, ...).

    Raises
    ------
    UsageError
        When the host is not a Treasure Data API host (a proxy, an emulator): the CDP endpoint
        must then be given with ``--cdp-endpoint``.
    """
    raw = (td_api_server or "").strip() or DEFAULT_TD_API_SERVER
    url = raw if "://" in raw else f"https://{raw}"
    host = (urllib.parse.urlsplit(url).hostname or "").lower()
    match = _TD_HOST_RE.match(host)
    if not match:
        raise UsageError(
            f"cannot derive the CDP API endpoint from TD_API_SERVER={one_line(raw, 80)!r}: give "
            "it with --cdp-endpoint (e.g. https://api-cdp.treasuredata.com)"
        )
    return f"https://api-cdp.{match.group(1)}"


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """urllib would follow a redirect with the Authorization header to any host: refuse it."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def _error_detail(payload: Any) -> str:
    """The human part of a CDP error body (JSON:API ``errors``, Rails ``{field: [msg]}`` ...)."""
    if isinstance(payload, str):
        return payload
    if isinstance(payload, list):
        return "; ".join(_error_detail(p) for p in payload[:3])
    if not isinstance(payload, dict):
        return str(payload)
    errors = payload.get("errors")
    if isinstance(errors, list) and errors:
        parts = []
        for err in errors[:3]:
            if isinstance(err, dict):
                parts.append(str(err.get("detail") or err.get("title") or err.get("code") or err))
            else:
                parts.append(str(err))
        return "; ".join(parts)
    if isinstance(errors, dict) and errors:
        return "; ".join(f"{k} {_error_detail(v)}" for k, v in list(errors.items())[:3])
    for key in ("message", "error", "detail"):
        if isinstance(payload.get(key), str) and payload[key]:
            return payload[key]
    fields = [(k, v) for k, v in payload.items() if isinstance(v, list) and v]
    if fields:
        return "; ".join(
            (_error_detail(v) if k == "base" else f"{k} {_error_detail(v)}") for k, v in fields[:3]
        )
    return json.dumps(payload)[:_MAX_DETAIL]


class CDPClient:
    """Minimal CDP API client: JSON in, JSON out, bounded retries, one-line errors.

    Parameters
    ----------
    apikey
        Treasure Data API key (never shown in messages or logs).
    endpoint
        CDP API base URL, e.g. ``https://api-cdp.treasuredata.com`` (``--cdp-endpoint``).
    timeout
        Seconds to wait for a connection and for each reply.
    max_retries
        How often a GET/PUT/DELETE is retried on HTTP 429/5xx, time-outs and connection errors.
    backoff_base, backoff_max
        Retry ``n`` (from 0) waits ``min(backoff_base * 2**n, backoff_max)`` seconds (longer when
        a 429 reply asks for it with ``Retry-After``, still capped).
    """

    def __init__(
        self,
        apikey: str,
        endpoint: str,
        *,
        timeout: float = 30.0,
        max_retries: int = 4,
        backoff_base: float = 1.0,
        backoff_max: float = 30.0,
    ) -> None:
        if not apikey:
            raise UsageError(
                "TD_API_KEY is not set: export your Treasure Data API key (Profile > API Keys) "
                "for the audience integration (--audience-name)"
            )
        register_secret(apikey)
        raw = (endpoint or "").strip()
        parts = urllib.parse.urlsplit(raw)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise UsageError(
                f"--cdp-endpoint={one_line(raw, 80)!r} is not a URL: use e.g. "
                "https://api-cdp.treasuredata.com"
            )
        if parts.scheme == "http" and parts.hostname not in _LOOPBACK:
            logger.warning("--cdp-endpoint uses plain http: the API key travels unencrypted")
        self._apikey = apikey
        self.endpoint = raw.rstrip("/")
        self.host = parts.hostname
        self.timeout = timeout
        self.retry = RetryPolicy(max_retries, backoff_base, backoff_max)
        self._opener = urllib.request.build_opener(_NoRedirect())

    def close(self) -> None:
        """Nothing to release (one connection per request); kept for symmetry with stores."""

    def __enter__(self) -> CDPClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: Mapping[str, Any] | None = None,
        action: str | None = None,
    ) -> Any:
        """Send one request and return the decoded JSON reply (``None`` for an empty body).

        Parameters
        ----------
        method
            HTTP method.
        path
            Path below the endpoint, e.g. ``/entities/parent_segments``.
        body
            JSON body, or ``None``.
        params
            Query-string parameters.
        action
            What the request does, for error messages (default: method and path).

        Returns
        -------
        Any
            The decoded JSON.

        Raises
        ------
        ServiceError
            On any failure, after the bounded retries where the method allows them.
        """
        method = method.upper()
        action = action or f"{method} {path}"
        url = self.endpoint + path
        if params:
            url += "?" + urllib.parse.urlencode(params)
        data = None if body is None else json.dumps(body).encode("utf-8")
        headers = {
            "Authorization": f"TD1 {self._apikey}",
            "Accept": "application/json, application/vnd.treasuredata.v1+json",
            "User-Agent": "autoseg",
        }
        if data is not None:
            headers["Content-Type"] = "application/json"
        reply = self.retry.call(
            lambda retries: self._send(url, data, method, headers, retries),
            what=f"CDP API {method} {path}", log=logger,
            retryable=method in _RETRYABLE_METHODS, transient=_transient)
        # Raised here, not in _send's except blocks: no upstream exception is chained.
        if reply.error is not None:
            raise self._connection_error(reply.error, action, reply.retries)
        assert reply.status is not None
        if reply.status >= 300:
            raise self._http_error(reply.status, reply.raw, action, reply.retries)
        if not reply.raw.strip():
            return None
        try:
            return json.loads(reply.raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise ServiceError(
                f"the CDP API answered {action} with something that is not JSON: check "
                f"--cdp-endpoint ({self.endpoint})"
            ) from None

    def _send(self, url: str, data: bytes | None, method: str, headers: dict[str, str],
              retries: int) -> _Reply:
        """One try of a request; every failure becomes a :class:`_Reply`, not an exception."""
        status: int | None = None
        raw = b""
        retry_after: str | None = None
        error: str | None = None
        request = urllib.request.Request(url, data=data, method=method, headers=headers)
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                status = int(response.status)
                raw = response.read()
        except urllib.error.HTTPError as exc:
            status = int(exc.code)
            retry_after = exc.headers.get("Retry-After") if exc.headers else None
            with contextlib.suppress(Exception):
                raw = exc.read()
            with contextlib.suppress(Exception):
                exc.close()
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            error = error_name(exc)
        return _Reply(status, raw, retry_after, error, retries)

    def _connection_error(self, error: str, action: str, retries: int) -> ServiceError:
        note = f", gave up after {retries} retries" if retries else ""
        if "timeout" in error.lower():
            return ServiceError(
                f"the CDP API did not answer within {self.timeout:g} s ({error}) while {action}"
                f"{note}: rerun later, or check --cdp-endpoint and the network"
            )
        return ServiceError(
            f"cannot reach the CDP API at {self.host} ({error}) while {action}{note}: check "
            "--cdp-endpoint and the network"
        )

    def _http_error(self, status: int, raw: bytes, action: str, retries: int) -> ServiceError:
        try:
            detail = _error_detail(json.loads(raw.decode("utf-8")))
        except (UnicodeDecodeError, ValueError):
            detail = raw.decode("utf-8", "replace")
        detail = one_line(detail, _MAX_DETAIL) or "no details"
        note = f", gave up after {retries} retries" if retries else ""
        if status == 401:
            msg = (f"the CDP API rejected the API key (HTTP 401) while {action}: check TD_API_KEY "
                   "and --cdp-endpoint (the region must match the key's account)")
        elif status == 403:
            msg = (f"the CDP API refused {action} (HTTP 403): the API key's user needs edit "
                   "permission on the parent segment and permission to create segments; check "
                   "TD_API_KEY")
        elif status == 404:
            msg = (f"the CDP API answered not found (HTTP 404) while {action}: {detail}: check "
                   "--cdp-endpoint")
        elif status == 409:
            msg = (f"the CDP API reported a conflict (HTTP 409) while {action}: {detail}: rerun "
                   "when other changes to the parent segment are done")
        elif status == 429:
            msg = (f"the CDP API kept rate-limiting requests (HTTP 429) while {action}{note}: "
                   "rerun later")
        elif status >= 500:
            msg = f"the CDP API failed (HTTP {status}) while {action}{note}: rerun later"
        elif 300 <= status < 400:
            msg = (f"the CDP API redirected {action} (HTTP {status}); redirects are not followed "
                   "so the API key stays with the configured host: check --cdp-endpoint")
        else:
            msg = f"the CDP API refused {action} (HTTP {status}): {detail}"
        return ServiceError(scrub(msg))

    def get(self, path: str, *, params: Mapping[str, Any] | None = None,
            action: str | None = None) -> Any:
        """``GET path`` (retried)."""
        return self.request("GET", path, params=params, action=action)

    def put(self, path: str, body: Any, *, action: str | None = None) -> Any:
        """``PUT path`` with a JSON body (a full replacement: retried)."""
        return self.request("PUT", path, body=body, action=action)

    def post(self, path: str, body: Any, *, action: str | None = None) -> Any:
        """``POST path`` with a JSON body (never re-sent)."""
        return self.request("POST", path, body=body, action=action)

    def patch(self, path: str, body: Any, *, action: str | None = None) -> Any:
        """``PATCH path`` with a JSON body (never re-sent)."""
        return self.request("PATCH", path, body=body, action=action)

    def delete(self, path: str, *, action: str | None = None) -> Any:
        """``DELETE path`` (retried)."""
        return self.request("DELETE", path, action=action)


def cdp_client_from_environment(
    env: Mapping[str, str], cdp_endpoint: str | None = None, **settings: Any
) -> CDPClient:
    """Build a :class:`CDPClient` from ``TD_API_KEY`` and the endpoint.

    Parameters
    ----------
    env
        The environment (read at the CLI edge).
    cdp_endpoint
        ``--cdp-endpoint``; when not given it is derived from ``TD_API_SERVER`` with
        :func:`cdp_endpoint_from_td_server`.
    **settings
        Time-out and retry settings passed on to :class:`CDPClient`.

    Returns
    -------
    CDPClient

    Raises
    ------
    UsageError
        When ``TD_API_KEY`` is missing or the endpoint cannot be derived.
    """
    apikey = (env.get("TD_API_KEY") or "").strip()
    endpoint = (cdp_endpoint or "").strip() or cdp_endpoint_from_td_server(
        env.get("TD_API_SERVER") or DEFAULT_TD_API_SERVER)
    return CDPClient(apikey, endpoint, **settings)


# --------------------------------------------------------------------------------------------
# Cluster -> segment sync
# --------------------------------------------------------------------------------------------


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


__all__ = [
    "CDPClient",
    "cdp_client_from_environment",
    "cdp_endpoint_from_td_server",
    "cluster_rule",
    "sync_audience",
]
