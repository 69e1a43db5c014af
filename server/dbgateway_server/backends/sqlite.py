"""SQLite through aiosqlite: WAL, a busy timeout, writes serialised, reads concurrent."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

from dbgateway.v1 import value_pb2

from ..config import sqlite_path
from ..errors import GatewayError, Reason, reason_for_sqlite_error, sqlite_error_name
from ..results import read_result
from ..statements import SQLITE_READ_PRAGMAS, first_keyword
from ..values import SQLITE_PARAMS, Column, Converter, convert_rows, from_python
from .base import (
    Backend,
    DriverConnection,
    ExecResult,
    ResultLimits,
    ResultSet,
    RowStream,
    TransactionMode,
    Translating,
)

T = TypeVar("T")
ENGINE = "sqlite"
BUSY_TIMEOUT_MS = 5000


def translate(exc: BaseException, database: str) -> GatewayError | None:
    """The GatewayError for a sqlite3 exception; None for others."""
    meta: dict[str, str | int | None] = {"engine": ENGINE, "database": database}
    if isinstance(exc, sqlite3.Error):
        name = sqlite_error_name(
            getattr(exc, "sqlite_errorcode", None), getattr(exc, "sqlite_errorname", None)
        )
        reason = reason_for_sqlite_error(name, type(exc).__name__)
        meta["vendor_code"] = name
        message = str(exc)
        if reason is Reason.SQL_ERROR and "bindings" in message:
            reason = Reason.INVALID_REQUEST  # wrong number of parameters
        return GatewayError(reason, message, metadata=meta)
    if isinstance(exc, OverflowError):
        return GatewayError(
            Reason.INVALID_PARAMETER, f"parameter out of range: {exc}", metadata=meta
        )
    if isinstance(exc, ValueError) and "closed" in str(exc):
        return GatewayError(Reason.DATABASE_UNAVAILABLE, str(exc), metadata=meta)
    return None


def translate_errors(database: str) -> contextlib.AbstractContextManager[None]:
    """The one place sqlite3 exceptions become GatewayErrors."""
    return Translating(translate, database)


_TEMP_CREATES = frozenset(
    {
        sqlite3.SQLITE_CREATE_TEMP_TABLE,
        sqlite3.SQLITE_CREATE_TEMP_INDEX,
        sqlite3.SQLITE_CREATE_TEMP_TRIGGER,
        sqlite3.SQLITE_CREATE_TEMP_VIEW,
    }
)


class SQLiteConnection(DriverConnection):
    """One sqlite3 connection, behind an authorizer: SQLite itself, while it
    prepares a statement, refuses what would change the connection for the
    next caller (a PRAGMA given a value, ATTACH, DETACH), whatever the text
    looks like; the gateway's own PRAGMAs run trusted and uncached."""

    reusable_after_interrupt = True  # interrupt() ends the statement cleanly

    def __init__(self, conn: aiosqlite.Connection, backend: SQLiteBackend) -> None:
        self._conn = conn
        self._backend = backend
        self._database = backend.config.name
        self._closed = False
        self._holds_write_lock = False
        #: The gateway's own statement is being prepared: the authorizer allows it.
        self._trusted = False
        #: What the authorizer refused last, for the caller's error message.
        self._refused = ""
        #: A temporary object was created: the reset drops the temp schema's objects.
        self._temp_used = False
        self._query_only = False
        #: interrupt() was called: the reset proves the connection still runs statements.
        self._interrupted = False

    def _interrupt(self) -> None:
        self._interrupted = True
        self._conn._conn.interrupt()

    def _authorize(
        self, action: int, arg1: str | None, arg2: str | None, db: str | None, _src: str | None
    ) -> int:
        # Runs on aiosqlite's thread while a statement is prepared (never for
        # one taken from sqlite3's statement cache, which was authorized when
        # first prepared; the gateway's own PRAGMAs are never cached).
        if self._trusted:
            return sqlite3.SQLITE_OK
        if action == sqlite3.SQLITE_PRAGMA:
            if arg2 is None or (arg1 or "").lower() in SQLITE_READ_PRAGMAS:
                return sqlite3.SQLITE_OK
            self._refused = f"PRAGMA {arg1} with a value"
            return sqlite3.SQLITE_DENY
        if action in (sqlite3.SQLITE_ATTACH, sqlite3.SQLITE_DETACH):
            self._refused = "ATTACH" if action == sqlite3.SQLITE_ATTACH else "DETACH"
            return sqlite3.SQLITE_DENY
        if action in _TEMP_CREATES or db == "temp":
            # CREATE TEMP ..., or CREATE ... temp.name (an ordinary create in the temp schema).
            self._temp_used = True
        return sqlite3.SQLITE_OK

    async def install_authorizer(self) -> None:
        await self._conn.set_authorizer(self._authorize)

    @contextlib.contextmanager
    def _explaining_refusals(self) -> Iterator[None]:
        """An authorizer refusal becomes UNSUPPORTED_STATEMENT saying what was refused."""
        self._refused = ""
        try:
            yield
        except GatewayError:
            if not self._refused:
                raise
            what, self._refused = self._refused, ""
            raise GatewayError(
                Reason.UNSUPPORTED_STATEMENT,
                f"{what} is refused: it would change the connection for the next caller "
                "of the pool (reads of a PRAGMA, and PRAGMA functions, are allowed)",
                metadata={"statement": what.split()[0], "engine": ENGINE},
            ) from None

    async def _own(self, script: str) -> None:
        """Runs the gateway's own PRAGMAs: trusted, and through executescript,
        which never caches the statement for a caller's identical text to
        reuse without the authorizer."""
        self._trusted = True
        try:
            await self._conn.executescript(script)
        finally:
            self._trusted = False

    async def _run(
        self, sql: str, params: Sequence[value_pb2.Value]
    ) -> tuple[list[value_pb2.Column], list[Any], int, int | None]:
        args = SQLITE_PARAMS.decode_all(params)
        with self._explaining_refusals(), translate_errors(self._database):
            cur = await self._interruptible(self._conn.execute(sql, args))
            try:
                rows = list(await self._interruptible(cur.fetchall()))
                return _columns(cur), rows, cur.rowcount, cur.lastrowid
            finally:
                await cur.close()

    async def _interruptible(self, step: Awaitable[T]) -> T:
        try:
            return await step
        except asyncio.CancelledError:
            # The statement runs on aiosqlite's thread: stop it there.
            self._interrupt()
            raise

    async def query(
        self,
        sql: str,
        params: Sequence[value_pb2.Value],
        *,
        limits: ResultLimits,
    ) -> ResultSet:
        async with self.stream(sql, params) as stream:
            rows, truncated, batches = await read_result(stream, limits)
        return ResultSet(stream.columns, rows, truncated, batches)

    @contextlib.asynccontextmanager
    async def stream(self, sql: str, params: Sequence[value_pb2.Value]) -> AsyncIterator[RowStream]:
        args = SQLITE_PARAMS.decode_all(params)
        with self._explaining_refusals(), translate_errors(self._database):
            cur = await self._interruptible(self._conn.execute(sql, args))
        try:
            yield _SQLiteRows(self, cur)
        finally:
            # Resets the statement: a read stopped early holds nothing.
            with contextlib.suppress(Exception):
                await cur.close()

    async def execute(self, sql: str, params: Sequence[value_pb2.Value]) -> ExecResult:
        async with self._backend.write_lock(self):
            columns, rows, rowcount, lastrowid = await self._run(sql, params)
        # sqlite3 reports the connection's last insert rowid after any
        # statement; only an INSERT or REPLACE inserted it.
        inserted = first_keyword(sql) in ("INSERT", "REPLACE")
        return ExecResult(
            rows_affected=max(rowcount, 0),
            last_insert_id=lastrowid if lastrowid and inserted else None,
            columns=columns,
            rows=convert_rows(rows, [from_python] * len(columns)),
        )

    async def execute_many(
        self, sql: str, param_sets: Sequence[Sequence[value_pb2.Value]]
    ) -> int | None:
        args = [SQLITE_PARAMS.decode_all(params) for params in param_sets]
        async with self._backend.write_lock(self):
            with self._explaining_refusals(), translate_errors(self._database):
                try:
                    cur = await self._conn.executemany(sql, args)
                except asyncio.CancelledError:
                    self._interrupt()
                    raise
                try:
                    return max(cur.rowcount, 0)
                finally:
                    await cur.close()

    async def begin(self, mode: TransactionMode) -> None:
        if mode.isolation is not None and mode.isolation.name != "SERIALIZABLE":
            raise GatewayError(
                Reason.UNSUPPORTED,
                f"SQLite transactions are always SERIALIZABLE; {mode.isolation.value} "
                "cannot be given",
            )
        if mode.deferrable:
            raise GatewayError(Reason.UNSUPPORTED, "SQLite has no DEFERRABLE transactions")
        with translate_errors(self._database):
            if mode.read_only:
                # The caller cannot turn it off: the authorizer refuses a
                # PRAGMA with a value, and the reset turns it off again.
                self._query_only = True
                await self._own("PRAGMA query_only = ON")
                await self._conn.execute("BEGIN DEFERRED")
            else:
                await self._backend.acquire_write_lock()
                self._holds_write_lock = True
                try:
                    await self._conn.execute("BEGIN IMMEDIATE")
                except BaseException:
                    self._release_write_lock()
                    raise

    def _release_write_lock(self) -> None:
        if self._holds_write_lock:
            self._holds_write_lock = False
            self._backend.release_write_lock()

    async def _end(self, sql: str) -> None:
        try:
            with translate_errors(self._database):
                await self._conn.execute(sql)
                await self._writable()
        finally:
            if not self._conn.in_transaction:
                self._release_write_lock()

    async def _writable(self) -> None:
        if self._query_only:
            await self._own("PRAGMA query_only = OFF")
            self._query_only = False

    async def reset(self) -> None:
        """Rolls back, lifts query_only and drops temporary objects: a
        PRAGMA with a value never ran (the authorizer), so these are all the
        session state a statement can leave."""
        try:
            with translate_errors(self._database):
                if self._interrupted:
                    # While any statement of the connection is still active
                    # (the cursor of a call cancelled before it got it), the
                    # interrupt goes on stopping every statement it runs: a
                    # connection that cannot run this one is discarded.
                    self._interrupted = False
                    await _run_to_end(self._conn, "SELECT 1")
                if self._conn.in_transaction:
                    await self._conn.execute("ROLLBACK")
                await self._writable()
                if self._temp_used:
                    await self._drop_temporary_objects()
        finally:
            if not self._conn.in_transaction:
                self._release_write_lock()

    async def _drop_temporary_objects(self) -> None:
        cur = await self._conn.execute(
            "SELECT type, name FROM temp.sqlite_schema WHERE type IN ('table', 'view', 'trigger')"
        )
        objects = list(await cur.fetchall())
        await cur.close()
        for kind, name in objects:
            quoted = '"' + str(name).replace('"', '""') + '"'
            await _run_to_end(self._conn, f"DROP {str(kind).upper()} IF EXISTS temp.{quoted}")
        self._temp_used = False

    async def commit(self) -> None:
        await self._end("COMMIT")

    async def rollback(self) -> None:
        await self._end("ROLLBACK")

    def in_transaction(self) -> bool:
        return bool(self._conn.in_transaction)

    def is_closed(self) -> bool:
        return self._closed

    async def ping(self, limit: float) -> None:
        with translate_errors(self._database):
            await asyncio.wait_for(_run_to_end(self._conn, "SELECT 1"), limit)

    async def close(self) -> None:
        self._release_write_lock()
        if not self._closed:
            self._closed = True
            with contextlib.suppress(Exception):
                await self._conn.close()

    def terminate(self) -> None:
        self._release_write_lock()
        if not self._closed:
            self._closed = True
            asyncio.get_running_loop().create_task(self._conn.close())


