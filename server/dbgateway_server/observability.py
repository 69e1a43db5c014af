"""Metrics, the access log, the slow-query log and long-transaction warnings.

Every RPC, whatever its shape (unary, server stream, bidi stream), reports
through the same two calls, so a new RPC needs no observability code of its own::

    call = observability.begin("Query", request_id=rid, database=name, tag=tag, sql=sql)
    ...                       # call.rows += n; call.attempts = k; call.failed(code, reason)
    observability.end(call)   # one metrics update, one access-log line, maybe a slow-query line

:func:`dbgateway_server.service.calls.rpc` does this for every unary method;
:func:`current_call` gives the core the call in progress (e.g. to name the
database of a ``Commit`` that only carried a transaction id).

Label values are bounded: a database label is a configured name or
:data:`UNKNOWN_DATABASE`; methods, codes and reasons come from the code, never
from a caller; a principal label is a configured principal's name,
``anonymous`` (no principals configured) or :data:`UNAUTHENTICATED`. SQL text,
tags and parameter values never become labels, and parameter values are never
logged unless ``log_parameters = true`` (then in the slow-query log only).
"""

from __future__ import annotations

import asyncio
import bisect
import collections
import contextlib
import datetime as dt
import functools
import json
import logging
import re
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from enum import StrEnum
from typing import Any

import prometheus_client
from google.protobuf import text_format
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from . import tracing
from .call import Call, OpenTransaction, _current_call
from .config import ServerConfig
from .database import Database
from .gateway import Gateway
from .replicas import PRIMARY, routed_endpoint, routed_to

log = logging.getLogger(__name__)
access_log = logging.getLogger("dbgateway.access")
slow_query_log = logging.getLogger("dbgateway.slow_query")
transaction_log = logging.getLogger("dbgateway.transactions")

#: Request metadata key carrying the caller's request id; echoed back in the
#: response's initial metadata.
REQUEST_ID_HEADER = "x-request-id"
#: The database label of calls that named no configured database. Parentheses
#: cannot occur in a configured name, so it never collides with one.
UNKNOWN_DATABASE = "(unknown)"
#: The database label of calls that are about no database (e.g. AdminService).
NO_DATABASE = "(none)"
#: Longest SQL text written to the slow-query log.
MAX_LOGGED_SQL = 4096
#: Longest caller-chosen string (tag, database name, request id) written to a log.
MAX_LOGGED_VALUE = 128
#: How often open transactions are checked against the threshold (at most).
TRANSACTION_CHECK_INTERVAL = 5.0
#: The LogRecord attribute carrying structured fields (see :class:`JsonFormatter`).
FIELDS = "dbgateway_fields"

