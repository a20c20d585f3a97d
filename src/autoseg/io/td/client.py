"""The connection to the Treasure Data REST API: settings, pytd/td-client, retries, errors, jobs.

:class:`TDClient` builds the pytd client (and through it td-client's REST API object) on first
use, and routes every request through one retrying transport: GET requests (reads, status
polls), bulk-import part uploads (a part is stored under its name, so a re-upload replaces it)
and table deletes are retried on HTTP 429/5xx, time-outs and connection errors with exponential
back-off, a bounded number of times (:class:`autoseg.retry.RetryPolicy`). Requests that change
state (bulk-import commit, job issue, swap, create) are never re-sent; when their reply is lost
the caller checks what happened instead (session status, job list, table ids), inside
:meth:`TDClient.probing` so the check does not change which failure a message reports.

Upstream failures become one-line :class:`~autoseg.errors.ServiceError` messages
(:meth:`TDClient.operation`); the API key never appears in them, nor in log records.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import re
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import urllib3

from autoseg.errors import AutosegError, Interrupted, ServiceError, UsageError
from autoseg.retry import RetryPolicy, Transient, error_name
from autoseg.secrets import one_line, register_secret, scrub, scrubbed_logger

logger = scrubbed_logger(__name__)

DEFAULT_TD_API_SERVER = "https://api.treasuredata.com"
ENGINES = ("presto", "hive")
MISSING_KEY_MESSAGE = (
    "TD_API_KEY is not set: export your Treasure Data API key (Profile > API Keys) "
    "for --store td"
)
# What a request that never got a reply raises (refused, reset, timed out...).
TRANSPORT_ERRORS = (OSError, urllib3.exceptions.HTTPError, http.client.HTTPException)

# Only these POSTs may be re-sent: deleting a table twice is harmless (the second answers 404).
_IDEMPOTENT_POST_RE = re.compile(r"/v3/(table/delete|job/kill)/")
# A bulk-import part is stored under its name: uploading it again replaces it.
_IDEMPOTENT_PUT_RE = re.compile(r"/v3/bulk_import/upload_part/")
_MAX_DETAIL = 160


@dataclass
class _Failure:
    method: str
    path: str
    status: int | None
    error: str | None
    retries: int


class _RetryingSend:
    """Wraps ``tdclient``'s ``API.send_request``: the single place every TD request passes.

    tdclient itself retries GETs only on 5xx with fixed 5 s, 10 s, ... sleeps for up to ten
    minutes, never on 429, and never re-sends POSTs or part uploads. The client turns
    tdclient's own retries off (``max_cumul_retry_delay=-1``) and retries here instead: GETs,
    part uploads and idempotent POSTs, on 429, 5xx, time-outs and connection errors, with
    ``policy``. The last failure is remembered for the error message.
    """

    def __init__(self, send: Callable[..., Any], policy: RetryPolicy) -> None:
        self._send = send
        self.policy = policy
        self._lock = threading.Lock()
        self.last_failure: _Failure | None = None

    def reset(self) -> None:
        """Forget the last failure (each store operation starts clean)."""
        with self._lock:
            self.last_failure = None

    def _remember(self, failure: _Failure | None) -> None:
        with self._lock:
            self.last_failure = failure

    @contextlib.contextmanager
    def keeping_last_failure(self) -> Iterator[None]:
        """Requests made inside do not change the remembered failure."""
        saved = self.last_failure
        try:
            yield
        finally:
            self._remember(saved)

    def __call__(
        self,
        method: str,
        url: str,
        fields: dict[str, Any] | None = None,
        body: Any = None,
        headers: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> Any:
        path = urllib.parse.urlsplit(url).path
        method = method.upper()
        position = _stream_position(body)
        retryable = (
            method in ("GET", "HEAD")
            or (method == "POST" and bool(_IDEMPOTENT_POST_RE.search(path)))
            or (method == "PUT" and bool(_IDEMPOTENT_PUT_RE.search(path))
                and (position is not None or not hasattr(body, "read")))
        )

        def attempt(retries: int) -> Any:
            if retries and position is not None:
                body.seek(position)  # a part file is re-read from where the first try began
            try:
                response = self._send(method, url, fields=fields, body=body, headers=headers,
                                      **kwargs)
            except TRANSPORT_ERRORS as exc:
                self._remember(_Failure(method, path, None, error_name(exc), retries))
                raise
            if int(response.status) >= 400:
                self._remember(_Failure(method, path, int(response.status), None, retries))
            return response

        return self.policy.call(attempt, what=f"Treasure Data {method} {path}", log=logger,
                                retryable=retryable, errors=TRANSPORT_ERRORS,
                                transient=_transient_reply, discard=_release)


def _transient_reply(response: Any) -> Transient | None:
    status = int(response.status)
    if status == 429 or status >= 500:
        return Transient(f"answered HTTP {status}", response.headers.get("Retry-After"))
    return None


def _release(response: Any) -> None:
    """Return a retried reply's connection to the pool."""
    response.drain_conn()
    response.release_conn()


