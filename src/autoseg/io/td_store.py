"""Treasure Data as a table store: reads run as TD jobs, writes go through pytd bulk import.

Reads
    ``read_table`` checks the table list first (a missing table is an input error, not a failed
    job), then runs ``SELECT *`` as a TD job with the chosen engine (``presto`` or ``hive``)
    through the REST job API, and turns the msgpack result into Arrow using the job's result
    schema. Both engines go through the job API -- the same path as pytd's
    ``query(..., force_tdclient=True)`` -- because pytd's default Presto path talks Trino to
    ``api-presto.*`` on port 443 (it cannot reach a proxy or an emulator) and returns untyped
    rows, and one path means one set of retries, error messages and tests.

Writes (all or nothing where Treasure Data allows it)
    Every frame is first bulk-imported (``writer="bulk_import"``, ``fmt="msgpack"``: the csv
    format re-types ``"00123"`` and uploads the index) into its own staging table
    ``<table>_autoseg_tmp_<random>`` in the target's database. Only when every staging table is
    complete are the targets changed: an overwrite swaps the staging table in
    (``POST /v3/table/swap``), an append runs ONE server-side ``INSERT INTO target SELECT ...
    FROM staging`` Hive job. A failure before that point leaves every target untouched; a failed
    swap is undone by swapping back. Staging tables are deleted afterwards, and on any failure
    (``KeyboardInterrupt`` included).

    Streamed rows (:class:`~autoseg.io.base.RowChunks`, e.g. one Dask partition at a time) go
    into the staging table the same way without ever being all in memory: chunks are grouped
    into bulk imports of at most ``stream_rows_per_import`` rows; the first import creates the
    staging table, each later one appends to it, each in its own bulk-import session
    (``<staging>_<n>``). Only then do the targets change, as above, so a stream that fails
    part-way changes no target.

Column names are never changed silently: Treasure Data lower-cases names and turns other
characters into ``_``; a frame whose names would change (or collide) is refused before any call.
A frame without a ``time`` column gains one (the upload time, integer unix seconds), as every TD
table has one.

Retries: GET requests (reads, status polls), bulk-import part uploads (a part is stored under
its name, so a re-upload replaces it) and table deletes are retried on HTTP 429/5xx, time-outs
and connection errors with exponential back-off, a bounded number of times. Requests that change
state (bulk-import commit, job issue, swap, create) are never re-sent; when their reply is lost
the store checks what happened instead (session status, job list, table ids).

The API key never appears in messages or log records this module or the TD clients produce.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import re
import secrets
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import urllib3

from autoseg.errors import (
    AutosegError,
    InputDataError,
    Interrupted,
    ServiceError,
    UsageError,
)
from autoseg.io.base import RowChunks, TableWrite
from autoseg.names import TableName, validate_td_table_name
from autoseg.retry import backoff_delay

logger = logging.getLogger(__name__)

DEFAULT_TD_API_SERVER = "https://api.treasuredata.com"
ENGINES = ("presto", "hive")
MODES = ("overwrite", "append")
STAGING_INFIX = "_autoseg_tmp_"
MISSING_KEY_MESSAGE = (
    "TD_API_KEY is not set: export your Treasure Data API key (Profile > API Keys) "
    "for --store td"
)

# Treasure Data's naming rules (docs: "Naming Requirements and Restrictions").
_TD_COLUMN_RE = re.compile(r"[a-z_][a-z0-9_]*")
# Only these POSTs may be re-sent: deleting a table twice is harmless (the second answers 404).
_IDEMPOTENT_POST_RE = re.compile(r"/v3/(table/delete|job/kill)/")
# A bulk-import part is stored under its name: uploading it again replaces it.
_IDEMPOTENT_PUT_RE = re.compile(r"/v3/bulk_import/upload_part/")
_RESULT_BATCH_ROWS = 100_000
DEFAULT_STREAM_ROWS_PER_IMPORT = 1_000_000
# Room kept after a staging table's name for the suffix ``_<n>`` of its bulk-import sessions.
_SESSION_SUFFIX_ROOM = 8
_MAX_DETAIL = 160

# --------------------------------------------------------------------------------------------
# Secrets: scrubbed from every log record of the TD client libraries and from our messages
# --------------------------------------------------------------------------------------------

_SECRETS: set[str] = set()
_SECRETS_LOCK = threading.Lock()
_TD1_RE = re.compile(r"(TD1\s+)[^\s'\"]+", re.IGNORECASE)
# tdclient logs request headers (with the Authorization header) at DEBUG; filters on the loggers
# that create records apply before any handler, including pytest's caplog and root handlers.
_SCRUBBED_LOGGERS = (
    "tdclient", "tdclient.api", "tdclient.job_api", "tdclient.util", "tdclient.bulk_import_model",
    "pytd", "pytd.client", "pytd.writer", "pytd.table", "pytd.query_engine",
    "urllib3", "urllib3.connectionpool", "urllib3.connection", "urllib3.response",
    "urllib3.poolmanager", "urllib3.util.retry", __name__,
)


def scrub(text: str) -> str:
    """Return ``text`` with every registered API key and ``TD1 <key>`` value masked.

    Parameters
    ----------
    text
        Any text that may hold a key (an upstream error message, a log line).

    Returns
    -------
    str
        The text with keys replaced by ``***``.
    """
    with _SECRETS_LOCK:
        known = sorted(_SECRETS, key=len, reverse=True)
    for secret in known:
        text = text.replace(secret, "***")
    return _TD1_RE.sub(r"\1***", text)


class _ScrubFilter(logging.Filter):
    """Rewrites log records that would show a registered secret."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken record is not ours to fix; keep it as it is
            return True
        cleaned = scrub(message)
        if cleaned != message:
            record.msg, record.args = cleaned, ()
        return True


_FILTER = _ScrubFilter()