REQUEST_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip
ACQUIRE_BUCKETS = (
    0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip


# ---------------------------------------------------------------------------
# Reading the core's state
# ---------------------------------------------------------------------------


class CircuitState(StrEnum):
    CLOSED = "closed"
    HALF_OPEN = "half_open"
    OPEN = "open"


#: ``dbgateway_circuit_state`` values, ordered by severity so ``max()`` alerts work.
CIRCUIT_STATE_VALUES: Mapping[CircuitState, int] = {
    CircuitState.CLOSED: 0,
    CircuitState.HALF_OPEN: 1,
    CircuitState.OPEN: 2,
}


def circuit_state(db: Database) -> CircuitState:
    """The circuit state of ``db``: whatever its breaker reports (an enum or a
    string named closed / open / half_open), CLOSED while it has none."""
    state = getattr(db, "circuit_state", None)
    if state is None:
        return CircuitState.CLOSED
    name = str(getattr(state, "name", state)).lower().replace("-", "_")
    try:
        return CircuitState(name)
    except ValueError:
        return CircuitState.CLOSED


def is_serving(db: Database) -> bool:
    """The same answer as the ``db/<name>`` health entry."""
    return db.serving and circuit_state(db) is not CircuitState.OPEN


def open_transactions_by_database(gateway: Gateway) -> collections.Counter[str]:
    return collections.Counter(tx.database for tx in gateway.open_transactions())


def database_label(gateway: Gateway, requested: str | None) -> str:
    """The bounded metrics label for a requested database name (None: the
    request has no database field)."""
    if requested is None:
        return NO_DATABASE
    if requested in gateway.databases:
        return requested
    if not requested and len(gateway.databases) == 1:
        return next(iter(gateway.databases))
    return UNKNOWN_DATABASE


# ---------------------------------------------------------------------------
# One call
# ---------------------------------------------------------------------------


# ---------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------


class GatewayCollector(Collector):
    """Pool, circuit, health and transaction gauges, read from the core at scrape time."""

    def __init__(self, gateway: Gateway) -> None:
        self._gateway = gateway

    def collect(self) -> Iterable[Metric]:
        labels = ["database", "endpoint"]
        connections = GaugeMetricFamily(
            "dbgateway_pool_connections",
            "Open connections by state (idle, in_use).",
            labels=["database", "endpoint", "state"],
        )
        waiting = GaugeMetricFamily(
            "dbgateway_pool_waiting", "Callers waiting for a connection.", labels=labels
        )
        max_size = GaugeMetricFamily(
            "dbgateway_pool_max_connections", "The pool's max_size.", labels=labels
        )
        acquired = CounterMetricFamily(
            "dbgateway_pool_acquired", "Connections checked out of the pool.", labels=labels
        )
        created = CounterMetricFamily(
            "dbgateway_pool_connections_created", "Connections opened.", labels=labels
        )
        closed = CounterMetricFamily(
            "dbgateway_pool_connections_closed", "Connections closed.", labels=labels
        )
        timeouts = CounterMetricFamily(
            "dbgateway_pool_acquire_timeouts",
            "Callers that gave up waiting for a connection (POOL_EXHAUSTED).",
            labels=labels,
        )
        circuit = GaugeMetricFamily(
            "dbgateway_circuit_state",
            "Circuit breaker state: 0 closed, 1 half-open, 2 open.",
            labels=labels,
        )
        up = GaugeMetricFamily(
            "dbgateway_database_up",
            "1 while the database is serving (its db/<name> health entry), else 0.",
            labels=labels,
        )
        transactions = GaugeMetricFamily(
            "dbgateway_transactions_open", "Transactions open right now.", labels=["database"]
        )
        lag = GaugeMetricFamily(
            "dbgateway_replica_lag_seconds",
            "How far a replica was behind its primary when last measured (absent while unknown).",
            labels=labels,
        )
        usable = GaugeMetricFamily(
            "dbgateway_replica_usable",
            "1 while a replica takes reads (circuit closed, lag within max_replica_lag), else 0.",
            labels=labels,
        )
        open_tx = open_transactions_by_database(self._gateway)
        for name, primary in self._gateway.databases.items():
            for db in (primary, *(r.database for r in primary.replicas.replicas)):
                at = [name, db.endpoint]
                s = db.pool.stats()
                connections.add_metric([*at, "idle"], s.idle)
                connections.add_metric([*at, "in_use"], s.in_use)
                waiting.add_metric(at, s.waiting)
                max_size.add_metric(at, s.max_size)
                acquired.add_metric(at, s.acquired_total)
                created.add_metric(at, s.created_total)
                closed.add_metric(at, s.closed_total)
                timeouts.add_metric(at, s.acquire_timeouts_total)
                circuit.add_metric(at, CIRCUIT_STATE_VALUES[circuit_state(db)])
                up.add_metric(at, 1 if is_serving(db) else 0)
            for replica in primary.replicas.replicas:
                if replica.lag is not None:
                    lag.add_metric([name, replica.name], replica.lag)
                usable.add_metric([name, replica.name], 1 if replica.usable else 0)
            transactions.add_metric([name], open_tx.get(name, 0))
        yield from (connections, waiting, max_size, acquired, created, closed, timeouts)
        yield from (circuit, up, transactions, lag, usable)


class Children:
    """A labelled metric's children by label values. ``labels()`` checks
    and locks on every call, and every answered call takes four children:
    looked up once, a child is a dict hit from then on. Label values are
    bounded (see :func:`database_label`), so is this."""

    __slots__ = ("_children", "_metric")

    def __init__(self, metric: Any) -> None:
        self._metric = metric
        self._children: dict[tuple[str, ...], Any] = {}

    def __call__(self, *labels: str) -> Any:
        child = self._children.get(labels)
        if child is None:
            child = self._children[labels] = self._metric.labels(*labels)
        return child


class _Flush(Collector):
    """Registered first in the gateway's registry: any collection (a scrape,
    a test reading a sample) applies the answered calls still pending first,
    so what it reads is exact."""

    def __init__(self, flush: Callable[[], None]) -> None:
        self._flush = flush

    def collect(self) -> Iterable[Metric]:
        self._flush()
        return ()


def _add_to_histogram(histogram: Histogram, seconds: float, counts: Sequence[int]) -> None:
    """What ``observe()`` of each tallied value does, once for all of them:
    the sum, and each bucket's own count (prometheus_client adds them up into
    the cumulative ``le`` series when collected)."""
    histogram._sum.inc(seconds)
    for bucket, count in zip(histogram._buckets, counts, strict=True):
        if count:
            bucket.inc(count)


class Metrics:
    """The gateway's Prometheus metrics, in a registry of its own.

    Every answered call counts itself in four series (requests, principal
    requests, request duration, rows returned); doing that through
    prometheus_client costs a label lookup and a lock per series on every
    call. :meth:`answered_call` adds the call to a plain tally instead (one
    entry per label set, so bounded as the labels are), which is applied to
    the series when the registry is collected, before anything is read (a
    scrape reads exact values). Not once per loop turn: on a loaded gateway
    a turn often answers a single call, and the flush would cost what it saves."""

    def __init__(self, gateway: Gateway) -> None:
        # The _created series double the output and no dashboard reads them.
        prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = CollectorRegistry()
        r = self.registry
        #: (method, database, endpoint, code, transport, principal) -> the
        #: tally of the calls answered with those labels since the last flush:
        #: [calls, rows, seconds, calls per request-duration bucket...].
        self._pending: dict[tuple[str, str, str, str, str, str], list[Any]] = {}
        #: database -> [waits, seconds, waits per acquire bucket...] since the last flush.
        self._pending_waits: dict[str, list[Any]] = {}
        r.register(_Flush(self.flush))
        self.requests = Counter(
            "dbgateway_requests",
            "Calls answered, by method, database, endpoint (primary, replica-1, ...), gRPC "
            "status code and transport (unary: the method's own RPC; session: a logical "
            "call on a Session stream).",
            ["method", "database", "endpoint", "code", "transport"],
            registry=r,
        )
        self.request_duration = Histogram(
            "dbgateway_request_duration_seconds",
            "Time to answer an RPC, connection checkout included.",
            ["method", "database", "endpoint"],
            buckets=REQUEST_BUCKETS,
            registry=r,
        )
        self.pool_acquire = Histogram(
            "dbgateway_pool_acquire_seconds",
            "Time callers waited for a pooled connection (given-up waits included).",
            ["database"],
            buckets=ACQUIRE_BUCKETS,
            registry=r,
        )
        self.retries = Counter(
            "dbgateway_retries",
            "Statements tried again, by database and the reason of the failed try.",
            ["database", "reason"],
            registry=r,
        )
        self.principal_requests = Counter(
            "dbgateway_principal_requests",
            "RPCs answered, by principal (a configured name, 'anonymous' without "
            "principals, '(unauthenticated)' when the token was refused) and gRPC status code.",
            ["principal", "code"],
            registry=r,
        )
        self.sessions_open = Gauge(
            "dbgateway_sessions_open", "Session streams open now.", registry=r
        )
        self.session_calls_held_peak = Gauge(
            "dbgateway_session_calls_held_peak",
            "The most calls one Session stream has held at once since start (running, "
            "or answered and waiting for the client to read): at most max_session_calls.",
            registry=r,
        )
        self.rows_returned = Counter(
            "dbgateway_rows_returned", "Rows returned to callers.", ["database"], registry=r
        )
        for name in gateway.databases:
            self.pool_acquire.labels(name)
            self.rows_returned.labels(name)
        # The children every answered call counts itself in (see Observability.end).
        self.answered = Children(self.requests)
        self.answered_for = Children(self.principal_requests)
        self.answer_time = Children(self.request_duration)
        self.rows_for = Children(self.rows_returned)
        #: The request-duration bucket bounds (the last is +Inf), as the
        #: histogram places an observation: in the first bound it is <= to.
        self._bounds = (*REQUEST_BUCKETS, float("inf"))
        self._acquire_bounds = (*ACQUIRE_BUCKETS, float("inf"))
        r.register(GatewayCollector(gateway))
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)

    def answered_call(
        self,
        method: str,
        database: str,
        endpoint: str,
        code: str,
        transport: str,
        principal: str,
        seconds: float,
        rows: int,
    ) -> None:
        """Counts one answered call in requests, principal requests, request
        duration and rows returned (applied by :meth:`flush`)."""
        key = (method, database, endpoint, code, transport, principal)
        tally = self._pending.get(key)
        if tally is None:
            tally = self._pending[key] = [0, 0, 0.0] + [0] * len(self._bounds)
        tally[0] += 1
        tally[1] += rows
        tally[2] += seconds
        tally[3 + bisect.bisect_left(self._bounds, seconds)] += 1

    def waited(self, database: str, seconds: float) -> None:
        """Counts one wait for a pooled connection of ``database`` in the
        pool-acquire histogram (applied by :meth:`flush`)."""
        tally = self._pending_waits.get(database)
        if tally is None:
            tally = self._pending_waits[database] = [0, 0.0] + [0] * len(self._acquire_bounds)
        tally[0] += 1
        tally[1] += seconds
        tally[2 + bisect.bisect_left(self._acquire_bounds, seconds)] += 1

    def flush(self) -> None:
        """Applies the tallies of the calls answered since the last flush
        (called by every collection of the registry)."""
        waits, self._pending_waits = self._pending_waits, {}
        for database, tally in waits.items():
            _add_to_histogram(self.pool_acquire.labels(database), tally[1], tally[2:])
        pending, self._pending = self._pending, {}
        for (method, database, endpoint, code, transport, principal), tally in pending.items():
            calls, rows, seconds = tally[0], tally[1], tally[2]
            self.answered(method, database, endpoint, code, transport).inc(calls)
            self.answered_for(principal, code).inc(calls)
            _add_to_histogram(self.answer_time(method, database, endpoint), seconds, tally[3:])
            if rows:
                self.rows_for(database).inc(rows)

    def exposition(self) -> bytes:
        return prometheus_client.generate_latest(self.registry)


