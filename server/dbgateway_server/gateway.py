"""The gateway core: the database registry, routing, deadlines and health.

Servicers call :class:`Gateway`; it finds the :class:`Database`, checks the
statement and runs it: through the database's circuit breaker, under the retry
policy (:mod:`.resilience.retry`), on a connection checked out of the pool
within the caller's deadline, with the rest of that deadline (capped by the
database's ``statement_timeout``) as the statement's timeout. Transactions
(:mod:`.transactions`) hold a connection across calls; the gateway owns the
table of handle-based ones. A database with read replicas sends its reads
and read-only transactions to the endpoint their read preference picks
(:mod:`.replicas`); writes always run on the primary.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass

from dbgateway.v1 import value_pb2

from .backends import backend_for
from .backends.base import (
    ExecResult,
    ResultSet,
    TransactionMode,
)
from .call import BatchOutcome, CallOptions, Deadline, OpenTransaction, Outcome, ResultStream
from .config import Config, ReadPreference
from .database import Database, HealthListener, RetryListener
from .drain import Drain
from .errors import GatewayError, Reason
from .replicas import routed_to
from .statement_stats import StatementStatistics
from .subscriptions import Subscription, SubscriptionHub
from .transactions import (
    StatementCall,
    Transaction,
    TransactionTable,
    execute_batch_atomically,
    new_transaction_id,
    run_atomically,
)

log = logging.getLogger(__name__)

#: How long a database removed or replaced by a reload may keep its pool for
#: the calls and transactions still on it (a transaction's maximum lifetime).
RETIRE_LIMIT = 600.0
RETIRE_POLL = 0.1


@dataclass(frozen=True, slots=True)
class Reconfiguration:
    """What a reload changed, by database name."""

    added: frozenset[str]
    changed: frozenset[str]
    removed: frozenset[str]


class Gateway:
    """Routes calls to the configured databases."""

    def __init__(
        self,
        config: Config,
        listener: HealthListener | None = None,
        *,
        transaction_ids: Callable[[], str] = new_transaction_id,
    ) -> None:
        self.config = config
        self._listener = listener or (lambda name, serving: None)
        #: Told of every retry (database, reason of the failed attempt); the
        #: server points it at its metrics.
        self.retry_listener: RetryListener = lambda database, reason: None
        #: Every statement sent to any database, by normalized text.
        self.statements = StatementStatistics(config.server.statement_stats)
        self.databases: dict[str, Database] = {
            name: Database(db, backend_for(db), self._notify, self._on_retry, self.statements)
            for name, db in config.databases.items()
        }
        self.transactions = TransactionTable(new_id=transaction_ids)
        #: The calls in flight, and whether new ones are still taken.
        self.drain = Drain()
        self.subscriptions = SubscriptionHub(config.server.subscription_queue)
        #: Databases a reload removed, by name, while their last calls and
        #: transactions finish: new calls naming them are refused.
        self.removed: dict[str, Database] = {}
        self._retiring: set[asyncio.Task[None]] = set()

    def _on_retry(self, database: str, reason: str) -> None:
        self.retry_listener(database, reason)

    def _notify(self, name: str, serving: bool) -> None:
        self._listener(name, serving)

    async def start(self) -> None:
        await asyncio.gather(*(db.start() for db in self.databases.values()))
        self.transactions.start()

    async def close(self) -> None:
        """Shuts the core down; the one place shutdown happens. Called after the
        server stopped taking calls and in-flight ones finished or were
        cancelled: open transactions are rolled back (their connections come
        back to the pools rolled back or are discarded), then every database's
        background probe stops and its pool closes."""
        await self.subscriptions.close()
        await self.transactions.close()
        for task in list(self._retiring):
            task.cancel()
        await asyncio.gather(*self._retiring, return_exceptions=True)
        await asyncio.gather(*(db.close() for db in self.databases.values()))

    async def subscribe(
        self, database: str, channels: Sequence[str], deadline: Deadline
    ) -> Subscription:
        """A live subscription to ``channels`` of ``database`` (through its one
        listening connection); the caller must close it."""
        return await self.subscriptions.subscribe(self.database(database), channels, deadline)

    async def end_subscriptions(self) -> None:
        """Ends every subscription (UNAVAILABLE) and closes the listening
        connections: they never finish by themselves, so a drain ends them
        first."""
        await self.subscriptions.close()

    async def reconfigure(self, config: Config) -> Reconfiguration:
        """Takes the databases of a reloaded configuration. An unchanged
        database keeps its pool, circuit and transactions; a new one starts;
        one whose settings changed starts afresh under the same name, and the
        old one, like one that was removed, serves the calls and transactions
        already on it, then closes its pool. New calls naming a removed
        database get UNAVAILABLE until it has drained, then NOT_FOUND."""
        old = self.databases
        fresh: dict[str, Database] = {}
        for name, db_config in config.databases.items():
            current = old.get(name)
            if current is not None and current.config == db_config:
                fresh[name] = current
            else:
                fresh[name] = Database(
                    db_config, backend_for(db_config), self._notify, self._on_retry, self.statements
                )
        started = [db for name, db in fresh.items() if old.get(name) is not db]
        await asyncio.gather(*(db.start() for db in started))
        retired = [db for name, db in old.items() if fresh.get(name) is not db]
        self.databases = fresh
        self.config = config
        for db in retired:
            if db.name not in fresh:
                self.removed[db.name] = db
            task = asyncio.get_running_loop().create_task(
                self._retire(db), name=f"retire-{db.name}"
            )
            self._retiring.add(task)
            task.add_done_callback(self._retiring.discard)
        for name in fresh:
            self.removed.pop(name, None)
        return Reconfiguration(
            added=frozenset(fresh.keys() - old.keys()),
            changed=frozenset(n for n in fresh.keys() & old.keys() if fresh[n] is not old[n]),
            removed=frozenset(old.keys() - fresh.keys()),
        )

    async def _retire(self, db: Database) -> None:
        """Waits until nothing uses ``db`` any more (or its transactions have
        outlived their maximum lifetime), then closes its pool. Its
        subscriptions end at once (they never finish by themselves); their
        callers subscribe again, to the database as now configured."""
        await self.subscriptions.retire(db)
        deadline = time.monotonic() + RETIRE_LIMIT
        endpoints = [db, *(r.database for r in db.replicas.replicas)]
        while time.monotonic() < deadline:
            pools = [e.pool.stats() for e in endpoints]
            if not db.live_transactions and all(s.in_use == 0 and s.waiting == 0 for s in pools):
                break
            await asyncio.sleep(RETIRE_POLL)
        try:
            await db.close()
        finally:
            if self.removed.get(db.name) is db:
                del self.removed[db.name]
            log.info("database %s: drained after a config reload; its pool is closed", db.name)

    def database(self, name: str, visible: Callable[[str], bool] | None = None) -> Database:
        """The database called ``name`` (empty: the only one). ``visible``
        says which database names the caller may learn of: an error lists
        only those, so a principal cannot enumerate the others."""
        if not name:
            if len(self.databases) == 1:
                return next(iter(self.databases.values()))
            raise GatewayError(
                Reason.INVALID_REQUEST,
                "database: required when more than one database is configured "
                f"({self._listing(visible)})",
                field_violations=[("database", "required")],
            )
        try:
            return self.databases[name]
        except KeyError:
            if name in self.removed:
                raise GatewayError(
                    Reason.DATABASE_UNAVAILABLE,
                    f"database {name!r} was removed from the configuration; "
                    "it finishes the calls and transactions already on it",
                    metadata={"database": name},
                ) from None
            raise GatewayError(
                Reason.UNKNOWN_DATABASE,
                f"unknown database {name!r} ({self._listing(visible)})",
                metadata={"database": name},
            ) from None

    def _listing(self, visible: Callable[[str], bool] | None) -> str:
        names = sorted(n for n in self.databases if visible is None or visible(n))
        if not names:
            return "none is available to this caller"
        return f"available: {', '.join(names)}"

    async def query(
        self,
        database: str,
        sql: str,
        params: Sequence[value_pb2.Value],
        options: CallOptions,
        transaction_id: str = "",
        owner: str = "",
    ) -> Outcome:
        return await self._statement(
            database, sql, params, options, transaction_id, owner, write=False
        )

    async def execute(
        self,
        database: str,
        sql: str,
        params: Sequence[value_pb2.Value],
        options: CallOptions,
        transaction_id: str = "",
        owner: str = "",
    ) -> Outcome:
        return await self._statement(
            database, sql, params, options, transaction_id, owner, write=True
        )

    async def _statement(
        self,
        database: str,
        sql: str,
        params: Sequence[value_pb2.Value],
        options: CallOptions,
        transaction_id: str,
        owner: str,
        *,
        write: bool,
    ) -> Outcome:
        """One statement: in the named handle-based transaction, or on its own
        (through the breaker and the retry policy): a read on the endpoint
        its read preference picks, a write on the primary."""
        if not transaction_id:
            db = self.database(database)
            if not write:
                return await db.read(sql, params, options)
            outcome = await db.run(sql, params, options, write=True)
            outcome.read_token = await db.read_token(options.deadline)
            return outcome
        started = time.monotonic()
        async with self.transactions.use(transaction_id, database, owner) as tx:
            routed_to(tx.database.endpoint)
            result = await tx.run(StatementCall(sql, params, options), write=write)
        return Outcome(result=result, elapsed=time.monotonic() - started)

    async def execute_batch(
        self,
        database: str,
        sql: str,
        param_sets: Sequence[Sequence[value_pb2.Value]],
        options: CallOptions,
        transaction_id: str = "",
        owner: str = "",
    ) -> BatchOutcome:
        started = time.monotonic()
        token = ""
        if transaction_id:
            async with self.transactions.use(transaction_id, database, owner) as tx:
                rows = await tx.execute_batch(sql, param_sets, options)
        else:
            db = self.database(database)
            rows = await execute_batch_atomically(db, sql, param_sets, options)
            token = await db.read_token(options.deadline)
        return BatchOutcome(
            rows_affected=rows, elapsed=time.monotonic() - started, read_token=token
        )

    async def run_transaction(
        self,
        database: str,
        statements: Sequence[StatementCall],
        mode: TransactionMode,
        deadline: Deadline,
        max_attempts: int,
        read_preference: ReadPreference | None = None,
    ) -> tuple[list[ResultSet | ExecResult], int]:
        """RunTransaction: a read-only one runs where ``read_preference`` says."""
        return await self.database(database).transaction_on_endpoint(
            mode.read_only,
            read_preference,
            deadline,
            lambda endpoint: run_atomically(endpoint, statements, mode, deadline, max_attempts),
        )

    async def open_transaction(
        self,
        database: str,
        mode: TransactionMode,
        deadline: Deadline,
        read_preference: ReadPreference | None = None,
    ) -> Transaction:
        """A transaction for one caller that keeps it to itself (the stream);
        the caller must close it. A read-only one runs where
        ``read_preference`` says."""
        return await self.database(database).transaction_on_endpoint(
            mode.read_only,
            read_preference,
            deadline,
            lambda endpoint: Transaction.begin(endpoint, mode, deadline),
        )

    async def read_token(self, database: str, deadline: Deadline) -> str:
        """The ``read_token`` for writes just committed on ``database``
        (empty when a reload removed it meanwhile: the write still committed)."""
        try:
            db = self.database(database)
        except GatewayError:
            return ""
        return await db.read_token(deadline)

    async def begin(
        self,
        database: str,
        mode: TransactionMode,
        deadline: Deadline,
        idle_timeout: float | None,
        owner: str = "",
        on_end: Callable[[], None] | None = None,
        read_preference: ReadPreference | None = None,
    ) -> Transaction:
        """A handle-based transaction, kept in the table until committed,
        rolled back or expired; only ``owner`` can use it. ``on_end`` is
        called once it has ended and its connection is back. A read-only one
        runs where ``read_preference`` says, and every call on it stays there."""
        return await self.database(database).transaction_on_endpoint(
            mode.read_only,
            read_preference,
            deadline,
            lambda endpoint: self.transactions.begin(
                endpoint, mode, deadline, idle_timeout, owner, on_end
            ),
        )

    async def commit(
        self, transaction_id: str, database: str, deadline: Deadline, owner: str = ""
    ) -> str:
        """Commits; returns the ``read_token`` of what it wrote (empty on a
        database without replicas)."""
        endpoint = await self.transactions.commit(transaction_id, database, deadline, owner)
        # The endpoint itself, not a lookup by name: a reload may have removed
        # the name while the transaction finished.
        return await endpoint.read_token(deadline)

    async def rollback(self, transaction_id: str, database: str, owner: str = "") -> None:
        await self.transactions.rollback(transaction_id, database, owner)

    @contextlib.asynccontextmanager
    async def stream(
        self,
        database: str,
        sql: str,
        params: Sequence[value_pb2.Value],
        options: CallOptions,
        transaction_id: str = "",
        owner: str = "",
    ) -> AsyncIterator[ResultStream]:
        """A streamed read, inside the handle-based transaction when one is
        named (which stays busy until the stream ends)."""
        if transaction_id:
            async with (
                self.transactions.use(transaction_id, database, owner) as tx,
                tx.stream(StatementCall(sql, params, options)) as rows,
            ):
                routed_to(tx.database.endpoint)
                yield rows
            return
        async with self.database(database).read_stream(sql, params, options) as rows:
            yield rows

    def open_transactions(self) -> Sequence[OpenTransaction]:
        """The transactions open right now (every kind), oldest first."""
        now = time.monotonic()
        live = [tx for db in self.databases.values() for tx in db.live_transactions]
        return [
            OpenTransaction(
                key=tx.id,
                database=tx.database.name,
                age=now - tx.started_at,
                tag=tx.tag,
                request_id=tx.request_id,
            )
            for tx in sorted(live, key=lambda t: t.started_at)
        ]

    @property
    def names(self) -> Mapping[str, Database]:
        return self.databases
