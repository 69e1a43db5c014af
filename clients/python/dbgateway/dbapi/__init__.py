"""``dbgateway.dbapi``: a PEP 249 (DB-API 2.0) driver over :class:`dbgateway.Client`.

    conn = dbgateway.dbapi.connect("127.0.0.1:50051", database="orders")
    cur = conn.cursor()
    cur.execute("INSERT INTO notes (body) VALUES ($1)", ["hello"])
    conn.commit()

A connection's first statement opens a gateway transaction (a ``Transaction``
stream, with the connection's ``isolation_level`` / ``read_only`` as its
``TransactionOptions``); :meth:`Connection.commit` and
:meth:`Connection.rollback` end it, and closing or dropping the connection
with a transaction open rolls it back. With ``autocommit = True`` each
statement runs alone (``Query`` / ``Execute``), and ``executemany`` is one
atomic ``ExecuteBatch``. Statements use the engine's own placeholders, and
values are the client's native Python values. Errors are the PEP 249 classes
below, each carrying the gateway's ``sqlstate`` and ``reason``.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Iterator, Sequence
from typing import Any, Self

from .._client import DEFAULT_TARGET, Client
from .._config import ClientConfig, TLSConfig
from .._errors import DbGatewayError
from .._stream import RowStream
from .._transaction import Transaction
from ._common import (
    BINARY,
    DATETIME,
    DISCONNECT_REASONS,
    NUMBER,
    ROWID,
    STRING,
    Binary,
    CursorState,
    DatabaseError,
    DataError,
    Date,
    DateFromTicks,
    Description,
    Error,
    IntegrityError,
    InterfaceError,
    InternalError,
    NotSupportedError,
    OperationalError,
    ProgrammingError,
    Row,
    Time,
    TimeFromTicks,
    Timestamp,
    TimestampFromTicks,
    Warning,
    apilevel,
    is_read,
    params_of,
    paramstyle,
    threadsafety,
    translate,
    translating,
)

__all__ = [
    "BINARY",
    "DATETIME",
    "DISCONNECT_REASONS",
    "NUMBER",
    "ROWID",
    "STRING",
    "Binary",
    "Connection",
    "Cursor",
    "DataError",
    "DatabaseError",
    "Date",
    "DateFromTicks",
    "Error",
    "IntegrityError",
    "InterfaceError",
    "InternalError",
    "NotSupportedError",
    "OperationalError",
    "ProgrammingError",
    "Time",
    "TimeFromTicks",
    "Timestamp",
    "TimestampFromTicks",
    "Warning",
    "apilevel",
    "connect",
    "paramstyle",
    "threadsafety",
]


_STREAMABLE_LEVELS = (None, "read committed", "read uncommitted")


class _Dropped(BaseException):
    """Thrown into an open transaction whose connection was dropped: it ends
    the stream at once (the server rolls back) instead of waiting for a
    ROLLBACK answer inside a garbage collector."""


class _OpenTransaction:
    """The transaction a connection holds, shared with its finalizer (which
    must not keep the connection itself alive)."""

    __slots__ = ("context", "lost", "transaction")

    def __init__(self) -> None:
        self.context: contextlib.AbstractContextManager[Transaction] | None = None
        self.transaction: Transaction | None = None
        self.lost = False

    def close(self) -> None:
        """Forgets the transaction, ending its stream if it is still open."""
        context, self.context, self.transaction = self.context, None, None
        if context is not None:
            context.__exit__(None, None, None)

    def drop(self) -> None:
        context, self.context, self.transaction = self.context, None, None
        if context is not None:
            context.__exit__(_Dropped, _Dropped(), None)


def _finalize(slot: _OpenTransaction, client: Client | None) -> None:
    slot.drop()
    if client is not None:
        client.close()


class Connection:
    """A PEP 249 connection to one gateway database (see the module docstring)."""

    def __init__(
        self,
        client: Client,
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
        self._closed = False
        self._slot = _OpenTransaction()
        self._finalizer = weakref.finalize(
            self, _finalize, self._slot, client if owns_client else None
        )

    # -- PEP 249 ---------------------------------------------------------

    def cursor(self, *, stream: bool = False) -> Cursor:
        """A new cursor. ``stream=True`` reads a statement run outside a
        transaction through ``StreamQuery`` (rows arrive as they are fetched)."""
        self._check_open()
        return Cursor(self, stream=stream)

    def commit(self) -> None:
        """Commits the open transaction (nothing to do when none is open)."""
        self._check_open()
        slot = self._slot
        tx, slot.lost = slot.transaction, False
        if tx is None:
            return
        try:
            with translating():
                tx.commit()
        finally:
            slot.close()

    def rollback(self) -> None:
        """Rolls the open transaction back (nothing to do when none is open)."""
        self._check_open()
        slot = self._slot
        tx, slot.lost = slot.transaction, False
        if tx is None:
            return
        try:
            with translating():
                tx.rollback()
        finally:
            slot.close()

    def close(self) -> None:
        """Rolls back an open transaction and closes the connection (and the
        client when :func:`connect` made it). Closing twice is harmless."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._slot.transaction is not None and not self._slot.transaction.ended:
                with contextlib.suppress(DbGatewayError):
                    self._slot.transaction.rollback()
        finally:
            self._finalizer()

    # -- extensions ------------------------------------------------------

    def ping(self) -> None:
        """Checks that the gateway answers for this database, outside any
        transaction (raises OperationalError when it does not)."""
        self._check_open()
        with translating():
            self.client.query("SELECT 1", database=self.database)

    @property
    def closed(self) -> bool:
        """True once :meth:`close` ran."""
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
        (``"serializable"``, ``"repeatable read"``, ...; None: the database's
        default). Changing it between transactions is free: it is sent with
        each transaction's begin, never as a session ``SET``."""
        return self._isolation_level

    @isolation_level.setter
    def isolation_level(self, value: str | None) -> None:
        self._check_no_transaction("isolation_level")
        self._isolation_level = value

    @property
    def in_transaction(self) -> bool:
        """Whether a gateway transaction is open on this connection."""
        return self._slot.transaction is not None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *rest: object) -> None:
        # The sqlite3 convention: the block commits, or rolls back on error;
        # the connection stays open.
        if exc_type is None:
            self.commit()
        else:
            self.rollback()

    # -- for cursors -----------------------------------------------------

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

    def _transaction(self) -> Transaction | None:
        """The open transaction, begun now when needed; None in autocommit."""
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
            slot.transaction = context.__enter__()
        slot.context = context
        return slot.transaction

    def _note_failure(self) -> None:
        """After a failed statement: a transaction whose stream ended is lost
        (the server rolled it back), and the caller must hear about it."""
        tx = self._slot.transaction
        if tx is not None and tx.ended:
            self._slot.close()
            self._slot.lost = True


