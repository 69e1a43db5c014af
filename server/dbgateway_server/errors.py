"""The error tree and the one table that maps it to gRPC.

Every failure a caller can see is a :class:`GatewayError` carrying a
:class:`Reason`. The reason alone decides the gRPC status code (``STATUS_CODES``);
the classification tables below decide the reason from what a driver reported::

    driver exception ──(backends/<engine>.translate_errors)──► GatewayError(reason)
      asyncpg: SQLSTATE            -> reason_for_sqlstate()
      PyMySQL: vendor error number -> reason_for_mysql_errno()
      sqlite3: error name          -> reason_for_sqlite_error()
    GatewayError ──(to_rpc_status)──► grpc code + google.rpc.Status details
                                       (ErrorInfo, RetryInfo, BadRequest)

Backends translate their driver's exceptions in exactly one place each; nothing
else in the server decides status codes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from enum import StrEnum
from typing import Any

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

ERROR_DOMAIN = "dbgateway"


class Reason(StrEnum):
    """Why a call failed; the ``reason`` of the ErrorInfo detail."""

    UNKNOWN_DATABASE = "UNKNOWN_DATABASE"
    INVALID_REQUEST = "INVALID_REQUEST"
    SQL_ERROR = "SQL_ERROR"
    INVALID_PARAMETER = "INVALID_PARAMETER"
    UNIQUE_VIOLATION = "UNIQUE_VIOLATION"
    CONSTRAINT_VIOLATION = "CONSTRAINT_VIOLATION"
    SERIALIZATION_FAILURE = "SERIALIZATION_FAILURE"
    DEADLOCK = "DEADLOCK"
    LOCK_TIMEOUT = "LOCK_TIMEOUT"
    STATEMENT_TIMEOUT = "STATEMENT_TIMEOUT"
    CANCELLED = "CANCELLED"
    PERMISSION_DENIED = "PERMISSION_DENIED"
    UNAUTHENTICATED = "UNAUTHENTICATED"
    TOO_MANY_CALLS = "TOO_MANY_CALLS"
    DATABASE_UNAVAILABLE = "DATABASE_UNAVAILABLE"
    CIRCUIT_OPEN = "CIRCUIT_OPEN"
    NO_REPLICA_AVAILABLE = "NO_REPLICA_AVAILABLE"
    POOL_EXHAUSTED = "POOL_EXHAUSTED"
    RESULT_TOO_LARGE = "RESULT_TOO_LARGE"
    SUBSCRIBER_TOO_SLOW = "SUBSCRIBER_TOO_SLOW"
    SERVER_DRAINING = "SERVER_DRAINING"
    READ_ONLY = "READ_ONLY"
    UNSUPPORTED_STATEMENT = "UNSUPPORTED_STATEMENT"
    INVALID_TRANSACTION_STATE = "INVALID_TRANSACTION_STATE"
    OBJECT_IN_USE = "OBJECT_IN_USE"
    TRANSACTION_BUSY = "TRANSACTION_BUSY"
    TRANSACTION_NOT_FOUND = "TRANSACTION_NOT_FOUND"
    TRANSACTION_EXPIRED = "TRANSACTION_EXPIRED"
    STREAM_STALLED = "STREAM_STALLED"
    TRANSACTION_OWNER_UNAVAILABLE = "TRANSACTION_OWNER_UNAVAILABLE"
    COMMIT_OUTCOME_UNKNOWN = "COMMIT_OUTCOME_UNKNOWN"
    UNSUPPORTED = "UNSUPPORTED"
    DATABASE_ERROR = "DATABASE_ERROR"
    INTERNAL = "INTERNAL"
    SESSION_ENDED = "SESSION_ENDED"


_C = grpc.StatusCode

#: The table of DESIGN §4: every reason has exactly one gRPC code.
STATUS_CODES: Mapping[Reason, grpc.StatusCode] = {
    Reason.UNKNOWN_DATABASE: _C.NOT_FOUND,
    Reason.INVALID_REQUEST: _C.INVALID_ARGUMENT,
    Reason.SQL_ERROR: _C.INVALID_ARGUMENT,
    Reason.INVALID_PARAMETER: _C.INVALID_ARGUMENT,
    Reason.UNIQUE_VIOLATION: _C.ALREADY_EXISTS,
    Reason.CONSTRAINT_VIOLATION: _C.FAILED_PRECONDITION,
    Reason.SERIALIZATION_FAILURE: _C.ABORTED,
    Reason.DEADLOCK: _C.ABORTED,
    Reason.LOCK_TIMEOUT: _C.ABORTED,
    Reason.STATEMENT_TIMEOUT: _C.DEADLINE_EXCEEDED,
    Reason.CANCELLED: _C.CANCELLED,
    Reason.PERMISSION_DENIED: _C.PERMISSION_DENIED,
    Reason.UNAUTHENTICATED: _C.UNAUTHENTICATED,
    Reason.TOO_MANY_CALLS: _C.RESOURCE_EXHAUSTED,
    Reason.DATABASE_UNAVAILABLE: _C.UNAVAILABLE,
    Reason.CIRCUIT_OPEN: _C.UNAVAILABLE,
    # A read that asked for a replica only, while none is usable (all down,
    # open circuits, or further behind than max_replica_lag).
    Reason.NO_REPLICA_AVAILABLE: _C.UNAVAILABLE,
    Reason.POOL_EXHAUSTED: _C.RESOURCE_EXHAUSTED,
    Reason.RESULT_TOO_LARGE: _C.RESOURCE_EXHAUSTED,
    # A subscriber whose queue filled: it was ended rather than buffered
    # without limit; it may subscribe again (and read faster).
    Reason.SUBSCRIBER_TOO_SLOW: _C.RESOURCE_EXHAUSTED,
    # The server is shutting down; another replica (or this one restarted) serves.
    Reason.SERVER_DRAINING: _C.UNAVAILABLE,
    # A write refused because the caller may only read here (a read
    # principal, a read_only transaction, a read-only server): retrying the
    # same call cannot succeed, and it is about the caller's rights.
    Reason.READ_ONLY: _C.PERMISSION_DENIED,
    Reason.UNSUPPORTED_STATEMENT: _C.FAILED_PRECONDITION,
    Reason.INVALID_TRANSACTION_STATE: _C.FAILED_PRECONDITION,
    Reason.OBJECT_IN_USE: _C.FAILED_PRECONDITION,
    Reason.TRANSACTION_BUSY: _C.FAILED_PRECONDITION,
    Reason.TRANSACTION_NOT_FOUND: _C.NOT_FOUND,
    Reason.TRANSACTION_EXPIRED: _C.ABORTED,
    # A StreamQuery whose client took no message within stream_idle_timeout:
    # its query was stopped to give the connection back to the pool.
    Reason.STREAM_STALLED: _C.RESOURCE_EXHAUSTED,
    # The replica holding the transaction cannot be reached: the transaction
    # is lost with its connection, but the caller learns that from the owner
    # being gone, not from a NOT_FOUND that would hide the outage.
    Reason.TRANSACTION_OWNER_UNAVAILABLE: _C.UNAVAILABLE,
    Reason.COMMIT_OUTCOME_UNKNOWN: _C.UNKNOWN,
    Reason.UNSUPPORTED: _C.UNIMPLEMENTED,
    Reason.DATABASE_ERROR: _C.INTERNAL,
    Reason.INTERNAL: _C.INTERNAL,
    # A Session the server closed on purpose (drain, maximum age): every call
    # it read was answered, so the client resends the others on a new session.
    Reason.SESSION_ENDED: _C.UNAVAILABLE,
}

#: Failures of the path to the database rather than of the SQL: these count
#: against the circuit breaker and may be retried.
INFRASTRUCTURE_REASONS = frozenset({Reason.DATABASE_UNAVAILABLE})


class GatewayError(Exception):
    """Root of every error the gateway reports to a caller.

    ``message`` is shown to the caller as is: for database errors it is the
    database's own message. Nothing here may carry a traceback or a parameter
    value the caller did not send.

    ``sent`` says whether the statement may have reached the database. It is
    True unless the code raising the error knows nothing was sent (no
    connection could be opened, the pool gave none, the connection was found
    dead before the statement was written): only then is a write safe to retry
    without the caller's say-so.
    """

    __slots__ = ("field_violations", "message", "metadata", "reason", "retry_after", "sent")

    def __init__(
        self,
        reason: Reason,
        message: str,
        *,
        metadata: Mapping[str, str | int | None] | None = None,
        retry_after: float | None = None,
        field_violations: Sequence[tuple[str, str]] = (),
        sent: bool = True,
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.metadata: dict[str, str] = {
            k: str(v) for k, v in (metadata or {}).items() if v is not None and v != ""
        }
        self.retry_after = retry_after
        self.field_violations = list(field_violations)
        self.sent = sent

    @property
    def code(self) -> grpc.StatusCode:
        return STATUS_CODES[self.reason]

    @property
    def is_infrastructure(self) -> bool:
        """True when the database could not be reached, not when the SQL failed."""
        return self.reason in INFRASTRUCTURE_REASONS

    def with_metadata(self, **extra: str | int | None) -> GatewayError:
        """Adds metadata (keeping what is there) and returns ``self``."""
        for key, value in extra.items():
            if value is not None and value != "" and key not in self.metadata:
                self.metadata[key] = str(value)
        return self

    def not_sent(self) -> GatewayError:
        """Marks the error as raised before anything reached the database; returns ``self``."""
        self.sent = False
        return self

    def __repr__(self) -> str:
        sent = "" if self.sent else ", not sent"
        return f"GatewayError({self.reason.value}, {self.message!r}, {self.metadata!r}{sent})"


def invalid_request(field: str, problem: str) -> GatewayError:
    """A request field the caller must fix (BadRequest detail names the field)."""
    return GatewayError(
        Reason.INVALID_REQUEST, f"{field}: {problem}", field_violations=[(field, problem)]
    )


def invalid_parameter(index: int, problem: str) -> GatewayError:
    """A parameter value the engine cannot take."""
    field = f"params[{index}]"
    return GatewayError(
        Reason.INVALID_PARAMETER, f"{field}: {problem}", field_violations=[(field, problem)]
    )


def to_rpc_status(error: GatewayError) -> status_pb2.Status:
    """The ``google.rpc.Status`` a caller receives for ``error``."""
    code = STATUS_CODES[error.reason]
    details: list[Any] = []
    info = error_details_pb2.ErrorInfo(
        reason=error.reason.value, domain=ERROR_DOMAIN, metadata=error.metadata
    )
    details.append(info)
    if error.retry_after is not None:
        delay = duration_pb2.Duration()
        delay.FromNanoseconds(int(max(error.retry_after, 0.0) * 1e9))
        details.append(error_details_pb2.RetryInfo(retry_delay=delay))
    if error.field_violations:
        details.append(
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(field=f, description=d)
                    for f, d in error.field_violations
                ]
            )
        )
    packed = []
    for detail in details:
        holder = any_pb2.Any()
        holder.Pack(detail)
        packed.append(holder)
    return status_pb2.Status(
        code=getattr(code_pb2, code.name), message=error.message, details=packed
    )


# ---------------------------------------------------------------------------
# Classification: what the databases report -> Reason.
# ---------------------------------------------------------------------------

#: Exact SQLSTATEs whose meaning differs from their class.
_SQLSTATE_EXACT: Mapping[str, Reason] = {
    "23505": Reason.UNIQUE_VIOLATION,
    "25006": Reason.READ_ONLY,
    "40001": Reason.SERIALIZATION_FAILURE,
    "40002": Reason.CONSTRAINT_VIOLATION,
    "40003": Reason.COMMIT_OUTCOME_UNKNOWN,
    "40P01": Reason.DEADLOCK,
    "42501": Reason.PERMISSION_DENIED,
    "55P03": Reason.LOCK_TIMEOUT,
    "57014": Reason.STATEMENT_TIMEOUT,
    "53400": Reason.SQL_ERROR,
}

#: SQLSTATE classes (first two characters), per the SQL standard and PostgreSQL.
_SQLSTATE_CLASS: Mapping[str, Reason] = {
    "03": Reason.SQL_ERROR,  # SQL statement not yet complete
    "08": Reason.DATABASE_UNAVAILABLE,  # connection exception
    "09": Reason.SQL_ERROR,  # triggered action exception
    "10": Reason.INVALID_PARAMETER,  # XQuery error (invalid argument)
    "0A": Reason.UNSUPPORTED,  # feature not supported
    "0B": Reason.INVALID_TRANSACTION_STATE,  # invalid transaction initiation
    "0F": Reason.SQL_ERROR,  # locator exception
    "0L": Reason.PERMISSION_DENIED,  # invalid grantor
    "0P": Reason.PERMISSION_DENIED,  # invalid role specification
    "0Z": Reason.SQL_ERROR,  # diagnostics exception
    "20": Reason.SQL_ERROR,  # case not found
    "21": Reason.SQL_ERROR,  # cardinality violation
    "22": Reason.INVALID_PARAMETER,  # data exception
    "23": Reason.CONSTRAINT_VIOLATION,  # integrity constraint violation
    "24": Reason.SQL_ERROR,  # invalid cursor state
    "25": Reason.INVALID_TRANSACTION_STATE,  # invalid transaction state
    "26": Reason.SQL_ERROR,  # invalid SQL statement name
    "27": Reason.CONSTRAINT_VIOLATION,  # triggered data change violation
    "28": Reason.PERMISSION_DENIED,  # invalid authorization specification
    "2B": Reason.CONSTRAINT_VIOLATION,  # dependent privilege descriptors still exist
    "2D": Reason.INVALID_TRANSACTION_STATE,  # invalid transaction termination
    "2F": Reason.SQL_ERROR,  # SQL routine exception
    "34": Reason.SQL_ERROR,  # invalid cursor name
    "38": Reason.SQL_ERROR,  # external routine exception
    "39": Reason.SQL_ERROR,  # external routine invocation exception
    "3B": Reason.INVALID_TRANSACTION_STATE,  # savepoint exception
    "3D": Reason.SQL_ERROR,  # invalid catalog name
    "3F": Reason.SQL_ERROR,  # invalid schema name
    "40": Reason.SERIALIZATION_FAILURE,  # transaction rollback
    "42": Reason.SQL_ERROR,  # syntax error or access rule violation
    "44": Reason.CONSTRAINT_VIOLATION,  # WITH CHECK OPTION violation
    "53": Reason.DATABASE_UNAVAILABLE,  # insufficient resources
    "54": Reason.SQL_ERROR,  # program limit exceeded
    "55": Reason.OBJECT_IN_USE,  # object not in prerequisite state
    "57": Reason.DATABASE_UNAVAILABLE,  # operator intervention (shutdown, ...)
    "58": Reason.DATABASE_UNAVAILABLE,  # system error (I/O)
    "72": Reason.SERIALIZATION_FAILURE,  # snapshot too old: a retry can succeed
    "F0": Reason.DATABASE_ERROR,  # configuration file error
    "HV": Reason.SQL_ERROR,  # foreign data wrapper error
    "P0": Reason.SQL_ERROR,  # PL/pgSQL error (RAISE EXCEPTION, ASSERT)
    "XX": Reason.DATABASE_ERROR,  # internal error
}


def reason_for_sqlstate(sqlstate: str | None) -> Reason | None:
    """The reason for a SQLSTATE, or None when the table has no row for it."""
    if not sqlstate:
        return None
    return _SQLSTATE_EXACT.get(sqlstate) or _SQLSTATE_CLASS.get(sqlstate[:2])


#: MySQL / MariaDB server and client error numbers.
_MYSQL_ERRNO: Mapping[int, Reason] = {
    1062: Reason.UNIQUE_VIOLATION,  # ER_DUP_ENTRY
    1586: Reason.UNIQUE_VIOLATION,  # ER_DUP_ENTRY_WITH_KEY_NAME
    1048: Reason.CONSTRAINT_VIOLATION,  # ER_BAD_NULL_ERROR
    1216: Reason.CONSTRAINT_VIOLATION,  # ER_NO_REFERENCED_ROW
    1217: Reason.CONSTRAINT_VIOLATION,  # ER_ROW_IS_REFERENCED
    1364: Reason.CONSTRAINT_VIOLATION,  # ER_NO_DEFAULT_FOR_FIELD
    1451: Reason.CONSTRAINT_VIOLATION,  # ER_ROW_IS_REFERENCED_2
    1452: Reason.CONSTRAINT_VIOLATION,  # ER_NO_REFERENCED_ROW_2
    3819: Reason.CONSTRAINT_VIOLATION,  # ER_CHECK_CONSTRAINT_VIOLATED (MySQL)
    4025: Reason.CONSTRAINT_VIOLATION,  # ER_CONSTRAINT_FAILED (MariaDB CHECK)
    1213: Reason.DEADLOCK,  # ER_LOCK_DEADLOCK
    1205: Reason.LOCK_TIMEOUT,  # ER_LOCK_WAIT_TIMEOUT
    3572: Reason.LOCK_TIMEOUT,  # ER_LOCK_NOWAIT
    3024: Reason.STATEMENT_TIMEOUT,  # ER_QUERY_TIMEOUT (MySQL max_execution_time)
    1969: Reason.STATEMENT_TIMEOUT,  # ER_STATEMENT_TIMEOUT (MariaDB max_statement_time)
    1317: Reason.STATEMENT_TIMEOUT,  # ER_QUERY_INTERRUPTED (KILL QUERY on deadline)
    1044: Reason.PERMISSION_DENIED,  # ER_DBACCESS_DENIED_ERROR
    1045: Reason.PERMISSION_DENIED,  # ER_ACCESS_DENIED_ERROR
    1142: Reason.PERMISSION_DENIED,  # ER_TABLEACCESS_DENIED_ERROR
    1143: Reason.PERMISSION_DENIED,  # ER_COLUMNACCESS_DENIED_ERROR
    1227: Reason.PERMISSION_DENIED,  # ER_SPECIFIC_ACCESS_DENIED_ERROR
    1370: Reason.PERMISSION_DENIED,  # ER_PROCACCESS_DENIED_ERROR
    1290: Reason.READ_ONLY,  # ER_OPTION_PREVENTS_STATEMENT (--read-only)
    1792: Reason.READ_ONLY,  # ER_CANT_EXECUTE_IN_READ_ONLY_TRANSACTION
    1235: Reason.UNSUPPORTED,  # ER_NOT_SUPPORTED_YET
    1178: Reason.UNSUPPORTED,  # ER_CHECK_NOT_IMPLEMENTED
    1264: Reason.INVALID_PARAMETER,  # ER_WARN_DATA_OUT_OF_RANGE
    1265: Reason.INVALID_PARAMETER,  # WARN_DATA_TRUNCATED
    1292: Reason.INVALID_PARAMETER,  # ER_TRUNCATED_WRONG_VALUE
    1366: Reason.INVALID_PARAMETER,  # ER_TRUNCATED_WRONG_VALUE_FOR_FIELD
    1367: Reason.INVALID_PARAMETER,  # ER_ILLEGAL_VALUE_FOR_TYPE
    1406: Reason.INVALID_PARAMETER,  # ER_DATA_TOO_LONG
    1411: Reason.INVALID_PARAMETER,  # ER_WRONG_VALUE_FOR_TYPE
    1365: Reason.INVALID_PARAMETER,  # ER_DIVISION_BY_ZERO
    3140: Reason.INVALID_PARAMETER,  # ER_INVALID_JSON_TEXT
    4038: Reason.INVALID_PARAMETER,  # ER_JSON_SYNTAX (MariaDB)
    1040: Reason.DATABASE_UNAVAILABLE,  # ER_CON_COUNT_ERROR
    1053: Reason.DATABASE_UNAVAILABLE,  # ER_SERVER_SHUTDOWN
    1927: Reason.DATABASE_UNAVAILABLE,  # ER_CONNECTION_KILLED (MariaDB)
    1180: Reason.COMMIT_OUTCOME_UNKNOWN,  # ER_ERROR_DURING_COMMIT
    1399: Reason.INVALID_TRANSACTION_STATE,  # ER_XAER_RMFAIL
    1568: Reason.INVALID_TRANSACTION_STATE,  # ER_CANT_CHANGE_TX_CHARACTERISTICS
}

#: Fallbacks by PyMySQL exception class (its own mapping of error numbers).
_MYSQL_CLASS: Mapping[str, Reason] = {
    "IntegrityError": Reason.CONSTRAINT_VIOLATION,
    "DataError": Reason.INVALID_PARAMETER,
    "ProgrammingError": Reason.SQL_ERROR,
    "NotSupportedError": Reason.UNSUPPORTED,
    "InternalError": Reason.DATABASE_ERROR,
    "OperationalError": Reason.SQL_ERROR,
    "DatabaseError": Reason.SQL_ERROR,
    "InterfaceError": Reason.DATABASE_UNAVAILABLE,
    "Error": Reason.DATABASE_ERROR,
}

#: Client-side error numbers (CR_*) start here; all mean the link is gone.
MYSQL_CLIENT_ERRNO_BASE = 2000


def reason_for_mysql_errno(errno: int, exception_class: str) -> Reason:
    """The reason for a MySQL/MariaDB error number; ``exception_class`` is the
    PyMySQL class name, used for numbers the table does not list."""
    reason = _MYSQL_ERRNO.get(errno)
    if reason is not None:
        return reason
    if errno >= MYSQL_CLIENT_ERRNO_BASE or errno == 0:
        return Reason.DATABASE_UNAVAILABLE
    return _MYSQL_CLASS.get(exception_class, Reason.DATABASE_ERROR)


#: sqlite3 error names (``sqlite_errorname``): extended names first, then primary.
_SQLITE_ERRORS: Mapping[str, Reason] = {
    "SQLITE_CONSTRAINT_UNIQUE": Reason.UNIQUE_VIOLATION,
    "SQLITE_CONSTRAINT_PRIMARYKEY": Reason.UNIQUE_VIOLATION,
    "SQLITE_CONSTRAINT_DATATYPE": Reason.INVALID_PARAMETER,  # STRICT table, wrong type
    "SQLITE_CONSTRAINT": Reason.CONSTRAINT_VIOLATION,
    "SQLITE_BUSY": Reason.LOCK_TIMEOUT,
    "SQLITE_LOCKED": Reason.LOCK_TIMEOUT,
    "SQLITE_INTERRUPT": Reason.STATEMENT_TIMEOUT,
    "SQLITE_READONLY": Reason.READ_ONLY,
    "SQLITE_PERM": Reason.PERMISSION_DENIED,
    "SQLITE_AUTH": Reason.PERMISSION_DENIED,
    "SQLITE_ERROR": Reason.SQL_ERROR,
    "SQLITE_MISMATCH": Reason.INVALID_PARAMETER,
    "SQLITE_RANGE": Reason.INVALID_PARAMETER,
    "SQLITE_TOOBIG": Reason.INVALID_PARAMETER,
    "SQLITE_SCHEMA": Reason.SERIALIZATION_FAILURE,
    "SQLITE_ABORT": Reason.SERIALIZATION_FAILURE,
    "SQLITE_CANTOPEN": Reason.DATABASE_UNAVAILABLE,
    "SQLITE_IOERR": Reason.DATABASE_UNAVAILABLE,
    "SQLITE_CORRUPT": Reason.DATABASE_ERROR,
    "SQLITE_NOTADB": Reason.DATABASE_ERROR,
    "SQLITE_FULL": Reason.DATABASE_UNAVAILABLE,
    "SQLITE_NOMEM": Reason.DATABASE_UNAVAILABLE,
    "SQLITE_PROTOCOL": Reason.DATABASE_UNAVAILABLE,
    "SQLITE_MISUSE": Reason.INTERNAL,
    "SQLITE_INTERNAL": Reason.DATABASE_ERROR,
    "SQLITE_NOLFS": Reason.UNSUPPORTED,
    "SQLITE_FORMAT": Reason.DATABASE_ERROR,
    "SQLITE_NOTFOUND": Reason.DATABASE_ERROR,
    "SQLITE_EMPTY": Reason.DATABASE_ERROR,
    "SQLITE_NOTICE": Reason.DATABASE_ERROR,
    "SQLITE_WARNING": Reason.DATABASE_ERROR,
}

#: Fallbacks by sqlite3 exception class, for errors raised by the module itself
#: (wrong number of bindings, unsupported parameter type, closed connection).
_SQLITE_CLASS: Mapping[str, Reason] = {
    "IntegrityError": Reason.CONSTRAINT_VIOLATION,
    "DataError": Reason.INVALID_PARAMETER,
    "ProgrammingError": Reason.SQL_ERROR,
    "NotSupportedError": Reason.UNSUPPORTED,
    "OperationalError": Reason.SQL_ERROR,
    "InternalError": Reason.DATABASE_ERROR,
    "InterfaceError": Reason.INVALID_PARAMETER,
    "DatabaseError": Reason.DATABASE_ERROR,
    "Error": Reason.DATABASE_ERROR,
}


#: Primary result codes (the low byte of any extended code), by number: the
#: sqlite3 module of older Pythons names newer extended codes "unknown".
_SQLITE_PRIMARY_NAMES: Mapping[int, str] = {
    1: "SQLITE_ERROR", 2: "SQLITE_INTERNAL", 3: "SQLITE_PERM", 4: "SQLITE_ABORT",
    5: "SQLITE_BUSY", 6: "SQLITE_LOCKED", 7: "SQLITE_NOMEM", 8: "SQLITE_READONLY",
    9: "SQLITE_INTERRUPT", 10: "SQLITE_IOERR", 11: "SQLITE_CORRUPT", 12: "SQLITE_NOTFOUND",
    13: "SQLITE_FULL", 14: "SQLITE_CANTOPEN", 15: "SQLITE_PROTOCOL", 16: "SQLITE_EMPTY",
    17: "SQLITE_SCHEMA", 18: "SQLITE_TOOBIG", 19: "SQLITE_CONSTRAINT", 20: "SQLITE_MISMATCH",
    21: "SQLITE_MISUSE", 22: "SQLITE_NOLFS", 23: "SQLITE_AUTH", 24: "SQLITE_FORMAT",
    25: "SQLITE_RANGE", 26: "SQLITE_NOTADB", 27: "SQLITE_NOTICE", 28: "SQLITE_WARNING",
}  # fmt: skip
_SQLITE_EXTENDED_NAMES: Mapping[int, str] = {
    1555: "SQLITE_CONSTRAINT_PRIMARYKEY",
    2067: "SQLITE_CONSTRAINT_UNIQUE",
    3091: "SQLITE_CONSTRAINT_DATATYPE",
}


def sqlite_error_name(code: int | None, name: str | None) -> str | None:
    """The extended error name, from sqlite3's name or, failing that, the code."""
    if name and name != "unknown":
        return name
    if code is None:
        return None
    return _SQLITE_EXTENDED_NAMES.get(code) or _SQLITE_PRIMARY_NAMES.get(code & 0xFF)