# ---------------------------------------------------------------------------
# Log formats
# ---------------------------------------------------------------------------


#: The principal label of a call whose token was refused (or not yet checked).
UNAUTHENTICATED = "(unauthenticated)"


def _parameter_text(value: Any) -> str:
    """A parameter value for the slow-query log (``log_parameters = true``)."""
    return text_format.MessageToString(value, as_one_line=True)


def _clip(value: str, limit: int = MAX_LOGGED_VALUE) -> str:
    return value if len(value) <= limit else value[:limit] + "..."


#: What makes a logfmt value ambiguous unless it is quoted.
_MISREADABLE = re.compile(r'[ "=\\]')


#: Short strings already found to need no quoting (method names, codes,
#: endpoints, principals, databases): a set lookup instead of the checks.
#: Bounded: once full, new values are checked every time.
_plain: set[str] = set()
_PLAIN_LIMIT = 4096
_PLAIN_LENGTH = 24


def logfmt(fields: Mapping[str, object]) -> str:
    """``key=value`` pairs; strings that could be misread (spaces, quotes, '=',
    newlines) are JSON-quoted, so a caller cannot forge a log line. Empty
    strings are left out."""
    parts: list[str] = []
    append = parts.append
    known = _plain
    for key, value in fields.items():
        # The exact types first: an access-log line (one per call) has only these.
        if type(value) is str:
            if not value:
                continue
            if value in known:  # a value seen before (a method, a code, ...)
                append(f"{key}={value}")
                continue
            if value.isprintable() and _MISREADABLE.search(value) is None:
                if len(known) < _PLAIN_LIMIT and len(value) <= _PLAIN_LENGTH:
                    known.add(value)
                append(f"{key}={value}")
            else:
                append(f"{key}={json.dumps(value, ensure_ascii=False)}")
            continue
        kind = type(value)
        if kind is int:
            append(f"{key}={value}")
            continue
        if kind is float:
            append(f"{key}={value:.3f}")
            continue
        if value == "":
            continue
        if isinstance(value, float):
            text = f"{value:.3f}"
        elif isinstance(value, str):
            plain = value.isprintable() and _MISREADABLE.search(value) is None
            text = value if plain else json.dumps(value, ensure_ascii=False)
        else:
            text = str(value)
        append(f"{key}={text}")
    return " ".join(parts)


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, then the record's
    structured fields when it has them (access, slow-query and transaction
    records), its message otherwise."""

    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, FIELDS, None)
        if fields and not record.exc_info:
            return self.format_fields(record.created, record.levelname, record.name, fields)
        doc = self._head(record.created, record.levelname, record.name)
        if fields:
            doc.update(fields)
        else:
            doc["message"] = record.getMessage()
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc, ensure_ascii=False, default=str)

    @staticmethod
    def _head(created: float, level: str, name: str) -> dict[str, Any]:
        when = dt.datetime.fromtimestamp(created, dt.UTC)
        return {
            "time": when.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": level,
            "logger": name,
        }

    def format_fields(
        self, created: float, level: str, name: str, fields: Mapping[str, object]
    ) -> str:
        """The line of a structured record (see :meth:`LogStream.write_fields`)."""
        doc = self._head(created, level, name)
        doc.update(fields)
        return json.dumps(doc, ensure_ascii=False, default=str)


TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class TextFormatter(logging.Formatter):
    """:data:`TEXT_FORMAT` lines. The date part of a timestamp is formatted
    once per second, not once per line: every call writes an access-log line."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)
        self._second = -1
        self._stamp = ""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return self._time(record.created)

    def _time(self, created: float) -> str:
        second = int(created)
        if second != self._second:
            self._second = second
            self._stamp = time.strftime(self.default_time_format, self.converter(second))
        # As LogRecord computes its msecs.
        return f"{self._stamp},{int((created - second) * 1000):03d}"

    def format_fields(
        self, created: float, level: str, name: str, fields: Mapping[str, object]
    ) -> str:
        """The line of a structured record (see :meth:`LogStream.write_fields`):
        what :meth:`format` makes of its record."""
        return f"{self._time(created)} {level} {name}: {logfmt(fields)}"


