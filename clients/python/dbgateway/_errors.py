"""The client's exception tree, decoded from the server's ``google.rpc.Status``.

Every failed call raises a :class:`DbGatewayError`; a raw ``grpc.RpcError``
never reaches the caller. The subclass is chosen by the ErrorInfo ``reason``
when the server sent one, else by the gRPC code::

    DbGatewayError                 code, reason, message, sqlstate, metadata, retry_after
    ├── SqlError                   INVALID_ARGUMENT: SQL_ERROR, INVALID_PARAMETER, INVALID_REQUEST
    ├── IntegrityError             FAILED_PRECONDITION: CONSTRAINT_VIOLATION
    │   └── UniqueViolation        ALREADY_EXISTS: UNIQUE_VIOLATION
    ├── TransactionAborted         ABORTED: SERIALIZATION_FAILURE, DEADLOCK, LOCK_TIMEOUT, ...
    ├── Unavailable                UNAVAILABLE: DATABASE_UNAVAILABLE, CIRCUIT_OPEN, server down,
    │                              SERVER_DRAINING
    ├── ResourceExhausted          RESOURCE_EXHAUSTED: POOL_EXHAUSTED, RESULT_TOO_LARGE,
    │                              SUBSCRIBER_TOO_SLOW
    ├── DeadlineExceeded           DEADLINE_EXCEEDED: STATEMENT_TIMEOUT, the call's deadline
    ├── PermissionDenied           PERMISSION_DENIED, UNAUTHENTICATED
    └── NotFound                   NOT_FOUND: UNKNOWN_DATABASE, TRANSACTION_NOT_FOUND

Anything else (READ_ONLY, UNSUPPORTED, INTERNAL, ...) is a plain
:class:`DbGatewayError` whose ``reason`` says which.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

__all__ = [
    "DbGatewayError",
    "DeadlineExceeded",
    "IntegrityError",
    "NotFound",
    "PermissionDenied",
    "ResourceExhausted",
    "SqlError",
    "TransactionAborted",
    "Unavailable",
    "UniqueViolation",
    "from_rpc_error",
    "from_status_message",
]

ERROR_DOMAIN = "dbgateway"


class DbGatewayError(Exception):
    """Root of every error the client raises for a failed call.

    ``code`` is the gRPC status code, ``reason`` the server's ErrorInfo reason
    (``"UNIQUE_VIOLATION"``; empty when the call never reached dbgateway),
    ``message`` the database's own message, ``sqlstate`` the SQLSTATE when the
    engine has one, ``metadata`` the whole ErrorInfo metadata (``engine``,
    ``database``, ``vendor_code``, ``constraint``, ...), ``retry_after`` the
    seconds the server asked callers to wait before retrying (RetryInfo), and
    ``field_violations`` the (field, problem) pairs of a BadRequest.
    """

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        *,
        reason: str = "",
        metadata: Mapping[str, str] | None = None,
        retry_after: float | None = None,
        field_violations: tuple[tuple[str, str], ...] = (),
    ) -> None:
        self.code = code
        self.message = message
        self.reason = reason
        self.metadata: dict[str, str] = dict(metadata or {})
        self.retry_after = retry_after
        self.field_violations = field_violations
        super().__init__(self.summary())

    @property
    def sqlstate(self) -> str | None:
        """The five-character SQLSTATE, when the engine reported one."""
        return self.metadata.get("sqlstate")

    @property
    def statement_index(self) -> int | None:
        """Which statement of ``run_transaction`` failed (0-based), when the
        server said."""
        index = self.metadata.get("statement_index")
        return int(index) if index is not None and index.isdigit() else None

    def summary(self) -> str:
        """One line: code, reason and message."""
        head = self.code.name if not self.reason else f"{self.code.name} {self.reason}"
        return f"{head}: {self.message}" if self.message else head

    def __reduce__(self) -> tuple[Any, ...]:
        return (
            _rebuild,
            (
                type(self),
                self.code,
                self.message,
                self.reason,
                self.metadata,
                self.retry_after,
                self.field_violations,
            ),
        )


def _rebuild(
    cls: type[DbGatewayError],
    code: grpc.StatusCode,
    message: str,
    reason: str,
    metadata: dict[str, str],
    retry_after: float | None,
    field_violations: tuple[tuple[str, str], ...],
) -> DbGatewayError:
    return cls(
        code,
        message,
        reason=reason,
        metadata=metadata,
        retry_after=retry_after,
        field_violations=field_violations,
    )


class SqlError(DbGatewayError):
    """The statement or a parameter was rejected: syntax, unknown table or
    column, a value the column cannot take, a malformed request."""


class IntegrityError(DbGatewayError):
    """An integrity constraint failed (NOT NULL, foreign key, CHECK, ...)."""


class UniqueViolation(IntegrityError):
    """A unique or primary key constraint failed."""


class TransactionAborted(DbGatewayError):
    """Serialization failure, deadlock or lock timeout: running the whole
    transaction again may succeed."""


class Unavailable(DbGatewayError):
    """The gateway or the database could not be reached (``retry_after``
    says when to come back if the server knows)."""


class ResourceExhausted(DbGatewayError):
    """The database's pool is saturated or the result was too large."""