def register_secret(secret: str) -> None:
    """Mask ``secret`` in every later message and in log records of the TD client libraries.

    Parameters
    ----------
    secret
        An API key (empty strings are ignored).
    """
    if not secret:
        return
    with _SECRETS_LOCK:
        _SECRETS.add(secret)
    for name in _SCRUBBED_LOGGERS:
        target = logging.getLogger(name)
        if _FILTER not in target.filters:
            target.addFilter(_FILTER)


def _one_line(text: str, limit: int = _MAX_DETAIL) -> str:
    text = " ".join(scrub(str(text)).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --------------------------------------------------------------------------------------------
# Name and column rules (usable before any work starts)
# --------------------------------------------------------------------------------------------


def td_column_name(column: str) -> str:
    """The name Treasure Data (pytd) would store ``column`` under.

    pytd lower-cases names and replaces every character other than ASCII letters and digits
    with ``_``.

    Parameters
    ----------
    column
        A column name.

    Returns
    -------
    str
    """
    return re.sub(r"[^a-zA-Z0-9]", "_", str(column)).lower()


def check_td_columns(columns: Sequence[str], where: str) -> None:
    """Refuse column names Treasure Data would change, silently merge or alias.

    Parameters
    ----------
    columns
        Column names of a frame about to be written.
    where
        What the columns belong to, for the message (e.g. ``"output table 'db.t'"``).

    Raises
    ------
    InputDataError
        When two names collide after TD's normalisation (naming both), when a name would be
        changed, or when it starts with a digit (TD replaces such names with an alias).
    """
    seen: dict[str, str] = {}
    for column in columns:
        normal = td_column_name(column)
        if normal in seen:
            raise InputDataError(
                f"columns {seen[normal]!r} and {str(column)!r} of {where} would both become "
                f"{normal!r} on Treasure Data (it lower-cases names and turns other characters "
                "into '_'): rename one of them"
            )
        seen[normal] = str(column)
    for column in columns:
        normal = td_column_name(column)
        if normal != column or not normal:
            raise InputDataError(
                f"column {str(column)!r} of {where} would be renamed to {normal!r} by Treasure "
                "Data: rename it to lower-case letters, digits and underscores"
            )
        if not _TD_COLUMN_RE.fullmatch(normal):
            raise InputDataError(
                f"column {str(column)!r} of {where} starts with a digit, which Treasure Data "
                "replaces with an alias: rename it to start with a letter or '_'"
            )


# --------------------------------------------------------------------------------------------
# Frames: Arrow/pandas -> the plain pandas frame pytd's msgpack writer handles faithfully
# --------------------------------------------------------------------------------------------


def _to_text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, list | tuple | dict):
        return json.dumps(value, default=str)
    return str(value)


def _arrow_column_for_td(column: pa.ChunkedArray) -> Any:
    """One Arrow column as values pytd writes without re-typing (TD has long/double/string)."""
    kind = column.type
    if pa.types.is_dictionary(kind):
        column = pc.cast(column, kind.value_type)
        kind = kind.value_type
    if pa.types.is_integer(kind):
        if column.null_count:
            return pd.array(column.to_pylist(), dtype="Int64")
        return column.to_numpy().astype("int64")
    if pa.types.is_floating(kind) or pa.types.is_decimal(kind):
        return pc.cast(column, pa.float64()).to_numpy(zero_copy_only=False)
    if pa.types.is_boolean(kind):  # pytd stores booleans as "true"/"false" strings
        return pd.Series(column.to_pylist(), dtype=object)
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return pd.Series(column.to_pylist(), dtype=object)
    if pa.types.is_timestamp(kind):
        values = column.to_pandas()
        return pd.Series([None if pd.isna(v) else str(v) for v in values], dtype=object)
    if pa.types.is_date(kind):
        return pd.Series([None if v is None else v.isoformat() for v in column.to_pylist()],
                         dtype=object)
    if pa.types.is_list(kind) or pa.types.is_large_list(kind):
        return pd.Series(column.to_pylist(), dtype=object)
    if pa.types.is_null(kind):
        return pd.Series([None] * len(column), dtype=object)
    return pd.Series([_to_text(v) for v in column.to_pylist()], dtype=object)


def _frame_for_td(frame: pa.Table | pd.DataFrame) -> pd.DataFrame:
    """Arrow (or pandas) rows as a plain pandas frame: int64/Int64, float64, objects."""
    if isinstance(frame, pd.DataFrame):
        try:
            frame = pa.Table.from_pandas(frame, preserve_index=False)
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
            # Mixed-type object columns: pytd writes them as text, which is what they are.
            plain = frame.reset_index(drop=True).copy()
            plain.columns = [str(c) for c in plain.columns]
            return plain
    data = {name: _arrow_column_for_td(frame.column(i))
            for i, name in enumerate(frame.column_names)}
    return pd.DataFrame(data, index=pd.RangeIndex(frame.num_rows))


def _frame_columns(frame: pa.Table | pd.DataFrame) -> list[str]:
    if isinstance(frame, pa.Table):
        return list(frame.column_names)
    return [str(c) for c in frame.columns]


def _check_time_column(frame: pd.DataFrame, where: str) -> None:
    """TD's ``time`` column is the row's integer unix time; anything else becomes an error row."""
    if "time" not in frame.columns:
        return
    values = frame["time"]
    if values.dtype.kind not in "iu" and str(values.dtype) not in ("Int64", "UInt64"):
        raise InputDataError(
            f"column 'time' of {where} holds {values.dtype} values, but Treasure Data needs "
            "integer unix seconds there: convert it, or rename it (e.g. event_time)"
        )
    if values.isna().any():
        raise InputDataError(
            f"column 'time' of {where} has missing values, which Treasure Data rejects: fill "
            "them with integer unix seconds, or rename the column"
        )


def _td_type_of(series: pd.Series) -> str:
    kind = series.dtype.kind
    if kind in "iu":
        return "long"
    if kind == "f":
        return "double"
    return "string"