class LogStream(logging.StreamHandler):  # type: ignore[type-arg]
    """A StreamHandler that, on the event loop, flushes once per loop turn
    instead of once per record: a busy gateway writes one access-log line
    per call, and a write system call for each costs more than the line.
    Warnings and errors, and records logged off the loop, are flushed at once."""

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self._flush_pending = False
        self._urgent = True

    def emit(self, record: logging.LogRecord) -> None:
        self._urgent = record.levelno >= logging.WARNING
        super().emit(record)

    def write_fields(self, level: int, name: str, fields: Mapping[str, object]) -> bool:
        """Writes the line a structured record of ``fields`` would make,
        without making the record: what ``Logger.handle`` does for one (an
        access-log line per call), minus the record, the handler chain and
        the message formatting. False when this handler's formatter cannot
        (the caller then logs the record as usual)."""
        formatter = self.formatter
        if not isinstance(formatter, (TextFormatter, JsonFormatter)):
            return False
        try:
            line = formatter.format_fields(time.time(), logging.getLevelName(level), name, fields)
        except Exception:  # the record's own path reports it (handleError)
            return False
        self.acquire()
        try:
            self.stream.write(line + self.terminator)
            self._urgent = level >= logging.WARNING
            self.flush()
        except Exception:
            return False
        finally:
            self.release()
        return True

    def flush(self) -> None:
        if self._urgent:
            super().flush()
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            super().flush()
            return
        if not self._flush_pending:
            self._flush_pending = True
            loop.call_soon(self._flush_now)

    def _flush_now(self) -> None:
        self.acquire()
        try:
            self._flush_pending = False
            super().flush()
        finally:
            self.release()


