"""Transactions: one pooled connection held from BEGIN to COMMIT or ROLLBACK.

:class:`Transaction` is the one way a transaction runs, whoever drives it: the
``Transaction`` stream, a handle-based caller through :class:`TransactionTable`,
:func:`run_atomically` (``RunTransaction``) and atomic batches. Whatever ends a
transaction (commit, rollback, an error, a dropped stream, expiry, shutdown),
its connection goes back to the pool only through :meth:`Transaction.close`,
which rolls back what was not committed; the pool checks again on release.

Handle-based transactions live in :class:`TransactionTable`, keyed by an
unguessable id. A caller that forgets one must not hold a connection and its
locks forever, so each has an idle timeout (default and maximum 60 s) and a
maximum lifetime (10 min), enforced on use and by a background reaper. Ids
that expired are remembered for a while, so their use says ABORTED /
TRANSACTION_EXPIRED ("you lost it") rather than NOT_FOUND ("never existed").
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hmac
import logging
import secrets
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from dbgateway.v1 import value_pb2

from .backends.base import DriverConnection, ExecResult, ResultSet, TransactionMode
from .call import current_call
from .errors import GatewayError, Reason, invalid_request
from .placeholders import with_placeholder_hint
from .resilience.retry import CallKind
from .statements import check_statement

if TYPE_CHECKING:
    from .call import CallOptions, Deadline, ResultStream
    from .database import Database

log = logging.getLogger(__name__)

#: Idle timeout of a handle-based transaction: the default and the most a caller may ask for.
MAX_IDLE_TIMEOUT = 60.0
#: No transaction lives longer than this, however busy.
MAX_LIFETIME = 600.0
#: How often the reaper looks for expired transactions.
REAP_INTERVAL = 0.5
#: How long (and how many) expired ids are remembered.
EXPIRED_MEMORY = 3600.0
EXPIRED_MEMORY_SIZE = 100_000
#: How long a rollback may take before the connection is dropped instead.
ROLLBACK_TIMEOUT = 5.0
#: The most RunTransaction attempts a caller may ask for (by default it is
#: retried until its deadline).
MAX_ATTEMPTS = 100

_BATCH_SAVEPOINT = "dbgateway_batch"


def new_transaction_id() -> str:
    """192 random bits, URL-safe."""
    return secrets.token_urlsafe(24)


@dataclass(frozen=True, slots=True)
class StatementCall:
    """One statement of a transaction, with the options it runs under."""

    sql: str
    params: Sequence[value_pb2.Value]
    options: CallOptions


def _beginning_call() -> tuple[str, str]:
    """(request id, tag) of the call being served, if any."""
    call = current_call()
    return ("", "") if call is None else (call.request_id, call.tag)


class Transaction:
    """An open transaction on a connection checked out of its database's pool."""

    __slots__ = (
        "_checkout",
        "_closing",
        "_conn",
        "database",
        "ended",
        "id",
        "idle_timeout",
        "last_used",
        "lock",
        "lost",
        "on_end",
        "owner",
        "request_id",
        "started_at",
        "tag",
    )

    def __init__(
        self,
        database: Database,
        conn: DriverConnection,
        checkout: AbstractAsyncContextManager[DriverConnection],
        *,
        idle_timeout: float,
        now: float,
        owner: str = "",
        on_end: Callable[[], None] | None = None,
        transaction_id: str | None = None,
    ) -> None:
        self.id = transaction_id or new_transaction_id()
        #: The request id and tag of the call that began it, for the
        #: long-transaction warning.
        self.request_id, self.tag = _beginning_call()
        #: Called once the connection is back: frees what the caller's
        #: concurrency limit counted for the transaction.
        self.on_end = on_end
        #: The principal that began it: no other may use it.
        self.owner = owner
        self.database = database
        self._conn = conn
        self._checkout = checkout
        self._closing: asyncio.Task[None] | None = None
        #: Held for the duration of each call: one call at a time per transaction.
        self.lock = asyncio.Lock()
        self.idle_timeout = idle_timeout
        self.started_at = now
        self.last_used = now
        #: Committed, rolled back or lost: no statement may run any more.
        self.ended = False
        #: The connection broke (or a statement on it was cut off): the
        #: database has rolled the transaction back or will.
        self.lost = False
        database.live_transactions.add(self)

    @classmethod
    async def begin(
        cls,
        database: Database,
        mode: TransactionMode,
        deadline: Deadline,
        *,
        idle_timeout: float = MAX_IDLE_TIMEOUT,
        now: float | None = None,
        owner: str = "",
        on_end: Callable[[], None] | None = None,
        transaction_id: str | None = None,
        admitted: bool = False,
    ) -> Transaction:
        """Checks a connection out and sends BEGIN. The circuit breaker
        admits and counts the BEGIN as it does a statement (one cut off by
        the caller's deadline timed out, so a stalled database is found by
        the same check), unless the caller's whole call was ``admitted``
        already (RunTransaction, once for all its attempts)."""
        checkout = database.connection(deadline)
        with database.reporting_errors():
            async with contextlib.nullcontext() if admitted else database.admitted(deadline):
                conn = await checkout.__aenter__()
                try:
                    async with asyncio.timeout(deadline.bounded(database.config.statement_timeout)):
                        await conn.begin(mode)
                except BaseException as exc:
                    await checkout.__aexit__(type(exc), exc, exc.__traceback__)
                    raise
        return cls(
            database,
            conn,
            checkout,
            idle_timeout=idle_timeout,
            now=time.monotonic() if now is None else now,
            owner=owner,
            on_end=on_end,
            transaction_id=transaction_id,
        )

    def expires_at(self) -> float:
        """The monotonic time after which the transaction is rolled back unused."""
        return min(self.last_used + self.idle_timeout, self.started_at + MAX_LIFETIME)

    def _check_usable(self) -> None:
        if not self.ended and self._conn.is_closed():
            self.lost = self.ended = True
        if self.lost:
            raise GatewayError(
                Reason.TRANSACTION_EXPIRED,
                "the transaction's connection was lost; the database rolled it back",
                metadata={"database": self.database.name},
            )
        if self.ended:
            raise GatewayError(
                Reason.INVALID_TRANSACTION_STATE,
                "the transaction has ended",
                metadata={"database": self.database.name},
            )

    @contextlib.contextmanager
    def _watching_connection(self) -> Iterator[None]:
        try:
            yield
        except (GatewayError, TimeoutError) as exc:
            broken = isinstance(exc, GatewayError) and exc.is_infrastructure
            if broken or self._conn.is_closed():
                self.lost = self.ended = True
            raise

    async def run(self, call: StatementCall, *, write: bool) -> ResultSet | ExecResult:
        """Runs one statement in the transaction. A failed statement leaves the
        transaction open (on PostgreSQL, aborted until ROLLBACK TO SAVEPOINT)."""
        self._check_usable()
        check_statement(call.sql, in_transaction=True)
        with self.database.reporting_errors(), self._watching_connection():
            return await self.database.statement(
                self._conn, call.sql, call.params, call.options, write=write
            )

    @contextlib.asynccontextmanager
    async def stream(self, call: StatementCall) -> AsyncIterator[ResultStream]:
        """A streamed read inside the transaction, on its connection."""
        self._check_usable()
        check_statement(call.sql, in_transaction=True)
        with self.database.reporting_errors(), self._watching_connection():
            async with self.database.open_stream(
                self._conn, call.sql, call.params, call.options, time.monotonic()
            ) as rows:
                yield rows

    async def execute_batch(
        self,
        sql: str,
        param_sets: Sequence[Sequence[value_pb2.Value]],
        options: CallOptions,
        *,
        savepoint: bool = True,
    ) -> int | None:
        """Runs ``sql`` once per parameter set. With ``savepoint`` a failed batch
        is undone alone and the transaction stays as it was before it."""
        self._check_usable()
        check_statement(sql, in_transaction=True)
        conn = self._conn
        timeout = options.deadline.bounded(self.database.config.statement_timeout)
        with self.database.reporting_errors(), self._watching_connection():
            async with asyncio.timeout(timeout):
                if not savepoint:
                    return await self._execute_many(sql, param_sets)
                await conn.execute(f"SAVEPOINT {_BATCH_SAVEPOINT}", ())
                try:
                    rows = await self._execute_many(sql, param_sets)
                except GatewayError:
                    if not conn.is_closed():
                        await conn.execute(f"ROLLBACK TO SAVEPOINT {_BATCH_SAVEPOINT}", ())
                        await conn.execute(f"RELEASE SAVEPOINT {_BATCH_SAVEPOINT}", ())
                    raise
                await conn.execute(f"RELEASE SAVEPOINT {_BATCH_SAVEPOINT}", ())
                return rows

    async def _execute_many(
        self, sql: str, param_sets: Sequence[Sequence[value_pb2.Value]]
    ) -> int | None:
        """The batch itself, counted (and traced) as one statement; a failure
        a wrong placeholder style explains gets the hint Execute gives."""
        database = self.database
        with database.counted(sql, write=True) as count:
            try:
                rows = await self._conn.execute_many(sql, param_sets)
            except GatewayError as exc:
                raise with_placeholder_hint(exc, database.engine, sql) from None
            count.rows = rows or 0
        return rows

    async def commit(self, deadline: Deadline) -> None:
        """Commits and returns the connection. A definite refusal by the
        database (a serialization failure at commit, say) is reported as
        itself; a connection lost or cut off while COMMIT was under way is
        UNKNOWN / COMMIT_OUTCOME_UNKNOWN, since the commit may have happened."""
        self._check_usable()
        self.ended = True
        left = deadline.remaining()
        if left is not None and left <= 0:
            await self.close()
            raise GatewayError(
                Reason.STATEMENT_TIMEOUT,
                "the call's deadline had passed before COMMIT; the transaction was rolled back",
                metadata={"database": self.database.name, "engine": self.database.engine},
            )
        error: BaseException | None = None
        try:
            with self.database.reporting_errors():
                async with asyncio.timeout(
                    deadline.bounded(self.database.config.statement_timeout)
                ):
                    await self._conn.commit()
        except GatewayError as exc:
            error = exc
            if exc.is_infrastructure or exc.reason is Reason.STATEMENT_TIMEOUT:
                self.lost = True
                raise GatewayError(
                    Reason.COMMIT_OUTCOME_UNKNOWN,
                    f"the connection failed while COMMIT was under way ({exc.message}); "
                    "the transaction may or may not have been committed",
                    metadata=exc.metadata,
                ) from None
            raise
        except BaseException as exc:
            error = exc
            raise
        finally:
            await self.close(error)

    async def close(self, error: BaseException | None = None) -> None:
        """Rolls back what was not committed and returns the connection to the
        pool (discarded when ``error`` says its state is unknown). Runs to the
        end even when the calling task is cancelled, so a dropped stream
        never leaves a session idle in transaction."""
        self.ended = True
        if self._closing is None:
            self._closing = asyncio.get_running_loop().create_task(self._close(error))
        await asyncio.shield(self._closing)

    async def _close(self, error: BaseException | None) -> None:
        conn = self._conn
        try:
            if error is None and not conn.is_closed() and conn.in_transaction():
                async with asyncio.timeout(ROLLBACK_TIMEOUT):
                    await conn.rollback()
        except (GatewayError, TimeoutError, OSError) as exc:
            error = exc
        finally:
            self.database.live_transactions.discard(self)
            try:
                await self._checkout.__aexit__(None if error is None else type(error), error, None)
            finally:
                if self.on_end is not None:
                    self.on_end()


