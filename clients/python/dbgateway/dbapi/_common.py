"""What the sync and the async PEP 249 drivers share: the exception tree, the
type objects, the translation of gateway errors, and the cursor's bookkeeping.

Exception tree (PEP 249)::

    Warning
    Error
     +-- InterfaceError            misuse of the driver (closed cursor, bad URL)
     +-- DatabaseError             carries the gateway error: .sqlstate, .reason, .code
          +-- DataError            INVALID_PARAMETER, SQLSTATE class 22
          +-- OperationalError     unavailable, timeouts, pool, serialization, lost transaction
          +-- IntegrityError       UNIQUE_VIOLATION, CONSTRAINT_VIOLATION
          +-- InternalError        INTERNAL
          +-- ProgrammingError     SQL_ERROR, PERMISSION_DENIED, UNKNOWN_DATABASE
          +-- NotSupportedError    UNSUPPORTED_STATEMENT, UNSUPPORTED
"""

from __future__ import annotations

import contextlib
import datetime as dt
import re
import time
from collections.abc import Iterator, Sequence
from typing import Any

import grpc

from .._errors import DbGatewayError
from .._result import Column

apilevel = "2.0"
#: Connections may not be shared between threads (each holds at most one
#: open transaction); the module may.
threadsafety = 1
#: Statements are sent as written, with the engine's own placeholders
#: (``$1`` PostgreSQL, ``%s`` MySQL, ``?`` SQLite): the gateway binds them.
paramstyle = "qmark"

Row = tuple[Any, ...]
Description = tuple[str, str, None, None, None, None, None]


class Warning(Exception):
    """Important warnings (PEP 249); the driver raises none today."""


class Error(Exception):
    """Root of the driver's exceptions (PEP 249)."""


class InterfaceError(Error):
    """The driver itself was misused: a closed connection or cursor, a bad URL."""


class DatabaseError(Error):
    """A call the gateway answered with an error.

    ``gateway_error`` is the client's :class:`dbgateway.DbGatewayError`;
    ``sqlstate``, ``reason`` (the ErrorInfo reason, ``"UNIQUE_VIOLATION"``),
    ``code`` (the gRPC status) and ``metadata`` are copied from it.
    """

    def __init__(self, message: str, gateway_error: DbGatewayError | None = None) -> None:
        super().__init__(message)
        self.gateway_error = gateway_error
        self.code: grpc.StatusCode | None = gateway_error.code if gateway_error else None
        self.reason: str = gateway_error.reason if gateway_error else ""
        self.sqlstate: str | None = gateway_error.sqlstate if gateway_error else None
        self.metadata: dict[str, str] = dict(gateway_error.metadata) if gateway_error else {}


class DataError(DatabaseError):
    """A value the database could not take (SQLSTATE class 22)."""


class OperationalError(DatabaseError):
    """The database or the gateway could not run the call: unavailable, a
    timeout, a saturated pool, a serialization failure or a lost transaction."""


class IntegrityError(DatabaseError):
    """A unique, foreign-key, not-null or check constraint refused the write."""


class InternalError(DatabaseError):
    """The gateway failed unexpectedly (INTERNAL; the message has a request id)."""


class ProgrammingError(DatabaseError):
    """The statement is wrong: syntax, an unknown table or column, a missing
    permission, an unknown database name."""


class NotSupportedError(DatabaseError):
    """The gateway refuses the statement (session state on a pooled
    connection) or the engine lacks the feature."""