def _stream_position(body: Any) -> int | None:
    """Where a file-like request body starts, or ``None`` when it cannot be re-read."""
    if body is None or not hasattr(body, "read"):
        return None
    try:
        return int(body.tell()) if hasattr(body, "seek") else None
    except (OSError, ValueError):
        return None


class TDClient:
    """One Treasure Data account's REST API, with bounded retries and one-line errors.

    Parameters
    ----------
    apikey
        Treasure Data API key (never shown in messages or logs).
    endpoint
        TD API server, e.g. ``https://api.treasuredata.com`` (``TD_API_SERVER``); a bare host
        name means HTTPS.
    engine
        ``presto`` or ``hive``: the engine reads run on.
    max_retries, backoff_base, backoff_max
        The :class:`~autoseg.retry.RetryPolicy` of idempotent requests.
    timeout
        Seconds to wait for a connection and for each reply.
    poll_interval
        First wait between job status polls; it doubles up to 30 s.
    job_timeout
        Seconds a job may run before it is killed; ``None``: no limit.
    """

    def __init__(
        self,
        apikey: str,
        endpoint: str = DEFAULT_TD_API_SERVER,
        engine: str = "presto",
        *,
        max_retries: int = 4,
        backoff_base: float = 1.0,
        backoff_max: float = 30.0,
        timeout: float = 60.0,
        poll_interval: float = 2.0,
        job_timeout: float | None = None,
    ) -> None:
        if not apikey:
            raise UsageError(MISSING_KEY_MESSAGE)
        register_secret(apikey)
        if engine not in ENGINES:
            raise UsageError(f"--td-engine={engine!r} is not supported: use `presto` or `hive`")
        raw = endpoint.strip()
        url = raw if "://" in raw else f"https://{raw}"
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise UsageError(
                f"TD_API_SERVER={one_line(raw, _MAX_DETAIL)!r} is not a URL: use e.g. "
                "https://api.treasuredata.com"
            )
        if parts.scheme == "http" and parts.hostname not in ("127.0.0.1", "localhost", "::1"):
            logger.warning("TD_API_SERVER uses plain http: the API key travels unencrypted")
        if max_retries < 0 or backoff_base < 0 or timeout <= 0:
            raise UsageError("TD store settings: max_retries and backoff_base must be >= 0 and "
                             "timeout > 0")
        self._apikey = apikey
        self.endpoint = url
        self.host = parts.hostname
        self.engine = engine
        self.retry = RetryPolicy(max_retries, backoff_base, backoff_max)
        self.timeout = timeout
        self.poll_interval = poll_interval
        self.job_timeout = job_timeout
        self._pytd: Any = None
        self._transport: _RetryingSend | None = None
        # Set when the last run_job failed after a lost issue reply and the job is not in the
        # job list: it most likely never ran, but that cannot be proven.
        self.issue_uncertain = False

    # -- connection ---------------------------------------------------------------------------

    def pytd(self) -> Any:
        """The ``pytd.Client``, built on first use with the retrying transport in place."""
        if self._pytd is None:
            import pytd  # lazy: the local stores never pay for importing pytd and trino

            _quiet_pytd_logging()
            client = pytd.Client(
                apikey=self._apikey,
                endpoint=self.endpoint,
                database="information_schema",
                default_engine="hive",  # queries go through the job API (autoseg.io.td.reader)
                retry_post_requests=False,
                max_cumul_retry_delay=-1,  # tdclient's own retries off: _RetryingSend decides
                timeout=urllib3.Timeout(connect=self.timeout, read=self.timeout),
                # urllib3 may re-open a connection that failed before sending; it must never
                # re-send a request that reached the server (a POST could then run twice), nor
                # follow a redirect (the TD API does not redirect; a proxy that does is a
                # configuration error worth reporting).
                retries=urllib3.util.Retry(total=None, connect=2, read=0, status=0, other=0,
                                           redirect=0, raise_on_redirect=False),
            )
            api = client.api_client.api
            self._transport = _RetryingSend(api.send_request, self.retry)
            # tdclient builds every request through this one method; wrapping it on the
            # instance covers pytd's own calls (bulk import, status polls) as well.
            api.send_request = self._transport
            self._pytd = client
        return self._pytd

    @property
    def api(self) -> Any:
        """td-client's REST API object (``tdclient.api.API``)."""
        return self.pytd().api_client.api

    def close(self) -> None:
        """Close the HTTP connections."""
        if self._pytd is not None:
            with contextlib.suppress(Exception):
                self._pytd.close()
            self._pytd = None
            self._transport = None

    # -- errors -------------------------------------------------------------------------------

    def _last_failure(self) -> _Failure | None:
        return self._transport.last_failure if self._transport else None

    def _service_error(self, exc: BaseException, action: str) -> ServiceError:
        """One scrubbed line for an upstream failure (no upstream object is chained)."""
        from tdclient import errors as td_errors

        text = str(exc.args[0]) if isinstance(exc, RuntimeError) and exc.args else str(exc)
        status: int | None = None
        if isinstance(exc, td_errors.AuthError):
            status = 401
        elif isinstance(exc, td_errors.ForbiddenError):
            status = 403
        elif isinstance(exc, td_errors.NotFoundError):
            status = 404
        elif isinstance(exc, td_errors.AlreadyExistsError):
            status = 409
        else:
            match = re.match(r"\s*(\d{3}):", text)
            if match:
                status = int(match.group(1))
        failure = self._last_failure()
        transport_level = (
            "Retrying stopped" in text
            or isinstance(exc, TRANSPORT_ERRORS)
            or (isinstance(exc, RuntimeError) and "failed to upload" in text)
        )
        error = None
        retries = 0
        if status is None and transport_level and failure is not None:
            status, error, retries = failure.status, failure.error, failure.retries
        elif failure is not None and status is not None and failure.status == status:
            retries = failure.retries
        if status is None and error is None and transport_level:
            error = type(exc).__name__
        note = f", gave up after {retries} retries" if retries else ""
        if status == 401:
            msg = (f"Treasure Data rejected the API key (HTTP 401) while {action}: check "
                   "TD_API_KEY and TD_API_SERVER")
        elif status == 403:
            msg = (f"Treasure Data refused {action} (HTTP 403): the API key lacks permission; "
                   "use a key whose user has full access to the database, and check "
                   "TD_API_KEY and TD_API_SERVER")
        elif status == 404:
            msg = (f"Treasure Data answered not found (HTTP 404) while {action}: "
                   f"{_detail(text)}")
        elif status == 409:
            msg = (f"Treasure Data reported a conflict (HTTP 409) while {action}: "
                   f"{_detail(text)}; another job may be changing the same table: rerun "
                   "when it is done")
        elif status == 429:
            msg = (f"Treasure Data kept rate-limiting requests (HTTP 429) while {action}{note}: "
                   "rerun later")
        elif status is not None and status >= 500:
            msg = (f"Treasure Data failed (HTTP {status}) while {action}{note}: rerun later, or "
                   "check TD_API_SERVER")
        elif error is not None and "Timeout" in error:
            msg = (f"Treasure Data did not answer in time ({error}) while {action}{note}: check "
                   "TD_API_SERVER and the network, or rerun")
        elif error is not None:
            msg = (f"cannot reach Treasure Data at {self.host} ({error}) while {action}{note}: "
                   "check TD_API_SERVER and the network")
        elif status is not None and 300 <= status < 400:
            msg = (f"Treasure Data API at {self.host} redirected {action} (HTTP {status}), which "
                   "autoseg does not follow: set TD_API_SERVER to the https:// URL of your "
                   "region's API")
        elif status is not None:
            msg = f"Treasure Data refused {action} (HTTP {status}): {_detail(text)}"
        else:
            msg = f"Treasure Data failed while {action}: {_detail(text) or type(exc).__name__}"
        return ServiceError(scrub(msg))

    @contextlib.contextmanager
    def operation(
        self, action: str, passes: Callable[[BaseException], bool] | None = None
    ) -> Iterator[None]:
        """Run one store operation: upstream failures become one-line ServiceErrors.

        Parameters
        ----------
        action
            What the operation does, for messages (``"reading --input-table='db.t'"``).
        passes
            Says whether an exception is the caller's own (the streamed rows' iterator failed,
            not Treasure Data): such an exception propagates unchanged.
        """
        self.pytd()
        assert self._transport is not None
        self._transport.reset()
        try:
            yield
        except AutosegError:
            raise
        except Exception as exc:
            if passes is not None and passes(exc):
                raise
            # pytd wraps whatever stops an upload (even our SIGTERM -> Interrupted) in a
            # RuntimeError: an interruption must stay an interruption (exit code 130).
            interrupted = _interruption_in(exc)
            if interrupted is not None:
                raise interrupted from None
            raise self._service_error(exc, action) from None

    @contextlib.contextmanager
    def probing(self) -> Iterator[None]:
        """Checks made after a failure must not change which failure the message reports."""
        if self._transport is None:
            yield
            return
        with self._transport.keeping_last_failure():
            yield

    # -- small API helpers --------------------------------------------------------------------

    def list_tables(self, database: str) -> dict[str, dict[str, Any]] | None:
        """Tables of ``database`` by name, or ``None`` when it does not exist."""
        from tdclient import errors as td_errors

        try:
            return dict(self.api.list_tables(database))
        except td_errors.NotFoundError:
            return None

    @staticmethod
    def columns_of(info: Mapping[str, Any]) -> list[tuple[str, str]]:
        """``(name, TD type)`` of a table's columns from its ``list_tables`` entry."""
        out = []
        for entry in info.get("schema") or []:
            name = entry[2] if len(entry) > 2 and entry[2] else entry[0]
            out.append((str(name), str(entry[1])))
        return out

    @staticmethod
    def quote(identifier: str, engine: str) -> str:
        """``identifier`` quoted for ``engine``'s SQL."""
        # Names are validated to [a-z0-9_]; quoting only protects reserved words.
        return f"`{identifier}`" if engine == "hive" else f'"{identifier}"'

    def _find_job(self, token: str) -> str | None:
        """The id of a recent job whose query holds ``token`` (after a lost issue reply)."""
        for job in self.api.list_jobs(0, 99):
            if token in str(job.get("query") or ""):
                return str(job.get("job_id") or job.get("id"))
        return None

    def run_job(self, database: str, sql: str, engine: str, action: str) -> dict[str, Any]:
        """Issue one job (never re-sent), wait for it, return ``show_job``.

        Parameters
        ----------
        database
            The job's database.
        sql
            The query.
        engine
            ``presto`` or ``hive``.
        action
            What the job does, for messages.

        Returns
        -------
        dict
            The finished job's ``show_job`` record.

        Raises
        ------
        ServiceError
            When the job fails, is killed, or runs past ``job_timeout`` (then it is killed).
        """
        from tdclient import errors as td_errors

        self.issue_uncertain = False
        token = f"autoseg-{uuid.uuid4().hex}"
        query = f"-- {token}\n{sql}"
        try:
            job_id = str(self.api.query(query, type=engine, db=database))
        except (td_errors.AuthError, td_errors.ForbiddenError, td_errors.NotFoundError,
                td_errors.AlreadyExistsError):
            raise
        except Exception as exc:
            if re.match(r"\s*4\d\d:", str(exc)):
                raise
            failure = self._last_failure()
            reply_lost = failure is None or failure.status is None
            # The reply may be lost after TD queued the job: find it instead of re-issuing it.
            try:
                with self.probing():
                    found = self._find_job(token)
            except Exception:
                found = None
            if found is None:
                # Not in the job list: most likely never queued, but after a lost reply that
                # cannot be proven.
                self.issue_uncertain = reply_lost
                raise
            logger.warning("the reply to issuing job %s was lost; following the job", found)
            job_id = found
        started = time.monotonic()
        interval = self.poll_interval
        while True:
            status = self.api.job_status(job_id)
            if status == "success":
                return dict(self.api.show_job(job_id))
            if status in ("error", "killed"):
                info = self.api.show_job(job_id)
                stderr = str((info.get("debug") or {}).get("stderr") or "")
                lines = [ln for ln in stderr.splitlines() if ln.strip()]
                reason = one_line(lines[-1], _MAX_DETAIL) if lines else "no error output"
                raise ServiceError(
                    f"Treasure Data job {job_id} ended with status {status} while {action}: "
                    f"{reason}: see the job in the TD console"
                )
            if self.job_timeout is not None and time.monotonic() - started > self.job_timeout:
                with contextlib.suppress(Exception):
                    self.api.kill(job_id)
                raise ServiceError(
                    f"Treasure Data job {job_id} did not finish within {self.job_timeout:g} s "
                    f"while {action}: it was killed; rerun, or allow more time"
                )
            time.sleep(interval)
            interval = min(max(interval * 2, 0.0), 30.0)


