"""What every servicer method shares: who is calling and what it may do,
turning failures into gRPC statuses, and request options into core call
options.

:func:`rpc` and :func:`rpc_stream` are the one choke point of every
DatabaseService and AdminService call: request id, authentication,
authorization, per-principal concurrency, observability, error mapping.
What they decided for the call (its principal, its right on the database,
the request limits) is its :class:`CallScope`, which :func:`call_options`,
:func:`transaction_mode` and :func:`check_sql` apply.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
from google.protobuf import duration_pb2
from grpc_status import rpc_status

from dbgateway.v1 import database_service_pb2 as pb

from .. import tracing
from ..backends.base import ExecResult, IsolationLevel, ResultSet, TransactionMode
from ..call import BatchOutcome, Call, CallOptions, Deadline, Outcome
from ..cluster import ForwardedFailure, Forwarding
from ..config import Access, ReadPreference, ServerConfig
from ..errors import GatewayError, Reason, invalid_request, to_rpc_status
from ..gateway import Gateway
from ..observability import REQUEST_ID_HEADER, Observability
from ..security import ANONYMOUS, CallSlot, Guard, Principal

log = logging.getLogger("dbgateway_server.service")

Request = TypeVar("Request")
Response = TypeVar("Response")
Handler = Callable[[Any, Request, grpc.aio.ServicerContext], Awaitable[Response]]
StreamHandler = Callable[[Any, Request, grpc.aio.ServicerContext], AsyncIterator[Response]]

DATABASE_SERVICE = "dbgateway.v1.DatabaseService"
ADMIN_SERVICE = "dbgateway.v1.AdminService"

#: RPCs that write whatever their SQL says: refused to a principal that may only read.
WRITE_METHODS = frozenset({"Execute", "ExecuteBatch"})


_DEFAULTS = ServerConfig()


@dataclass(frozen=True, slots=True)
class CallScope:
    """What the choke point decided for the call being served."""

    principal: Principal = ANONYMOUS
    #: The principal's right on the call's database; None until known.
    access: Access | None = None
    max_sql_length: int = _DEFAULTS.max_sql_length
    max_parameters: int = _DEFAULTS.max_parameters
    #: The principal's concurrency slot this call holds; None for a call on
    #: an open transaction, which holds its own.
    slot: CallSlot | None = None

    @property
    def read_only(self) -> bool:
        return self.access is Access.READ


_DEFAULT_SCOPE = CallScope()
_scope: contextvars.ContextVar[CallScope | None] = contextvars.ContextVar(
    "dbgateway_call_scope", default=None
)


def current_scope() -> CallScope:
    """The scope of the call the current task serves (anonymous, with
    default limits, outside any call)."""
    return _scope.get() or _DEFAULT_SCOPE


class Servicer:
    """What a servicer gives the decorators."""

    _gateway: Gateway
    observability: Observability
    guard: Guard
    #: Every method needs the admin right (AdminService).
    admin_only: bool = False
    #: Where calls on another process's transaction go (None: nowhere, serve here).
    forwarding: Forwarding | None = None


def _authorize(
    servicer: Servicer, method: str, request: Any, principal: Principal
) -> Access | None:
    """Checks the principal's rights for what the request names, before the
    handler runs: its right on the request's database (None when the request
    names none). A call on an open transaction is not checked here: the
    transaction is bound to the principal that began it (with the right it
    had then), and others get NOT_FOUND."""
    guard = servicer.guard
    if servicer.admin_only:
        guard.require_admin(principal)
        return None
    if getattr(request, "transaction_id", "") or not hasattr(request, "database"):
        return None
    return _access(servicer, principal, request.database, method in WRITE_METHODS)


def _access(servicer: Servicer, principal: Principal, database: str, write: bool) -> Access:
    name = servicer._gateway.database(database, lambda n: principal.access(n) is not None).name
    return servicer.guard.access(principal, name, write=write)


def authorize_database(servicer: Servicer, database: str, *, write: bool = False) -> Access:
    """The current principal's right on ``database`` (resolved as the
    gateway resolves it); it becomes the call's scope."""
    scope = current_scope()
    access = _access(servicer, scope.principal, database, write)
    _scope.set(
        CallScope(scope.principal, access, scope.max_sql_length, scope.max_parameters, scope.slot)
    )
    return access


