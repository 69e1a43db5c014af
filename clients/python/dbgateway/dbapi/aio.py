"""``dbgateway.dbapi.aio``: the PEP 249 driver of :mod:`dbgateway.dbapi` with
coroutine methods, over :class:`dbgateway.AsyncClient` (for SQLAlchemy's
asyncio adaptation and for asyncio code that wants DB-API shapes)::

    conn = await dbgateway.dbapi.aio.connect("127.0.0.1:50051", database="orders")
    cur = conn.cursor()
    await cur.execute("SELECT id FROM notes WHERE id = $1", [7])
    rows = await cur.fetchall()
    await conn.commit()

A connection's first statement opens a ``Transaction`` stream; ``commit()``
and ``rollback()`` end it; ``close()`` (or dropping the connection) rolls it
back. The exceptions, type objects and constructors are those of
:mod:`dbgateway.dbapi`.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import AsyncIterator, Sequence
from typing import Any, Self

from .._client import DEFAULT_TARGET, AsyncClient
from .._config import ClientConfig, TLSConfig
from .._errors import DbGatewayError
from .._stream import AsyncRowStream
from .._transaction import AsyncTransaction
from ._common import (
    CursorState,
    DatabaseError,
    Description,
    InterfaceError,
    NotSupportedError,
    OperationalError,
    ProgrammingError,
    Row,
    is_read,
    params_of,
    translate,
    translating,
)

__all__ = ["AsyncConnection", "AsyncCursor", "connect"]


_STREAMABLE_LEVELS = (None, "read committed", "read uncommitted")


class _Dropped(BaseException):
    """Thrown into the open transaction of a dropped connection: ends the
    stream without waiting for a ROLLBACK answer (the server rolls back)."""


class _OpenTransaction:
    __slots__ = ("context", "loop", "lost", "transaction")

    def __init__(self) -> None:
        self.context: contextlib.AbstractAsyncContextManager[AsyncTransaction] | None = None
        self.transaction: AsyncTransaction | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.lost = False

    async def close(self) -> None:
        context, self.context, self.transaction = self.context, None, None
        if context is not None:
            await context.__aexit__(None, None, None)

    async def drop_now(self) -> None:
        context, self.context, self.transaction = self.context, None, None
        if context is not None:
            await context.__aexit__(_Dropped, _Dropped(), None)

    def drop_soon(self) -> None:
        """From a garbage collector, where nothing can be awaited: end the
        stream on its own event loop (a closed loop took the stream with it)."""
        loop = self.loop
        if self.context is None or loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(lambda: loop.create_task(self.drop_now()))


class AsyncConnection:
    """A DB-API connection with coroutine methods (see the module docstring)."""

    def __init__(
        self,
        client: AsyncClient,
        *,
        database: str | None = None,
        autocommit: bool = False,
        isolation_level: str | None = None,
        read_only: bool = False,
        deferrable: bool = False,
        owns_client: bool = False,
    ) -> None:
        self.client = client
        self.database = database
        self._autocommit = autocommit
        self._isolation_level = isolation_level
        self.read_only = read_only
        self.deferrable = deferrable
        self._owns_client = owns_client
        self._closed = False
        self._slot = _OpenTransaction()
        self._finalizer = weakref.finalize(self, _OpenTransaction.drop_soon, self._slot)

    def cursor(self, *, stream: bool = False) -> AsyncCursor:
        """A new cursor; ``stream=True``: see :meth:`dbgateway.dbapi.Connection.cursor`."""
        self._check_open()
        return AsyncCursor(self, stream=stream)

    async def commit(self) -> None:
        """Commits the open transaction (nothing to do when none is open)."""
        self._check_open()
        slot = self._slot
        tx, slot.lost = slot.transaction, False
        if tx is None:
            return
        try:
            with translating():
                await tx.commit()
        finally:
            await slot.close()

    async def rollback(self) -> None:
        """Rolls the open transaction back (nothing to do when none is open)."""
        self._check_open()
        slot = self._slot
        tx, slot.lost = slot.transaction, False
        if tx is None:
            return
        try:
            with translating():
                await tx.rollback()
        finally:
            await slot.close()

    async def close(self) -> None:
        """Rolls back an open transaction and closes the connection (and its
        client when :func:`connect` made it)."""
        if self._closed:
            return
        self._closed = True
        self._finalizer.detach()
        try:
            tx = self._slot.transaction
            if tx is not None and not tx.ended:
                with contextlib.suppress(DbGatewayError):
                    await tx.rollback()
            await self._slot.drop_now()
        finally:
            if self._owns_client:
                await self.client.close()

    def drop(self) -> None:
        """Abandons the connection without waiting: the open transaction's
        stream ends (the server rolls it back) on the event loop."""
        self._closed = True
        self._finalizer.detach()
        self._slot.drop_soon()

    async def ping(self) -> None:
        """Checks that the gateway answers for this database, outside any
        transaction."""
        self._check_open()
        with translating():
            await self.client.query("SELECT 1", database=self.database)

    @property
    def closed(self) -> bool:
        """True once closed or dropped."""
        return self._closed

    @property
    def autocommit(self) -> bool:
        """With True, each statement runs alone, committed when it returns."""
        return self._autocommit

    @autocommit.setter
    def autocommit(self, value: bool) -> None:
        self._check_no_transaction("autocommit")
        self._autocommit = bool(value)

    @property
    def isolation_level(self) -> str | None:
        """The isolation level of the transactions this connection opens
        (sent with each begin, never as a session ``SET``)."""
        return self._isolation_level

    @isolation_level.setter
    def isolation_level(self, value: str | None) -> None:
        self._check_no_transaction("isolation_level")
        self._isolation_level = value

    @property
    def in_transaction(self) -> bool:
        """Whether a gateway transaction is open on this connection."""
        return self._slot.transaction is not None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise InterfaceError("the connection is closed")

    def _may_stream(self) -> bool:
        """Whether a read may stream on its own (``StreamQuery``) rather than
        run in the connection's transaction: when none is open yet and the
        isolation level lets each statement see what is committed at its
        start anyway (a REPEATABLE READ or SERIALIZABLE transaction must take
        its snapshot with its first statement)."""
        if self._slot.transaction is not None or self._slot.lost:
            return False
        return self._autocommit or self._isolation_level in _STREAMABLE_LEVELS

    def _check_no_transaction(self, what: str) -> None:
        if self._slot.transaction is not None:
            raise ProgrammingError(f"{what} cannot change while a transaction is open")

    async def _transaction(self) -> AsyncTransaction | None:
        slot = self._slot
        if slot.lost:
            raise OperationalError(
                "the gateway transaction was lost (its stream ended); roll back to go on"
            )
        if slot.transaction is not None:
            return slot.transaction
        if self._autocommit:
            return None
        context = self.client.transaction(
            database=self.database,
            isolation=self._isolation_level,
            read_only=self.read_only,
            deferrable=self.deferrable,
        )
        with translating():
            slot.transaction = await context.__aenter__()
        slot.context = context
        slot.loop = asyncio.get_running_loop()
        return slot.transaction

    async def _note_failure(self) -> None:
        tx = self._slot.transaction
        if tx is not None and tx.ended:
            await self._slot.close()
            self._slot.lost = True


class AsyncCursor:
    """A DB-API cursor with coroutine methods."""

    def __init__(self, connection: AsyncConnection, *, stream: bool = False) -> None:
        self.connection = connection
        self._stream_reads = stream
        self._state = CursorState()
        self._stream: AsyncRowStream | None = None
        self._stream_rows: AsyncIterator[Row] | None = None
        self._closed = False

    @property
    def description(self) -> list[Description] | None:
        """(name, engine type name, None x 5) per column of the last result."""
        return self._state.description

    @property
    def rowcount(self) -> int:
        """Rows changed by the last write, or returned by the last read."""
        return self._state.rowcount

    @property
    def lastrowid(self) -> int | None:
        """The engine's last insert id (MySQL AUTO_INCREMENT, SQLite rowid)."""
        return self._state.lastrowid

    @property
    def arraysize(self) -> int:
        """How many rows :meth:`fetchmany` returns by default."""
        return self._state.arraysize

    @arraysize.setter
    def arraysize(self, value: int) -> None:
        self._state.arraysize = value

    async def close(self) -> None:
        """Closes the cursor, stopping a streamed read that is still running."""
        await self._end_stream()
        self._closed = True

    async def execute(self, operation: str, parameters: Sequence[Any] | None = None) -> Self:
        """Runs one statement with positional parameters."""
        self._check()
        params = params_of(parameters)
        connection = self.connection
        try:
            if self._stream_reads and is_read(operation) and connection._may_stream():
                await self._start_stream(operation, params)
                return self
            tx = await connection._transaction()
            if tx is None:
                await self._run_alone(operation, params)
            else:
                with translating():
                    result = await tx.execute(operation, *params)
                rowcount = len(result.rows) if is_read(operation) else result.rows_affected or 0
                self._state.load(result.column_info, result.rows, rowcount, result.last_insert_id)
        except DatabaseError:
            await connection._note_failure()
            raise
        return self

    async def executemany(self, operation: str, seq_of_parameters: Sequence[Sequence[Any]]) -> Self:
        """One atomic ``ExecuteBatch`` in autocommit; statement by statement
        inside a transaction."""
        self._check()
        param_sets = [params_of(p) for p in seq_of_parameters]
        connection = self.connection
        try:
            tx = await connection._transaction()
            if tx is None:
                with translating():
                    result = await connection.client.execute_batch(
                        operation, param_sets, database=connection.database
                    )
                rows = -1 if result.rows_affected is None else result.rows_affected
                self._state.load((), [], rows)
                return self
            total = 0
            for params in param_sets:
                with translating():
                    total += (await tx.execute(operation, *params)).rows_affected or 0
            self._state.load((), [], total)
        except DatabaseError:
            await connection._note_failure()
            raise
        return self

    async def fetchone(self) -> Row | None:
        """The next row, or None at the end."""
        self._check()
        if self._stream_rows is not None:
            return await anext(self._stream_rows, None)
        return self._state.take_one()

    async def fetchmany(self, size: int | None = None) -> list[Row]:
        """Up to ``size`` (default :attr:`arraysize`) more rows."""
        self._check()
        size = self.arraysize if size is None else size
        if self._stream_rows is not None:
            rows: list[Row] = []
            while len(rows) < size and (row := await anext(self._stream_rows, None)) is not None:
                rows.append(row)
            return rows
        return self._state.take(size)

    async def fetchall(self) -> list[Row]:
        """All remaining rows."""
        self._check()
        if self._stream_rows is not None:
            return [row async for row in self._stream_rows]
        return self._state.take(None)

    def __aiter__(self) -> AsyncIterator[Row]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Row]:
        while (row := await self.fetchone()) is not None:
            yield row

    async def setinputsizes(self, *sizes: Any) -> None:
        """Accepted and ignored (PEP 249): the gateway binds by value."""

    def setoutputsize(self, size: Any, column: int | None = None) -> None:
        """Accepted and ignored (PEP 249)."""

    async def nextset(self) -> None:
        """Every statement has one result set."""
        return None

    async def callproc(self, procname: str, parameters: Sequence[Any] = ()) -> Sequence[Any]:
        """Not supported: call procedures with ``execute("CALL ...")``."""
        raise NotSupportedError("callproc is not supported; use execute('CALL ...')")

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def _check(self) -> None:
        if self._closed:
            raise InterfaceError("the cursor is closed")
        self.connection._check_open()

    async def _run_alone(self, operation: str, params: Sequence[Any]) -> None:
        await self._end_stream()
        client, database = self.connection.client, self.connection.database
        with translating():
            if is_read(operation):
                result = await client.query(operation, *params, database=database)
                self._state.load(result.column_info, result.rows, len(result.rows))
            else:
                written = await client.execute(operation, *params, database=database)
                self._state.load(
                    written.column_info,
                    written.rows,
                    written.rows_affected or 0,
                    written.last_insert_id,
                )

    async def _start_stream(self, operation: str, params: Sequence[Any]) -> None:
        await self._end_stream()
        connection = self.connection
        stream = connection.client.stream(operation, *params, database=connection.database)
        rows = self._translated(stream)
        first = await anext(rows, None)
        self._stream = stream
        self._state.load(stream.column_info or (), [], -1)
        self._stream_rows = rows if first is None else _chain(first, rows)

    @staticmethod
    async def _translated(stream: AsyncRowStream) -> AsyncIterator[Row]:
        try:
            async for row in stream:
                yield row
        except DbGatewayError as exc:
            raise translate(exc) from exc

    async def _end_stream(self) -> None:
        if self._stream is not None:
            await self._stream.aclose()
        self._stream = None
        self._stream_rows = None


async def _chain(first: Row, rest: AsyncIterator[Row]) -> AsyncIterator[Row]:
    yield first
    async for row in rest:
        yield row


async def connect(
    target: str = DEFAULT_TARGET,
    *,
    database: str | None = None,
    tls: TLSConfig | bool | None = None,
    token: str | None = None,
    timeout: float | None = None,  # noqa: ASYNC109 - the client's default gRPC deadline
    config: ClientConfig | None = None,
    autocommit: bool = False,
    isolation_level: str | None = None,
    read_only: bool = False,
    client: AsyncClient | None = None,
) -> AsyncConnection:
    """Opens a connection (see :func:`dbgateway.dbapi.connect`); ``client``
    shares one :class:`dbgateway.AsyncClient` between connections of one
    event loop."""
    owns = client is None
    if client is None:
        try:
            client = AsyncClient(target, tls=tls, token=token, timeout=timeout, config=config)
        except (ValueError, TypeError) as exc:
            raise InterfaceError(str(exc)) from exc
    return AsyncConnection(
        client,
        database=database,
        autocommit=autocommit,
        isolation_level=isolation_level,
        read_only=read_only,
        owns_client=owns,
    )