def _stderr() -> Any:
    """A buffered text stream on the process's stderr (Python's own is line
    buffered, a write per line); stderr itself when it has no descriptor."""
    try:
        descriptor = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):
        return sys.stderr
    return open(
        descriptor,
        "w",
        buffering=1 << 16,
        encoding=sys.stderr.encoding,
        errors="backslashreplace",
        closefd=False,
    )


def configure_logging(level: str, log_format: str) -> None:
    """Sends every log record to stderr, as text lines or JSON objects."""
    handler = LogStream(_stderr())
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    logging.basicConfig(level=level, handlers=[handler], force=True)
    # No format shows a record's thread or process: not looking them up
    # saves every record (one per call) that work (the logging HOWTO's
    # "Optimization" advice).
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False


def _direct_handler(logger: logging.Logger, level: int) -> LogStream | None:
    """The one handler a record of ``logger`` at ``level`` would reach, when
    that is the gateway's own LogStream and nothing on the way filters or
    copies records (no filter, no other handler: a test's capturing handler
    turns this off)."""
    root = logging.root
    handlers = root.handlers
    if (
        logger.parent is root
        and logger.propagate
        and not logger.handlers
        and not logger.filters
        and not root.filters
        and len(handlers) == 1
    ):
        handler = handlers[0]
        if type(handler) is LogStream and not handler.filters and level >= handler.level:
            return handler
    return None