def request_id(context: grpc.aio.ServicerContext) -> str:
    for key, value in context.invocation_metadata() or ():
        if key == REQUEST_ID_HEADER and value:
            return str(value)[:128]
    # 32 random hex digits, as uuid4().hex had them, without building a UUID
    # (which costs several times the random bytes, on every call).
    return os.urandom(16).hex()


#: Longest wait a client's transparent gRPC retry is told to make (see below).
TRANSPARENT_RETRY_LIMIT = 1.0


def grpc_status(error: GatewayError) -> grpc.Status:
    """The status a caller receives: code, message and details, plus
    ``grpc-retry-pushback-ms`` when the error says when to retry. A short wait
    (a saturated pool) is worth a transparent retry by the client's gRPC retry
    policy, so it is told to wait that long. A long one (an open circuit) is
    not: a transport that slept through it would turn a fast UNAVAILABLE into
    DEADLINE_EXCEEDED, so it is told not to retry (a negative pushback, gRFC A6)
    and the caller decides from the RetryInfo detail."""
    status = rpc_status.to_status(to_rpc_status(error))
    if error.retry_after is not None:
        delay = error.retry_after
        millis = max(int(delay * 1000), 0) if delay <= TRANSPARENT_RETRY_LIMIT else -1
        pushback = ("grpc-retry-pushback-ms", str(millis))
        status = status._replace(trailing_metadata=(*status.trailing_metadata, pushback))
    return status


def _with_request_id(status: grpc.Status, request_id: str | None) -> grpc.Status:
    if request_id is None:
        return status
    metadata = tuple(status.trailing_metadata or ())
    if any(key == REQUEST_ID_HEADER for key, _ in metadata):
        return status
    return status._replace(trailing_metadata=(*metadata, (REQUEST_ID_HEADER, request_id)))


async def abort(
    context: grpc.aio.ServicerContext, error: GatewayError, request_id: str | None = None
) -> None:
    """Ends the call with ``error``'s status (and ``x-request-id``, which an
    abort's trailing metadata would otherwise replace)."""
    await context.abort_with_status(_with_request_id(grpc_status(error), request_id))


def begin_call(
    observability: Observability,
    method: str,
    request: Any,
    context: grpc.aio.ServicerContext,
    service: str = DATABASE_SERVICE,
) -> Call:
    """Starts observing a call from what any statement request carries
    (``database``, ``sql``, ``params``, ``options.tag``; absent ones stay empty),
    continuing the trace context of the caller's metadata while tracing is on."""
    return observability.begin(
        method,
        request_id=request_id(context),
        database=getattr(request, "database", None),
        tag=getattr(getattr(request, "options", None), "tag", ""),
        sql=getattr(request, "sql", ""),
        params=len(getattr(request, "params", ())),
        parameters=getattr(request, "params", ()),
        transport=getattr(context, "transport", "unary"),
        service=service,
        metadata=context.invocation_metadata() if tracing.tracer is not None else None,
    )


def record_response(call: Call, response: Any) -> None:
    """Takes rows and attempts from a response's ``stats``, when it has them
    (RunTransaction reports its attempts on the response itself)."""
    stats = getattr(response, "stats", None)
    if stats is not None:
        call.rows = getattr(stats, "rows", 0)
        call.attempts = getattr(stats, "attempts", 0) or 1
    attempts = getattr(response, "attempts", 0)
    if attempts:
        call.attempts = attempts


def rpc(handler: Handler[Request, Response]) -> Handler[Request, Response]:
    """Wraps a servicer method: a GatewayError becomes its status with details;
    anything unexpected is logged with a request id and answered INTERNAL with
    that id, never with a traceback. Every call is observed (metrics, access
    log, slow-query log) and its request id echoed in ``x-request-id``; the
    servicer provides ``self.observability``."""
    method = handler.__name__

    @functools.wraps(handler)
    async def wrapper(self: Any, request: Request, context: grpc.aio.ServicerContext) -> Response:
        async with _Served(self, method, request, context) as call:
            # Only a call on a transaction can belong to another process.
            owner = (
                await _owner(self, method, request, context)
                if getattr(request, "transaction_id", "")
                else None
            )
            if owner is not None:
                call.forwarded_to = owner[0]
                response: Response = await self.forwarding.serve(owner, method, request, context)
            else:
                response = await handler(self, request, context)
            record_response(call, response)
            return response
        raise AssertionError("abort returned")  # pragma: no cover

    return wrapper