def reason_for_sqlite_error(error_name: str | None, exception_class: str) -> Reason:
    """The reason for a sqlite3 error (extended name, primary name, then class)."""
    if error_name:
        if error_name in _SQLITE_ERRORS:
            return _SQLITE_ERRORS[error_name]
        primary = "_".join(error_name.split("_")[:2])
        if primary in _SQLITE_ERRORS:
            return _SQLITE_ERRORS[primary]
    return _SQLITE_CLASS.get(exception_class, Reason.DATABASE_ERROR)


#: Connection refusals that waiting will not fix: the DSN names a user, a
#: password or a database the server does not accept. SQLSTATE classes 28
#: (invalid authorization) and 3D (invalid catalog name); MySQL 1044/1045
#: (access denied), 1049 (unknown database), 1698 (access denied, no password).
_MISCONFIGURED_SQLSTATE_CLASSES: Mapping[str, str] = {
    "28": "check the user and password in the database's dsn (or its password_file)",
    "3D": "check the database name in the database's dsn",
}
_MISCONFIGURED_MYSQL: Mapping[str, str] = {
    "1044": "check the user's grants on the database named in the dsn",
    "1045": "check the user and password in the database's dsn (or its password_file)",
    "1049": "check the database name in the database's dsn",
    "1698": "check the user and password in the database's dsn (or its password_file)",
}


def misconfiguration(error: GatewayError) -> str | None:
    """What to fix when ``error`` (a failed connect) says the gateway's own
    settings are wrong rather than the database down; None otherwise."""
    sqlstate = error.metadata.get("sqlstate", "")
    vendor_code = error.metadata.get("vendor_code", "")
    found = _MISCONFIGURED_MYSQL.get(vendor_code)
    if found is None and len(sqlstate) == 5:
        found = _MISCONFIGURED_SQLSTATE_CLASSES.get(sqlstate[:2])
    return found
