"""One configured database endpoint: its pool, circuit breaker, retry
policy and statement statistics, and the calls that run on it outside a
handle-based transaction (reads on the endpoint their read preference picks,
writes on the primary, streams, transactions begun on it).

The core's layers run one way: the servicers call :class:`~.gateway.Gateway`,
which routes to a :class:`Database` here; transactions (:mod:`.transactions`)
run on a Database; a Database runs statements through its backend
(:mod:`.backends`). Nothing here imports the gateway or the transactions.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit

from dbgateway.v1 import value_pb2

from . import tracing
from .backends import backend_for
from .backends.base import (
    Backend,
    DriverConnection,
    ExecResult,
    ResultLimits,
    ResultSet,
    TransactionMode,
)
from .call import CallOptions, Deadline, LiveTransaction, Outcome, ResultStream, Timeout
from .config import DatabaseConfig, Engine, ReadPreference
from .errors import GatewayError, Reason, misconfiguration
from .placeholders import with_placeholder_hint
from .pool import ConnectionPool
from .replicas import PRIMARY, Replica, ReplicaSet, replica_name, routed_to
from .resilience.breaker import CircuitBreaker, CircuitState, Verdict
from .resilience.retry import CallKind, run_with_retries
from .results import RowChunker
from .statement_stats import StatementStatistics, normalize
from .statements import check_statement, first_keyword

log = logging.getLogger(__name__)

#: Called with (database name, serving) whenever a database's health changes.
HealthListener = Callable[[str, bool], None]
RetryListener = Callable[[str, str], None]

T = TypeVar("T")


#: A deadline this close to passing is spent: gRPC cancels a call at its
#: deadline, a little before or after our own clock says so.
_DEADLINE_SLACK = 0.05


@contextlib.asynccontextmanager
async def _failing(error: GatewayError) -> AsyncIterator[DriverConnection]:
    """A block that fails on entry with ``error``."""
    raise error
    yield  # pragma: no cover - makes this a generator


def _spent(deadline: Deadline | None) -> bool:
    left = None if deadline is None else deadline.remaining()
    return left is not None and left <= _DEADLINE_SLACK


_SYSTEM_NAMES: Mapping[Engine, str] = {
    Engine.POSTGRES: "postgresql",
    Engine.MYSQL: "mysql",
    Engine.SQLITE: "sqlite",
}


def failure(exc: BaseException) -> str:
    """The reason a statement failed, as statistics and spans name it."""
    if isinstance(exc, GatewayError):
        return exc.reason.value
    if isinstance(exc, TimeoutError):
        return Reason.STATEMENT_TIMEOUT.value
    if isinstance(exc, asyncio.CancelledError | GeneratorExit):
        return "CANCELLED"
    return Reason.INTERNAL.value


class StatementCount:
    """The block of :meth:`Database.counted`: counts the statement it runs in
    the statement statistics (the block sets :attr:`rows`) and, while
    tracing is on, makes it a CLIENT span of its own with the database
    conventions. A class, not a generator context manager: every statement
    enters one."""

    __slots__ = ("_database", "_outcome", "_span", "_sql", "_started", "_write", "rows")

    def __init__(self, database: Database, sql: str, write: bool) -> None:
        self._database = database
        self._sql = sql
        self._write = write
        #: Returned by a read, affected by a write.
        self.rows = 0
        self._span: contextlib.AbstractContextManager[dict[str, Any]] | None = None
        self._outcome: dict[str, Any] | None = None

    def __enter__(self) -> StatementCount:
        self._started = time.monotonic()
        if tracing.tracer is not None:
            db, sql = self._database, self._sql
            operation = first_keyword(sql)
            attributes = {
                **db._span_attributes,
                "db.system.name": db.system_name,
                "db.operation.name": operation,
                # The normalized text: the statement as written, minus any literal a
                # caller inlined; bound parameter values never appear in it.
                "db.query.text": normalize(sql),
            }
            self._span = tracing.database_span(operation, attributes)
            self._outcome = self._span.__enter__()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: Any
    ) -> bool | None:
        db = self._database
        elapsed = time.monotonic() - self._started
        outcome = self._outcome
        if exc is None:
            db.statements.record(db.name, self._sql, elapsed, self.rows)
            if outcome is not None:
                key = "dbgateway.rows_affected" if self._write else "db.response.returned_rows"
                outcome[key] = self.rows
        else:
            reason = failure(exc)
            db.statements.record(db.name, self._sql, elapsed, 0, reason)
            if outcome is not None:
                if isinstance(exc, GatewayError):
                    code = exc.metadata.get("sqlstate") or exc.metadata.get("vendor_code")
                    outcome["db.response.status_code"] = code
                outcome["error.type"] = reason
        if self._span is not None:
            return self._span.__exit__(kind, exc, tb)
        return None


class _ErrorReport:
    """The block of :meth:`Database.reporting_errors` (stateless: one per
    database serves every block)."""

    __slots__ = ("_database",)

    def __init__(self, database: Database) -> None:
        self._database = database

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: Any
    ) -> None:
        if exc is None:
            return
        db = self._database
        if isinstance(exc, TimeoutError):
            raise GatewayError(
                Reason.STATEMENT_TIMEOUT,
                "statement cancelled: the call's deadline or the database's "
                f"statement_timeout ({db.config.statement_timeout:.3g}s) passed",
                metadata={"database": db.name, "engine": db.engine},
            ) from None
        if isinstance(exc, GatewayError):
            raise db.named(exc) from None


class _Admission:
    """The block of :meth:`Database.admitted`."""

    __slots__ = ("_database", "_deadline", "_probe")

    def __init__(self, database: Database, deadline: Deadline | None) -> None:
        self._database = database
        self._deadline = deadline

    async def __aenter__(self) -> None:
        db = self._database
        if db.breaker.state is not CircuitState.CLOSED and db._probing():
            raise db.breaker.refusal()
        self._probe = db.breaker.allow()

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: Any
    ) -> None:
        db = self._database
        if exc is None:
            db.breaker.record(None, probe=self._probe)
            return
        verdict = db.breaker.record(exc, probe=self._probe)
        if verdict is Verdict.TIMEOUT or (
            isinstance(exc, asyncio.CancelledError) and _spent(self._deadline)
        ):
            db._timed_out_call()


def _rows(result: ResultSet | ExecResult) -> int:
    return result.row_count if isinstance(result, ResultSet) else result.rows_affected


def _database_span_attributes(config: DatabaseConfig) -> dict[str, str | int]:
    """What every span of a statement on this database carries: the database
    the engine knows (``db.namespace``) and where it runs (never credentials)."""
    parts = urlsplit(config.dsn)
    attributes: dict[str, str | int] = {"dbgateway.database": config.name}
    if config.engine is Engine.SQLITE:
        attributes["db.namespace"] = config.name
        return attributes
    query = parse_qs(parts.query)
    namespace = parts.path.lstrip("/") or query.get("dbname", [""])[0]
    host = parts.hostname or query.get("host", [""])[0]
    if namespace:
        attributes["db.namespace"] = namespace
    if host:
        attributes["server.address"] = host
        try:
            port = parts.port
        except ValueError:
            port = None
        attributes["server.port"] = port or (5432 if config.engine is Engine.POSTGRES else 3306)
    return attributes


class Database:
    """One configured database: its backend, pool, circuit breaker and health.

    Health is the circuit: SERVING while it is closed, NOT_SERVING while it is
    open or half-open. A database that is down at start begins with an open
    circuit; from then on a background probe tries it every
    ``breaker.probe_interval``, so it recovers without traffic, within a few
    seconds of answering again.

    Each configured replica is a ``Database`` too (an endpoint with its own
    pool, breaker and prober), held in :attr:`replicas`; reads outside a
    transaction and read-only transactions go where their read preference
    says (:meth:`read`, :meth:`read_stream`, :meth:`transaction_on_endpoint`).
    """

    def __init__(
        self,
        config: DatabaseConfig,
        backend: Backend,
        listener: HealthListener,
        retry_listener: RetryListener | None = None,
        statements: StatementStatistics | None = None,
        *,
        endpoint: str = PRIMARY,
    ) -> None:
        self.config = config
        self._error_report = _ErrorReport(self)
        #: Where every statement sent to this database is counted.
        self.statements = statements if statements is not None else StatementStatistics(0)
        self._span_attributes = _database_span_attributes(config)
        self.name = config.name
        #: How the retry policy's log names it.
        self._what = f"database {config.name}"
        #: ``primary``, or the replica's name (``replica-1``, ...).
        self.endpoint = endpoint
        self.backend = backend
        # How its pool and breaker name it in logs: a replica says which it is.
        label = config.name if endpoint == PRIMARY else f"{config.name}/{endpoint}"
        self.pool = ConnectionPool(label, backend.connect, config.pool)
        self.breaker = CircuitBreaker(label, config.breaker, on_change=self._on_circuit)
        self._listener = listener
        self._retry_listener = retry_listener
        #: Every transaction holding a connection of this database right now:
        #: handle-based, streams, RunTransaction and batches alike (on any of
        #: its endpoints: replicas share their primary's set).
        self.live_transactions: set[LiveTransaction] = set()
        self._prober: asyncio.Task[None] | None = None
        #: Calls that timed out since the last stall check began, and the check.
        self._timed_out = 0
        self._stall_check: asyncio.Task[None] | None = None
        self._stall_checked_at = -float("inf")
        self._closing = False
        self.replicas = ReplicaSet(
            self,
            [self._replica(i, retry_listener) for i in range(len(config.replicas))],
            on_health=lambda serving: listener(f"{self.name}/replicas", serving),
        )

    def _replica(self, index: int, retry_listener: RetryListener | None) -> Database:
        config = self.config.replica(index)
        replica = Database(
            config,
            backend_for(config),
            # A replica's circuit counts toward db/<name>/replicas, never db/<name>.
            lambda name, serving: self.replicas.changed(),
            retry_listener,
            # One table per database: a statement counts the same wherever it ran.
            self.statements,
            endpoint=replica_name(index),
        )
        replica.live_transactions = self.live_transactions
        return replica

    @property
    def address(self) -> str:
        """host:port of this endpoint, never credentials."""
        return self.config.address

    @property
    def engine(self) -> str:
        return str(self.config.engine)

    @property
    def circuit_state(self) -> CircuitState:
        return self.breaker.state

    @property
    def serving(self) -> bool:
        return self.breaker.state is CircuitState.CLOSED

    def _probing(self) -> bool:
        return self._prober is not None and not self._prober.done()

    def _on_circuit(self, old: CircuitState, new: CircuitState, why: str) -> None:
        if (old is CircuitState.CLOSED) != (new is CircuitState.CLOSED):
            self._listener(self.name, self.serving)
        if new is CircuitState.OPEN and not self._closing and not self._probing():
            self._prober = asyncio.get_running_loop().create_task(
                self._probe_until_closed(), name=f"probe-{self.name}"
            )

    async def start(self) -> None:
        """Opens the pool (and the replicas'); a database that is down is
        reported, not fatal."""
        if self.replicas:
            await asyncio.gather(self._start(), self.replicas.start())
        else:
            await self._start()

    async def _start(self) -> None:
        try:
            await self.pool.start()
            async with self.pool.connection(self.config.connect_timeout) as conn:
                await conn.ping(self.config.connect_timeout)
        except GatewayError as exc:
            hint = misconfiguration(exc)
            if hint:
                # Waiting will not fix this: say so loudly, the operator must act.
                log.error(
                    "database %s (%s) refused the gateway at start: %s; %s. "
                    "Its circuit stays open and every call on it fails with this cause "
                    "until the setting is fixed",
                    self.name,
                    self.config.redacted_dsn,
                    exc.message,
                    hint,
                )
            else:
                log.warning(
                    "database %s (%s) is not reachable at start: %s",
                    self.name,
                    self.config.redacted_dsn,
                    exc.message,
                )
            self.breaker.trip(f"unreachable at start: {exc.message}", exc)
            return
        log.info(
            "database %s%s: %s %s at %s",
            self.name,
            "" if self.endpoint == PRIMARY else f" ({self.endpoint})",
            self.engine,
            self.backend.server_version,
            self.config.redacted_dsn,
        )

    async def _probe_until_closed(self) -> None:
        """Probes the database in the background every ``probe_interval``
        until a probe succeeds and the circuit closes."""
        self.breaker.probing_in_background = True
        try:
            while self.breaker.state is not CircuitState.CLOSED:
                await asyncio.sleep(self.breaker.background_probe_wait())
                self.breaker.record_background_probe(await self._check())
        finally:
            self.breaker.probing_in_background = False

    async def _check(self) -> GatewayError | None:
        """Whether the database answers a fresh connection and a ping within
        ``probe_timeout``: None when it does, else why not."""
        try:
            await self._ping_fresh(self.config.breaker.probe_timeout)
        except GatewayError as exc:
            return exc.with_metadata(database=self.name, engine=self.engine)
        except (TimeoutError, OSError) as exc:
            return GatewayError(
                Reason.DATABASE_UNAVAILABLE,
                f"the database did not answer a fresh connection and a ping within "
                f"{self.config.breaker.probe_timeout:g}s"
                if isinstance(exc, TimeoutError)
                else str(exc) or repr(exc),
                metadata={"database": self.name, "engine": self.engine},
            )
        return None

    async def _ping_fresh(self, limit: float) -> None:
        """Opens a new connection and pings it: the pool's connections may be
        dead with the outage, and a probe must test the endpoint itself."""
        async with asyncio.timeout(limit):
            conn = await self.backend.connect()
            try:
                await conn.ping(limit)
            finally:
                await conn.close()

    def _timed_out_call(self) -> None:
        """A call timed out: a slow query, or a stalled database. One check at
        a time tells which; when the database stalls it too, every call that
        timed out meanwhile counts as a failure, so a stall opens the circuit
        even when callers' deadlines are shorter than any connect timeout."""
        self._timed_out += 1
        if self._closing or (self._stall_check is not None and not self._stall_check.done()):
            return
        if time.monotonic() - self._stall_checked_at < self.config.breaker.probe_interval:
            # The database answered a check a moment ago: these are slow calls.
            self._timed_out = 0
            return
        self._stall_check = asyncio.get_running_loop().create_task(
            self._check_stall(), name=f"stall-check-{self.name}"
        )

    async def _check_stall(self) -> None:
        error = await self._check()
        calls, self._timed_out = self._timed_out, 0
        if error is None:
            self._stall_checked_at = time.monotonic()
            return
        log.warning(
            "database %s: %d call(s) timed out and a check stalled too: %s",
            self.name,
            calls,
            error.message,
        )
        self.breaker.record_stalls(error, calls)

    def connection(self, deadline: Deadline) -> AbstractAsyncContextManager[DriverConnection]:
        """A pooled connection for an ``async with`` block, waiting for one
        at most until ``deadline`` or the pool's acquire_timeout; a deadline
        already passed fails the block's entry."""
        left = deadline.remaining()
        if left is not None and left <= 0:
            return _failing(
                GatewayError(
                    Reason.STATEMENT_TIMEOUT, "the call's deadline had already passed", sent=False
                )
            )
        return self.pool.connection(deadline.bounded(self.config.pool.acquire_timeout))

    async def run(
        self, sql: str, params: Sequence[value_pb2.Value], options: CallOptions, *, write: bool
    ) -> Outcome:
        """Runs one statement outside a transaction: through the circuit
        breaker, with the retry policy, within the caller's deadline."""
        started = time.monotonic()
        check_statement(sql)
        try:
            result, attempts = await self.retrying(
                lambda: self._run_once(sql, params, options, write=write),
                kind=CallKind.of(write=write, idempotent=options.idempotent),
                deadline=options.deadline,
                what=self._what,
            )
        except GatewayError as exc:
            raise self.named(exc) from None
        return Outcome(result=result, elapsed=time.monotonic() - started, attempts=attempts)

    async def retrying(
        self,
        attempt: Callable[[], Awaitable[T]],
        *,
        kind: CallKind,
        deadline: Deadline,
        what: str,
        remaining: Callable[[], float | None] | None = None,
        max_attempts: int = 0,
    ) -> tuple[T, int]:
        """Runs ``attempt`` under the retry policy (see :func:`run_with_retries`),
        admitted by the circuit breaker once for all its attempts: the breaker
        counts calls, not attempts. An attempt after other calls opened the
        circuit meanwhile fails fast with CIRCUIT_OPEN."""

        async def admitted_attempt() -> T:
            if self.breaker.state is CircuitState.OPEN:
                raise self.breaker.refusal()
            return await attempt()

        async with self.admitted(deadline):
            return await run_with_retries(
                admitted_attempt,
                kind=kind,
                settings=self.config.retry,
                remaining=deadline.remaining if remaining is None else remaining,
                what=what,
                on_retry=self.retried,
                max_attempts=max_attempts,
            )

    def named(self, error: GatewayError) -> GatewayError:
        """Names this database (and a replica's endpoint) in ``error``: a
        replica's pool and breaker call themselves ``<name>/replica-N`` in
        logs, but a caller's ErrorInfo names the configured database."""
        error.with_metadata(database=self.name, engine=self.engine)
        if self.endpoint != PRIMARY:
            error.metadata["database"] = self.name
            error.metadata["endpoint"] = self.endpoint
        return error

    def retried(self, error: GatewayError) -> None:
        """One more attempt is about to run after ``error`` (counted in metrics)."""
        if self._retry_listener is not None:
            self._retry_listener(self.name, error.reason.value)

    async def guarded(self, call: Callable[[], Awaitable[T]]) -> T:
        """Runs one attempt through the circuit breaker (see :meth:`admitted`)."""
        async with self.admitted():
            return await call()

    def admitted(self, deadline: Deadline | None = None) -> _Admission:
        """A block the circuit breaker lets through: refused at once with
        CIRCUIT_OPEN while the circuit is open, and its outcome counted.
        While the background prober runs it alone probes: a caller never
        becomes the half-open probe and never pays a connect attempt to a
        database that is down. A block cancelled when ``deadline`` ran out
        (gRPC cancels a call whose deadline passed) timed out."""
        return _Admission(self, deadline)

    # -- read routing ------------------------------------------------------

    async def read(
        self, sql: str, params: Sequence[value_pb2.Value], options: CallOptions
    ) -> Outcome:
        """A read outside a transaction, on the endpoint its read preference
        picks (:meth:`_read_endpoint`). A replica that fails on the way
        (refused, lost, circuit open) hands the read to the next usable
        replica, and then to the primary unless only a replica would do."""
        if not self.replicas.replicas:  # the primary is all there is
            routed_to(PRIMARY)
            return await self.run(sql, params, options, write=False)
        tried: list[Replica] = []
        while True:
            replica = await self._read_endpoint(options, tried)
            if replica is None:
                routed_to(PRIMARY)
                return await self.run(sql, params, options, write=False)
            routed_to(replica.name)
            try:
                with self.replicas.running(replica):
                    return await replica.database.run(sql, params, options, write=False)
            except GatewayError as exc:
                if not _fails_over(exc):
                    raise
                tried.append(replica)

    @contextlib.asynccontextmanager
    async def read_stream(
        self, sql: str, params: Sequence[value_pb2.Value], options: CallOptions
    ) -> AsyncIterator[ResultStream]:
        """:meth:`stream` on the endpoint the read preference picks; a replica
        that fails before the first row hands the stream on, as :meth:`read`."""
        tried: list[Replica] = []
        async with contextlib.AsyncExitStack() as stack:
            while True:
                replica = await self._read_endpoint(options, tried)
                target = self if replica is None else replica.database
                routed_to(target.endpoint)
                async with contextlib.AsyncExitStack() as attempt:
                    try:
                        if replica is not None:
                            attempt.enter_context(self.replicas.running(replica))
                        rows = await attempt.enter_async_context(
                            target.stream(sql, params, options)
                        )
                    except GatewayError as exc:
                        if replica is None or not _fails_over(exc):
                            raise
                        tried.append(replica)
                        continue
                    stack.push_async_exit(attempt.pop_all())
                    break
            yield rows

    async def transaction_on_endpoint(
        self,
        read_only: bool,
        preference: ReadPreference | None,
        deadline: Deadline,
        begin: Callable[[Database], Awaitable[T]],
    ) -> T:
        """Begins a transaction (``begin(endpoint)``, which may also run it to
        the end) where it must run: a read-only one where its read preference
        says, any other on the primary. Every call in it then stays on that
        endpoint. A replica that fails to begin it hands it on, as a read."""
        if not read_only:
            return await begin(self)
        options = CallOptions(deadline=deadline, read_preference=preference)
        tried: list[Replica] = []
        while True:
            replica = await self._read_endpoint(options, tried)
            if replica is None:
                return await begin(self)
            try:
                return await begin(replica.database)
            except GatewayError as exc:
                if not _fails_over(exc):
                    raise
                tried.append(replica)

    async def _read_endpoint(
        self, options: CallOptions, tried: Sequence[Replica]
    ) -> Replica | None:
        """The replica a read goes to, or None for the primary: the usable
        replica with the fewest calls in flight, and with ``read_after`` one
        that has replayed that far within ``replica_wait``. With no usable
        replica left, READ_PREFERENCE_REPLICA fails NO_REPLICA_AVAILABLE;
        every other preference reads the primary."""
        preference = self.replicas.preference(options.read_preference)
        if preference is ReadPreference.PRIMARY:
            return None
        replica = self.replicas.choose(exclude=tried)
        if replica is None:
            if preference is ReadPreference.REPLICA:
                raise self.replicas.no_replica()
            return None
        if options.read_after and not await self.replicas.caught_up(
            replica, options.read_after, options.deadline
        ):
            # The caller must see its own write; only the primary surely has it.
            return None
        return replica

    async def read_token(self, deadline: Deadline) -> str:
        """Where the primary's replication stream is now: at or past every
        write committed before this call (empty without replicas). A write
        that committed is not failed for want of a token: on error the token
        is empty, and the caller's next read_after-less read is as usual."""
        if not self.replicas or self.endpoint != PRIMARY:
            return ""
        left = deadline.remaining()
        if left is not None and left <= 0:
            return ""
        try:
            async with self.connection(deadline) as conn:
                async with asyncio.timeout(deadline.bounded(self.config.statement_timeout)):
                    return await conn.replication_position()
        except (GatewayError, TimeoutError) as exc:
            log.warning(
                "database %s: no read_token for a committed write: %s",
                self.name,
                getattr(exc, "message", None) or type(exc).__name__,
            )
            return ""

    async def _run_once(
        self, sql: str, params: Sequence[value_pb2.Value], options: CallOptions, *, write: bool
    ) -> ResultSet | ExecResult:
        with self.reporting_errors():
            async with self.connection(options.deadline) as conn:
                if not options.read_only and not (options.role and conn.has_roles):
                    return await self.statement(conn, sql, params, options, write=write)
                async with self.read_only(conn, options):
                    return await self.statement(conn, sql, params, options, write=write)

    @contextlib.asynccontextmanager
    async def read_only(self, conn: DriverConnection, options: CallOptions) -> AsyncIterator[None]:
        """With ``options.read_only``, the block runs in a read-only
        transaction on ``conn`` (PostgreSQL / MySQL ``READ ONLY``, SQLite
        ``query_only``): the database itself refuses a write. With a role
        (PostgreSQL) it runs in a transaction as that role. Whatever ends
        the block early leaves the rollback to the pool's release."""
        role = options.role if conn.has_roles else ""
        if not options.read_only and not role:
            yield
            return
        async with Timeout(options.deadline.bounded(self.config.statement_timeout)):
            await conn.begin(TransactionMode(read_only=options.read_only, role=role))
        yield
        async with Timeout(options.deadline.bounded(self.config.statement_timeout)):
            await conn.commit()

    async def statement(
        self,
        conn: DriverConnection,
        sql: str,
        params: Sequence[value_pb2.Value],
        options: CallOptions,
        *,
        write: bool,
    ) -> ResultSet | ExecResult:
        """Runs one statement on a checked-out connection within the caller's
        deadline, capped by the database's statement_timeout. An expired
        timeout raises TimeoutError (the pool decides what that means for the
        connection); :meth:`reporting_errors` turns it into STATEMENT_TIMEOUT.
        Every statement is counted in the statement statistics and, while
        tracing is on, is a CLIENT span of its own."""
        with self.counted(sql, write=write) as count:
            try:
                async with Timeout(options.deadline.bounded(self.config.statement_timeout)):
                    if write:
                        result: ResultSet | ExecResult = await conn.execute(sql, params)
                    else:
                        result = await conn.query(sql, params, limits=self.limits(options))
            except GatewayError as exc:
                raise with_placeholder_hint(exc, self.engine, sql) from None
            count.rows = _rows(result)
        return result

    def counted(self, sql: str, *, write: bool) -> StatementCount:
        """Counts the statement run in the block in the statement statistics
        (the block sets the rows) and, while tracing is on, makes it a CLIENT
        span of its own with the database conventions."""
        return StatementCount(self, sql, write)

    @property
    def system_name(self) -> str:
        """``db.system.name`` of the engine behind this database."""
        if self.config.engine is Engine.MYSQL:
            return "mariadb" if "mariadb" in self.backend.server_version.lower() else "mysql"
        return _SYSTEM_NAMES[self.config.engine]

    def reporting_errors(self) -> _ErrorReport:
        """Names this database in every error, and reports an expired
        statement timeout as STATEMENT_TIMEOUT."""
        return self._error_report

    def limits(self, options: CallOptions) -> ResultLimits:
        return ResultLimits(
            max_rows=options.max_rows,
            max_result_rows=self.config.max_result_rows,
            max_result_bytes=self.config.max_result_bytes,
            columnar=options.columnar,
            columns_v2=options.columns_v2,
        )

    @contextlib.asynccontextmanager
    async def stream(
        self, sql: str, params: Sequence[value_pb2.Value], options: CallOptions
    ) -> AsyncIterator[ResultStream]:
        """A read streamed through a server-side cursor, on a pooled
        connection, for the duration of the block (see :meth:`open_stream`)."""
        started = time.monotonic()
        check_statement(sql)
        with self.reporting_errors():
            async with (
                self.admitted(options.deadline),
                self.connection(options.deadline) as conn,
                self.read_only(conn, options),
                self.open_stream(conn, sql, params, options, started) as rows,
            ):
                yield rows

    @contextlib.asynccontextmanager
    async def open_stream(
        self,
        conn: DriverConnection,
        sql: str,
        params: Sequence[value_pb2.Value],
        options: CallOptions,
        started: float,
    ) -> AsyncIterator[ResultStream]:
        """Streams a read on ``conn``. The deadline bounds the whole stream;
        ``statement_timeout`` bounds each wait on the database (the open, and
        every fetch), since a stream may rightly run for longer than any one
        statement should. Timeouts surface as TimeoutError, for
        :meth:`reporting_errors`."""

        def fetch_timeout() -> float:
            return options.deadline.bounded(self.config.statement_timeout)

        with self.counted(sql, write=False) as count:
            async with contextlib.AsyncExitStack() as stack:
                try:
                    async with Timeout(fetch_timeout()):
                        rows = await stack.enter_async_context(conn.stream(sql, params))
                except GatewayError as exc:
                    raise with_placeholder_hint(exc, self.engine, sql) from None
                chunker = RowChunker(self.config.stream_chunk_bytes, options.max_rows)
                stream = ResultStream(rows, chunker, fetch_timeout, started)
                try:
                    yield stream
                finally:
                    count.rows = stream.rows

    async def close(self) -> None:
        self._closing = True
        await self.replicas.close()
        for task in (self._prober, self._stall_check):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self.pool.close()
        await self.backend.close()


def _fails_over(error: GatewayError) -> bool:
    """A replica's failure that another endpoint can answer instead: it was
    unreachable, lost, or its circuit opened meanwhile (never an SQL error)."""
    return error.is_infrastructure or error.reason in (
        Reason.CIRCUIT_OPEN,
        Reason.POOL_EXHAUSTED,
    )