# -- RunTransaction -------------------------------------------------------------------


async def run_atomically(
    database: Database,
    statements: Sequence[StatementCall],
    mode: TransactionMode,
    deadline: Deadline,
    max_attempts: int,
) -> tuple[list[ResultSet | ExecResult], int]:
    """Runs ``statements`` in one transaction and commits; on a serialization
    failure or deadlock (also one reported by COMMIT itself, a definite "not
    committed") the whole transaction runs again after a jittered backoff,
    until ``deadline`` (or at most ``max_attempts`` times, when set). Without
    a deadline the retries stop after the database's ``statement_timeout``.
    Returns the per-statement results and the attempts."""
    if max_attempts > MAX_ATTEMPTS:
        raise invalid_request("max_attempts", f"must be between 1 and {MAX_ATTEMPTS}")
    for index, call in enumerate(statements):
        try:
            check_statement(call.sql, in_transaction=True)
        except GatewayError as exc:
            raise exc.with_metadata(statement_index=index) from None
    remaining = deadline.remaining
    if remaining() is None:
        stop_at = time.monotonic() + database.config.statement_timeout

        def remaining() -> float | None:
            return stop_at - time.monotonic()

    try:
        return await database.retrying(
            lambda: _run_once(database, statements, mode, deadline),
            kind=CallKind.TRANSACTION,
            deadline=deadline,
            what=f"database {database.name}: transaction",
            remaining=remaining,
            max_attempts=max_attempts,
        )
    except GatewayError as exc:
        # Also a failure on the first attempt says how many it took.
        raise exc.with_metadata(attempts=1) from None