class Cursor:
    """A PEP 249 cursor: runs statements on its connection and holds the
    rows of the last one."""

    def __init__(self, connection: Connection, *, stream: bool = False) -> None:
        self.connection = connection
        self._stream_reads = stream
        self._state = CursorState()
        self._stream: RowStream | None = None
        self._stream_rows: Iterator[Row] | None = None
        self._closed = False

    @property
    def description(self) -> list[Description] | None:
        """(name, engine type name, None x 5) per column of the last result."""
        return self._state.description

    @property
    def rowcount(self) -> int:
        """Rows changed by the last write, or rows returned by the last read
        (-1 before any statement, and while a streamed read is unfinished)."""
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

    def close(self) -> None:
        """Closes the cursor, stopping a streamed read that is still running."""
        self._end_stream()
        self._closed = True

    def execute(self, operation: str, parameters: Sequence[Any] | None = None) -> Self:
        """Runs one statement with positional parameters."""
        self._check()
        params = params_of(parameters)
        connection = self.connection
        try:
            if self._stream_reads and is_read(operation) and connection._may_stream():
                self._start_stream(operation, params)
                return self
            tx = connection._transaction()
            if tx is None:
                self._run_alone(operation, params)
            else:
                with translating():
                    result = tx.execute(operation, *params)
                rowcount = len(result.rows) if is_read(operation) else result.rows_affected or 0
                self._state.load(result.column_info, result.rows, rowcount, result.last_insert_id)
        except DatabaseError:
            connection._note_failure()
            raise
        return self

    def executemany(self, operation: str, seq_of_parameters: Sequence[Sequence[Any]]) -> Self:
        """Runs one statement once per parameter set: one atomic
        ``ExecuteBatch`` in autocommit; inside a transaction (which the
        ``Transaction`` stream carries one statement at a time) statement by
        statement."""
        self._check()
        param_sets = [params_of(p) for p in seq_of_parameters]
        connection = self.connection
        try:
            tx = connection._transaction()
            if tx is None:
                with translating():
                    result = connection.client.execute_batch(
                        operation, param_sets, database=connection.database
                    )
                rows = -1 if result.rows_affected is None else result.rows_affected
                self._state.load((), [], rows)
                return self
            total = 0
            for params in param_sets:
                with translating():
                    total += tx.execute(operation, *params).rows_affected or 0
            self._state.load((), [], total)
        except DatabaseError:
            connection._note_failure()
            raise
        return self

    def fetchone(self) -> Row | None:
        """The next row, or None at the end."""
        self._check()
        if self._stream_rows is not None:
            return next(self._stream_rows, None)
        return self._state.take_one()

    def fetchmany(self, size: int | None = None) -> list[Row]:
        """Up to ``size`` (default :attr:`arraysize`) more rows."""
        self._check()
        size = self.arraysize if size is None else size
        if self._stream_rows is not None:
            rows = []
            for row in self._stream_rows:
                rows.append(row)
                if len(rows) >= size:
                    break
            return rows
        return self._state.take(size)

    def fetchall(self) -> list[Row]:
        """All remaining rows."""
        self._check()
        if self._stream_rows is not None:
            return list(self._stream_rows)
        return self._state.take(None)

    def __iter__(self) -> Iterator[Row]:
        while (row := self.fetchone()) is not None:
            yield row

    def setinputsizes(self, sizes: Any) -> None:
        """Accepted and ignored (PEP 249): the gateway binds by value."""

    def setoutputsize(self, size: Any, column: int | None = None) -> None:
        """Accepted and ignored (PEP 249)."""

    def callproc(self, procname: str, parameters: Sequence[Any] = ()) -> Sequence[Any]:
        """Not supported: call procedures with ``execute("CALL ...")``."""
        raise NotSupportedError("callproc is not supported; use execute('CALL ...')")

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- internals -------------------------------------------------------

    def _check(self) -> None:
        if self._closed:
            raise InterfaceError("the cursor is closed")
        self.connection._check_open()

    def _run_alone(self, operation: str, params: Sequence[Any]) -> None:
        self._end_stream()
        client, database = self.connection.client, self.connection.database
        with translating():
            if is_read(operation):
                result = client.query(operation, *params, database=database)
                self._state.load(result.column_info, result.rows, len(result.rows))
            else:
                written = client.execute(operation, *params, database=database)
                self._state.load(
                    written.column_info,
                    written.rows,
                    written.rows_affected or 0,
                    written.last_insert_id,
                )

    def _start_stream(self, operation: str, params: Sequence[Any]) -> None:
        self._end_stream()
        connection = self.connection
        stream = connection.client.stream(operation, *params, database=connection.database)
        rows = self._translated(stream)
        # The columns arrive with the first message: read it now so that
        # `description` is known before the first fetch.
        first = next(rows, None)
        self._stream = stream
        self._state.load(stream.column_info or (), [], -1)
        self._stream_rows = rows if first is None else _chain(first, rows)

    @staticmethod
    def _translated(stream: RowStream) -> Iterator[Row]:
        try:
            yield from stream
        except DbGatewayError as exc:
            raise translate(exc) from exc

    def _end_stream(self) -> None:
        if self._stream is not None:
            self._stream.close()
        self._stream = None
        self._stream_rows = None


def _chain(first: Row, rest: Iterator[Row]) -> Iterator[Row]:
    yield first
    yield from rest


def connect(
    target: str = DEFAULT_TARGET,
    *,
    database: str | None = None,
    tls: TLSConfig | bool | None = None,
    token: str | None = None,
    timeout: float | None = None,
    config: ClientConfig | None = None,
    autocommit: bool = False,
    isolation_level: str | None = None,
    read_only: bool = False,
    client: Client | None = None,
) -> Connection:
    """Opens a connection to ``database`` on the gateway at ``target``
    (``HOST:PORT``). Pass ``client`` to share one :class:`dbgateway.Client`
    (one gRPC channel) between many connections; otherwise the connection
    makes its own and closes it with itself. No call is made until the first
    statement."""
    owns = client is None
    if client is None:
        try:
            client = Client(target, tls=tls, token=token, timeout=timeout, config=config)
        except (ValueError, TypeError) as exc:
            raise InterfaceError(str(exc)) from exc
    return Connection(
        client,
        database=database,
        autocommit=autocommit,
        isolation_level=isolation_level,
        read_only=read_only,
        owns_client=owns,
    )