class DeadlineExceeded(DbGatewayError):
    """The call's deadline or the statement timeout passed."""


class PermissionDenied(DbGatewayError):
    """The caller may not do this (or is not authenticated)."""


class NotFound(DbGatewayError):
    """Unknown database name or transaction id."""


_C = grpc.StatusCode

_BY_REASON: Mapping[str, type[DbGatewayError]] = {
    "SQL_ERROR": SqlError,
    "INVALID_PARAMETER": SqlError,
    "INVALID_REQUEST": SqlError,
    "UNIQUE_VIOLATION": UniqueViolation,
    "CONSTRAINT_VIOLATION": IntegrityError,
    "SERIALIZATION_FAILURE": TransactionAborted,
    "DEADLOCK": TransactionAborted,
    "LOCK_TIMEOUT": TransactionAborted,
    "TRANSACTION_EXPIRED": TransactionAborted,
}

_BY_CODE: Mapping[grpc.StatusCode, type[DbGatewayError]] = {
    _C.INVALID_ARGUMENT: SqlError,
    _C.ALREADY_EXISTS: UniqueViolation,
    _C.ABORTED: TransactionAborted,
    _C.UNAVAILABLE: Unavailable,
    _C.RESOURCE_EXHAUSTED: ResourceExhausted,
    _C.DEADLINE_EXCEEDED: DeadlineExceeded,
    _C.PERMISSION_DENIED: PermissionDenied,
    _C.UNAUTHENTICATED: PermissionDenied,
    _C.NOT_FOUND: NotFound,
}


def error_class(code: grpc.StatusCode, reason: str) -> type[DbGatewayError]:
    """The exception class for a status code and ErrorInfo reason."""
    return _BY_REASON.get(reason) or _BY_CODE.get(code) or DbGatewayError


def from_status(code: grpc.StatusCode, message: str, details: Any | None) -> DbGatewayError:
    """Builds the exception from a code, message and a ``google.rpc.Status``."""
    reason, metadata, retry_after = "", {}, None
    violations: list[tuple[str, str]] = []
    for detail in details.details if details is not None else ():
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            if info.domain == ERROR_DOMAIN:
                reason, metadata = info.reason, dict(info.metadata)
        elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            retry = error_details_pb2.RetryInfo()
            detail.Unpack(retry)
            delay = retry.retry_delay
            retry_after = max(delay.seconds + delay.nanos / 1e9, 0.0)
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            violations.extend((v.field, v.description) for v in bad.field_violations)
    cls = error_class(code, reason)
    return cls(
        code,
        message,
        reason=reason,
        metadata=metadata,
        retry_after=retry_after,
        field_violations=tuple(violations),
    )


def from_rpc_error(error: grpc.RpcError) -> DbGatewayError:
    """The typed exception for a failed gRPC call (sync or asyncio)."""
    code: grpc.StatusCode = error.code()
    message: str = error.details() or ""
    try:
        status = rpc_status.from_call(error)
    except ValueError:
        # Details that contradict the call's code or message: keep what the
        # transport said rather than guess.
        status = None
    return from_status(code, message, status)


_CODES: Mapping[int, grpc.StatusCode] = {c.value[0]: c for c in grpc.StatusCode}


def from_status_message(status: Any) -> DbGatewayError:
    """The typed exception for a ``google.rpc.Status`` carried in a message
    (a failed statement of a ``Transaction`` stream)."""
    code = _CODES.get(status.code, grpc.StatusCode.UNKNOWN)
    return from_status(code, status.message, status)