async def _run_once(
    database: Database,
    statements: Sequence[StatementCall],
    mode: TransactionMode,
    deadline: Deadline,
) -> list[ResultSet | ExecResult]:
    tx = await Transaction.begin(database, mode, deadline, admitted=True)
    try:
        results = []
        for index, call in enumerate(statements):
            try:
                results.append(await tx.run(call, write=not call.options.max_rows))
            except GatewayError as exc:
                raise exc.with_metadata(statement_index=index) from None
        await tx.commit(deadline)
        return results
    finally:
        await tx.close()


async def execute_batch_atomically(
    database: Database,
    sql: str,
    param_sets: Sequence[Sequence[value_pb2.Value]],
    options: CallOptions,
) -> int | None:
    """An ExecuteBatch outside a transaction: all parameter sets or none."""
    check_statement(sql)
    mode = TransactionMode(read_only=options.read_only, role=options.role)
    tx = await Transaction.begin(database, mode, options.deadline)
    try:
        rows = await tx.execute_batch(sql, param_sets, options, savepoint=False)
        await tx.commit(options.deadline)
        return rows
    finally:
        await tx.close()


# -- Handle-based transactions ------------------------------------------------------------


class TransactionTable:
    """The open handle-based transactions of this server."""

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        new_id: Callable[[], str] = new_transaction_id,
    ) -> None:
        self._clock = clock
        #: Ids name the process that owns the transaction (see cluster.py).
        self._new_id = new_id
        self._open: dict[str, Transaction] = {}
        # id -> (when it ended, why, owner): for TRANSACTION_EXPIRED instead of NOT_FOUND.
        self._ended: collections.OrderedDict[str, tuple[float, str, str]] = (
            collections.OrderedDict()
        )
        self._reaper: asyncio.Task[None] | None = None

    def __len__(self) -> int:
        return len(self._open)

    def start(self) -> None:
        self._reaper = asyncio.get_running_loop().create_task(
            self._reap_forever(), name="transaction-reaper"
        )

    async def begin(
        self,
        database: Database,
        mode: TransactionMode,
        deadline: Deadline,
        idle_timeout: float | None,
        owner: str = "",
        on_end: Callable[[], None] | None = None,
    ) -> Transaction:
        if idle_timeout is None:
            idle_timeout = MAX_IDLE_TIMEOUT
        elif not 0 < idle_timeout <= MAX_IDLE_TIMEOUT:
            raise invalid_request(
                "options.idle_timeout",
                f"must be more than 0 and at most {MAX_IDLE_TIMEOUT:g}s, got {idle_timeout:g}s",
            )
        tx = await Transaction.begin(
            database,
            mode,
            deadline,
            idle_timeout=idle_timeout,
            now=self._clock(),
            owner=owner,
            on_end=on_end,
            transaction_id=self._new_id(),
        )
        self._open[tx.id] = tx
        return tx

    @contextlib.asynccontextmanager
    async def use(
        self, transaction_id: str, database: str, owner: str = ""
    ) -> AsyncIterator[Transaction]:
        """The transaction, for one call by ``owner``. A second call while one
        is under way fails at once with TRANSACTION_BUSY rather than queueing:
        the caller has a bug (or a retry racing its original), and waiting
        would hide it."""
        tx = await self._find(transaction_id, database, owner)
        if tx.lock.locked():
            raise GatewayError(
                Reason.TRANSACTION_BUSY,
                f"transaction {_short(transaction_id)} is running another call; "
                "a transaction takes one call at a time",
                metadata={"database": tx.database.name},
            )
        async with tx.lock:
            try:
                yield tx
            finally:
                tx.last_used = self._clock()
                if tx.ended:
                    self._open.pop(tx.id, None)
                    if tx.lost:
                        self._remember(tx, "its connection was lost")
                    await tx.close()

    async def _find(self, transaction_id: str, database: str, owner: str) -> Transaction:
        if not transaction_id:
            raise invalid_request("transaction_id", "must not be empty")
        tx = self._open.get(transaction_id)
        if tx is not None and not hmac.compare_digest(tx.owner, owner):
            # Another principal's transaction does not exist, as far as this caller can tell.
            tx = None
        if tx is None:
            ended = self._ended.get(transaction_id)
            if ended is not None and hmac.compare_digest(ended[2], owner):
                raise GatewayError(
                    Reason.TRANSACTION_EXPIRED,
                    f"transaction {_short(transaction_id)} was rolled back: {ended[1]}",
                )
            raise GatewayError(
                Reason.TRANSACTION_NOT_FOUND,
                f"no open transaction {_short(transaction_id)} on this server "
                "(committed, rolled back, or begun on another replica)",
            )
        if database and database != tx.database.name:
            raise invalid_request(
                "database",
                f"transaction {_short(transaction_id)} belongs to database "
                f"{tx.database.name!r}, not {database!r}",
            )
        if not tx.lock.locked() and tx.expires_at() <= self._clock():
            await self._expire(tx)
            return await self._find(transaction_id, database, owner)
        return tx

    async def commit(
        self, transaction_id: str, database: str, deadline: Deadline, owner: str = ""
    ) -> Database:
        """Commits; returns the endpoint the transaction ran on."""
        async with self.use(transaction_id, database, owner) as tx:
            await tx.commit(deadline)
        return tx.database

    async def rollback(self, transaction_id: str, database: str, owner: str = "") -> None:
        """Rolls back; an id that is not open (never was, already ended,
        expired, another principal's) is fine: the caller's wish already holds."""
        tx = self._open.get(transaction_id)
        if tx is None or not hmac.compare_digest(tx.owner, owner):
            return
        async with self.use(transaction_id, database, owner) as tx:
            await tx.close()

    def _remember(self, tx: Transaction, why: str) -> None:
        self._ended[tx.id] = (self._clock(), why, tx.owner)
        while len(self._ended) > EXPIRED_MEMORY_SIZE:
            self._ended.popitem(last=False)

    async def _expire(self, tx: Transaction) -> None:
        if self._open.pop(tx.id, None) is None:
            return
        now = self._clock()
        if now >= tx.started_at + MAX_LIFETIME:
            why = f"it was open for longer than the maximum of {MAX_LIFETIME:g}s"
        else:
            why = f"it was idle for longer than its idle timeout of {tx.idle_timeout:g}s"
        self._remember(tx, why)
        log.info(
            "transaction %s on database %s rolled back: %s", _short(tx.id), tx.database.name, why
        )
        await tx.close()

    async def reap(self) -> None:
        """Rolls back every expired transaction not in use right now."""
        now = self._clock()
        for tx in list(self._open.values()):
            if not tx.lock.locked() and tx.expires_at() <= now:
                await self._expire(tx)
        while self._ended:
            ended_at, _, _ = next(iter(self._ended.values()))
            if now - ended_at < EXPIRED_MEMORY:
                break
            self._ended.popitem(last=False)

    async def _reap_forever(self) -> None:
        while True:
            await asyncio.sleep(REAP_INTERVAL)
            try:
                await self.reap()
            except Exception:
                log.exception("transaction reaper failed; it keeps running")

    async def close(self) -> None:
        """Rolls back every open transaction (the server is stopping)."""
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
        open_now, self._open = list(self._open.values()), {}
        for tx in open_now:
            self._remember(tx, "the server shut down")
        await asyncio.gather(*(tx.close() for tx in open_now), return_exceptions=True)
        if open_now:
            log.info("rolled back %d open transaction(s) at shutdown", len(open_now))


def _short(transaction_id: str) -> str:
    """Enough of an id for a message or a log line, not enough to use it."""
    return transaction_id[:8] + "..."