_BY_REASON: dict[str, type[DatabaseError]] = {
    "SQL_ERROR": ProgrammingError,
    "INVALID_REQUEST": ProgrammingError,
    "INVALID_PARAMETER": DataError,
    "UNIQUE_VIOLATION": IntegrityError,
    "CONSTRAINT_VIOLATION": IntegrityError,
    "SERIALIZATION_FAILURE": OperationalError,
    "DEADLOCK": OperationalError,
    "LOCK_TIMEOUT": OperationalError,
    "STATEMENT_TIMEOUT": OperationalError,
    "CANCELLED": OperationalError,
    "PERMISSION_DENIED": ProgrammingError,
    "UNAUTHENTICATED": OperationalError,
    "TOO_MANY_CALLS": OperationalError,
    "DATABASE_UNAVAILABLE": OperationalError,
    "CIRCUIT_OPEN": OperationalError,
    "POOL_EXHAUSTED": OperationalError,
    "RESULT_TOO_LARGE": OperationalError,
    "READ_ONLY": InternalError,
    "UNSUPPORTED_STATEMENT": NotSupportedError,
    "UNSUPPORTED": NotSupportedError,
    "UNKNOWN_DATABASE": ProgrammingError,
    "INVALID_TRANSACTION_STATE": InternalError,
    "OBJECT_IN_USE": OperationalError,
    "TRANSACTION_BUSY": OperationalError,
    "TRANSACTION_NOT_FOUND": OperationalError,
    "TRANSACTION_EXPIRED": OperationalError,
    "TRANSACTION_OWNER_UNAVAILABLE": OperationalError,
    "SERVER_DRAINING": OperationalError,
    "SESSION_ENDED": OperationalError,
    "NO_REPLICA_AVAILABLE": OperationalError,
    "STREAM_STALLED": OperationalError,
    "SUBSCRIBER_TOO_SLOW": OperationalError,
    "COMMIT_OUTCOME_UNKNOWN": OperationalError,
    "DATABASE_ERROR": DatabaseError,
    "INTERNAL": InternalError,
}

#: For errors that never reached dbgateway (no ErrorInfo): the transport's code.
_BY_CODE: dict[grpc.StatusCode, type[DatabaseError]] = {
    grpc.StatusCode.UNAVAILABLE: OperationalError,
    grpc.StatusCode.DEADLINE_EXCEEDED: OperationalError,
    grpc.StatusCode.CANCELLED: OperationalError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: OperationalError,
    grpc.StatusCode.UNAUTHENTICATED: OperationalError,
    grpc.StatusCode.PERMISSION_DENIED: ProgrammingError,
    grpc.StatusCode.INVALID_ARGUMENT: ProgrammingError,
    grpc.StatusCode.UNIMPLEMENTED: NotSupportedError,
    grpc.StatusCode.INTERNAL: InternalError,
}

#: Reasons after which the gateway connection (or its transaction) is gone:
#: SQLAlchemy's ``is_disconnect`` uses these to invalidate the pool entry.
DISCONNECT_REASONS = frozenset(
    {
        "DATABASE_UNAVAILABLE",
        "CIRCUIT_OPEN",
        "TRANSACTION_NOT_FOUND",
        "TRANSACTION_EXPIRED",
        "TRANSACTION_OWNER_UNAVAILABLE",
        "SERVER_DRAINING",
        "SESSION_ENDED",
        "STREAM_STALLED",
    }
)


def error_class(error: DbGatewayError) -> type[DatabaseError]:
    """The PEP 249 class for a gateway error (SQLSTATE class 22 is DataError)."""
    if error.sqlstate and error.sqlstate.startswith("22"):
        return DataError
    return _BY_REASON.get(error.reason) or _BY_CODE.get(error.code) or DatabaseError


def translate(error: DbGatewayError) -> DatabaseError:
    """The PEP 249 exception for a gateway error, keeping the gateway error."""
    exc = error_class(error)(error.message or error.summary(), error)
    exc.__cause__ = error
    return exc


@contextlib.contextmanager
def translating() -> Iterator[None]:
    """The one place where the client's exceptions become PEP 249 ones."""
    try:
        yield
    except DbGatewayError as exc:
        raise translate(exc) from exc
    except ValueError as exc:
        # The client refuses values it cannot send before calling.
        raise ProgrammingError(str(exc)) from exc
    except TypeError as exc:
        raise ProgrammingError(str(exc)) from exc


# ---------------------------------------------------------------------------
# Types and constructors
# ---------------------------------------------------------------------------


class DBAPITypeObject:
    """Compares equal to every engine type name of its group (PEP 249 type
    objects): ``cursor.description[i][1] == NUMBER``."""

    def __init__(self, *words: str) -> None:
        self.words = frozenset(words)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, DBAPITypeObject):
            return self is other
        if not isinstance(other, str):
            return NotImplemented
        name = other.lower()
        return any(word in name for word in self.words)

    def __hash__(self) -> int:
        return hash(self.words)


