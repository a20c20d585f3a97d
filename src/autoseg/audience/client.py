"""A small Treasure Data CDP (Audience) API client: JSON in, JSON out, one-line errors.

The client speaks plain HTTPS with ``Authorization: TD1 <apikey>`` through the standard
library (no extra dependency; ``HTTPS_PROXY`` is honoured). GET, PUT and DELETE requests are
retried on HTTP 429/5xx, time-outs and connection errors with exponential back-off, a bounded
number of times (:class:`autoseg.retry.RetryPolicy`); POST and PATCH (creating folders and
segments) are never re-sent -- a rerun of :func:`autoseg.audience.sync.sync_audience` is the
safe retry, since it finds what an earlier run created. Redirects are refused, so the key is
never sent to another host. Every failure becomes a one-line
:class:`~autoseg.errors.ServiceError` without the key.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from autoseg.errors import ServiceError, UsageError
from autoseg.io.td.client import DEFAULT_TD_API_SERVER
from autoseg.retry import RetryPolicy, Transient, error_name
from autoseg.secrets import one_line, register_secret, scrub, scrubbed_logger

logger = scrubbed_logger(__name__)

_RETRYABLE_METHODS = ("GET", "HEAD", "PUT", "DELETE")
_MAX_DETAIL = 200
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