class _Served:
    """What every call goes through, unary or streaming, as an ``async with``
    block: observed (metrics, access log), admitted by the drain,
    authenticated, holding a concurrency slot, authorized, and its failure
    mapped to a status: a GatewayError to its code and details, anything
    unexpected to INTERNAL with a request id. A class, not a generator
    context manager: every call enters it, and its cost is on every call."""

    __slots__ = ("_admitted", "_context", "_method", "_request", "_servicer", "_slot", "call")

    def __init__(
        self, servicer: Any, method: str, request: Any, context: grpc.aio.ServicerContext
    ) -> None:
        self._servicer = servicer
        self._method = method
        self._request = request
        self._context = context
        self._admitted: asyncio.Task[object] | None = None
        self._slot: CallSlot | None = None

    async def __aenter__(self) -> Call:
        servicer = self._servicer
        service = ADMIN_SERVICE if servicer.admin_only else DATABASE_SERVICE
        self.call = begin_call(
            servicer.observability, self._method, self._request, self._context, service
        )
        try:
            self._enter()
        except BaseException as exc:
            self._leave()
            await self._failed(exc)
        return self.call

    def _enter(self) -> None:
        servicer, request, context, call = self._servicer, self._request, self._context, self.call
        on_transaction = bool(getattr(request, "transaction_id", ""))
        self._admitted = servicer._gateway.drain.admit(continuing=on_transaction)
        guard: Guard = servicer.guard
        principal = guard.authenticate(context.invocation_metadata())
        call.principal = principal.name
        # The request id travels in the trailing metadata, which goes out with the
        # status anyway: as initial metadata it would cost a batch of its own on
        # every unary call. A failure's status carries it too (see abort).
        context.set_trailing_metadata(((REQUEST_ID_HEADER, call.request_id),))
        config = servicer.observability.config
        slot = None
        if not on_transaction:
            # A call on an open transaction takes no slot: the transaction
            # holds one of its own, and runs one call at a time, so a
            # principal at its limit can still finish what it began.
            slot = self._slot = guard.take_slot(principal)
        limits = (config.max_sql_length, config.max_parameters)
        try:
            access = _authorize(servicer, self._method, request, principal)
        except BaseException:
            _scope.set(CallScope(principal, None, *limits, slot))
            raise
        # Set once, with the call's right on its database.
        _scope.set(CallScope(principal, access, *limits, slot))

    def _leave(self) -> None:
        if self._slot is not None:
            self._slot.done()
            self._slot = None
        self._servicer._gateway.drain.leave(self._admitted)
        self._admitted = None

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: object
    ) -> None:
        self._leave()
        if exc is None:
            self._servicer.observability.end(self.call)
            return
        await self._failed(exc)

    async def _failed(self, exc: BaseException) -> None:
        """Answers the call that failed with ``exc`` (always raises)."""
        call, context = self.call, self._context
        try:
            raise exc
        except GatewayError as exc:
            call.failed(exc.code, exc.reason)
            # A failed call's attempts travel in its metadata (there is no
            # response): the access log's retries must agree with the caller's.
            if exc.metadata.get("attempts", "").isdigit():
                call.attempts = int(exc.metadata["attempts"])
            await abort(context, exc, call.request_id)
        except ForwardedFailure as exc:
            call.failed(exc.status.code, exc.reason)
            await context.abort_with_status(_with_request_id(exc.status, call.request_id))
        except asyncio.CancelledError:
            stopped = self._servicer._gateway.drain.stopped_by_drain()
            if stopped is None:
                call.failed(grpc.StatusCode.CANCELLED)
                raise
            call.failed(stopped.code, stopped.reason)
            await abort(context, stopped)
        except grpc.aio.AbortError:
            call.failed(grpc.StatusCode.UNKNOWN)
            raise
        except Exception:
            if _client_cancelled(context):
                # Whatever the transport raised once the caller had gone (a failed
                # receive or send on a cancelled stream) is the cancellation, not
                # a bug: nobody is left to answer.
                log.debug(
                    "%s cancelled by the client (request id %s)", self._method, call.request_id
                )
                call.failed(grpc.StatusCode.CANCELLED)
                raise asyncio.CancelledError from None
            error = _internal_error(call.request_id, self._method)
            call.failed(error.code, error.reason)
            await abort(context, error, call.request_id)
        finally:
            self._servicer.observability.end(call)