async def _run_to_end(conn: aiosqlite.Connection, sql: str) -> None:
    """Runs a statement and resets it. A statement left holding a row counts
    as running for SQLite, and while any does, an interrupt() goes on
    interrupting every later statement of the connection."""
    cur = await conn.execute(sql)
    await cur.close()


def _columns(cur: aiosqlite.Cursor) -> list[value_pb2.Column]:
    # SQLite is dynamically typed: a column has no type, each value has its own.
    return [Column(name=d[0], db_type="") for d in cur.description or ()]


class _SQLiteRows(RowStream):
    __slots__ = ("_connection", "_cursor", "columns", "converters", "exhausted")

    def __init__(self, connection: SQLiteConnection, cursor: aiosqlite.Cursor) -> None:
        self._connection = connection
        self._cursor = cursor
        self.columns = _columns(cursor)
        # Each value is converted by its own Python type.
        self.converters: list[Converter] = [from_python] * len(self.columns)
        self.exhausted = not self.columns

    async def fetch_records(self, n: int) -> Sequence[Sequence[Any]]:
        if self.exhausted:
            return []
        conn = self._connection
        with translate_errors(conn._database):
            records = list(await conn._interruptible(self._cursor.fetchmany(n)))
        if len(records) < n:
            self.exhausted = True
        return records


