"""Loopback emulator of the Treasure Data REST API v3, for driving the real clients.

The tests start this server on ``127.0.0.1`` (port 0, so the OS picks a free port)
and point the *real* ``pytd`` / ``td-client`` libraries at it.  Nothing here talks
to the network.

What is emulated (paths as ``tdclient`` 1.7.0 / ``pytd`` 2.4.0 send them; a doubled
leading slash, ``//v3/...``, is accepted everywhere):

* databases: ``GET /v3/database/list``, ``GET /v3/database/show/{db}``,
  ``POST /v3/database/create/{db}``, ``POST /v3/database/delete/{db}``
* tables: ``GET /v3/table/list/{db}``, ``GET /v3/table/show/{db}/{t}``,
  ``POST /v3/table/create/{db}/{t}[/{type}]``, ``POST /v3/table/delete/{db}/{t}``,
  ``POST /v3/table/swap/{db}/{a}/{b}``, ``POST /v3/table/update-schema/{db}/{t}``,
  ``POST /v3/table/update/{db}/{t}``
* bulk import: ``POST /v3/bulk_import/create/{name}/{db}/{t}``,
  ``PUT /v3/bulk_import/upload_part/{name}/{part}`` (msgpack, optionally gzip'ed, a
  stream of row maps: what pytd ``fmt="msgpack"`` and tdclient ``upload_file`` send),
  ``POST .../delete_part/{name}/{part}``, ``GET .../list_parts/{name}``,
  ``GET /v3/bulk_import/list``, ``GET .../show/{name}``, ``POST .../freeze/{name}``,
  ``POST .../unfreeze/{name}``, ``POST .../perform/{name}``, ``POST .../commit/{name}``,
  ``POST .../delete/{name}``, ``GET .../error_records/{name}``
* jobs: ``POST /v3/job/issue/{hive|presto|trino}/{db}``, ``GET /v3/job/status/{id}``,
  ``GET /v3/job/show/{id}``, ``GET /v3/job/result/{id}?format=msgpack|msgpack.gz|json|
  csv|tsv`` (``Range`` is honoured for ``msgpack.gz``), ``GET /v3/job/list``,
  ``POST /v3/job/kill/{id}``
* ``GET /v3/system/server_status``

Every request must carry ``Authorization: TD1 <apikey>``; another key gets 401.

Behaviour worth knowing:

* Jobs and bulk-import perform/commit finish *synchronously*: the first status poll
  already reports ``success`` / ``ready`` / ``committed`` (set ``job_running_polls``
  to make job status polls say ``running`` first).  The clients still sleep on
  their own: see :func:`fast_client_sleeps`.
* Queries run on an embedded DuckDB loaded with the tables the SQL names.  Hive
  specifics that are translated: backtick identifiers, ``INSERT INTO TABLE t``,
  ``INSERT OVERWRITE TABLE t SELECT ...`` (delete + insert).  Unnamed result columns
  (``COUNT(*)``, ``a + 1``) are called ``_c0``, ``_c1``, ... for Hive and ``_col0``,
  ... for Presto/Trino, like the real engines.  ``INSERT INTO t SELECT ...`` matches
  columns *by position*, as Hive and Presto do.  SQL the DuckDB dialect rejects ends
  the job in ``error`` (``debug.stderr`` holds the message).
* A table is ``[schema columns..., time]``: ``SELECT *`` returns ``time`` last.  Bulk
  import adds unseen columns to the schema (type guessed from the values: ``long``,
  ``double``, ``string`` or ``array<...>``), keeps existing column types, and rejects
  records without an integer ``time`` as error records.
* Database and table names must match ``[a-z0-9_]{3,255}`` on create (TD's rule).

Guessed rather than checked against the live service: exact error message texts,
the 422 status used for bulk-import state errors, that bulk-import commit into a
table deleted meanwhile answers 404, and that CTAS without ``time`` stamps rows with
the job's start time.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as _dt
import decimal
import email.parser
import email.policy
import gzip
import io
import json
import math
import re
import socket
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

import duckdb
import msgpack
import pandas as pd

__all__ = [
    "EmulatorServer",
    "FailureRule",
    "RequestRecord",
    "TDEmulator",
    "fast_client_sleeps",
    "start_td_emulator",
]


# ---------------------------------------------------------------------------
# Shared HTTP machinery (also used by the CDP emulator)
# ---------------------------------------------------------------------------


@dataclass
class RequestRecord:
    """One request seen by an emulator.

    Attributes
    ----------
    method : str
        HTTP method, upper case.
    path : str
        Path with repeated slashes collapsed and without the query string, still
        percent-encoded (``/v3/table/list/db``).
    raw_path : str
        The request target exactly as sent (``//v3/table/list/db?x=1``).
    query : dict of str to str
        Query-string parameters (last value wins).
    status : int or None
        Status answered; ``None`` when the connection was dropped.
    injected : bool
        Whether a :class:`FailureRule` decided the outcome.
    """

    method: str
    path: str
    raw_path: str
    query: dict[str, str]
    status: int | None = None
    injected: bool = False


@dataclass
class FailureRule:
    """A scripted failure; see :meth:`EmulatorServer.fail_next`.

    Attributes
    ----------
    method : str
        HTTP method to match, or ``"*"``.
    pattern : re.Pattern
        Searched (``re.search``) in the normalized request path.
    status : int
        Status to answer when not dropping the connection.
    times : int
        How many more matching requests fail.
    skip : int
        How many more matching requests pass untouched before failures start.
    drop_connection : bool
        Close the connection without any reply instead of answering ``status``.
    after_processing : bool
        Let the request take effect first, then fail or drop the reply.
    body : bytes
        Response body sent with ``status``.
    fired : int
        How many requests this rule has failed so far.
    """

    method: str
    pattern: re.Pattern[str]
    status: int = 500
    times: int = 1
    skip: int = 0
    drop_connection: bool = False
    after_processing: bool = False
    body: bytes = b""
    fired: int = 0

    def matches(self, method: str, path: str) -> bool:
        """Return whether a request's method and normalized path match this rule.

        Parameters
        ----------
        method : str
            Request method.
        path : str
            Normalized request path.

        Returns
        -------
        bool
        """
        return (self.method == "*" or self.method == method) and bool(self.pattern.search(path))


@dataclass
class _Request:
    method: str
    path: str
    raw_path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    params: dict[str, str] = field(default_factory=dict)

    def form(self) -> dict[str, str]:
        """Merge query string and form body (multipart or url-encoded)."""
        out = dict(self.query)
        ctype = self.headers.get("content-type", "")
        if ctype.startswith("multipart/form-data"):
            raw = b"Content-Type: " + ctype.encode("latin-1") + b"\r\n\r\n" + self.body
            msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(raw)
            if msg.is_multipart():
                for part in msg.iter_parts():
                    name = part.get_param("name", header="content-disposition")
                    payload = part.get_payload(decode=True) or b""
                    if isinstance(name, str):
                        out[name] = payload.decode("utf-8")
        elif ctype.startswith("application/x-www-form-urlencoded") or (
            self.body and not ctype.startswith("application/json")
        ):
            with contextlib.suppress(UnicodeDecodeError):
                for k, v in urllib.parse.parse_qsl(
                    self.body.decode("utf-8"), keep_blank_values=True
                ):
                    out[k] = v
        return out

    def json(self) -> Any:
        """Decode the body as JSON; an empty body gives ``None``."""
        if not self.body.strip():
            return None
        try:
            return json.loads(self.body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as e:
            raise ApiError(400, {"error": f"invalid JSON body: {e}"}) from e


@dataclass
class _Response:
    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


class ApiError(Exception):
    """Raised inside a route to answer an error status with a JSON body."""

    def __init__(self, status: int, payload: Any) -> None:
        super().__init__(f"{status}: {payload}")
        self.status = status
        self.payload = payload


def _json_response(
    payload: Any, status: int = 200, content_type: str = "application/json"
) -> _Response:
    return _Response(status, json.dumps(payload).encode("utf-8"), content_type)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "LoopbackEmulator/1.0"
    timeout = 30  # idle keep-alive connections are closed after this many seconds

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in separate writes: without TCP_NODELAY, Nagle plus
        # the client's delayed ACK adds ~40 ms to every request.
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.emulator._track(self.connection, True)  # type: ignore[attr-defined]

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.emulator._track(self.connection, False)  # type: ignore[attr-defined]

    def _dispatch(self) -> None:
        self.server.emulator._handle(self)  # type: ignore[attr-defined]

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _dispatch

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        """Keep the test output quiet."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True


_Route = tuple[str, re.Pattern[str], Callable[[_Request], _Response]]


class EmulatorServer:
    """Base of the loopback emulators: threading HTTP server, auth, failures, log.

    Parameters
    ----------
    apikey : str
        The only key accepted in ``Authorization: TD1 <apikey>``.
    """

    def __init__(self, apikey: str) -> None:
        self.apikey = apikey
        self._lock = threading.RLock()
        self._rules: list[FailureRule] = []
        self._log: list[RequestRecord] = []
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._routes: list[_Route] = []
        self._conns: set[socket.socket] = set()

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> Self:
        """Bind ``127.0.0.1`` on a free port and serve in a daemon thread.

        Returns
        -------
        EmulatorServer
            ``self``, started (the subclass type is kept).
        """
        if self._server is not None:
            return self
        server = _Server(("127.0.0.1", 0), _Handler)
        server.emulator = self  # type: ignore[attr-defined]
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"{type(self).__name__}-{server.server_address[1]}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, close the listening socket and open connections (idempotent)."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        with self._lock:
            conns, self._conns = list(self._conns), set()
        for conn in conns:  # idle keep-alive connections of client pools
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        """The port the server listens on."""
        if self._server is None:
            raise RuntimeError("emulator is not running")
        return int(self._server.server_address[1])

    @property
    def endpoint(self) -> str:
        """Base URL without a trailing slash, e.g. ``http://127.0.0.1:54321``."""
        return f"http://127.0.0.1:{self.port}"

    # -- failure injection and request log --------------------------------

    def fail_next(
        self,
        method: str,
        path_regex: str,
        status: int = 500,
        *,
        times: int = 1,
        skip: int = 0,
        drop_connection: bool = False,
        after_processing: bool = False,
        body: bytes | str | dict[str, Any] | None = None,
    ) -> FailureRule:
        """Script a failure for requests matching a method and a path regex.

        Parameters
        ----------
        method : str
            HTTP method (case-insensitive) or ``"*"`` for any.
        path_regex : str
            Regular expression searched in the normalized path (repeated slashes
            collapsed, no query string, percent-encoding kept), e.g.
            ``r"/v3/bulk_import/upload_part/"``.
        status : int, default 500
            Status answered instead of the real reply.
        times : int, default 1
            Number of matching requests that fail.
        skip : int, default 0
            Matching requests let through before the first failure; ``skip=2``
            makes the third matching request the first to fail.
        drop_connection : bool, default False
            Close the connection without sending any reply.
        after_processing : bool, default False
            Apply the request (e.g. really commit), then fail or drop the reply.
        body : bytes, str, dict or None
            Reply body; default ``{"error": "injected failure"}``.

        Returns
        -------
        FailureRule
            The rule; its ``fired`` counter tells how often it triggered.
        """
        if body is None:
            raw = json.dumps({"error": "injected failure", "severity": "error"}).encode()
        elif isinstance(body, dict):
            raw = json.dumps(body).encode()
        elif isinstance(body, str):
            raw = body.encode()
        else:
            raw = body
        rule = FailureRule(
            method=method.upper(),
            pattern=re.compile(path_regex),
            status=status,
            times=times,
            skip=skip,
            drop_connection=drop_connection,
            after_processing=after_processing,
            body=raw,
        )
        with self._lock:
            self._rules.append(rule)
        return rule

    def clear_failures(self) -> None:
        """Forget every scripted failure."""
        with self._lock:
            self._rules.clear()

    @property
    def requests(self) -> list[RequestRecord]:
        """A copy of the request log, oldest first."""
        with self._lock:
            return list(self._log)

    def clear_requests(self) -> None:
        """Empty the request log."""
        with self._lock:
            self._log.clear()

    def requests_matching(
        self, method: str | None = None, path_regex: str | None = None
    ) -> list[RequestRecord]:
        """Return logged requests filtered by method and/or path regex.

        Parameters
        ----------
        method : str, optional
            HTTP method to keep (case-insensitive).
        path_regex : str, optional
            Regular expression searched in the normalized path.

        Returns
        -------
        list of RequestRecord
        """
        pat = re.compile(path_regex) if path_regex else None
        return [
            r
            for r in self.requests
            if (method is None or r.method == method.upper())
            and (pat is None or pat.search(r.path))
        ]

    # -- request handling ----------------------------------------------------

    def _track(self, conn: socket.socket, alive: bool) -> None:
        with self._lock:
            if alive:
                self._conns.add(conn)
            else:
                self._conns.discard(conn)

    def _route(self, method: str, pattern: str, func: Callable[[_Request], _Response]) -> None:
        self._routes.append((method, re.compile(pattern + r"\Z"), func))

    def _pick_rule(self, method: str, path: str) -> FailureRule | None:
        with self._lock:
            for rule in self._rules:
                if rule.times <= 0 or not rule.matches(method, path):
                    continue
                if rule.skip > 0:
                    rule.skip -= 1
                    continue
                rule.times -= 1
                rule.fired += 1
                return rule
        return None

    def _authorized(self, req: _Request) -> bool:
        auth = req.headers.get("authorization", "")
        scheme, _, key = auth.partition(" ")
        return scheme.upper() == "TD1" and key.strip() == self.apikey

    def _dispatch(self, req: _Request) -> _Response:
        if not self._authorized(req):
            return _json_response(self._error_payload(401, "Authentication failed"), 401)
        allowed = False
        for method, pattern, func in self._routes:
            m = pattern.match(req.path)
            if not m:
                continue
            if method != req.method and not (method == "GET" and req.method == "HEAD"):
                allowed = True
                continue
            req.params = {k: urllib.parse.unquote(v) for k, v in m.groupdict().items() if v}
            try:
                return func(req)
            except ApiError as e:
                payload = e.payload
                if isinstance(payload, str):
                    payload = self._error_payload(e.status, payload)
                return _json_response(payload, e.status)
        if allowed:
            return _json_response(self._error_payload(405, "Method not allowed"), 405)
        return _json_response(self._error_payload(404, f"Resource not found: {req.path}"), 404)

    def _error_payload(self, status: int, message: str) -> Any:
        return {"error": message, "message": message, "text": message, "severity": "error"}

    @staticmethod
    def _read_body(handler: BaseHTTPRequestHandler) -> bytes:
        if handler.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(handler.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while handler.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                chunks.append(handler.rfile.read(size))
                handler.rfile.readline()
            return b"".join(chunks)
        length = int(handler.headers.get("Content-Length") or 0)
        return handler.rfile.read(length) if length > 0 else b""

    @staticmethod
    def _drop(handler: BaseHTTPRequestHandler) -> None:
        handler.close_connection = True
        with contextlib.suppress(OSError):
            handler.connection.shutdown(socket.SHUT_RDWR)

    @staticmethod
    def _send(handler: BaseHTTPRequestHandler, resp: _Response) -> None:
        handler.send_response(resp.status)
        handler.send_header("Content-Type", resp.content_type)
        handler.send_header("Content-Length", str(len(resp.body)))
        for k, v in resp.headers.items():
            handler.send_header(k, v)
        handler.end_headers()
        if handler.command != "HEAD":
            handler.wfile.write(resp.body)

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        method = handler.command.upper()
        # http.server collapses a leading "//" in handler.path; keep what was sent.
        parts = handler.requestline.split()
        raw_path = parts[1] if len(parts) >= 2 else handler.path
        # Not urlsplit: it would read "//v3/..." as a network location.
        target = raw_path.split("#", 1)[0]
        path_part, _, query_part = target.partition("?")
        if "://" in path_part:  # absolute-form target
            path_part = "/" + path_part.split("://", 1)[1].partition("/")[2]
        path = re.sub(r"/{2,}", "/", path_part) or "/"
        query = dict(urllib.parse.parse_qsl(query_part, keep_blank_values=True))
        body = self._read_body(handler)
        headers = {k.lower(): v for k, v in handler.headers.items()}
        record = RequestRecord(method, path, raw_path, query)
        with self._lock:
            self._log.append(record)
        req = _Request(method, path, raw_path, query, headers, body)

        rule = self._pick_rule(method, path)
        if rule is not None:
            record.injected = True
            if rule.after_processing:
                with contextlib.suppress(Exception):
                    self._dispatch(req)
            if rule.drop_connection:
                record.status = None
                self._drop(handler)
                return
            record.status = rule.status
            self._send(handler, _Response(rule.status, rule.body))
            return

        try:
            resp = self._dispatch(req)
        except Exception as e:  # an emulator bug: answer 500 rather than hang the client
            resp = _json_response(self._error_payload(500, f"emulator error: {e!r}"), 500)
        record.status = resp.status
        self._send(handler, resp)


# ---------------------------------------------------------------------------
# Client sleep shortcut
# ---------------------------------------------------------------------------

_SLEEPING_MODULES = (
    "tdclient.api",
    "tdclient.bulk_import_model",
    "tdclient.job_model",
    "tdclient.cursor",
)


class _TimeProxy:
    def __init__(self, real: Any, max_sleep: float, record: list[float]) -> None:
        self._real = real
        self._max_sleep = max_sleep
        self._record = record

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def sleep(self, seconds: float) -> None:
        self._record.append(seconds)
        self._real.sleep(min(seconds, self._max_sleep))


@contextlib.contextmanager
def fast_client_sleeps(max_sleep: float = 0.0) -> Iterator[list[float]]:
    """Cap the sleeps td-client makes while polling or retrying.

    td-client 1.7.0 sleeps a fixed 5 s in ``BulkImport.commit(wait=True)`` (pytd
    waits for every commit that way), 5 s per poll in ``Job.wait`` and
    ``Cursor`` while a job runs, and 5 s, 10 s, 20 s, ... between retries of a
    GET/DELETE answered 5xx.  Inside this context the ``time`` module those
    td-client modules see is replaced by a proxy whose ``sleep`` records the
    requested duration and sleeps at most ``max_sleep`` seconds.  Nothing else
    (pytd, the emulator, the test) is affected.

    Parameters
    ----------
    max_sleep : float, default 0.0
        Longest real sleep allowed.

    Yields
    ------
    list of float
        The durations td-client asked to sleep, in call order.
    """
    import importlib

    record: list[float] = []
    patched: list[tuple[Any, Any]] = []
    try:
        for name in _SLEEPING_MODULES:
            module = importlib.import_module(name)
            original = module.time
            module.time = _TimeProxy(original, max_sleep, record)
            patched.append((module, original))
        yield record
    finally:
        for module, original in reversed(patched):
            module.time = original


# ---------------------------------------------------------------------------
# Treasure Data state
# ---------------------------------------------------------------------------

_NAME_RE = re.compile(r"[a-z0-9_]{3,255}")
_TD_TO_DUCK = {
    "long": "BIGINT",
    "int": "BIGINT",
    "double": "DOUBLE",
    "float": "DOUBLE",
    "string": "VARCHAR",
}
_INT_DUCK = {
    "BIGINT",
    "INTEGER",
    "SMALLINT",
    "TINYINT",
    "HUGEINT",
    "UBIGINT",
    "UINTEGER",
    "USMALLINT",
    "UTINYINT",
}
_FLOAT_DUCK = {"DOUBLE", "FLOAT", "REAL"}


def _now() -> float:
    return time.time()


def _fmt_time(ts: float | None) -> str | None:
    if ts is None:
        return None
    return _dt.datetime.fromtimestamp(ts, _dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _duck_type(td_type: str) -> str:
    t = td_type.strip().lower()
    if t.startswith("array<") and t.endswith(">"):
        return _duck_type(t[6:-1]) + "[]"
    return _TD_TO_DUCK.get(t, "VARCHAR")


def _td_type_from_duck(duck: str) -> str:
    d = duck.upper()
    if d.endswith("[]"):
        return f"array<{_td_type_from_duck(d[:-2])}>"
    if d in _INT_DUCK:
        return "long"
    if d in _FLOAT_DUCK or d.startswith("DECIMAL"):
        return "double"
    return "string"


def _hive_type_from_duck(duck: str) -> str:
    d = duck.upper()
    if d.endswith("[]"):
        return f"array<{_hive_type_from_duck(d[:-2])}>"
    return {
        "BIGINT": "bigint",
        "HUGEINT": "bigint",
        "UBIGINT": "bigint",
        "INTEGER": "int",
        "SMALLINT": "smallint",
        "TINYINT": "tinyint",
        "DOUBLE": "double",
        "FLOAT": "float",
        "VARCHAR": "string",
        "BOOLEAN": "boolean",
        "DATE": "date",
        "TIMESTAMP": "timestamp",
    }.get(d, "double" if d.startswith("DECIMAL") else d.lower())


def _guess_td_type(values: Iterable[Any]) -> str:
    kinds: set[str] = set()
    elems: list[Any] = []
    for v in values:
        if v is None:
            continue
        if isinstance(v, bool):
            kinds.add("string")
        elif isinstance(v, int):
            kinds.add("long")
        elif isinstance(v, float):
            kinds.add("double")
        elif isinstance(v, list | tuple):
            kinds.add("array")
            elems.extend(v)
        else:
            kinds.add("string")
    if kinds == {"long"}:
        return "long"
    if kinds and kinds <= {"long", "double"}:
        return "double"
    if kinds == {"array"}:
        return f"array<{_guess_td_type(elems) if elems else 'string'}>"
    return "string"


def _to_str(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    if isinstance(v, list | tuple | dict):
        return json.dumps(v, default=str)
    return str(v)


def _coerce(value: Any, td_type: str) -> Any:
    """Read a stored value as the schema type says (TD reads mismatches as NULL)."""
    if value is None:
        return None
    t = td_type.lower()
    if t in ("long", "int"):
        if isinstance(value, bool):
            return int(value)
        if isinstance(value, int):
            return value
        if isinstance(value, float):
            return int(value) if math.isfinite(value) else None
        try:
            return int(str(value).strip())
        except ValueError:
            return None
    if t in ("double", "float"):
        if isinstance(value, bool):
            return float(value)
        if isinstance(value, int | float):
            return float(value)
        try:
            return float(str(value).strip())
        except ValueError:
            return None
    if t.startswith("array<") and t.endswith(">"):
        if not isinstance(value, list | tuple):
            return None
        return [_coerce(e, t[6:-1]) for e in value]
    return _to_str(value)


def _plain(value: Any) -> Any:
    """Turn DuckDB / NumPy result values into msgpack- and JSON-friendly ones."""
    if value is None or isinstance(value, bool | int | str | bytes):
        return value
    if isinstance(value, float):
        return value
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, _dt.datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S.%f").rstrip("0").rstrip(".")
    if isinstance(value, _dt.date | _dt.time):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if hasattr(value, "item"):  # numpy scalar
        return _plain(value.item())
    return str(value)


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


@dataclass
class _Table:
    name: str
    columns: list[tuple[str, str]] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)
    created_at: float = field(default_factory=_now)
    updated_at: float = field(default_factory=_now)
    expire_days: int | None = None
    table_id: int = 0

    def column_names(self) -> list[str]:
        return [c for c, _ in self.columns]

    def add_columns_from(self, rows: list[dict[str, Any]]) -> None:
        known = set(self.column_names()) | {"time"}
        new: list[str] = []
        for row in rows:
            for key in row:
                if key not in known:
                    known.add(key)
                    new.append(key)
        for key in new:
            self.columns.append((key, _guess_td_type(r.get(key) for r in rows)))

    def visible_row(self, row: dict[str, Any]) -> dict[str, Any]:
        out = {c: _coerce(row.get(c), t) for c, t in self.columns}
        out["time"] = _coerce(row.get("time"), "long")
        return out


@dataclass
class _Database:
    name: str
    tables: dict[str, _Table] = field(default_factory=dict)
    created_at: float = field(default_factory=_now)
    updated_at: float = field(default_factory=_now)
    db_id: int = 0


@dataclass
class _Job:
    job_id: str
    type: str
    database: str
    query: str
    status: str = "queued"
    created_at: float = field(default_factory=_now)
    start_at: float | None = None
    end_at: float | None = None
    columns: list[str] = field(default_factory=list)
    column_types: list[str] = field(default_factory=list)
    rows: list[list[Any]] = field(default_factory=list)
    error: str | None = None
    priority: int = 0
    retry_limit: int = 0
    result_url: str | None = None
    polls_left: int = 0

    def result_msgpack(self) -> bytes:
        packer = msgpack.Packer()
        return b"".join(packer.pack(row) for row in self.rows)

    def summary(self) -> dict[str, Any]:
        gz = gzip.compress(self.result_msgpack(), mtime=0)
        schema = [[n, t] for n, t in zip(self.columns, self.column_types, strict=True)]
        return {
            "job_id": self.job_id,
            "type": self.type,
            "database": self.database,
            "query": self.query,
            "status": self.status,
            "url": f"https://console.example.invalid/jobs/{self.job_id}",
            "user_name": "emulator",
            "created_at": _fmt_time(self.created_at),
            "updated_at": _fmt_time(self.end_at or self.created_at),
            "start_at": _fmt_time(self.start_at),
            "end_at": _fmt_time(self.end_at),
            "duration": 0
            if self.end_at is None or self.start_at is None
            else int(self.end_at - self.start_at),
            "cpu_time": None,
            "result_size": len(gz) if self.status == "success" else 0,
            "num_records": len(self.rows) if self.status == "success" else None,
            "hive_result_schema": json.dumps(schema) if self.columns else None,
            "priority": self.priority,
            "retry_limit": self.retry_limit,
            "result": "",
            "result_url": self.result_url,
            "organization": None,
            "linked_result_export_job_id": None,
            "result_export_target_job_id": None,
            "debug": {"cmdout": "", "stderr": self.error or ""},
        }


@dataclass
class _BulkImport:
    name: str
    database: str
    table: str
    params: dict[str, str]
    status: str = "uploading"
    upload_frozen: bool = False
    job_id: str | None = None
    parts: dict[str, bytes] = field(default_factory=dict)
    valid_rows: list[dict[str, Any]] = field(default_factory=list)
    error_rows: list[Any] = field(default_factory=list)
    valid_parts: int | None = None
    error_parts: int | None = None
    created_at: float = field(default_factory=_now)

    def show(self) -> dict[str, Any]:
        performed = self.status in ("ready", "committing", "committed")
        return {
            "name": self.name,
            "database": self.database,
            "table": self.table,
            "status": self.status,
            "upload_frozen": self.upload_frozen,
            "job_id": self.job_id,
            "valid_records": len(self.valid_rows) if performed else None,
            "error_records": len(self.error_rows) if performed else None,
            "valid_parts": self.valid_parts,
            "error_parts": self.error_parts,
        }


def _decode_part(data: bytes) -> list[Any]:
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    unpacker = msgpack.Unpacker(raw=False, strict_map_key=False, max_buffer_size=max(len(data), 1))
    unpacker.feed(data)
    return list(unpacker)


_HIVE_OVERWRITE_RE = re.compile(r"\bINSERT\s+OVERWRITE\s+TABLE\s+([\w\".]+)\s+", re.IGNORECASE)
_HIVE_INTO_TABLE_RE = re.compile(r"\bINSERT\s+INTO\s+TABLE\s+", re.IGNORECASE)
_PLAIN_IDENT_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _translate_sql(sql: str) -> str:
    sql = sql.replace("`", '"')
    sql = _HIVE_INTO_TABLE_RE.sub("INSERT INTO ", sql)

    def overwrite(m: re.Match[str]) -> str:
        return f"DELETE FROM {m.group(1)}; INSERT INTO {m.group(1)} "

    return _HIVE_OVERWRITE_RE.sub(overwrite, sql)


class TDEmulator(EmulatorServer):
    """Stateful emulator of the Treasure Data REST API v3 (see module docstring).

    Parameters
    ----------
    apikey : str
        The only API key accepted.

    Attributes
    ----------
    job_running_polls : int
        Number of job status polls that answer ``running`` before ``success``
        (default 0: jobs are done at once).  td-client sleeps 5 s per such poll
        unless :func:`fast_client_sleeps` is active.
    """

    def __init__(self, apikey: str) -> None:
        super().__init__(apikey)
        self._dbs: dict[str, _Database] = {}
        self._jobs: dict[str, _Job] = {}
        self._bulk: dict[str, _BulkImport] = {}
        self._next_id = 1000
        self.job_running_polls = 0
        r = self._route
        r("GET", r"/v3/system/server_status", self._server_status)
        r("GET", r"/v3/database/list", self._db_list)
        r("GET", r"/v3/database/show/(?P<db>[^/]+)", self._db_show)
        r("POST", r"/v3/database/create/(?P<db>[^/]+)", self._db_create)
        r("POST", r"/v3/database/delete/(?P<db>[^/]+)", self._db_delete)
        r("GET", r"/v3/table/list/(?P<db>[^/]+)", self._table_list)
        r("GET", r"/v3/table/show/(?P<db>[^/]+)/(?P<t>[^/]+)", self._table_show)
        r(
            "POST",
            r"/v3/table/create/(?P<db>[^/]+)/(?P<t>[^/]+)(?:/(?P<type>[^/]+))?",
            self._table_create,
        )
        r("POST", r"/v3/table/delete/(?P<db>[^/]+)/(?P<t>[^/]+)", self._table_delete)
        r("POST", r"/v3/table/swap/(?P<db>[^/]+)/(?P<a>[^/]+)/(?P<b>[^/]+)", self._table_swap)
        r("POST", r"/v3/table/update-schema/(?P<db>[^/]+)/(?P<t>[^/]+)", self._table_update_schema)
        r("POST", r"/v3/table/update/(?P<db>[^/]+)/(?P<t>[^/]+)", self._table_update)
        r(
            "POST",
            r"/v3/bulk_import/create/(?P<name>[^/]+)/(?P<db>[^/]+)/(?P<t>[^/]+)",
            self._bi_create,
        )
        r("PUT", r"/v3/bulk_import/upload_part/(?P<name>[^/]+)/(?P<part>[^/]+)", self._bi_upload)
        r(
            "POST",
            r"/v3/bulk_import/delete_part/(?P<name>[^/]+)/(?P<part>[^/]+)",
            self._bi_delete_part,
        )
        r("GET", r"/v3/bulk_import/list_parts/(?P<name>[^/]+)", self._bi_list_parts)
        r("GET", r"/v3/bulk_import/list", self._bi_list)
        r("GET", r"/v3/bulk_import/show/(?P<name>[^/]+)", self._bi_show)
        r("POST", r"/v3/bulk_import/freeze/(?P<name>[^/]+)", self._bi_freeze)
        r("POST", r"/v3/bulk_import/unfreeze/(?P<name>[^/]+)", self._bi_unfreeze)
        r("POST", r"/v3/bulk_import/perform/(?P<name>[^/]+)", self._bi_perform)
        r("POST", r"/v3/bulk_import/commit/(?P<name>[^/]+)", self._bi_commit)
        r("POST", r"/v3/bulk_import/delete/(?P<name>[^/]+)", self._bi_delete)
        r("GET", r"/v3/bulk_import/error_records/(?P<name>[^/]+)", self._bi_error_records)
        r("POST", r"/v3/job/issue/(?P<type>[^/]+)/(?P<db>[^/]+)", self._job_issue)
        r("GET", r"/v3/job/status/(?P<id>[^/]+)", self._job_status)
        r("GET", r"/v3/job/show/(?P<id>[^/]+)", self._job_show)
        r("GET", r"/v3/job/result/(?P<id>[^/]+)", self._job_result)
        r("GET", r"/v3/job/list", self._job_list)
        r("POST", r"/v3/job/kill/(?P<id>[^/]+)", self._job_kill)

    # -- public helpers for tests -------------------------------------------

    def create_database(self, name: str) -> None:
        """Create a database unless it exists.

        Parameters
        ----------
        name : str
            Database name.
        """
        with self._lock:
            if name not in self._dbs:
                self._dbs[name] = _Database(name, db_id=self._new_id_int())

    def database_names(self) -> list[str]:
        """Return the names of all databases, sorted."""
        with self._lock:
            return sorted(self._dbs)

    def table_names(self, database: str) -> list[str]:
        """Return the table names of a database, sorted.

        Parameters
        ----------
        database : str
            Database name.

        Returns
        -------
        list of str
        """
        with self._lock:
            return sorted(self._db(database).tables)

    def has_table(self, database: str, table: str) -> bool:
        """Return whether ``database.table`` exists.

        Parameters
        ----------
        database : str
            Database name.
        table : str
            Table name.

        Returns
        -------
        bool
        """
        with self._lock:
            db = self._dbs.get(database)
            return db is not None and table in db.tables

    def table_schema(self, database: str, table: str) -> list[tuple[str, str]]:
        """Return the TD schema of a table (``time`` excluded).

        Parameters
        ----------
        database : str
            Database name.
        table : str
            Table name.

        Returns
        -------
        list of (str, str)
            ``(column, td_type)`` pairs, e.g. ``("score", "double")``.
        """
        with self._lock:
            return list(self._table(database, table).columns)

    def seed_table(
        self,
        database: str,
        table: str,
        df: pd.DataFrame,
        *,
        schema: dict[str, str] | None = None,
        time_value: int | None = None,
    ) -> None:
        """Create or replace a table holding the rows of a DataFrame.

        The database is created when missing.  Column names are kept as given.
        Types: integer -> ``long``, float -> ``double``, list -> ``array<...>``,
        anything else (bool as ``"true"``/``"false"``, datetimes, categories)
        -> ``string``; ``schema`` overrides per column.

        Parameters
        ----------
        database : str
            Database name.
        table : str
            Table name.
        df : pandas.DataFrame
            Rows to store.  A ``time`` column (unix seconds) is used when present.
        schema : dict of str to str, optional
            TD types by column name, overriding the inferred ones.
        time_value : int, optional
            ``time`` of every row when ``df`` has no ``time`` column (default: now).
        """
        schema = dict(schema or {})
        columns: list[tuple[str, str]] = []
        records: list[dict[str, Any]] = []
        raw = df.to_dict(orient="records")
        for name in df.columns:
            col = str(name)
            if col == "time":
                continue
            if col in schema:
                columns.append((col, schema[col]))
                continue
            kind = df[name].dtype.kind
            if kind in "iu":
                columns.append((col, "long"))
            elif kind == "f":
                columns.append((col, "double"))
            else:
                columns.append((col, _guess_td_type(_plain_seed(v) for v in df[name])))
        default_time = int(_now()) if time_value is None else int(time_value)
        for row in raw:
            rec = {str(k): _plain_seed(v) for k, v in row.items()}
            rec["time"] = int(rec["time"]) if rec.get("time") is not None else default_time
            records.append({c: _coerce(rec.get(c), t) for c, t in columns} | {"time": rec["time"]})
        with self._lock:
            self.create_database(database)
            tbl = _Table(table, columns, records, table_id=self._new_id_int())
            self._dbs[database].tables[table] = tbl

    def read_table(self, database: str, table: str, *, include_time: bool = True) -> pd.DataFrame:
        """Return a table's rows as a DataFrame, typed by its TD schema.

        ``long``/``int`` columns come back as ``Int64``, ``double``/``float`` as
        ``float64``, strings and arrays as ``object``.

        Parameters
        ----------
        database : str
            Database name.
        table : str
            Table name.
        include_time : bool, default True
            Keep the ``time`` column (last).

        Returns
        -------
        pandas.DataFrame
        """
        with self._lock:
            tbl = self._table(database, table)
            columns = list(tbl.columns) + ([("time", "long")] if include_time else [])
            rows = [tbl.visible_row(r) for r in tbl.rows]
        data: dict[str, Any] = {}
        for col, td_type in columns:
            values = [r[col] for r in rows]
            t = td_type.lower()
            if t in ("long", "int"):
                data[col] = pd.array(values, dtype="Int64")
            elif t in ("double", "float"):
                data[col] = pd.Series(
                    [math.nan if v is None else v for v in values], dtype="float64"
                )
            else:
                data[col] = pd.Series(values, dtype=object)
        return pd.DataFrame(data, columns=[c for c, _ in columns])

    @property
    def jobs(self) -> list[dict[str, Any]]:
        """Snapshots of every job issued (``job_id``, ``type``, ``query``, ``status``...)."""
        with self._lock:
            return [j.summary() for j in self._jobs.values()]

    @property
    def bulk_imports(self) -> dict[str, dict[str, Any]]:
        """Snapshots of the live bulk-import sessions by name (deleted ones vanish)."""
        with self._lock:
            return {
                name: bi.show() | {"params": dict(bi.params)} for name, bi in self._bulk.items()
            }

    def run_sql(
        self, database: str, sql: str, engine: str = "hive"
    ) -> tuple[list[str], list[list[Any]]]:
        """Run SQL exactly as a job would, without HTTP.

        Parameters
        ----------
        database : str
            Default database of unqualified table names.
        sql : str
            Statement(s).
        engine : str, default "hive"
            Naming of unnamed columns: ``hive`` (``_c0``) or ``presto`` (``_col0``).

        Returns
        -------
        (list of str, list of list)
            Column names and rows.
        """
        with self._lock:
            cols, _, rows = self._execute(database, sql, engine)
        return cols, rows

    # -- internals -------------------------------------------------------------

    def _new_id_int(self) -> int:
        with self._lock:
            self._next_id += 1
            return self._next_id

    def _db(self, name: str) -> _Database:
        db = self._dbs.get(name)
        if db is None:
            raise ApiError(404, f"Database '{name}' does not exist")
        return db

    def _table(self, database: str, table: str) -> _Table:
        tbl = self._db(database).tables.get(table)
        if tbl is None:
            raise ApiError(404, f"Table '{database}.{table}' does not exist")
        return tbl

    @staticmethod
    def _check_name(kind: str, name: str) -> None:
        if not _NAME_RE.fullmatch(name):
            raise ApiError(
                400,
                f"Invalid {kind} name '{name}': use 3-255 characters of lower-case "
                "letters, digits and '_'",
            )

    # databases

    def _server_status(self, req: _Request) -> _Response:
        return _json_response({"status": "ok"})

    def _db_json(self, db: _Database) -> dict[str, Any]:
        return {
            "id": db.db_id,
            "name": db.name,
            "count": sum(len(t.rows) for t in db.tables.values()),
            "created_at": _fmt_time(db.created_at),
            "updated_at": _fmt_time(db.updated_at),
            "permission": "administrator",
            "delete_protected": False,
        }

    def _db_list(self, req: _Request) -> _Response:
        with self._lock:
            return _json_response({"databases": [self._db_json(d) for d in self._dbs.values()]})

    def _db_show(self, req: _Request) -> _Response:
        with self._lock:
            return _json_response(self._db_json(self._db(req.params["db"])))

    def _db_create(self, req: _Request) -> _Response:
        name = req.params["db"]
        self._check_name("database", name)
        with self._lock:
            if name in self._dbs:
                raise ApiError(409, f"Database '{name}' already exists")
            self.create_database(name)
        return _json_response({"database": name})

    def _db_delete(self, req: _Request) -> _Response:
        name = req.params["db"]
        with self._lock:
            self._db(name)
            del self._dbs[name]
        return _json_response({"database": name})

    # tables

    def _table_json(self, tbl: _Table) -> dict[str, Any]:
        last_time = max((r.get("time") or 0 for r in tbl.rows), default=None)
        return {
            "id": tbl.table_id,
            "name": tbl.name,
            "type": "log",
            "count": len(tbl.rows),
            "estimated_storage_size": sum(len(msgpack.packb(r, default=str)) for r in tbl.rows),
            "schema": json.dumps([[c, t, c] for c, t in tbl.columns]),
            "created_at": _fmt_time(tbl.created_at),
            "updated_at": _fmt_time(tbl.updated_at),
            "counter_updated_at": _fmt_time(tbl.updated_at),
            "last_log_timestamp": _fmt_time(last_time) if last_time else None,
            "expire_days": tbl.expire_days,
            "delete_protected": False,
            "include_v": True,
        }

    def _table_list(self, req: _Request) -> _Response:
        with self._lock:
            db = self._db(req.params["db"])
            return _json_response(
                {"database": db.name, "tables": [self._table_json(t) for t in db.tables.values()]}
            )

    def _table_show(self, req: _Request) -> _Response:
        with self._lock:
            return _json_response(self._table_json(self._table(req.params["db"], req.params["t"])))

    def _table_create(self, req: _Request) -> _Response:
        dbname, name = req.params["db"], req.params["t"]
        ttype = req.params.get("type", "log")
        if ttype != "log":
            raise ApiError(400, f"Unsupported table type '{ttype}'")
        self._check_name("table", name)
        with self._lock:
            db = self._db(dbname)
            if name in db.tables:
                raise ApiError(409, f"Table '{dbname}.{name}' already exists")
            db.tables[name] = _Table(name, table_id=self._new_id_int())
            db.updated_at = _now()
        return _json_response({"database": dbname, "table": name, "type": "log"})

    def _table_delete(self, req: _Request) -> _Response:
        dbname, name = req.params["db"], req.params["t"]
        with self._lock:
            self._table(dbname, name)
            del self._dbs[dbname].tables[name]
        return _json_response({"database": dbname, "table": name, "type": "log"})

    def _table_swap(self, req: _Request) -> _Response:
        dbname, a, b = req.params["db"], req.params["a"], req.params["b"]
        with self._lock:
            ta, tb = self._table(dbname, a), self._table(dbname, b)
            ta.name, tb.name = b, a
            tables = self._dbs[dbname].tables
            tables[a], tables[b] = tb, ta
            ta.updated_at = tb.updated_at = _now()
        return _json_response({"database": dbname, "table1": a, "table2": b})

    def _table_update_schema(self, req: _Request) -> _Response:
        dbname, name = req.params["db"], req.params["t"]
        try:
            schema = json.loads(req.form().get("schema", ""))
            columns = [(str(c[0]), str(c[1])) for c in schema]
        except (ValueError, TypeError, IndexError) as e:
            raise ApiError(400, f"Invalid schema: {e}") from e
        with self._lock:
            tbl = self._table(dbname, name)
            tbl.columns = [(c, t) for c, t in columns if c != "time"]
            tbl.updated_at = _now()
        return _json_response({"database": dbname, "table": name, "type": "log"})

    def _table_update(self, req: _Request) -> _Response:
        dbname, name = req.params["db"], req.params["t"]
        form = req.form()
        with self._lock:
            tbl = self._table(dbname, name)
            if "expire_days" in form:
                tbl.expire_days = int(form["expire_days"]) if form["expire_days"] else None
        return _json_response({"database": dbname, "table": name, "type": "log"})

    # bulk import

    def _bi(self, name: str) -> _BulkImport:
        bi = self._bulk.get(name)
        if bi is None:
            raise ApiError(404, f"Bulk import session '{name}' does not exist")
        return bi

    def _bi_create(self, req: _Request) -> _Response:
        name, dbname, tname = req.params["name"], req.params["db"], req.params["t"]
        with self._lock:
            self._table(dbname, tname)
            if name in self._bulk:
                raise ApiError(409, f"Bulk import session '{name}' already exists")
            self._bulk[name] = _BulkImport(name, dbname, tname, req.form())
        return _json_response({"bulk_import": name, "name": name})

    def _bi_upload(self, req: _Request) -> _Response:
        name, part = req.params["name"], req.params["part"]
        with self._lock:
            bi = self._bi(name)
            if bi.upload_frozen:
                raise ApiError(422, f"Bulk import session '{name}' is frozen")
            bi.parts[part] = req.body
        return _json_response({"bulk_import": name, "name": part})

    def _bi_delete_part(self, req: _Request) -> _Response:
        name, part = req.params["name"], req.params["part"]
        with self._lock:
            bi = self._bi(name)
            if part not in bi.parts:
                raise ApiError(404, f"Part '{part}' does not exist")
            del bi.parts[part]
        return _json_response({"bulk_import": name, "name": part})

    def _bi_list_parts(self, req: _Request) -> _Response:
        with self._lock:
            bi = self._bi(req.params["name"])
            return _json_response({"name": bi.name, "parts": sorted(bi.parts)})

    def _bi_list(self, req: _Request) -> _Response:
        with self._lock:
            return _json_response({"bulk_imports": [b.show() for b in self._bulk.values()]})

    def _bi_show(self, req: _Request) -> _Response:
        with self._lock:
            return _json_response(self._bi(req.params["name"]).show())

    def _bi_freeze(self, req: _Request) -> _Response:
        with self._lock:
            self._bi(req.params["name"]).upload_frozen = True
        return _json_response({"bulk_import": req.params["name"]})

    def _bi_unfreeze(self, req: _Request) -> _Response:
        with self._lock:
            self._bi(req.params["name"]).upload_frozen = False
        return _json_response({"bulk_import": req.params["name"]})

    def _bi_perform(self, req: _Request) -> _Response:
        with self._lock:
            bi = self._bi(req.params["name"])
            if not bi.upload_frozen:
                raise ApiError(422, f"Bulk import session '{bi.name}' is not frozen")
            if bi.status not in ("uploading", "ready"):
                raise ApiError(422, f"Bulk import session '{bi.name}' is {bi.status}")
            valid: list[dict[str, Any]] = []
            errors: list[Any] = []
            valid_parts = error_parts = 0
            for part in sorted(bi.parts):
                try:
                    records = _decode_part(bi.parts[part])
                except Exception:
                    error_parts += 1
                    continue
                valid_parts += 1
                for rec in records:
                    row = _normalize_record(rec)
                    if row is None:
                        errors.append(rec)
                    else:
                        valid.append(row)
            bi.valid_rows, bi.error_rows = valid, errors
            bi.valid_parts, bi.error_parts = valid_parts, error_parts
            job = self._new_job("bulk_import", bi.database, f"bulk_import perform {bi.name}", {})
            job.start_at = job.end_at = _now()
            job.status = "success"
            bi.job_id = job.job_id
            bi.status = "ready"
        return _json_response({"job_id": job.job_id, "bulk_import": bi.name})

    def _bi_commit(self, req: _Request) -> _Response:
        with self._lock:
            bi = self._bi(req.params["name"])
            if bi.status == "committed":
                return _json_response({"bulk_import": bi.name})
            if bi.status != "ready":
                raise ApiError(422, f"Bulk import session '{bi.name}' is {bi.status}, not ready")
            tbl = self._table(bi.database, bi.table)
            tbl.add_columns_from(bi.valid_rows)
            tbl.rows.extend(bi.valid_rows)
            tbl.updated_at = _now()
            bi.status = "committed"
        return _json_response({"bulk_import": bi.name})

    def _bi_delete(self, req: _Request) -> _Response:
        with self._lock:
            self._bi(req.params["name"])
            del self._bulk[req.params["name"]]
        return _json_response({"bulk_import": req.params["name"]})

    def _bi_error_records(self, req: _Request) -> _Response:
        with self._lock:
            bi = self._bi(req.params["name"])
            packer = msgpack.Packer(default=str)
            data = b"".join(packer.pack(r) for r in bi.error_rows)
        return _Response(200, gzip.compress(data, mtime=0), "application/octet-stream")

    # jobs

    def _new_job(self, jtype: str, database: str, query: str, form: dict[str, str]) -> _Job:
        job_id = str(self._new_id_int())
        job = _Job(job_id, jtype, database, query)
        with contextlib.suppress(ValueError):
            job.priority = int(form.get("priority", 0))
        with contextlib.suppress(ValueError):
            job.retry_limit = int(form.get("retry_limit", 0))
        job.result_url = form.get("result") or None
        self._jobs[job_id] = job
        return job

    def _job(self, job_id: str) -> _Job:
        job = self._jobs.get(job_id)
        if job is None:
            raise ApiError(404, f"Job '{job_id}' does not exist")
        return job

    def _job_issue(self, req: _Request) -> _Response:
        jtype, dbname = req.params["type"], req.params["db"]
        if jtype not in ("hive", "presto", "trino"):
            raise ApiError(400, f"Unsupported job type '{jtype}'")
        form = req.form()
        sql = form.get("query")
        if not sql:
            raise ApiError(400, "Parameter 'query' is required")
        with self._lock:
            self._db(dbname)
            job = self._new_job(jtype, dbname, sql, form)
            job.start_at = _now()
            try:
                job.columns, job.column_types, job.rows = self._execute(dbname, sql, jtype)
                job.status = "success"
            except (duckdb.Error, ApiError) as e:
                job.status, job.error = "error", f"{type(e).__name__}: {e}"
            job.end_at = _now()
            job.polls_left = self.job_running_polls
        return _json_response({"job": job.job_id, "job_id": job.job_id, "database": dbname})

    def _polled_status(self, job: _Job) -> str:
        if job.polls_left > 0:
            job.polls_left -= 1
            return "running"
        return job.status

    def _job_status(self, req: _Request) -> _Response:
        with self._lock:
            job = self._job(req.params["id"])
            summary = job.summary()
            status = self._polled_status(job)
        keys = (
            "job_id",
            "created_at",
            "start_at",
            "end_at",
            "duration",
            "cpu_time",
            "result_size",
            "num_records",
        )
        return _json_response({k: summary[k] for k in keys} | {"status": status})

    def _job_show(self, req: _Request) -> _Response:
        with self._lock:
            job = self._job(req.params["id"])
            summary = job.summary()
            summary["status"] = self._polled_status(job)
        return _json_response(summary)

    def _job_result(self, req: _Request) -> _Response:
        fmt = req.query.get("format", "tsv")
        header = req.query.get("header", "false").lower() == "true"
        with self._lock:
            job = self._job(req.params["id"])
            if job.status != "success":
                raise ApiError(422, f"Job {job.job_id} is {job.status}; it has no result")
            columns, rows = list(job.columns), [list(r) for r in job.rows]
            packed = job.result_msgpack()
        if fmt == "msgpack":
            return _Response(200, packed, "application/x-msgpack")
        if fmt == "msgpack.gz":
            data = gzip.compress(packed, mtime=0)
            rng = re.fullmatch(r"bytes=(\d+)-(\d*)", req.headers.get("range", ""))
            if rng:
                start = int(rng.group(1))
                end = min(int(rng.group(2)) if rng.group(2) else len(data) - 1, len(data) - 1)
                return _Response(
                    206,
                    data[start : end + 1],
                    "application/octet-stream",
                    {"Content-Range": f"bytes {start}-{end}/{len(data)}"},
                )
            return _Response(200, data, "application/octet-stream")
        if fmt == "json":
            lines = ([json.dumps(columns)] if header else []) + [json.dumps(r) for r in rows]
            return _Response(
                200, "".join(line + "\n" for line in lines).encode(), "application/json"
            )
        if fmt in ("csv", "tsv"):
            buf = io.StringIO()
            writer = csv.writer(buf, delimiter="," if fmt == "csv" else "\t", lineterminator="\n")
            if header:
                writer.writerow(columns)
            writer.writerows(rows)
            return _Response(200, buf.getvalue().encode(), "text/plain")
        raise ApiError(400, f"Unsupported result format '{fmt}'")

    def _job_list(self, req: _Request) -> _Response:
        with self._lock:
            jobs = [j.summary() for j in reversed(list(self._jobs.values()))]
        status = req.query.get("status")
        if status:
            jobs = [j for j in jobs if j["status"] == status]
        start = int(req.query.get("from", 0) or 0)
        stop = int(req.query["to"]) + 1 if req.query.get("to") else start + 20
        return _json_response(
            {"jobs": jobs[start:stop], "count": len(jobs), "from": start, "to": stop - 1}
        )

    def _job_kill(self, req: _Request) -> _Response:
        with self._lock:
            job = self._job(req.params["id"])
            former = job.status
            if job.status not in ("success", "error", "killed"):
                job.status = "killed"
        return _json_response({"job_id": job.job_id, "former_status": former})

    # SQL on DuckDB

    def _execute(
        self, database: str, sql: str, engine: str
    ) -> tuple[list[str], list[str], list[list[Any]]]:
        """Run SQL against the stored tables; write changes back.  Caller holds the lock."""
        translated = _translate_sql(sql)
        lowered = translated.lower()
        con = duckdb.connect(":memory:")
        try:
            loaded: dict[tuple[str, str], _Table] = {}
            for db in self._dbs.values():
                con.execute(f"CREATE SCHEMA IF NOT EXISTS {_quote_ident(db.name)}")
                for tbl in db.tables.values():
                    if re.search(rf"(?<![\w$]){re.escape(tbl.name)}(?![\w$])", lowered):
                        self._load_into_duckdb(con, db.name, tbl)
                        loaded[(db.name, tbl.name)] = tbl
            con.execute(f"SET schema = '{database.replace(chr(39), chr(39) * 2)}'")
            con.execute("SET enable_external_access = false")
            con.execute("SET lock_configuration = true")
            statements = con.extract_statements(translated)
            if not statements:
                raise duckdb.ParserException("empty query")
            wrote = False
            columns: list[str] = []
            types: list[str] = []
            rows: list[list[Any]] = []
            for i, stmt in enumerate(statements):
                is_select = stmt.type == duckdb.StatementType.SELECT
                wrote = wrote or not is_select
                if i == len(statements) - 1 and is_select:
                    rel = con.sql(stmt.query)
                    columns = list(rel.columns)
                    types = [_hive_type_from_duck(str(t)) for t in rel.types]
                    rows = [[_plain(v) for v in row] for row in rel.fetchall()]
                else:
                    con.execute(stmt.query)
            if wrote:
                self._sync_back(con, loaded)
        finally:
            con.close()
        prefix = "_c" if engine == "hive" else "_col"
        columns = [
            c if _PLAIN_IDENT_RE.fullmatch(c) else f"{prefix}{i}" for i, c in enumerate(columns)
        ]
        return columns, types, rows

    @staticmethod
    def _load_into_duckdb(con: duckdb.DuckDBPyConnection, dbname: str, tbl: _Table) -> None:
        columns = list(tbl.columns) + [("time", "long")]
        ddl = ", ".join(f"{_quote_ident(c)} {_duck_type(t)}" for c, t in columns)
        target = f"{_quote_ident(dbname)}.{_quote_ident(tbl.name)}"
        con.execute(f"CREATE TABLE {target} ({ddl})")
        if not tbl.rows:
            return
        visible = [tbl.visible_row(r) for r in tbl.rows]
        data: dict[str, Any] = {}
        for col, td_type in columns:
            values = [r[col] for r in visible]
            t = td_type.lower()
            if t in ("long", "int"):
                data[col] = pd.array(values, dtype="Int64")
            elif t in ("double", "float"):
                data[col] = pd.array(values, dtype="Float64")
            else:
                data[col] = pd.Series(values, dtype=object)
        frame = pd.DataFrame(data)
        con.register("__emulator_src", frame)
        try:
            con.execute(f"INSERT INTO {target} SELECT * FROM __emulator_src")
        finally:
            con.unregister("__emulator_src")

    def _sync_back(
        self, con: duckdb.DuckDBPyConnection, loaded: dict[tuple[str, str], _Table]
    ) -> None:
        present = {
            (s, t)
            for s, t in con.execute(
                "SELECT table_schema, table_name FROM information_schema.tables "
                "WHERE table_type = 'BASE TABLE'"
            ).fetchall()
        }
        for key in loaded:
            if key not in present:
                self._dbs[key[0]].tables.pop(key[1], None)
        now = int(_now())
        for schema, name in sorted(present):
            db = self._dbs.get(schema)
            if db is None:
                continue
            rel = con.sql(f"SELECT * FROM {_quote_ident(schema)}.{_quote_ident(name)}")
            cols = list(rel.columns)
            duck_types = [str(t) for t in rel.types]
            old = loaded.get((schema, name))
            old_types = dict(old.columns) if old else {}
            schema_cols = [
                (c, old_types.get(c) or _td_type_from_duck(t))
                for c, t in zip(cols, duck_types, strict=True)
                if c != "time"
            ]
            rows = []
            for values in rel.fetchall():
                row = {c: _plain(v) for c, v in zip(cols, values, strict=True)}
                if row.get("time") is None:
                    row["time"] = now
                rows.append(row)
            if old is None:
                self._check_name("table", name)
                tbl = _Table(name, schema_cols, rows, table_id=self._new_id_int())
                db.tables[name] = tbl
            elif schema_cols != old.columns or rows != [old.visible_row(r) for r in old.rows]:
                old.columns, old.rows, old.updated_at = schema_cols, rows, _now()


def _plain_seed(value: Any) -> Any:
    """Normalise a DataFrame cell for seeding (NaN/NA -> None, numpy -> python)."""
    if value is None:
        return None
    if isinstance(value, list | tuple):
        return [_plain_seed(v) for v in value]
    if hasattr(value, "tolist") and not isinstance(value, str | bytes):
        return _plain_seed(value.tolist())
    with contextlib.suppress(TypeError, ValueError):
        if pd.isna(value):
            return None
    if isinstance(value, pd.Timestamp):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    return _plain(value)


def _normalize_record(rec: Any) -> dict[str, Any] | None:
    """Return a bulk-import record as a row, or None when TD would reject it."""
    if not isinstance(rec, dict):
        return None
    row = {
        (k.decode("utf-8", "replace") if isinstance(k, bytes) else str(k)): v
        for k, v in rec.items()
    }
    t = row.get("time")
    if (
        isinstance(t, bool)
        or not isinstance(t, int | float)
        or (isinstance(t, float) and not math.isfinite(t))
    ):
        return None
    row["time"] = int(t)
    return row


def start_td_emulator(apikey: str = "test-apikey", *, databases: Iterable[str] = ()) -> TDEmulator:
    """Start a Treasure Data API emulator on ``127.0.0.1`` and return it.

    Use it as a context manager (``with start_td_emulator() as td: ...``) or call
    ``.stop()``.  Point clients at ``td.endpoint``: that URL has no trailing
    slash, so tdclient requests ``//v3/...`` exactly as with a real
    ``TD_API_SERVER`` written that way.

    Parameters
    ----------
    apikey : str, default "test-apikey"
        The only key accepted (``Authorization: TD1 <apikey>``).
    databases : iterable of str
        Databases to create up front.

    Returns
    -------
    TDEmulator
        The running emulator.
    """
    emulator = TDEmulator(apikey)
    for name in databases:
        emulator.create_database(name)
    emulator.start()
    return emulator