def _quiet_pytd_logging() -> None:
    """Drop the plain stderr handler pytd attaches to its logger when imported.

    It would print INFO lines ("creating bulk import session ...") in its own format, breaking
    ``--log-format json``; without it pytd's records propagate like any library's.
    """
    pytd_logger = logging.getLogger("pytd")
    for handler in list(pytd_logger.handlers):
        if type(handler) is logging.StreamHandler:
            pytd_logger.removeHandler(handler)


def _interruption_in(exc: BaseException) -> Interrupted | None:
    """The :class:`Interrupted` an upstream exception was caused by, if any."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, Interrupted):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def _detail(text: str) -> str:
    """The human part of a tdclient error text (``'404: List tables failed: {json}'``)."""
    text = str(text)
    start = text.find("{")
    if start >= 0:
        with contextlib.suppress(ValueError):
            payload = json.loads(text[start:])
            if isinstance(payload, dict):
                message = payload.get("message") or payload.get("error") or payload.get("text")
                if message:
                    prefix = re.sub(r"^\s*\d{3}:\s*", "", text[:start]).strip().rstrip(":")
                    return one_line(f"{prefix}: {message}" if prefix else str(message),
                                    _MAX_DETAIL)
    return one_line(re.sub(r"^\s*\d{3}:\s*", "", text), _MAX_DETAIL)