class SQLiteBackend(Backend):
    """One SQLite file. SQLite allows one writer at a time, so writes (Execute and
    write transactions) queue on an asyncio lock here instead of failing with
    SQLITE_BUSY, while reads run concurrently on other connections (WAL)."""

    engine = ENGINE
    #: SQLite is a file in this process: no server exists to deliver notifications.
    no_notifications = (
        "SQLite has no LISTEN/NOTIFY (it is an embedded file with no server to "
        "deliver notifications); subscriptions need a PostgreSQL database"
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.path = sqlite_path(self.config.dsn)
        self._write_lock = asyncio.Lock()

    async def acquire_write_lock(self) -> None:
        await self._write_lock.acquire()

    def release_write_lock(self) -> None:
        self._write_lock.release()

    @contextlib.asynccontextmanager
    async def write_lock(self, conn: SQLiteConnection) -> Any:
        if conn.in_transaction():
            # Inside its own write transaction the connection holds the lock.
            yield
            return
        async with self._write_lock:
            yield

    async def connect(self) -> DriverConnection:
        with translate_errors(self.config.name):
            if self.path != ":memory:":
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            memory = self.path == ":memory:"
            pending = aiosqlite.connect(
                # Every pooled connection must see the same in-memory database.
                f"file:dbgateway-{self.config.name}?mode=memory&cache=shared"
                if memory
                else self.path,
                isolation_level=None,
                timeout=BUSY_TIMEOUT_MS / 1000,
                uri=memory,
            )
            # aiosqlite runs each connection on its own thread; a connection
            # still open at exit must not keep the process alive.
            pending._thread.daemon = True
            conn = await pending
            try:
                if not memory:
                    await _run_to_end(conn, "PRAGMA journal_mode = WAL")
                await _run_to_end(conn, f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
                await _run_to_end(conn, "PRAGMA foreign_keys = ON")
                connection = SQLiteConnection(conn, self)
                await connection.install_authorizer()
            except BaseException:
                await conn.close()
                raise
        self.server_version = sqlite3.sqlite_version
        return connection