def _emit(logger: logging.Logger, level: int, fields: dict[str, object]) -> None:
    if not logger.isEnabledFor(level):
        return
    handler = _direct_handler(logger, level)
    if handler is not None and handler.write_fields(level, logger.name, fields):
        return
    # makeRecord + handle is what Logger.log does, minus its walk up the
    # stack for a caller's file and line, which these records never show.
    record = logger.makeRecord(
        logger.name, level, "", 0, logfmt(fields), (), None, extra={FIELDS: fields}
    )
    logger.handle(record)


# ---------------------------------------------------------------------------
# Long-running transactions
# ---------------------------------------------------------------------------


class LongTransactionWatch:
    """Picks out transactions that have been open longer than ``threshold``
    seconds, each once (so a check every few seconds does not repeat itself)."""

    __slots__ = ("_warned", "threshold")

    def __init__(self, threshold: float) -> None:
        self.threshold = threshold
        self._warned: set[str] = set()

    def check(self, open_now: Iterable[OpenTransaction]) -> list[OpenTransaction]:
        """The transactions in ``open_now`` that crossed the threshold since the last check."""
        seen: set[str] = set()
        overdue = []
        for tx in open_now:
            seen.add(tx.key)
            if tx.age >= self.threshold and tx.key not in self._warned:
                overdue.append(tx)
        # Forget ended transactions, so the set stays as small as the table.
        self._warned = (self._warned & seen) | {tx.key for tx in overdue}
        return overdue


# ---------------------------------------------------------------------------
# The /metrics and /healthz endpoint
# ---------------------------------------------------------------------------


