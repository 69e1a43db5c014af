"""The gateway core: the database registry, routing, deadlines and health.

Servicers call :class:`Gateway`; it finds the :class:`Database`, checks the
statement, checks a connection out of the pool within the caller's deadline,
and lets the backend run the SQL.
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
from .backends.base import Backend, DriverConnection, ExecResult, ResultSet
from .config import Config, DatabaseConfig
from .errors import GatewayError, Reason
from .pool import ConnectionPool
from .statements import check_statement

log = logging.getLogger(__name__)

#: How often a database that is down is tried again in the background.
RECOVERY_INTERVAL = 2.0

HealthListener = Callable[[str, bool], None]


class Deadline:
    """The absolute monotonic time by which a call must be answered."""

    __slots__ = ("_at", "_budget")

    def __init__(self, budget: float | None) -> None:
        self._budget = budget
        self._at = None if budget is None else time.monotonic() + budget

    @classmethod
    def sooner(cls, *budgets: float | None) -> Deadline:
        known = [b for b in budgets if b is not None]
        return cls(min(known) if known else None)

    def remaining(self) -> float | None:
        return None if self._at is None else self._at - time.monotonic()

    def bounded(self, cap: float) -> float:
        """What is left, but at most ``cap``."""
        left = self.remaining()
        return cap if left is None else min(left, cap)


@dataclass(frozen=True, slots=True)
class CallOptions:
    deadline: Deadline
    max_rows: int = 0
    idempotent: bool = False
    tag: str = ""


@dataclass(frozen=True, slots=True)
class OpenTransaction:
    """A transaction in the transactions table, as operators see it."""

    #: The table's own key; used to tell transactions apart, never logged.
    key: str
    database: str
    #: Seconds since it began.
    age: float
    tag: str = ""
    #: The request id of the call that began it.
    request_id: str = ""


@dataclass(slots=True)
class Outcome:
    """What a statement RPC returns, plus how it ran."""

    result: ResultSet | ExecResult
    elapsed: float
    attempts: int = 1


class Database:
    """One configured database: its backend, its pool and its health."""

    def __init__(self, config: DatabaseConfig, backend: Backend, listener: HealthListener) -> None:
        self.config = config
        self.name = config.name
        self.backend = backend
        self.pool = ConnectionPool(config.name, backend.connect, config.pool)
        self._listener = listener
        self.serving = False
        self._recovery: asyncio.Task[None] | None = None

    @property
    def engine(self) -> str:
        return str(self.config.engine)

    def _set_serving(self, serving: bool) -> None:
        if serving != self.serving:
            self.serving = serving
            log.info("database %s is %s", self.name, "SERVING" if serving else "NOT_SERVING")
        self._listener(self.name, serving)

    async def start(self) -> None:
        """Opens the pool; a database that is down is reported, not fatal."""
        try:
            await self.pool.start()
            async with self.pool.connection(self.config.connect_timeout) as conn:
                await conn.ping(self.config.connect_timeout)
        except GatewayError as exc:
            log.warning(
                "database %s (%s) is not reachable at start: %s",
                self.name,
                self.config.redacted_dsn,
                exc.message,
            )
            self._set_serving(False)
            self._recovery = asyncio.get_running_loop().create_task(self._recover())
            return
        log.info(
            "database %s: %s %s at %s",
            self.name,
            self.engine,
            self.backend.server_version,
            self.config.redacted_dsn,
        )
        self._set_serving(True)

    async def _recover(self) -> None:
        while True:
            await asyncio.sleep(RECOVERY_INTERVAL)
            try:
                async with self.pool.connection(self.config.connect_timeout) as conn:
                    await conn.ping(self.config.connect_timeout)
            except GatewayError:
                continue
            log.info("database %s answered again", self.name)
            self._set_serving(True)
            return

    @contextlib.asynccontextmanager
    async def connection(self, deadline: Deadline) -> AsyncIterator[DriverConnection]:
        left = deadline.remaining()
        if left is not None and left <= 0:
            raise GatewayError(Reason.STATEMENT_TIMEOUT, "the call's deadline had already passed")
        async with self.pool.connection(deadline.bounded(self.config.pool.acquire_timeout)) as conn:
            yield conn

    async def run(
        self, sql: str, params: Sequence[value_pb2.Value], options: CallOptions, *, write: bool
    ) -> Outcome:
        started = time.monotonic()
        check_statement(sql)
        timeout = 0.0
        try:
            async with self.connection(options.deadline) as conn:
                timeout = options.deadline.bounded(self.config.statement_timeout)
                async with asyncio.timeout(timeout):
                    result: ResultSet | ExecResult
                    if write:
                        result = await conn.execute(sql, params)
                    else:
                        result = await conn.query(sql, params, max_rows=options.max_rows)
        except TimeoutError:
            raise GatewayError(
                Reason.STATEMENT_TIMEOUT,
                f"statement cancelled after {max(timeout, 0):.3g}s "
                "(the call's deadline or the database's statement_timeout)",
                metadata={"database": self.name, "engine": self.engine},
            ) from None
        except GatewayError as exc:
            raise exc.with_metadata(database=self.name, engine=self.engine) from None
        return Outcome(result=result, elapsed=time.monotonic() - started)

    async def close(self) -> None:
        if self._recovery is not None:
            self._recovery.cancel()
        await self.pool.close()
        await self.backend.close()


class Gateway:
    """Routes calls to the configured databases."""

    def __init__(self, config: Config, listener: HealthListener | None = None) -> None:
        self.config = config
        self._listener = listener or (lambda name, serving: None)
        self.databases: dict[str, Database] = {
            name: Database(db, backend_for(db), self._notify)
            for name, db in config.databases.items()
        }

    def _notify(self, name: str, serving: bool) -> None:
        self._listener(name, serving)

    async def start(self) -> None:
        await asyncio.gather(*(db.start() for db in self.databases.values()))

    async def close(self) -> None:
        await asyncio.gather(*(db.close() for db in self.databases.values()))

    def database(self, name: str) -> Database:
        if not name:
            if len(self.databases) == 1:
                return next(iter(self.databases.values()))
            raise GatewayError(
                Reason.INVALID_REQUEST,
                "database: required when more than one database is configured "
                f"(configured: {', '.join(sorted(self.databases))})",
                field_violations=[("database", "required")],
            )
        try:
            return self.databases[name]
        except KeyError:
            raise GatewayError(
                Reason.UNKNOWN_DATABASE,
                f"unknown database {name!r} (configured: {', '.join(sorted(self.databases))})",
                metadata={"database": name},
            ) from None

    async def query(
        self, database: str, sql: str, params: Sequence[value_pb2.Value], options: CallOptions
    ) -> Outcome:
        return await self.database(database).run(sql, params, options, write=False)

    async def execute(
        self, database: str, sql: str, params: Sequence[value_pb2.Value], options: CallOptions
    ) -> Outcome:
        return await self.database(database).run(sql, params, options, write=True)

    def open_transactions(self) -> Sequence[OpenTransaction]:
        """The transactions open right now (none until the transactions table lands)."""
        return ()

    @property
    def names(self) -> Mapping[str, Database]:
        return self.databases