def _td_type_of_arrow(kind: pa.DataType) -> str:
    """The type TD gives non-null values of an Arrow type as :func:`_frame_for_td` uploads them."""
    if pa.types.is_dictionary(kind):
        kind = kind.value_type
    if pa.types.is_integer(kind):
        return "long"
    if pa.types.is_floating(kind) or pa.types.is_decimal(kind):
        return "double"
    if pa.types.is_list(kind) or pa.types.is_large_list(kind):
        return f"array<{_td_type_of_arrow(kind.value_type)}>"
    return "string"  # strings, booleans ("true"/"false"), dates and timestamps go up as text


# --------------------------------------------------------------------------------------------
# Transport: bounded retries of idempotent requests, memory of the last failure
# --------------------------------------------------------------------------------------------


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
    minutes, never on 429, and never re-sends POSTs or part uploads. The store turns tdclient's
    own retries off (``max_cumul_retry_delay=-1``) and retries here instead: GETs, part uploads
    and idempotent POSTs, on 429, 5xx, time-outs and connection errors, ``max_retries`` times
    with exponential back-off.
    """

    def __init__(
        self,
        send: Callable[..., Any],
        *,
        max_retries: int,
        backoff_base: float,
        backoff_max: float,
    ) -> None:
        self._send = send
        self.max_retries = max_retries
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self._lock = threading.Lock()
        self.last_failure: _Failure | None = None

    def reset(self) -> None:
        """Forget the last failure (each store operation starts clean)."""
        with self._lock:
            self.last_failure = None

    def _remember(self, failure: _Failure) -> None:
        with self._lock:
            self.last_failure = failure

    def delay(self, attempt: int, retry_after: str | None = None) -> float:
        """Seconds to wait before retry number ``attempt + 1``."""
        return backoff_delay(attempt, self.backoff_base, self.backoff_max, retry_after)

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
        attempt = 0
        while True:
            if attempt and position is not None:
                body.seek(position)  # a part file is re-read from where the first try began
            try:
                response = self._send(method, url, fields=fields, body=body, headers=headers,
                                      **kwargs)
            except (OSError, urllib3.exceptions.HTTPError, http.client.HTTPException) as exc:
                # MaxRetryError only wraps the real cause (refused, reset, timed out...).
                cause = getattr(exc, "reason", None)
                name = type(cause if isinstance(cause, BaseException) else exc).__name__
                self._remember(_Failure(method, path, None, name, attempt))
                if not retryable or attempt >= self.max_retries:
                    raise
                wait = self.delay(attempt)
                logger.warning("Treasure Data %s %s failed (%s); retry %d of %d in %.1f s",
                               method, path, name, attempt + 1, self.max_retries, wait)
            else:
                status = int(response.status)
                if status >= 400:
                    self._remember(_Failure(method, path, status, None, attempt))
                transient = status == 429 or status >= 500
                if not (retryable and transient and attempt < self.max_retries):
                    return response
                wait = self.delay(attempt, response.headers.get("Retry-After"))
                with contextlib.suppress(Exception):  # free the pooled connection
                    response.drain_conn()
                    response.release_conn()
                logger.warning("Treasure Data %s %s answered HTTP %d; retry %d of %d in %.1f s",
                               method, path, status, attempt + 1, self.max_retries, wait)
            time.sleep(wait)
            attempt += 1


def _stream_position(body: Any) -> int | None:
    """Where a file-like request body starts, or ``None`` when it cannot be re-read."""
    if body is None or not hasattr(body, "read"):
        return None
    try:
        return int(body.tell()) if hasattr(body, "seek") else None
    except (OSError, ValueError):
        return None


# --------------------------------------------------------------------------------------------
# Result typing
# --------------------------------------------------------------------------------------------


def _arrow_type(td_type: str) -> pa.DataType:
    """Arrow type for a Hive/Presto result column type."""
    t = td_type.strip().lower()
    if t in ("bigint", "int", "integer", "smallint", "tinyint", "long"):
        return pa.int64()
    if t in ("double", "float", "real") or t.startswith("decimal"):
        return pa.float64()
    if t == "boolean":
        return pa.bool_()
    for start, end in (("array<", ">"), ("array(", ")")):
        if t.startswith(start) and t.endswith(end):
            return pa.list_(_arrow_type(t[len(start):-len(end)]))
    return pa.string()


def _column_array(values: list[Any], kind: pa.DataType) -> pa.Array:
    try:
        return pa.array(values, type=kind)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        pass
    if not pa.types.is_string(kind):
        with contextlib.suppress(pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
            return pa.array(values)
    return pa.array([_to_text(v) for v in values], type=pa.string())


def _rows_to_batch(rows: list[list[Any]], names: list[str],
                   kinds: list[pa.DataType]) -> list[pa.Array]:
    width = len(names)
    columns: list[list[Any]] = [[] for _ in range(width)]
    for row in rows:
        for i in range(width):
            columns[i].append(row[i] if i < len(row) else None)
    return [_column_array(columns[i], kinds[i]) for i in range(width)]


def _assemble(names: list[str], kinds: list[pa.DataType],
              batches: list[list[pa.Array]]) -> pa.Table:
    """Join result batches; a column whose values did not fit its type in some batch is text."""
    if not batches:
        return pa.table({n: pa.array([], type=k) for n, k in zip(names, kinds, strict=True)})
    columns = []
    for i in range(len(names)):
        chunks = [batch[i] for batch in batches]
        types = {c.type for c in chunks}
        if len(types) > 1:
            chunks = [c if pa.types.is_string(c.type) else pc.cast(c, pa.string())
                      if not pa.types.is_list(c.type)
                      else pa.array([_to_text(v) for v in c.to_pylist()], pa.string())
                      for c in chunks]
        columns.append(pa.chunked_array(chunks))
    return pa.Table.from_arrays(columns, names=names)


# --------------------------------------------------------------------------------------------
# The store
# --------------------------------------------------------------------------------------------


@dataclass
class _Plan:
    """One table write as it moves through stage -> commit -> clean-up.

    ``groups`` are the rows as the plain frames that one bulk import each uploads: the whole
    frame of an Arrow or pandas write or, for :class:`RowChunks`, a lazy generator that yields
    the stream in groups of bounded size (a plan never holds a streamed table). ``empty`` is a
    zero-row frame with the upload dtypes: the table's schema when there are no rows at all.
    """

    write: TableWrite
    database: str
    table: str
    columns: list[str]
    empty: pd.DataFrame
    groups: Iterable[pd.DataFrame]
    staging: str
    schema: pa.Schema | None = None  # the Arrow schema of streamed rows
    upload_time: int = 0  # ``time`` of rows without one: one value for the whole write
    rows: int = 0
    imports: int = 0
    # Columns without a value in the first import, and those of them a later import filled.
    valueless_first: set[str] = field(default_factory=set)
    valued_later: set[str] = field(default_factory=set)
    target_exists: bool = False
    target_columns: list[tuple[str, str]] = field(default_factory=list)
    staging_made: bool = False
    sessions_open: list[str] = field(default_factory=list)
    swapped: bool = False
    target_created: bool = False
    appended: bool = False
    append_uncertain: bool = False
    keep_staging: bool = False

    @property
    def name(self) -> str:
        return f"{self.database}.{self.table}"

    @property
    def appends(self) -> bool:
        return self.write.mode == "append" and self.target_exists


def td_store_from_environment(env: Mapping[str, str], engine: str, **settings: Any) -> TDStore:
    """Build a :class:`TDStore` from ``TD_API_KEY`` and ``TD_API_SERVER``.

    Parameters
    ----------
    env
        The environment (``os.environ`` at the CLI edge; the library never reads it itself).
    engine
        ``presto`` or ``hive`` (``--td-engine``).
    **settings
        Retry and time-out settings passed on to :class:`TDStore`.

    Returns
    -------
    TDStore

    Raises
    ------
    UsageError
        When ``TD_API_KEY`` is missing or empty, or ``TD_API_SERVER`` is not a URL.
    """
    apikey = (env.get("TD_API_KEY") or "").strip()
    if not apikey:
        raise UsageError(MISSING_KEY_MESSAGE)
    endpoint = (env.get("TD_API_SERVER") or "").strip() or DEFAULT_TD_API_SERVER
    return TDStore(apikey, endpoint, engine, **settings)


class TDStore:
    """Tables in Treasure Data (``dbname.table_name``), read and written all or nothing.

    Parameters
    ----------
    apikey
        Treasure Data API key (never shown in messages or logs).
    endpoint
        TD API server, e.g. ``https://api.treasuredata.com`` (``TD_API_SERVER``); a bare host
        name means HTTPS.
    engine
        ``presto`` (default) or ``hive``: the engine reads run on. The append step always runs
        as a Hive job.
    max_retries
        How often an idempotent request (GET, part upload, table delete) is retried on HTTP
        429/5xx, time-outs and connection errors.
    backoff_base, backoff_max
        Retry ``n`` (from 0) waits ``min(backoff_base * 2**n, backoff_max)`` seconds (longer
        when a 429 reply asks for it with ``Retry-After``, still capped).
    timeout
        Seconds to wait for a connection and for each reply.
    poll_interval
        First wait between job status polls; it doubles up to 30 s.
    job_timeout
        Seconds a query or append job may run before it is killed; ``None``: no limit.
    stream_rows_per_import
        Most rows of a streamed write (:class:`RowChunks`) uploaded by one bulk import: chunks
        are grouped up to this many rows, so memory stays bounded whatever the table's size.
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
        stream_rows_per_import: int = DEFAULT_STREAM_ROWS_PER_IMPORT,
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
                f"TD_API_SERVER={_one_line(raw)!r} is not a URL: use e.g. "
                "https://api.treasuredata.com"
            )
        if parts.scheme == "http" and parts.hostname not in ("127.0.0.1", "localhost", "::1"):
            logger.warning("TD_API_SERVER uses plain http: the API key travels unencrypted")
        if max_retries < 0 or backoff_base < 0 or timeout <= 0:
            raise UsageError("TD store settings: max_retries and backoff_base must be >= 0 and "
                             "timeout > 0")
        if stream_rows_per_import < 1:
            raise UsageError(f"TD store settings: stream_rows_per_import="
                             f"{stream_rows_per_import} must be >= 1")
        self._apikey = apikey
        self.endpoint = url
        self.host = parts.hostname
        self.engine = engine
        self.max_retries = max_retries
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.timeout = timeout
        self.poll_interval = poll_interval
        self.job_timeout = job_timeout
        self.stream_rows_per_import = stream_rows_per_import
        self.description = f"td:{self.host} ({engine})"
        self._pytd: Any = None
        self._transport: _RetryingSend | None = None
        self._issue_uncertain = False
        # What the streamed rows' own iterator raised during the current write, if anything:
        # the caller's failure, not Treasure Data's, so it propagates unchanged.
        self._source_failure: BaseException | None = None

    # -- connection ---------------------------------------------------------------------------

    def _client(self) -> Any:
        if self._pytd is None:
            import pytd  # lazy: the local stores never pay for importing pytd and trino

            _quiet_pytd_logging()
            client = pytd.Client(
                apikey=self._apikey,
                endpoint=self.endpoint,
                database="information_schema",
                default_engine="hive",  # queries go through the job API (module docstring)
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
            self._transport = _RetryingSend(api.send_request, max_retries=self.max_retries,
                                            backoff_base=self.backoff_base,
                                            backoff_max=self.backoff_max)
            # tdclient builds every request through this one method; wrapping it on the
            # instance covers pytd's own calls (bulk import, status polls) as well.
            api.send_request = self._transport
            self._pytd = client
        return self._pytd

    @property
    def _api(self) -> Any:
        return self._client().api_client.api

    def check_columns(self, name: TableName, columns: list[str]) -> None:
        """Refuse columns Treasure Data would rename or merge (see :func:`check_td_columns`)."""
        check_td_columns(columns, f"output table {str(name)!r}")

    def close(self) -> None:
        """Close the HTTP connections."""
        if self._pytd is not None:
            with contextlib.suppress(Exception):
                self._pytd.close()
            self._pytd = None
            self._transport = None

    def __enter__(self) -> TDStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- errors -------------------------------------------------------------------------------

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
        failure = self._transport.last_failure if self._transport else None
        transport_level = (
            "Retrying stopped" in text
            or isinstance(exc, OSError | urllib3.exceptions.HTTPError | http.client.HTTPException)
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
    def _operation(self, action: str) -> Iterator[None]:
        """Run one store operation: upstream failures become one-line ServiceErrors."""
        self._client()
        assert self._transport is not None
        self._transport.reset()
        try:
            yield
        except AutosegError:
            raise
        except Exception as exc:
            if exc is self._source_failure:
                raise  # the streamed rows' iterator failed: not a Treasure Data failure
            # pytd wraps whatever stops an upload (even our SIGTERM -> Interrupted) in a
            # RuntimeError: an interruption must stay an interruption (exit code 130).
            interrupted = _interruption_in(exc)
            if interrupted is not None:
                raise interrupted from None
            raise self._service_error(exc, action) from None

    @contextlib.contextmanager
    def _probing(self) -> Iterator[None]:
        """Checks made after a failure must not change which failure the message reports."""
        saved = self._transport.last_failure if self._transport else None
        try:
            yield
        finally:
            if self._transport is not None:
                with self._transport._lock:
                    self._transport.last_failure = saved

    # -- small API helpers --------------------------------------------------------------------

    def _list_tables(self, database: str) -> dict[str, dict[str, Any]] | None:
        """Tables of ``database`` by name, or ``None`` when it does not exist."""
        from tdclient import errors as td_errors

        try:
            return dict(self._api.list_tables(database))
        except td_errors.NotFoundError:
            return None

    @staticmethod
    def _columns_of(info: Mapping[str, Any]) -> list[tuple[str, str]]:
        out = []
        for entry in info.get("schema") or []:
            name = entry[2] if len(entry) > 2 and entry[2] else entry[0]
            out.append((str(name), str(entry[1])))
        return out

    def _quote(self, identifier: str, engine: str) -> str:
        # Names are validated to [a-z0-9_]; quoting only protects reserved words.
        return f"`{identifier}`" if engine == "hive" else f'"{identifier}"'

    def _find_job(self, token: str) -> str | None:
        """The id of a recent job whose query holds ``token`` (after a lost issue reply)."""
        for job in self._api.list_jobs(0, 99):
            if token in str(job.get("query") or ""):
                return str(job.get("job_id") or job.get("id"))
        return None

    def _run_job(self, database: str, sql: str, engine: str, action: str) -> dict[str, Any]:
        """Issue one job (never re-sent), wait for it, return ``show_job``."""
        from tdclient import errors as td_errors

        token = f"autoseg-{uuid.uuid4().hex}"
        query = f"-- {token}\n{sql}"
        try:
            job_id = str(self._api.query(query, type=engine, db=database))
        except (td_errors.AuthError, td_errors.ForbiddenError, td_errors.NotFoundError,
                td_errors.AlreadyExistsError):
            raise
        except Exception as exc:
            if re.match(r"\s*4\d\d:", str(exc)):
                raise
            failure = self._transport.last_failure if self._transport else None
            reply_lost = failure is None or failure.status is None
            # The reply may be lost after TD queued the job: find it instead of re-issuing it.
            try:
                with self._probing():
                    found = self._find_job(token)
            except Exception:
                found = None
            if found is None:
                # Not in the job list: most likely never queued, but after a lost reply that
                # cannot be proven.
                self._issue_uncertain = reply_lost
                raise
            logger.warning("the reply to issuing job %s was lost; following the job", found)
            job_id = found
        started = time.monotonic()
        interval = self.poll_interval
        while True:
            status = self._api.job_status(job_id)
            if status == "success":
                return dict(self._api.show_job(job_id))
            if status in ("error", "killed"):
                info = self._api.show_job(job_id)
                stderr = str((info.get("debug") or {}).get("stderr") or "")
                lines = [ln for ln in stderr.splitlines() if ln.strip()]
                reason = _one_line(lines[-1]) if lines else "no error output"
                raise ServiceError(
                    f"Treasure Data job {job_id} ended with status {status} while {action}: "
                    f"{reason}: see the job in the TD console"
                )
            if self.job_timeout is not None and time.monotonic() - started > self.job_timeout:
                with contextlib.suppress(Exception):
                    self._api.kill(job_id)
                raise ServiceError(
                    f"Treasure Data job {job_id} did not finish within {self.job_timeout:g} s "
                    f"while {action}: it was killed; rerun, or allow more time"
                )
            time.sleep(interval)
            interval = min(max(interval * 2, 0.0), 30.0)

    def _fetch_result(self, job_id: str, info: Mapping[str, Any]) -> pa.Table:
        schema = info.get("hive_result_schema") or []
        names = [str(entry[0]) for entry in schema]
        kinds = [_arrow_type(str(entry[1])) for entry in schema]
        attempt = 0
        while True:
            try:
                batches: list[list[pa.Array]] = []
                rows: list[list[Any]] = []
                for row in self._api.job_result_format_each(job_id, "msgpack"):
                    rows.append(list(row))
                    if len(rows) >= _RESULT_BATCH_ROWS:
                        batches.append(_rows_to_batch(rows, names, kinds))
                        rows = []
                if rows:
                    batches.append(_rows_to_batch(rows, names, kinds))
                return _assemble(names, kinds, batches)
            except (OSError, urllib3.exceptions.HTTPError, http.client.HTTPException) as exc:
                # A result download cut mid-stream is simply downloaded again (a GET).
                assert self._transport is not None
                if attempt >= self.max_retries:
                    raise
                wait = self._transport.delay(attempt)
                logger.warning("downloading the result of job %s failed (%s); retry %d of %d",
                               job_id, type(exc).__name__, attempt + 1, self.max_retries)
                time.sleep(wait)
                attempt += 1

    # -- reads --------------------------------------------------------------------------------

    def table_columns(self, name: TableName) -> list[str] | None:
        """Column names of ``name`` (``time`` last), or ``None`` when it does not exist.

        Parameters
        ----------
        name
            ``dbname.table_name``.

        Returns
        -------
        list of str or None
        """
        validate_td_table_name(name, "table")
        assert name.database is not None
        with self._operation(f"reading the columns of {name}"):
            tables = self._list_tables(name.database)
            if tables is None or name.table not in tables:
                return None
            columns = [c for c, _ in self._columns_of(tables[name.table])]
            return [c for c in columns if c != "time"] + ["time"]

    def read_table(self, name: TableName) -> pa.Table:
        """Read every row of ``name`` (``SELECT *`` as a TD job), ``time`` column included.

        Parameters
        ----------
        name
            ``dbname.table_name``.

        Returns
        -------
        pyarrow.Table
            Columns typed from the job's result schema: integers as int64, floating point as
            float64, strings as strings (``"00123"`` stays a string), arrays as lists.

        Raises
        ------
        UsageError
            When the name breaks TD's naming rules.
        InputDataError
            When the database or table does not exist (checked before any query runs).
        ServiceError
            When Treasure Data fails or refuses.
        """
        validate_td_table_name(name, "--input-table")
        assert name.database is not None
        action = f"reading --input-table={str(name)!r}"
        with self._operation(action):
            tables = self._list_tables(name.database)
            if tables is None:
                raise InputDataError(
                    f"--input-table={str(name)!r}: database {name.database!r} does not exist on "
                    f"Treasure Data ({self.host}) or the API key cannot see it: check the name"
                )
            if name.table not in tables:
                raise InputDataError(
                    f"--input-table={str(name)!r} does not exist on Treasure Data "
                    f"({self.host}): check the name (dbname.table_name) and that the API key "
                    "can read it"
                )
            q = self._quote
            sql = (f"SELECT * FROM {q(name.database, self.engine)}."
                   f"{q(name.table, self.engine)}")
            info = self._run_job(name.database, sql, self.engine, action)
            return self._fetch_result(str(info.get("job_id")), info)

    # -- writes -------------------------------------------------------------------------------

    def _plan(self, write: TableWrite) -> _Plan:
        """Validate one write without any call: name, mode, columns, ``time``.

        Streamed rows are checked from their schema here (names, the ``time`` column's type)
        and group by group while they are uploaded (missing ``time`` values).
        """
        validate_td_table_name(write.name, "output table")
        if write.mode not in MODES:
            raise UsageError(f"--output-mode={write.mode!r} is not supported: use "
                             "`overwrite` or `append`")
        assert write.name.database is not None
        where = f"output table {str(write.name)!r}"
        schema: pa.Schema | None = None
        groups: Iterable[pd.DataFrame]
        if isinstance(write.frame, RowChunks):
            schema = write.frame.schema
            check_td_columns(list(schema.names), where)
            # The schema converts to the same dtypes as any group of rows would (integers
            # with missing values aside, which are checked per group).
            empty = _frame_for_td(schema.empty_table())
            _check_time_column(empty, where)
            groups = self._stream_groups(write.frame, where)
        else:
            check_td_columns(_frame_columns(write.frame), where)
            frame = _frame_for_td(write.frame)
            _check_time_column(frame, where)
            empty = frame.iloc[:0]
            groups = [frame] if len(frame) else []
        keep = 255 - len(STAGING_INFIX) - 8 - _SESSION_SUFFIX_ROOM
        staging = f"{write.name.table[:keep]}{STAGING_INFIX}{secrets.token_hex(4)}"
        return _Plan(write, write.name.database, write.name.table, list(empty.columns), empty,
                     groups, staging, schema=schema, upload_time=int(time.time()))

    def _stream_groups(self, rows: RowChunks, where: str) -> Iterator[pd.DataFrame]:
        """Yield the streamed rows as upload frames of at most ``stream_rows_per_import`` rows.

        Chunks are consumed one at a time; a chunk bigger than a group is sliced (zero-copy),
        so at most one group of rows is held at once.
        """
        limit = self.stream_rows_per_import
        pending: list[pa.Table] = []
        pending_rows = 0
        for chunk in self._pull(rows.cast_chunks(where)):
            start = 0
            while start < chunk.num_rows:
                take = min(limit - pending_rows, chunk.num_rows - start)
                pending.append(chunk.slice(start, take))
                pending_rows += take
                start += take
                if pending_rows == limit:
                    frame = self._group_frame(pending, where)
                    pending, pending_rows = [], 0  # hold the rows once, as the upload frame
                    yield frame
        if pending_rows:
            yield self._group_frame(pending, where)

    @staticmethod
    def _group_frame(pieces: list[pa.Table], where: str) -> pd.DataFrame:
        frame = _frame_for_td(pa.concat_tables(pieces))
        _check_time_column(frame, where)  # the schema allowed it; now its values
        return frame

    def _pull(self, chunks: Iterable[pa.Table]) -> Iterator[pa.Table]:
        """Pass chunks on, remembering an exception of the caller's iterator as its own."""
        iterator = iter(chunks)
        while True:
            try:
                chunk = next(iterator)
            except StopIteration:
                return
            except BaseException as exc:
                self._source_failure = exc
                raise
            yield chunk

    def write_tables(self, writes: list[TableWrite]) -> None:
        """Write every table, all or nothing where Treasure Data allows it.

        Stages every frame in its own staging table first; only then swaps (overwrite) or
        appends (one ``INSERT INTO ... SELECT`` job) into the targets. On any failure the
        staging tables are deleted and swapped targets are swapped back.

        Parameters
        ----------
        writes
            Tables to write; ``mode`` is ``overwrite`` or ``append``.

        Raises
        ------
        UsageError
            Invalid names, modes, a target named twice, or a missing database.
        InputDataError
            Column names TD would change, a bad ``time`` column, or an append that adds columns.
        ServiceError
            Treasure Data failed; the message says what (if anything) could not be undone.
        """
        if not writes:
            return
        self._source_failure = None
        plans = [self._plan(w) for w in writes]
        names = [p.name for p in plans]
        duplicated = sorted({n for n in names if names.count(n) > 1})
        if duplicated:
            raise UsageError(
                f"table {duplicated[0]!r} is written twice in one run: give --output-table, "
                "--export-feature-importance and --export-shap-values different names"
            )
        action = "writing " + ", ".join(names)
        try:
            with self._operation(action):
                self._prepare_targets(plans)
                for plan in plans:
                    self._stage(plan, action)
                # Reversible steps (swaps) first, appends (not reversible) last.
                for plan in sorted(plans, key=lambda p: p.appends):
                    self._commit(plan, action)
        except BaseException as exc:
            # Forget the iterator's exception now: its traceback may hold a chunk of rows.
            from_source, self._source_failure = exc is self._source_failure, None
            notes = self._roll_back(plans)
            self._clean_up(plans)
            if not isinstance(exc, AutosegError):
                raise
            if from_source and not notes:
                raise  # the rows' iterator failed while staging: its own message stands
            if not notes and not isinstance(exc, ServiceError):
                raise  # refused before anything was written: the message says it all
            raise type(exc)(f"{exc}; {notes or 'no table was changed'}") from None
        self._clean_up(plans)
        for plan in plans:
            logger.info("wrote %d rows to Treasure Data table %s (%s)", plan.rows,
                        plan.name, plan.write.mode)

    def _prepare_targets(self, plans: list[_Plan]) -> None:
        listings: dict[str, dict[str, dict[str, Any]]] = {}
        for plan in plans:
            if plan.database not in listings:
                tables = self._list_tables(plan.database)
                if tables is None:
                    raise UsageError(
                        f"output table {plan.name!r}: database {plan.database!r} does not exist "
                        f"on Treasure Data ({self.host}) or the API key cannot see it: create "
                        "it first, or fix the name"
                    )
                listings[plan.database] = tables
            info = listings[plan.database].get(plan.table)
            plan.target_exists = info is not None
            plan.target_columns = self._columns_of(info) if info else []
            if plan.appends:
                known = {c for c, _ in plan.target_columns} | {"time"}
                extra = [c for c in plan.columns if c not in known]
                if extra:
                    raise InputDataError(
                        f"cannot append to {plan.name!r}: column(s) {', '.join(extra)} are not "
                        "in the existing table: write with --output-mode overwrite, or use a "
                        "new table"
                    )

    def _stage(self, plan: _Plan, action: str) -> None:
        """Load the rows into the plan's staging table, one bulk import per group of rows."""
        plan.staging_made = True  # from here on clean-up tries to delete it (404 is fine)
        for frame in plan.groups:
            self._import(plan, frame)
        if plan.imports == 0:
            # pytd refuses to import zero rows; an empty table with the schema is the same.
            api = self._api
            api.create_log_table(plan.database, plan.staging)
            schema = [[c, _td_type_of(plan.empty[c]), c] for c in plan.columns if c != "time"]
            api.update_schema(plan.database, plan.staging, json.dumps(schema))
        elif plan.valued_later:
            self._settle_types(plan)

    def _import(self, plan: _Plan, frame: pd.DataFrame) -> None:
        """Bulk-import one group of rows: the first creates the staging table, later ones append.

        Each import has its own session, named after the staging table and the import's number;
        it stays in ``sessions_open`` (deleted on clean-up) until pytd has committed and
        deleted it.
        """
        if plan.schema is not None:
            # TD types a column from the values of the import that adds it to the schema:
            # note the columns the first import had no value for, and which a later one fills.
            valued = {c for c in plan.columns if c != "time" and bool(frame[c].notna().any())}
            if plan.imports == 0:
                plan.valueless_first = set(plan.columns) - valued - {"time"}
            else:
                plan.valued_later |= valued & plan.valueless_first
        if "time" not in frame.columns:
            frame["time"] = plan.upload_time  # one upload time for every group of a write
        session = f"{plan.staging}_{plan.imports}"
        plan.sessions_open.append(session)
        try:
            self._client().load_table_from_dataframe(
                frame, f"{plan.database}.{plan.staging}", writer="bulk_import",
                if_exists="error" if plan.imports == 0 else "append", fmt="msgpack",
                keep_list=True, bulk_import_name=session,
            )
            plan.sessions_open.remove(session)  # pytd deleted the session after the commit
        except Exception:
            # A commit whose reply was lost may have succeeded: ask, never commit again.
            try:
                with self._probing():
                    state = self._api.show_bulk_import(session).get("status")
            except Exception:  # 404 (pytd deleted the failed session) or no answer: not committed
                state = None
            if state != "committed":
                raise
            logger.warning("the reply to the bulk-import commit of %s was lost; TD reports it "
                           "committed, continuing", plan.name)
        plan.imports += 1
        plan.rows += len(frame)

    def _settle_types(self, plan: _Plan) -> None:
        """Type the columns that only a later import filled as one import of all rows would.

        TD types a column from the values of the import that first adds it; one that held
        only nulls in the first group of a stream would keep a type guessed from nothing, so
        its type is set from the Arrow schema (a schema change: TD applies types on read).
        """
        assert plan.schema is not None
        info = (self._list_tables(plan.database) or {}).get(plan.staging) or {}
        current = [(c, t) for c, t in self._columns_of(info) if c != "time"]
        wanted = {c: _td_type_of_arrow(plan.schema.field(c).type)
                  for c in plan.columns if c in plan.valued_later}
        settled = [(c, wanted.get(c, t)) for c, t in current]
        settled += [(c, t) for c, t in wanted.items() if c not in dict(current)]
        if settled != current:
            self._api.update_schema(plan.database, plan.staging,
                                    json.dumps([[c, t, c] for c, t in settled]))

    def _table_ids(self, database: str) -> dict[str, Any]:
        tables = self._list_tables(database) or {}
        return {name: info.get("id") for name, info in tables.items()}

    def _swap(self, plan: _Plan) -> None:
        """Swap target and staging; when the reply is lost, find out from the table ids."""
        before = self._table_ids(plan.database)
        try:
            self._api.swap_table(plan.database, plan.table, plan.staging)
        except Exception:
            staging_id = before.get(plan.staging)
            try:
                with self._probing():
                    after = self._table_ids(plan.database)
            except Exception:
                after = {}
            if staging_id is None or after.get(plan.table) != staging_id:
                raise
            logger.warning("the reply to swapping %s was lost; TD shows it swapped", plan.name)

    def _commit(self, plan: _Plan, action: str) -> None:
        from tdclient import errors as td_errors

        if plan.appends:
            self._append(plan, action)
            return
        if not plan.target_exists:
            try:
                self._api.create_log_table(plan.database, plan.table)
            except td_errors.AlreadyExistsError:
                raise
            except Exception:
                try:
                    with self._probing():
                        created = plan.table in (self._list_tables(plan.database) or {})
                except Exception:
                    created = False
                if not created:
                    raise
            plan.target_created = True
        self._swap(plan)
        plan.swapped = True

    def _append(self, plan: _Plan, action: str) -> None:
        """Copy the staging rows into the target with ONE server-side job.

        The select list follows the target's column order and names, so the statement means
        the same whether the engine matches columns by position (Hive, Presto) or by name;
        target columns the frame lacks get typed NULLs.
        """
        staged = set(plan.columns) | {"time"}
        q = self._quote
        casts = {"long": "BIGINT", "int": "BIGINT", "double": "DOUBLE", "float": "DOUBLE",
                 "string": "STRING"}
        select = []
        target = [(c, t) for c, t in plan.target_columns if c != "time"] + [("time", "long")]
        for column, td_type in target:
            if column in staged:
                select.append(q(column, "hive"))
            elif td_type.lower() in casts:
                select.append(f"CAST(NULL AS {casts[td_type.lower()]}) AS {q(column, 'hive')}")
            else:
                select.append(f"NULL AS {q(column, 'hive')}")
        sql = (f"INSERT INTO TABLE {q(plan.database, 'hive')}.{q(plan.table, 'hive')} "
               f"SELECT {', '.join(select)} "
               f"FROM {q(plan.database, 'hive')}.{q(plan.staging, 'hive')}")
        self._issue_uncertain = False
        try:
            self._run_job(plan.database, sql, "hive", action)
        except Exception:
            plan.append_uncertain = self._issue_uncertain
            raise
        plan.appended = True

    def _roll_back(self, plans: list[_Plan]) -> str:
        """Undo the swaps done so far; return a note on what could not be undone."""
        notes = []
        for plan in reversed(plans):
            if plan.swapped:
                try:
                    self._swap(plan)
                    plan.swapped = False
                    if plan.target_created:  # the target did not exist before this write
                        self._delete_table(plan.database, plan.table)
                except BaseException:
                    plan.keep_staging = not plan.target_created
                    notes.append(
                        f"could not restore {plan.name}: its previous rows are in "
                        f"{plan.database}.{plan.staging}" if not plan.target_created
                        else f"could not remove the new table {plan.name}"
                    )
            elif plan.target_created:
                with contextlib.suppress(BaseException):
                    self._delete_table(plan.database, plan.table)
            if plan.appended:
                notes.append(f"{plan.name} was already appended to (an append cannot be undone)")
            elif plan.append_uncertain:
                notes.append(f"the reply to the append job for {plan.name} was lost and the job "
                             "is not in the job list: check the TD job list before rerunning")
        return "; ".join(notes)

    def _delete_table(self, database: str, table: str) -> None:
        from tdclient import errors as td_errors

        with contextlib.suppress(td_errors.NotFoundError):
            self._api.delete_table(database, table)

    def _clean_up(self, plans: list[_Plan]) -> None:
        """Delete staging tables and leftover bulk-import sessions (best effort)."""
        from tdclient import errors as td_errors

        for plan in plans:
            for session in list(plan.sessions_open):
                with contextlib.suppress(td_errors.NotFoundError, Exception):
                    self._api.delete_bulk_import(session)
                plan.sessions_open.remove(session)
            if plan.staging_made and not plan.keep_staging:
                try:
                    self._delete_table(plan.database, plan.staging)
                    plan.staging_made = False
                except Exception as exc:
                    logger.warning("could not delete the staging table %s.%s (%s): delete it "
                                   "by hand", plan.database, plan.staging,
                                   _one_line(str(exc), 80))


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
                    return _one_line(f"{prefix}: {message}" if prefix else str(message))
    return _one_line(re.sub(r"^\s*\d{3}:\s*", "", text))


__all__ = [
    "DEFAULT_STREAM_ROWS_PER_IMPORT",
    "DEFAULT_TD_API_SERVER",
    "ENGINES",
    "MISSING_KEY_MESSAGE",
    "TDStore",
    "check_td_columns",
    "register_secret",
    "scrub",
    "td_column_name",
    "td_store_from_environment",
    "validate_td_table_name",
]