class MetricsServer:
    """A minimal HTTP/1.1 endpoint on the gateway's own event loop: ``GET
    /metrics`` (Prometheus text format) and ``GET /healthz`` (200 while
    serving, 503 while draining). One request per connection."""

    #: How long a client may take to send its request head.
    READ_TIMEOUT = 10.0
    MAX_HEAD = 16 * 1024

    def __init__(self, listen: str, metrics: Metrics, serving: Callable[[], bool]) -> None:
        self.listen = listen
        self._metrics = metrics
        self._serving = serving
        self._server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        host, _, port = self.listen.rpartition(":")
        host = host.strip("[]")
        self._server = await asyncio.start_server(
            self._handle, host, int(port), limit=self.MAX_HEAD, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("metrics listening on %s:%d", self.listen.rpartition(":")[0], self.port)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def respond(self, method: str, path: str) -> tuple[int, str, bytes]:
        """(status, content type, body) for a request."""
        if method not in ("GET", "HEAD"):
            return 405, "text/plain; charset=utf-8", b"method not allowed\n"
        if path == "/metrics":
            return 200, prometheus_client.CONTENT_TYPE_LATEST, self._metrics.exposition()
        if path == "/healthz":
            if self._serving():
                return 200, "text/plain; charset=utf-8", b"ok\n"
            return 503, "text/plain; charset=utf-8", b"draining\n"
        return 404, "text/plain; charset=utf-8", b"not found: try /metrics or /healthz\n"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(self.READ_TIMEOUT):
                head = await reader.readuntil(b"\r\n\r\n")
            request_line = head.split(b"\r\n", 1)[0].decode("latin-1").split()
            if len(request_line) != 3:
                status, ctype, body = 400, "text/plain; charset=utf-8", b"bad request\n"
                method = "GET"
            else:
                method, target, _ = request_line
                status, ctype, body = self.respond(method, target.split("?", 1)[0])
            reason = {200: "OK", 400: "Bad Request", 404: "Not Found"}.get(status, "Error")
            if status == 503:
                reason = "Service Unavailable"
            elif status == 405:
                reason = "Method Not Allowed"
            writer.write(
                f"HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode("latin-1")
            )
            if method != "HEAD":
                writer.write(body)
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


def _traced_acquire(observe: Callable[[float], None], database: str) -> Callable[[float], None]:
    """The pool's acquire observer while tracing is on: the wait is also an
    event on the call's span."""

    def observed(seconds: float) -> None:
        observe(seconds)
        tracing.event(
            "pool.acquire", {"dbgateway.database": database, "dbgateway.wait_ms": seconds * 1000}
        )

    return observed


# ---------------------------------------------------------------------------
# Tying it together
# ---------------------------------------------------------------------------


class Observability:
    """What a running gateway reports: metrics, logs, and the endpoint serving them."""

    def __init__(
        self,
        config: ServerConfig,
        gateway: Gateway,
        *,
        serving: Callable[[], bool] = lambda: True,
    ) -> None:
        self.config = config
        self._gateway = gateway
        self.metrics = Metrics(gateway)
        self.transactions = LongTransactionWatch(config.long_transaction_threshold)
        self.metrics_server = (
            MetricsServer(config.metrics_listen, self.metrics, serving)
            if config.metrics_listen
            else None
        )
        self._watch: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Hooks into the pools, opens the metrics endpoint (when configured) and
        starts watching open transactions."""
        for name, db in self._gateway.databases.items():
            observe = functools.partial(self.metrics.waited, name)
            db.pool.acquire_observer = (
                _traced_acquire(observe, name) if tracing.tracer is not None else observe
            )
        if self.metrics_server is not None:
            await self.metrics_server.start()
        self._watch = asyncio.get_running_loop().create_task(
            self._watch_transactions(), name="long-transaction-watch"
        )

    async def close(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
        if self.metrics_server is not None:
            await self.metrics_server.close()

    # -- calls -------------------------------------------------------------

    def begin(
        self,
        method: str,
        *,
        request_id: str,
        database: str | None = None,
        tag: str = "",
        sql: str = "",
        params: int = 0,
        parameters: Sequence[Any] = (),
        transport: str = "unary",
        service: str = "dbgateway.v1.DatabaseService",
        metadata: Sequence[tuple[str, Any]] | None = None,
    ) -> Call:
        """Starts reporting a call; it becomes :func:`current_call` for this
        task. While tracing is on, the call's server span starts here too (a
        child of the trace context in ``metadata``, the caller's request
        metadata) and is current until :meth:`end`."""
        call = Call(
            method=method,
            request_id=request_id,
            database=database,
            database_label=database_label(self._gateway, database),
            tag=tag,
            sql=sql,
            params=params,
            parameters=tuple(_parameter_text(p) for p in parameters)
            if self.config.log_parameters
            else (),
            transport=transport,
        )
        if tracing.tracer is not None:
            call.span, call.trace_token = tracing.start_server_span(service, method, metadata)
        _current_call.set(call)
        routed_to("")
        return call

    def end(self, call: Call) -> None:
        """Counts, times and logs a finished call (once)."""
        elapsed = time.monotonic() - call.started
        db = call.database_label
        # The endpoint the call ran on; calls that named no database ran on none.
        endpoint = routed_endpoint() or (PRIMARY if call.database is not None else "")
        code = call.code.name
        principal = call.principal or UNAUTHENTICATED
        self.metrics.answered_call(
            call.method, db, endpoint, code, call.transport, principal, elapsed, call.rows
        )
        fields: dict[str, object] = {
            "request_id": _clip(call.request_id),
            "method": call.method,
            "principal": principal,
            "database": _clip(call.database or db) if call.database is not None else "",
            "endpoint": endpoint,
            "tag": _clip(call.tag),
            "code": code,
            "reason": call.reason,
            "duration_ms": elapsed * 1000,
            "rows": call.rows,
            "retries": call.retries,
            "transport": call.transport,
        }
        if call.forwarded_to:
            fields["forwarded_to"] = call.forwarded_to
        _emit(access_log, logging.INFO, fields)
        if call.sql and elapsed >= self.config.slow_query_threshold:
            self.slow_query(call, elapsed)
        if call.span is not None:
            tracing.end_server_span(
                call.span,
                call.trace_token,
                call.code,
                call.reason,
                {
                    "dbgateway.request_id": _clip(call.request_id),
                    "dbgateway.database": call.database_label if call.database is not None else "",
                    "dbgateway.principal": call.principal,
                    "dbgateway.tag": _clip(call.tag),
                    "dbgateway.attempts": call.attempts,
                    "dbgateway.rows": call.rows,
                },
            )

    def slow_query(self, call: Call, elapsed: float) -> None:
        """Logs the SQL text of a slow statement: never its parameter values,
        only how many there were."""
        _emit(
            slow_query_log,
            logging.WARNING,
            {
                "request_id": _clip(call.request_id),
                "method": call.method,
                "database": _clip(call.database or call.database_label),
                "tag": _clip(call.tag),
                "code": call.code.name,
                "duration_ms": elapsed * 1000,
                "principal": call.principal or UNAUTHENTICATED,
                "params": call.params,
                "sql": _clip(call.sql, MAX_LOGGED_SQL),
                # Only with log_parameters = true; empty (left out) otherwise.
                "parameters": _clip(json.dumps(call.parameters, ensure_ascii=False), MAX_LOGGED_SQL)
                if call.parameters
                else "",
            },
        )

    def retried(self, database: str, reason: str) -> None:
        """Counts one retry; called by the retry policy before each new attempt
        (``reason`` is the failed attempt's Reason)."""
        self.metrics.retries.labels(database_label(self._gateway, database), reason).inc()
        if tracing.tracer is not None:
            tracing.event("retry", {"dbgateway.database": database, "dbgateway.reason": reason})

    # -- transactions -------------------------------------------------------

    def warn_long_transactions(
        self, open_now: Sequence[OpenTransaction] | None = None
    ) -> list[OpenTransaction]:
        """Logs a warning for each transaction newly past the threshold."""
        if open_now is None:
            open_now = self._gateway.open_transactions()
        overdue = self.transactions.check(open_now)
        for tx in overdue:
            _emit(
                transaction_log,
                logging.WARNING,
                {
                    "event": "long_transaction",
                    "database": tx.database,
                    "tag": _clip(tx.tag),
                    "request_id": _clip(tx.request_id),
                    "age_s": tx.age,
                    "threshold_s": self.transactions.threshold,
                },
            )
        return overdue

    async def _watch_transactions(self) -> None:
        interval = min(self.transactions.threshold, TRANSACTION_CHECK_INTERVAL)
        while True:
            await asyncio.sleep(interval)
            try:
                self.warn_long_transactions()
            except Exception:  # never let a bug here stop the watch
                log.exception("checking open transactions failed")