STRING = DBAPITypeObject("char", "text", "string", "enum", "set", "name", "json", "uuid", "xml")
BINARY = DBAPITypeObject("bytea", "blob", "binary")
NUMBER = DBAPITypeObject("int", "numeric", "decimal", "float", "double", "real", "serial", "bit")
DATETIME = DBAPITypeObject("date", "time", "interval", "year")
ROWID = DBAPITypeObject("oid", "rowid")

Date = dt.date
Time = dt.time
Timestamp = dt.datetime
Binary = bytes


def DateFromTicks(ticks: float) -> dt.date:
    """The local date of a POSIX timestamp."""
    return dt.date(*time.localtime(ticks)[:3])


def TimeFromTicks(ticks: float) -> dt.time:
    """The local time of a POSIX timestamp."""
    return dt.time(*time.localtime(ticks)[3:6])


def TimestampFromTicks(ticks: float) -> dt.datetime:
    """The local date and time of a POSIX timestamp."""
    return dt.datetime(*time.localtime(ticks)[:6])


# ---------------------------------------------------------------------------
# Statements and results
# ---------------------------------------------------------------------------

_LEADING_NOISE = re.compile(r"(?:\s+|--[^\n]*(?:\n|$)|/\*.*?\*/|\()*", re.DOTALL)
_FIRST_WORD = re.compile(r"[A-Za-z]+")
_READS = frozenset(
    {"SELECT", "WITH", "VALUES", "SHOW", "EXPLAIN", "TABLE", "DESCRIBE", "DESC", "PRAGMA"}
)


def is_read(sql: str) -> bool:
    """Whether a statement run on its own goes as a ``Query`` (retried once
    after a lost connection, may use a replica) rather than an ``Execute``.
    A ``WITH`` that writes still works as a Query: the difference is only the
    retry rule, and the gateway never retries a write it was not told is safe."""
    start = _LEADING_NOISE.match(sql)
    match = _FIRST_WORD.match(sql, start.end() if start else 0)
    return bool(match) and match.group(0).upper() in _READS  # type: ignore[union-attr]


def params_of(parameters: Sequence[Any] | None) -> Sequence[Any]:
    """The positional parameters of one statement."""
    if parameters is None:
        return ()
    if isinstance(parameters, dict):
        raise ProgrammingError(
            "parameters are positional, written with the engine's own placeholder "
            "($1 PostgreSQL, %s MySQL, ? SQLite); got a mapping"
        )
    if isinstance(parameters, str | bytes):
        raise ProgrammingError("parameters must be a sequence, not a string")
    return parameters


def description_of(columns: Sequence[Column]) -> list[Description] | None:
    """``cursor.description``: name and engine type name per column (None
    when the statement returns no rows)."""
    if not columns:
        return None
    return [(c.name, c.db_type, None, None, None, None, None) for c in columns]


class CursorState:
    """The rows, counts and description of a cursor's last statement."""

    __slots__ = ("_position", "_rows", "arraysize", "description", "lastrowid", "rowcount")

    def __init__(self) -> None:
        self.arraysize = 1
        self.description: list[Description] | None = None
        self.rowcount = -1
        self.lastrowid: int | None = None
        self._rows: list[Row] = []
        self._position = 0

    def reset(self) -> None:
        self.description = None
        self.rowcount = -1
        self.lastrowid = None
        self._rows = []
        self._position = 0

    def load(
        self,
        columns: Sequence[Column],
        rows: list[Row],
        rowcount: int,
        lastrowid: int | None = None,
    ) -> None:
        self.description = description_of(columns)
        self._rows = rows
        self._position = 0
        self.rowcount = rowcount
        self.lastrowid = lastrowid

    def take(self, size: int | None) -> list[Row]:
        if self.description is None:
            raise ProgrammingError("the last statement returned no rows")
        end = len(self._rows) if size is None else self._position + max(size, 0)
        rows = self._rows[self._position : end]
        self._position += len(rows)
        return rows

    def take_one(self) -> Row | None:
        rows = self.take(1)
        return rows[0] if rows else None