def _client_cancelled(context: grpc.aio.ServicerContext) -> bool:
    try:
        return bool(context.cancelled())
    except Exception:  # a context that cannot tell
        return False


def _internal_error(rid: str, where: str) -> GatewayError:
    """Logs the exception being handled under a request id; the caller gets
    only that id."""
    log.exception("unexpected error in %s (request id %s)", where, rid)
    return GatewayError(
        Reason.INTERNAL,
        f"internal error; the server log has the details under request id {rid}",
        metadata={"request_id": rid},
    )


def rpc_stream(handler: StreamHandler[Request, Response]) -> StreamHandler[Request, Response]:
    """:func:`rpc` for servicer methods that stream their responses."""
    method = handler.__name__

    @functools.wraps(handler)
    async def wrapper(
        self: Any, request: Request, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[Response]:
        async with _Served(self, method, request, context) as call:
            owner = await _owner(self, method, request, context)
            if owner is not None:
                call.forwarded_to = owner[0]
                responses = self.forwarding.stream(owner, method, request, context)
            else:
                responses = handler(self, request, context)
            # Closed here, not left to the garbage collector: a stream the
            # caller stopped reading (past its deadline, cancelled) ends
            # this generator at its ``yield``, and the handler's own cleanup
            # (a transaction's rollback and connection) must run now.
            async with contextlib.aclosing(responses):
                async for response in responses:
                    yield response

    return wrapper


async def _owner(
    servicer: Servicer, method: str, request: Any, context: grpc.aio.ServicerContext
) -> tuple[str, int] | None:
    """Where a call on a transaction id is served: None for here, else the
    owning process's address (and the hop count) to forward it to. The call
    was authenticated here first; it takes no concurrency slot of its own,
    since the transaction it names holds one where it began."""
    transaction_id = getattr(request, "transaction_id", "")
    if not transaction_id or servicer.forwarding is None:
        return None
    try:
        return await servicer.forwarding.route(
            transaction_id, context.invocation_metadata(), method=method
        )
    except GatewayError as exc:
        if method == "Rollback" and exc.reason is Reason.TRANSACTION_NOT_FOUND:
            return None  # no such transaction anywhere: the caller's wish holds
        raise


_ROW_ENCODINGS = (pb.RESULT_ENCODING_UNSPECIFIED, pb.RESULT_ENCODING_ROWS)
_COLUMN_ENCODINGS = (pb.RESULT_ENCODING_COLUMNS, pb.RESULT_ENCODING_COLUMNS_V2)


def call_options(
    options: pb.RequestOptions, context: grpc.aio.ServicerContext, *, columnar_ok: bool = False
) -> CallOptions:
    """The core's options for a call. ``columnar_ok``: the RPC can answer in
    RESULT_ENCODING_COLUMNS (Query, StreamQuery); the others refuse it rather
    than answer in rows the caller did not ask for."""
    timeout: float | None = None
    if options.HasField("timeout"):
        timeout = duration_seconds("options.timeout", options.timeout)
    encoding = options.encoding
    if encoding not in _ROW_ENCODINGS and not (columnar_ok and encoding in _COLUMN_ENCODINGS):
        if encoding in _COLUMN_ENCODINGS:
            raise invalid_request(
                "options.encoding",
                f"{pb.ResultEncoding.Name(encoding)} is for Query and StreamQuery only",
            )
        raise invalid_request("options.encoding", f"unknown result encoding {encoding}")
    return CallOptions(
        deadline=Deadline.sooner(context.time_remaining(), timeout),
        max_rows=options.max_rows,
        idempotent=options.idempotent,
        tag=options.tag,
        read_only=current_scope().read_only,
        columnar=encoding in _COLUMN_ENCODINGS,
        columns_v2=encoding == pb.RESULT_ENCODING_COLUMNS_V2,
        read_preference=read_preference(options.read_preference, "options.read_preference"),
        read_after=_read_after(options.read_after),
        role=current_scope().principal.postgres_role,
    )


_READ_PREFERENCES: dict[int, ReadPreference | None] = {
    pb.READ_PREFERENCE_UNSPECIFIED: None,
    pb.READ_PREFERENCE_PRIMARY: ReadPreference.PRIMARY,
    pb.READ_PREFERENCE_REPLICA_PREFERRED: ReadPreference.REPLICA_PREFERRED,
    pb.READ_PREFERENCE_REPLICA: ReadPreference.REPLICA,
}

#: A read_token is a WAL LSN or a GTID list: short. Anything longer is not one.
MAX_READ_TOKEN_LENGTH = 4096


def read_preference(value: int, field: str) -> ReadPreference | None:
    """The core's read preference for a request's enum (None: the database's default)."""
    try:
        return _READ_PREFERENCES[value]
    except KeyError:
        raise invalid_request(field, f"unknown read preference {value}") from None


def _read_after(token: str) -> str:
    if len(token) > MAX_READ_TOKEN_LENGTH:
        raise invalid_request(
            "options.read_after",
            f"longer than {MAX_READ_TOKEN_LENGTH} characters: not a read_token",
        )
    return token


def check_sql(sql: str, params: Sequence[Any] = ()) -> None:
    """Refuses empty SQL and what exceeds ``max_sql_length`` / ``max_parameters``."""
    scope = current_scope()
    if len(sql) > scope.max_sql_length:
        raise invalid_request(
            "sql", f"longer than max_sql_length = {scope.max_sql_length} characters"
        )
    if not sql.strip():
        raise invalid_request("sql", "must not be empty")
    if len(params) > scope.max_parameters:
        raise invalid_request(
            "params", f"more than max_parameters = {scope.max_parameters} parameters"
        )


def _duration(seconds: float) -> duration_pb2.Duration:
    value = duration_pb2.Duration()
    value.FromNanoseconds(int(seconds * 1e9))
    return value


def stats(outcome: Outcome | BatchOutcome, rows: int) -> pb.ExecutionStats:
    # The Duration filled in place from a dict: building one and copying it
    # in costs several times as much, on every response.
    seconds, nanos = divmod(max(int(outcome.elapsed * 1e9), 0), 1_000_000_000)
    return pb.ExecutionStats(
        elapsed={"seconds": seconds, "nanos": nanos}, rows=rows, attempts=outcome.attempts
    )


def duration_seconds(field: str, value: duration_pb2.Duration) -> float:
    if value.seconds < 0 or value.nanos < 0 or (value.seconds == 0 and value.nanos == 0):
        raise invalid_request(field, "must be positive")
    return value.seconds + value.nanos / 1e9


_ISOLATION: dict[int, IsolationLevel | None] = {
    pb.ISOLATION_LEVEL_UNSPECIFIED: None,
    pb.ISOLATION_LEVEL_READ_UNCOMMITTED: IsolationLevel.READ_UNCOMMITTED,
    pb.ISOLATION_LEVEL_READ_COMMITTED: IsolationLevel.READ_COMMITTED,
    pb.ISOLATION_LEVEL_REPEATABLE_READ: IsolationLevel.REPEATABLE_READ,
    pb.ISOLATION_LEVEL_SERIALIZABLE: IsolationLevel.SERIALIZABLE,
}


def transaction_mode(options: pb.TransactionOptions) -> TransactionMode:
    """The options every transaction RPC shares; the backend refuses what its
    engine cannot give (UNIMPLEMENTED)."""
    if options.isolation not in _ISOLATION:
        raise invalid_request("options.isolation", f"unknown isolation level {options.isolation}")
    return TransactionMode(
        isolation=_ISOLATION[options.isolation],
        # A principal that may only read gets a read-only transaction, whatever it asked.
        read_only=options.read_only or current_scope().read_only,
        deferrable=options.deferrable,
        role=current_scope().principal.postgres_role,
    )


def statement_result(result: ResultSet | ExecResult) -> pb.StatementResult:
    """The one place a statement's result becomes a StatementResult."""
    if isinstance(result, ResultSet):
        return pb.StatementResult(
            columns=result.columns, rows=result.rows, truncated=result.truncated
        )
    reply = pb.StatementResult(
        columns=result.columns, rows=result.rows, rows_affected=result.rows_affected
    )
    if result.last_insert_id is not None:
        reply.last_insert_id = result.last_insert_id
    return reply


def statement_error(error: GatewayError) -> pb.StatementResult:
    """A failed statement, reported in-band with the details a unary call would carry."""
    return pb.StatementResult(error=to_rpc_status(error))


def elapsed_since(started: float) -> duration_pb2.Duration:
    """The time from ``started`` (``time.monotonic()``) until now."""
    return _duration(time.monotonic() - started)
